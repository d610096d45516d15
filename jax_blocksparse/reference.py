"""Pure jax.numpy versions of the three products.

They are the lowering on platforms without kernels (and on any platform
whose extension failed to build). They gather and use dense products only:
no scatter-add, so they stay deterministic too.
"""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

from .shapes import FLOAT64, HIGHEST


def _accumulator(dtype):
    return jnp.float64 if np.dtype(dtype) == FLOAT64 else jnp.float32


def lax_precision(precision):
    return lax.Precision.HIGHEST if precision == HIGHEST else lax.Precision.DEFAULT


def bsmm(x, w, *, layout, precision, out_dtype, transpose=False):
    """``x @ W`` (``transpose=False``) or ``x @ W.T``, with ``W`` densified per group."""
    dense = layout.todense(w)  # (G, C, N)
    if transpose:
        dense = jnp.swapaxes(dense, -1, -2)
    out = jnp.matmul(x, dense, precision=lax_precision(precision),
                     preferred_element_type=_accumulator(x.dtype))
    return out.astype(out_dtype)


def bsmm_t(dy, w, *, layout, precision, out_dtype):
    return bsmm(dy, w, layout=layout, precision=precision, out_dtype=out_dtype, transpose=True)


def sampled(x, dy, *, layout, precision, out_dtype):
    """Blocks of ``x.T @ dy`` at the layout's non-zero positions."""
    groups, rows_m, _ = x.shape
    bs = layout.block_size
    block_rows, block_cols = layout.grid_shape
    x_blocks = x.reshape(groups, rows_m, block_rows, bs)[:, :, layout.coords[:, 0], :]
    dy_blocks = dy.reshape(groups, rows_m, block_cols, bs)[:, :, layout.coords[:, 1], :]
    out = jnp.einsum("gmkr,gmkc->gkrc", x_blocks, dy_blocks, precision=lax_precision(precision),
                     preferred_element_type=_accumulator(x.dtype))
    return out.astype(out_dtype)


# -- convolution ---------------------------------------------------------------------------------
# Internal shapes (see ops.py): x (G, Nb, D, H, W, C), w (G, nnz, T, bs, bs). The dense filter of
# each group goes through lax.conv_general_dilated in the accumulator dtype; the two adjoints are
# its linear transposes, so all three agree with XLA's own convolution by construction.
_DIMENSION_NUMBERS_3D = ("NDHWC", "DHWIO", "NDHWC")


def conv_pads(kernel, strides, dilation, pad_lo, in_spatial, out_spatial):
    """``((lo, hi), ...)`` of the forward convolution; ``hi`` follows from the output size."""
    return tuple((lo, (o - 1) * s + (k - 1) * d + 1 - i - lo)
                 for k, s, d, lo, i, o in zip(kernel, strides, dilation, pad_lo, in_spatial,
                                              out_spatial))


def _dense_filters(w, layout, kernel):
    """``(G, nnz, T, bs, bs)`` -> ``(G, kd, kh, kw, C, K)``."""
    dense = layout.todense(jnp.moveaxis(w, 2, 1))  # (G, T, C, K)
    return dense.reshape(w.shape[0], *kernel, *layout.shape)


def _conv_one(x, filt, *, kernel, strides, dilation, pad_lo, in_spatial, out_spatial, precision):
    """One group: ``x`` (Nb, D, H, W, C) with ``filt`` (kd, kh, kw, C, K), padding (or cropping,
    for negative pads) applied explicitly so that any pad is supported."""
    pads = conv_pads(kernel, strides, dilation, pad_lo, in_spatial, out_spatial)
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
    return lax.conv_general_dilated(x, filt, tuple(strides), "VALID", rhs_dilation=tuple(dilation),
                                    dimension_numbers=_DIMENSION_NUMBERS_3D,
                                    precision=lax_precision(precision))


def _geometry(params):
    return {name: params[name] for name in ("kernel", "strides", "dilation", "pad_lo",
                                            "in_spatial", "out_spatial", "precision")}


def conv(x, w, *, layout, out_dtype, **params):
    acc = _accumulator(x.dtype)
    filt = _dense_filters(w.astype(acc), layout, params["kernel"])
    out = jax.vmap(lambda x, f: _conv_one(x, f, **_geometry(params)))(x.astype(acc), filt)
    return out.astype(out_dtype)


def conv_dx(dy, w, *, layout, out_dtype, **params):
    acc = _accumulator(dy.dtype)
    filt = _dense_filters(w.astype(acc), layout, params["kernel"])
    x_shape = (dy.shape[1], *params["in_spatial"], layout.shape[0])

    def one(dy, f):
        forward = lambda x: _conv_one(x, f, **_geometry(params))
        return jax.linear_transpose(forward, jax.ShapeDtypeStruct(x_shape, acc))(dy)[0]

    return jax.vmap(one)(dy.astype(acc), filt).astype(out_dtype)


def conv_dw(x, dy, *, layout, out_dtype, **params):
    acc = _accumulator(x.dtype)
    kernel = tuple(params["kernel"])
    f_shape = (*kernel, *layout.shape)

    def one(x, dy):
        forward = lambda f: _conv_one(x, f, **_geometry(params))
        return jax.linear_transpose(forward, jax.ShapeDtypeStruct(f_shape, acc))(dy)[0]

    dense = jax.vmap(one)(x.astype(acc), dy.astype(acc))  # (G, kd, kh, kw, C, K)
    taps = int(np.prod(kernel))
    blocks = layout.fromdense(dense.reshape(x.shape[0], taps, *layout.shape))  # (G, T, nnz, b, b)
    return jnp.moveaxis(blocks, 1, 2).astype(out_dtype)
