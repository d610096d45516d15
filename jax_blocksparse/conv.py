"""Convolutions that are block-sparse over input and output features, dense over space.

``conv`` validates and normalises its arguments, then binds one primitive,
``ops.conv_p``, on 3 spatial dimensions (1-D and 2-D get singleton dimensions
with kernel 1, stride 1, dilation 1 and no padding). Its transposes are
``ops.conv_dx_p`` and ``ops.conv_dw_p``; see ops.py. The CPU kernels and the
CUDA forward and input-gradient kernel are implicit GEMMs that gather each
tap's input rows on the fly.

This module also holds the patch-based composite that implements the three
primitives with the block-sparse matmul primitives (the CUDA lowering of the
weight gradient, of float64, and of builds without the CUDA convolution
kernel): a convolution with filter taps
``t`` is one block-sparse product over a *stacked* reduction,
``y = patches(x) @ W_stacked``, where ``patches`` puts the input window of
every tap side by side (``(..., T * C)``) and ``W_stacked`` is the
``(T * C, K)`` matrix whose ``t``-th slab is tap ``t``'s filter. Every slab has
the layout's mask, so the stacked layout is the mask tiled ``T`` times
vertically, and its row-major block order is exactly ``w`` with the tap axis
moved in front. The patches are materialised (``T`` times the input).
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

from . import ops, shapes
from .api import matmul
from .reference import conv_pads
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


def _patches(x, kernel, strides, dilation, pad_lo, in_spatial, out_spatial):
    """``(G, Nb * P, T * C)`` for ``x`` (G, Nb, D, H, W, C): each tap's strided window, taps major."""
    pads = conv_pads(kernel, strides, dilation, pad_lo, in_spatial, out_spatial)
    x = lax.pad(x, jnp.zeros((), x.dtype),
                [(0, 0, 0), (0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
    windows = []
    for tap in itertools.product(*(range(k) for k in kernel)):
        start = [0, 0, *(t * d for t, d in zip(tap, dilation)), 0]
        limit = [*x.shape[:2], *(s0 + (o - 1) * s + 1 if o > 0 else s0
                                 for s0, o, s in zip(start[2:5], out_spatial, strides)), x.shape[-1]]
        windows.append(lax.slice(x, start, limit, (1, 1, *strides, 1)))
    stacked = jnp.stack(windows, axis=-2)  # (G, Nb, *out, T, C)
    groups, batch = x.shape[:2]
    return stacked.reshape(groups, batch * math.prod(out_spatial), len(windows) * x.shape[-1])


def _stacked_weights(w):
    """``(G, nnz, T, bs, bs)`` -> ``(G, T * nnz, bs, bs)``, the stacked layout's block order."""
    groups, nnz, taps, bs, _ = w.shape
    return jnp.moveaxis(w, 2, 1).reshape(groups, taps * nnz, bs, bs)


def _geometry(params):
    return {name: params[name] for name in ("kernel", "strides", "dilation", "pad_lo",
                                            "in_spatial", "out_spatial")}


def composite_conv(x, w, *, layout, precision, out_dtype, **params):
    """``ops.conv_p`` from ``bsmm_p`` on materialised patches."""
    taps = math.prod(params["kernel"])
    patches = _patches(x, **_geometry(params))
    y = ops.bsmm(patches, _stacked_weights(w), layout=_stacked_layout(layout, taps),
                 precision=precision, out_dtype=out_dtype)
    return y.reshape(*x.shape[:2], *params["out_spatial"], layout.shape[1])


def composite_conv_dx(dy, w, *, layout, precision, out_dtype, **params):
    """``ops.conv_dx_p``: ``bsmm_t_p`` into patch space, then the patches' transpose (float32 or
    float64, so the taps' overlapping windows are summed at full precision)."""
    taps = math.prod(params["kernel"])
    acc = np.dtype(np.float64) if dy.dtype == shapes.FLOAT64 else shapes.FLOAT32
    groups, batch = dy.shape[:2]
    rows = math.prod(dy.shape[1:-1])
    grads = ops.bsmm_t(dy.reshape(groups, rows, dy.shape[-1]), _stacked_weights(w),
                       layout=_stacked_layout(layout, taps), precision=precision, out_dtype=acc)
    x_struct = jax.ShapeDtypeStruct((groups, batch, *params["in_spatial"], layout.shape[0]), acc)
    (dx,) = jax.linear_transpose(lambda x: _patches(x, **_geometry(params)), x_struct)(grads)
    return dx.astype(out_dtype)


def composite_conv_dw(x, dy, *, layout, precision, out_dtype, **params):
    """``ops.conv_dw_p`` from ``sampled_p`` on materialised patches."""
    taps = math.prod(params["kernel"])
    groups = x.shape[0]
    patches = _patches(x, **_geometry(params))
    stacked = ops.sampled(patches, dy.reshape(groups, patches.shape[1], dy.shape[-1]),
                          layout=_stacked_layout(layout, taps), precision=precision,
                          out_dtype=out_dtype)  # (G, T * nnz, bs, bs)
    bs = layout.block_size
    return jnp.moveaxis(stacked.reshape(groups, taps, layout.nnz, bs, bs), 1, 2)


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

    out_spatial = tuple(max(0, (size + lo + hi - k) // s + 1) for size, (lo, hi), k, s
                        in zip(x.shape[1:-1], pads, effective_kernel, strides))
    dtype = x.dtype
    kernel_dtype, final_dtype = shapes.result_dtypes(where, dtype, preferred_element_type)

    if all(k == 1 for k in kernel_size) and all(p == (0, 0) for p in pads):
        # A 1x1 convolution is exactly one product (strides subsample the input).
        if any(s > 1 for s in strides):
            x = x[(slice(None), *(slice(None, None, s) for s in strides))]
        return matmul(x, w.reshape(layout.w_shape), layout, precision=precision,
                      preferred_element_type=preferred_element_type)

    lead = (1,) * (3 - nd)  # 1-D and 2-D become 3-D with singleton leading spatial dimensions
    fill = lambda values, one: (one,) * (3 - nd) + tuple(values)
    batch, bs = x.shape[0], layout.block_size
    y = ops.conv(x.reshape(1, batch, *lead, *x.shape[1:]),
                 w.reshape(1, layout.nnz, math.prod(kernel_size), bs, bs),
                 layout=layout, kernel=fill(kernel_size, 1), strides=fill(strides, 1),
                 dilation=fill(dilation, 1), pad_lo=fill((lo for lo, _ in pads), 0),
                 in_spatial=fill(x.shape[1:-1], 1), out_spatial=fill(out_spatial, 1),
                 precision=shapes.normalize_precision(precision), out_dtype=kernel_dtype)
    y = y.reshape(batch, *out_spatial, layout.shape[1])
    return y if y.dtype == final_dtype else y.astype(final_dtype)
