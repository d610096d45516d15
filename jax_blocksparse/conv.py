"""Convolutions that are block-sparse over input and output features, dense over space.

A convolution with filter taps ``t`` is one block-sparse product over a
*stacked* reduction: ``y = patches(x) @ W_stacked`` where ``patches`` puts the
input window of every tap side by side (``(..., T * C)``) and ``W_stacked`` is
the ``(T * C, K)`` matrix whose ``t``-th slab is tap ``t``'s filter. Every slab
has the layout's mask, so the stacked layout is the mask tiled ``T`` times
vertically, and its row-major block order is exactly ``w`` with the tap axis
moved in front. The matmul primitives then supply every kernel (CUDA, CPU,
fallback) and every transformation rule; a 1x1 convolution *is* the matmul.

The price is that the patches are materialised (``T`` times the input), where a
fused implicit-GEMM kernel would gather them on chip.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import jax.numpy as jnp
from jax import lax

from . import shapes
from .api import matmul
from .layout import Layout


def conv_weight_shape(layout: Layout, kernel_size) -> tuple:
    """``(nnz, *kernel_size, bs, bs)``: ``w[k]`` holds the taps of block ``np.argwhere(mask)[k]``."""
    kernel_size = tuple(int(k) for k in np.atleast_1d(kernel_size))
    return (layout.nnz, *kernel_size, layout.block_size, layout.block_size)


def conv_dense_filter(w, layout: Layout):
    """The dense ``(*kernel_size, C, K)`` filter (HWIO order) with the blocks in place."""
    w = jnp.asarray(w)
    taps_first = jnp.moveaxis(w, 0, -3)  # (*kernel_size, nnz, bs, bs)
    return layout.todense(taps_first)


@functools.lru_cache(maxsize=256)
def _stacked_layout(layout: Layout, taps: int) -> Layout:
    return Layout(np.tile(layout.mask, (taps, 1)), layout.block_size)


def _tuple(value, nd, name, where):
    values = tuple(int(v) for v in np.atleast_1d(value))
    if len(values) == 1:
        values *= nd
    if len(values) != nd or any(v < 1 for v in values):
        raise ValueError(f"{where}: {name} must be a positive int or a tuple of {nd}; got {value!r}")
    return values


def _explicit_padding(padding, in_spatial, effective_kernel, strides, where):
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID", "SAME_LOWER"):
            raise ValueError(f"{where}: padding must be 'SAME', 'VALID' or ((lo, hi), ...); got {padding!r}")
        return tuple(lax.padtype_to_pads(in_spatial, effective_kernel, strides, padding.upper()))
    try:
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: padding must be 'SAME', 'VALID' or ((lo, hi), ...); got {padding!r}") from err
    if len(pads) != len(in_spatial):
        raise ValueError(f"{where}: padding needs {len(in_spatial)} (lo, hi) pairs for "
                         f"{len(in_spatial)} spatial dimensions; got {padding!r}")
    return pads


def _patches(x, kernel_size, strides, dilation, pads):
    """``(N, *out_spatial, T * C)``: each tap's strided window of ``x``, taps major."""
    nd = len(kernel_size)
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
    padded = x.shape[1:-1]
    out_spatial = tuple(max(0, (p - (k - 1) * d - 1) // s + 1)
                        for p, k, d, s in zip(padded, kernel_size, dilation, strides))
    windows = []
    for tap in itertools.product(*(range(k) for k in kernel_size)):
        start = [0, *(t * d for t, d in zip(tap, dilation)), 0]
        limit = [x.shape[0], *(s0 + (o - 1) * s + 1 if o > 0 else s0
                               for s0, o, s in zip(start[1:-1], out_spatial, strides)), x.shape[-1]]
        windows.append(lax.slice(x, start, limit, (1, *strides, 1)))
    stacked = jnp.stack(windows, axis=-2)  # (N, *out, T, C)
    return stacked.reshape(*stacked.shape[:nd + 1], len(windows) * x.shape[-1])


def conv(x, w, layout: Layout, *, strides=1, padding="SAME", dilation=1, precision=None,
         preferred_element_type=None):
    """Block-sparse convolution, channels last.

    ``x``: ``(N, *spatial, C)`` with 1 to 3 spatial dimensions; ``w``:
    ``(layout.nnz, *kernel_size, bs, bs)``. The result equals
    ``lax.conv_general_dilated(x, conv_dense_filter(w, layout), strides, padding,
    rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))``
    (or its 1-D / 3-D analogue).
    """
    where = "jax_blocksparse.conv"
    shapes.check_layout(layout, where)
    x, w = jnp.asarray(x), jnp.asarray(w)
    nd = x.ndim - 2
    if not 1 <= nd <= 3:
        raise ValueError(f"{where}: x must be (N, *spatial, C) with 1 to 3 spatial dimensions; "
                         f"got shape {x.shape}")
    rows, _ = layout.shape
    shapes.check_features(where, "x", x.shape, rows, "C = layout.shape[0]")
    kernel_size = tuple(w.shape[1:-2])
    if w.ndim != nd + 3 or w.shape != conv_weight_shape(layout, kernel_size):
        raise ValueError(f"{where}: w has shape {w.shape}; for {nd} spatial dimensions it must be "
                         f"(nnz={layout.nnz}, *kernel_size ({nd} ints), {layout.block_size}, "
                         f"{layout.block_size})")
    shapes.common_dtype(where, x=x, w=w)
    strides = _tuple(strides, nd, "strides", where)
    dilation = _tuple(dilation, nd, "dilation", where)
    effective_kernel = tuple((k - 1) * d + 1 for k, d in zip(kernel_size, dilation))
    pads = _explicit_padding(padding, x.shape[1:-1], effective_kernel, strides, where)

    taps = math.prod(kernel_size)
    patches = _patches(x, kernel_size, strides, dilation, pads)
    bs = layout.block_size
    w_stacked = jnp.moveaxis(w.reshape(layout.nnz, taps, bs, bs), 1, 0).reshape(taps * layout.nnz, bs, bs)
    return matmul(patches, w_stacked, _stacked_layout(layout, taps), precision=precision,
                  preferred_element_type=preferred_element_type)
