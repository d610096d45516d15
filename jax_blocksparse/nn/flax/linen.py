"""Flax Linen variants of the block-sparse layers (see ``jax_blocksparse.nn.flax`` for NNX).

    layer = BlockSparseLinear(layout)
    params = layer.init(jax.random.key(0), x)   # {"params": {"kernel": (nnx, bs, bs), "bias": (N,)}}
    y = layer.apply(params, x)
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import flax.linen as nn

from .. import _common

__all__ = ["BlockSparseLinear", "BlockSparseConv", "SparseLSTMCell"]


class BlockSparseLinear(nn.Module):
    """``y = x @ W + b`` with a block-sparse ``W``; parameters ``kernel`` (``layout.w_shape``) and
    ``bias`` (``(N,)``). ``layout`` is a Layout, or a block mask with ``block_size``. The kernel is
    normal with std ``1 / sqrt(fan_in)`` per output column (true fan-in of the layout)."""

    layout: Any
    block_size: int | None = None
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        layout = _common.as_layout(self.layout, self.block_size)
        kernel = self.param("kernel", lambda key: _common.sparse_normal(key, layout, self.param_dtype))
        bias = (self.param("bias", lambda key: jnp.zeros((layout.shape[1],), self.param_dtype))
                if self.use_bias else None)
        return _common.linear_apply(x, kernel, bias, layout, dtype=self.dtype,
                                    precision=self.precision)


class BlockSparseConv(nn.Module):
    """Convolution with a filter block-sparse over channels (see
    ``jax_blocksparse.nn.flax.BlockSparseConv``); inputs ``(*batch, *spatial, C)``. Parameters
    ``kernel`` (``conv_weight_shape(layout, kernel_size)``) and ``bias`` (``(K,)``). The kernel is
    normal with std ``1 / sqrt(fan_in)`` per output channel (true fan-in * prod(kernel_size))."""

    layout: Any
    kernel_size: Any
    block_size: int | None = None
    strides: Any = 1
    padding: Any = "SAME"
    dilation: Any = 1
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        layout = _common.as_layout(self.layout, self.block_size)
        kernel_size = _common.conv_kernel_size(self.kernel_size)
        kernel = self.param("kernel", lambda key: _common.conv_normal(
            key, layout, kernel_size, self.param_dtype))
        bias = (self.param("bias", lambda key: jnp.zeros((layout.shape[1],), self.param_dtype))
                if self.use_bias else None)
        return _common.conv_apply(x, kernel, bias, layout, strides=self.strides,
                                  padding=self.padding, dilation=self.dilation, dtype=self.dtype,
                                  precision=self.precision)


class SparseLSTMCell(nn.RNNCellBase):
    """LSTM cell with a block-sparse recurrent product; see ``jax_blocksparse.nn.flax.SparseLSTMCell``
    for the gate layout. Call convention as ``flax.linen.LSTMCell``: ``(c, h), h = cell((c, h), x)``;
    works with ``nn.RNN``. Parameters: ``input_kernel``, ``recurrent_kernel``, ``bias``."""

    layout: Any
    block_size: int | None = None
    input_layout: Any = None
    forget_bias: float = 1.0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None

    def _layouts(self):
        layout = _common.as_layout(self.layout, self.block_size)
        input_layout = (None if self.input_layout is None
                        else _common.as_layout(self.input_layout, layout.block_size))
        _common.check_lstm_layouts(layout, input_layout)
        return layout, input_layout

    @nn.compact
    def __call__(self, carry, inputs):
        layout, input_layout = self._layouts()
        c, h = carry
        n_in = inputs.shape[-1]
        w_x = self.param("input_kernel", lambda key: _common.lstm_init_input(
            key, n_in, layout, input_layout, self.param_dtype))
        w_h = self.param("recurrent_kernel", lambda key: _common.lstm_init_recurrent(
            key, n_in, layout, input_layout, self.param_dtype))
        b = self.param("bias", lambda key: _common.lstm_init_bias(
            layout.shape[1], self.param_dtype, self.forget_bias))
        new_c, new_h = _common.lstm_apply(inputs, h, c, w_x, w_h, b, layout, input_layout,
                                          dtype=self.dtype, precision=self.precision)
        return (new_c, new_h), new_h

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        """Zero ``(c, h)`` for inputs of shape ``(*batch, features)``."""
        layout, _ = self._layouts()
        dtype = self.dtype if self.dtype is not None else self.param_dtype
        return _common.lstm_zero_state(input_shape[:-1], layout.shape[1], dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1
