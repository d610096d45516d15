"""Haiku layers over the block-sparse products.

    def forward(x):
        return BlockSparseLinear(layout)(x)        # params: {"block_sparse_linear": {"w", "b"}}
    model = hk.transform(forward)

Parameters are plain arrays: ``w`` of shape ``layout.w_shape`` and ``b`` of shape ``(N,)``.
"""
from __future__ import annotations

import haiku as hk
import jax.numpy as jnp

from . import _common
from ..conv import conv_weight_shape

__all__ = ["BlockSparseLinear", "BlockSparseConv", "SparseLSTMCell"]


class BlockSparseLinear(hk.Module):
    """``y = x @ W + b`` with a block-sparse ``W``.

    ``layout`` is a Layout, or a block mask with ``block_size``. ``w`` starts normal with std
    ``1 / sqrt(fan_in)`` per output column (true fan-in of the layout) unless ``w_init`` is given
    (a Haiku initializer called with ``(layout.w_shape, param_dtype)``).
    """

    def __init__(self, layout, block_size: int | None = None, with_bias: bool = True,
                 dtype=None, param_dtype=jnp.float32, precision=None, w_init=None,
                 b_init=None, name: str | None = None):
        super().__init__(name=name)
        self.layout = _common.as_layout(layout, block_size)
        self.with_bias = with_bias
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        self.w_init = w_init or (lambda shape, dtype: _common.sparse_normal(
            hk.next_rng_key(), self.layout, dtype))
        self.b_init = b_init or jnp.zeros

    def __call__(self, x):
        w = hk.get_parameter("w", self.layout.w_shape, self.param_dtype, init=self.w_init)
        b = (hk.get_parameter("b", (self.layout.shape[1],), self.param_dtype, init=self.b_init)
             if self.with_bias else None)
        return _common.linear_apply(x, w, b, self.layout, dtype=self.dtype, precision=self.precision)


class BlockSparseConv(hk.Module):
    """Convolution whose filter is block-sparse over (input, output) channels, dense over space;
    inputs ``(*batch, *spatial, C)``, channels last.

    ``layout`` is a ``(C, K)`` Layout, or a block mask with ``block_size``; ``kernel_size`` is 1 to
    3 ints (a bare int is a 1-D kernel); ``strides``, ``padding``, ``dilation`` as
    :func:`jax_blocksparse.conv`. ``w`` (``conv_weight_shape(layout, kernel_size)``) starts normal
    with std ``1 / sqrt(fan_in)`` per output channel (true fan-in * prod(kernel_size)) unless
    ``w_init`` is given (a Haiku initializer called with ``(shape, param_dtype)``).
    """

    def __init__(self, layout, kernel_size, block_size: int | None = None, strides=1,
                 padding="SAME", dilation=1, with_bias: bool = True, dtype=None,
                 param_dtype=jnp.float32, precision=None, w_init=None, b_init=None,
                 name: str | None = None):
        super().__init__(name=name)
        self.layout = _common.as_layout(layout, block_size)
        self.kernel_size = _common.conv_kernel_size(kernel_size)
        self.strides, self.padding, self.dilation = strides, _common.conv_padding(padding), dilation
        self.with_bias = with_bias
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        self.w_init = w_init or (lambda shape, dtype: _common.conv_normal(
            hk.next_rng_key(), self.layout, self.kernel_size, dtype))
        self.b_init = b_init or jnp.zeros

    def __call__(self, x):
        w = hk.get_parameter("w", conv_weight_shape(self.layout, self.kernel_size),
                             self.param_dtype, init=self.w_init)
        b = (hk.get_parameter("b", (self.layout.shape[1],), self.param_dtype, init=self.b_init)
             if self.with_bias else None)
        return _common.conv_apply(x, w, b, self.layout, strides=self.strides, padding=self.padding,
                                  dilation=self.dilation, dtype=self.dtype, precision=self.precision)


class SparseLSTMCell(hk.RNNCore):
    """LSTM core with a block-sparse recurrent product (Haiku ``RNNCore``: works with
    ``hk.dynamic_unroll``).

    ``layout`` is the square ``(hidden, hidden)`` recurrent layout; the gates ``[i, f, g, o]``
    share it through one block-sparse matrix over the mask tiled four times along the columns
    (:func:`jax_blocksparse.nn.gate_layout`). The input projection is dense unless
    ``input_layout`` (``(input_size, hidden)``) is given. Call convention as ``hk.LSTM``:
    ``h, state = cell(x, state)`` with ``state = hk.LSTMState(hidden=h, cell=c)``. Parameters:
    ``w_x``, ``w_h`` (``gate_layout(layout).w_shape``), ``b`` (``(4 * hidden,)``).
    """

    def __init__(self, layout, block_size: int | None = None, input_layout=None,
                 forget_bias: float = 1.0, dtype=None, param_dtype=jnp.float32, precision=None,
                 name: str | None = None):
        super().__init__(name=name)
        self.layout = _common.as_layout(layout, block_size)
        self.input_layout = (None if input_layout is None
                             else _common.as_layout(input_layout, self.layout.block_size))
        _common.check_lstm_layouts(self.layout, self.input_layout)
        self.hidden_size = self.layout.shape[1]
        self.forget_bias = forget_bias
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision

    def __call__(self, inputs, prev_state: hk.LSTMState):
        n_in = inputs.shape[-1]
        layout, input_layout = self.layout, self.input_layout
        w_x = hk.get_parameter("w_x", _input_shape(n_in, layout, input_layout), self.param_dtype,
                               init=lambda s, d: _common.lstm_init_input(
                                   hk.next_rng_key(), n_in, layout, input_layout, d))
        w_h = hk.get_parameter("w_h", _common.gate_layout(layout).w_shape, self.param_dtype,
                               init=lambda s, d: _common.lstm_init_recurrent(
                                   hk.next_rng_key(), n_in, layout, input_layout, d))
        b = hk.get_parameter("b", (4 * self.hidden_size,), self.param_dtype,
                             init=lambda s, d: _common.lstm_init_bias(
                                 self.hidden_size, d, self.forget_bias))
        c, h = _common.lstm_apply(inputs, prev_state.hidden, prev_state.cell, w_x, w_h, b,
                                  layout, input_layout, dtype=self.dtype, precision=self.precision)
        return h, hk.LSTMState(hidden=h, cell=c)

    def initial_state(self, batch_size: int | None):
        dtype = self.dtype if self.dtype is not None else self.param_dtype
        shape = () if batch_size is None else (batch_size,)
        c, h = _common.lstm_zero_state(shape, self.hidden_size, dtype)
        return hk.LSTMState(hidden=h, cell=c)


def _input_shape(n_in, layout, input_layout):
    if input_layout is None:
        return (n_in, 4 * layout.shape[1])
    return _common.gate_layout(input_layout).w_shape
