"""Equinox layers over the block-sparse products.

    layer = BlockSparseLinear(layout, key=jax.random.key(0))
    y = layer(x)                     # any leading dimensions: (..., C) -> (..., N); no vmap needed

Parameters are plain array fields (``weight`` of shape ``layout.w_shape``, ``bias`` of shape
``(N,)``); the layout and dtypes are static fields, so ``eqx.filter_jit``/``filter_grad`` and
``eqx.tree_serialise_leaves`` see only the arrays.
"""
from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from . import _common
from ..layout import Layout

__all__ = ["BlockSparseLinear", "BlockSparseConv", "SparseLSTMCell"]


class BlockSparseLinear(eqx.Module):
    """``y = x @ W + b`` with a block-sparse ``W``; ``layout`` is a Layout, or a block mask with
    ``block_size``. ``weight`` starts normal with std ``1 / sqrt(fan_in)`` per output column
    (true fan-in of the layout); ``bias`` starts at zero. Inputs may have any leading dims."""

    weight: jax.Array
    bias: jax.Array | None
    layout: Layout = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)
    precision: Any = eqx.field(static=True)

    def __init__(self, layout, *, block_size: int | None = None, use_bias: bool = True,
                 dtype=None, param_dtype=jnp.float32, precision=None, key):
        self.layout = _common.as_layout(layout, block_size)
        self.weight, self.bias = _common.linear_init(key, self.layout, param_dtype, use_bias)
        self.dtype, self.precision = dtype, precision

    def __call__(self, x, *, key=None):
        return _common.linear_apply(x, self.weight, self.bias, self.layout, dtype=self.dtype,
                                    precision=self.precision)


class BlockSparseConv(eqx.Module):
    """Convolution whose filter is block-sparse over (input, output) channels, dense over space.

    ``layout`` is a ``(C, K)`` Layout, or a block mask with ``block_size``; ``kernel_size`` is 1 to
    3 ints (a bare int is a 1-D kernel); ``strides``, ``padding``, ``dilation`` as
    :func:`jax_blocksparse.conv`. Inputs are channels last, ``(*batch, *spatial, C)``, with any
    number of leading batch dims (none included), so no vmap is needed. ``weight``
    (``conv_weight_shape(layout, kernel_size)``) starts normal with std ``1 / sqrt(fan_in)`` per
    output channel (true fan-in * prod(kernel_size)); ``bias`` (``(K,)``) starts at zero.
    """

    weight: jax.Array
    bias: jax.Array | None
    layout: Layout = eqx.field(static=True)
    kernel_size: tuple = eqx.field(static=True)
    strides: Any = eqx.field(static=True)
    padding: Any = eqx.field(static=True)
    dilation: Any = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)
    precision: Any = eqx.field(static=True)

    def __init__(self, layout, kernel_size, *, block_size: int | None = None, strides=1,
                 padding="SAME", dilation=1, use_bias: bool = True, dtype=None,
                 param_dtype=jnp.float32, precision=None, key):
        self.layout = _common.as_layout(layout, block_size)
        self.kernel_size = _common.conv_kernel_size(kernel_size)
        self.strides, self.padding = _hashable(strides), _common.conv_padding(padding)
        self.dilation = _hashable(dilation)
        self.weight, self.bias = _common.conv_init(key, self.layout, self.kernel_size, param_dtype,
                                                   use_bias)
        self.dtype, self.precision = dtype, precision

    def __call__(self, x, *, key=None):
        return _common.conv_apply(x, self.weight, self.bias, self.layout, strides=self.strides,
                                  padding=self.padding, dilation=self.dilation, dtype=self.dtype,
                                  precision=self.precision)


def _hashable(value):
    return value if isinstance(value, int) else tuple(int(v) for v in value)


class SparseLSTMCell(eqx.Module):
    """LSTM cell with a block-sparse recurrent product.

    ``layout`` is the square ``(hidden, hidden)`` recurrent layout; the gates ``[i, f, g, o]``
    share it through one block-sparse matrix over the mask tiled four times along the columns
    (:func:`jax_blocksparse.nn.gate_layout`). The input projection is dense unless
    ``input_layout`` (``(input_size, hidden)``) is given. Call convention as
    ``eqx.nn.LSTMCell``: ``h, c = cell(x, (h, c))``, but inputs may carry leading batch dims.
    Fields: ``weight_ih``, ``weight_hh`` (``gate_layout(layout).w_shape``), ``bias``
    (``(4 * hidden,)``, forget quarter = ``forget_bias``).
    """

    weight_ih: jax.Array
    weight_hh: jax.Array
    bias: jax.Array
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    layout: Layout = eqx.field(static=True)
    input_layout: Layout | None = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)
    precision: Any = eqx.field(static=True)

    def __init__(self, input_size: int, layout, *, block_size: int | None = None,
                 input_layout=None, forget_bias: float = 1.0, dtype=None,
                 param_dtype=jnp.float32, precision=None, key):
        self.layout = _common.as_layout(layout, block_size)
        self.input_layout = (None if input_layout is None
                             else _common.as_layout(input_layout, self.layout.block_size))
        _common.check_lstm_layouts(self.layout, self.input_layout)
        self.input_size, self.hidden_size = input_size, self.layout.shape[1]
        self.weight_ih, self.weight_hh, self.bias = _common.lstm_init(
            key, input_size, self.layout, self.input_layout, param_dtype, forget_bias)
        self.dtype, self.precision = dtype, precision

    def __call__(self, x, hidden, *, key=None):
        h, c = hidden
        c, h = _common.lstm_apply(x, h, c, self.weight_ih, self.weight_hh, self.bias,
                                  self.layout, self.input_layout, dtype=self.dtype,
                                  precision=self.precision)
        return h, c

    def initial_state(self, batch_shape=()):
        """Zero ``(h, c)`` of shape ``(*batch_shape, hidden)``."""
        dtype = self.dtype if self.dtype is not None else self.weight_hh.dtype
        c, h = _common.lstm_zero_state(batch_shape, self.hidden_size, dtype)
        return h, c
