"""Flax NNX layers over the block-sparse products (Linen variants: ``.linen``).

    from flax import nnx
    from jax_blocksparse.nn.flax import BlockSparseLinear
    layer = BlockSparseLinear(layout, rngs=nnx.Rngs(0))     # kernel: nnx.Param of layout.w_shape
    y = layer(x)                                            # (..., C) -> (..., N)

Parameters are plain arrays (``kernel`` of shape ``layout.w_shape``, ``bias`` of shape ``(N,)``)
inside ``nnx.Param``, so optax, orbax and sharding treat them like any other parameter. The
layout is static module state (it hashes by value).
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from .. import _common
from ...layout import Layout

__all__ = ["BlockSparseLinear", "BlockSparseConv", "SparseLSTMCell"]


class BlockSparseLinear(nnx.Module):
    """``y = x @ W + b`` with a block-sparse ``W`` of shape ``layout.shape``.

    Args:
      layout: a :class:`~jax_blocksparse.Layout`, or a boolean block mask with ``block_size``.
      use_bias: add a ``(N,)`` bias (zeros at init).
      dtype: compute dtype (default: promote the input and parameter dtypes).
      param_dtype: parameter dtype.
      precision: passed to :func:`jax_blocksparse.matmul`.
      rngs: ``nnx.Rngs``; the kernel is normal with std ``1 / sqrt(fan_in)`` per output column,
        ``fan_in`` = non-zero input blocks reaching that column * block_size.
    """

    def __init__(self, layout, *, block_size: int | None = None, use_bias: bool = True,
                 dtype=None, param_dtype=jnp.float32, precision=None, rngs: nnx.Rngs):
        self.layout: Layout = _common.as_layout(layout, block_size)
        self.in_features, self.out_features = self.layout.shape
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        w, b = _common.linear_init(rngs.params(), self.layout, param_dtype, use_bias)
        self.kernel = nnx.Param(w)
        self.bias = nnx.Param(b) if use_bias else None

    def __call__(self, x):
        bias = None if self.bias is None else self.bias[...]
        return _common.linear_apply(x, self.kernel[...], bias, self.layout,
                                    dtype=self.dtype, precision=self.precision)


class BlockSparseConv(nnx.Module):
    """Convolution whose filter is block-sparse over (input, output) channels, dense over space.

    ``y = jax_blocksparse.conv(x, kernel, layout, ...) + bias`` for ``x`` of shape
    ``(*batch, *spatial, C)`` (channels last, any number of leading batch dims).

    Args:
      layout: a :class:`~jax_blocksparse.Layout` of shape ``(C, K)``, or a boolean block mask
        with ``block_size``.
      kernel_size: 1 to 3 ints (a bare int is a 1-D kernel), one per spatial dimension.
      strides, padding, dilation: as :func:`jax_blocksparse.conv` (``"SAME"``, ``"VALID"`` or
        ``((lo, hi), ...)`` padding; ``dilation`` is the filter dilation).
      use_bias: add a ``(K,)`` bias (zeros at init).
      dtype, param_dtype, precision: as :class:`BlockSparseLinear`.
      rngs: ``nnx.Rngs``; ``kernel`` (shape ``conv_weight_shape(layout, kernel_size)``) is normal
        with std ``1 / sqrt(fan_in)`` per output channel, ``fan_in`` = non-zero input blocks
        reaching its block-column * block_size * prod(kernel_size).
    """

    def __init__(self, layout, kernel_size, *, block_size: int | None = None, strides=1,
                 padding="SAME", dilation=1, use_bias: bool = True, dtype=None,
                 param_dtype=jnp.float32, precision=None, rngs: nnx.Rngs):
        self.layout: Layout = _common.as_layout(layout, block_size)
        self.in_features, self.out_features = self.layout.shape
        self.kernel_size = _common.conv_kernel_size(kernel_size)
        self.strides, self.padding, self.dilation = strides, _common.conv_padding(padding), dilation
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        w, b = _common.conv_init(rngs.params(), self.layout, self.kernel_size, param_dtype, use_bias)
        self.kernel = nnx.Param(w)
        self.bias = nnx.Param(b) if use_bias else None

    def __call__(self, x):
        bias = None if self.bias is None else self.bias[...]
        return _common.conv_apply(x, self.kernel[...], bias, self.layout, strides=self.strides,
                                  padding=self.padding, dilation=self.dilation, dtype=self.dtype,
                                  precision=self.precision)


class SparseLSTMCell(nnx.Module):
    """An LSTM cell whose recurrent product is block-sparse.

    ``layout`` is the square ``(hidden, hidden)`` recurrent layout. The four gates ``[i, f, g, o]``
    share it: their weights are one block-sparse matrix over the mask tiled four times along the
    columns (:func:`jax_blocksparse.nn.gate_layout`), so a step runs one block-sparse product for
    all gates. The input projection is dense ``(in_features, 4 * hidden)`` by default, or
    block-sparse with ``input_layout`` (an ``(in_features, hidden)`` layout, tiled the same way).

    Call convention as ``flax.nnx.LSTMCell``: ``(c, h), y = cell((c, h), x)`` with ``y = h``;
    works with ``nnx.RNN``. Parameters: ``input_kernel``, ``recurrent_kernel`` (shape
    ``gate_layout(layout).w_shape``) and ``bias`` (``(4 * hidden,)``, forget quarter =
    ``forget_bias``). Initial weights are normal with std ``1 / sqrt(total fan-in)`` per gate column.
    """

    def __init__(self, in_features: int, layout, *, block_size: int | None = None,
                 input_layout=None, forget_bias: float = 1.0, dtype=None,
                 param_dtype=jnp.float32, precision=None, rngs: nnx.Rngs):
        self.layout: Layout = _common.as_layout(layout, block_size)
        self.input_layout = (None if input_layout is None
                             else _common.as_layout(input_layout, self.layout.block_size))
        _common.check_lstm_layouts(self.layout, self.input_layout)
        self.in_features, self.hidden_features = in_features, self.layout.shape[1]
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        w_x, w_h, b = _common.lstm_init(rngs.params(), in_features, self.layout, self.input_layout,
                                        param_dtype, forget_bias)
        self.input_kernel = nnx.Param(w_x)
        self.recurrent_kernel = nnx.Param(w_h)
        self.bias = nnx.Param(b)

    @property
    def num_feature_axes(self) -> int:
        return 1

    def __call__(self, carry, inputs):
        c, h = carry
        new_c, new_h = _common.lstm_apply(
            inputs, h, c, self.input_kernel[...], self.recurrent_kernel[...], self.bias[...],
            self.layout, self.input_layout, dtype=self.dtype, precision=self.precision)
        return (new_c, new_h), new_h

    def initialize_carry(self, input_shape, rngs=None):
        """Zero ``(c, h)`` for inputs of shape ``(*batch, in_features)``."""
        dtype = self.dtype if self.dtype is not None else self.param_dtype
        return _common.lstm_zero_state(input_shape[:-1], self.hidden_features, dtype)
