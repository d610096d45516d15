"""Pure jax.numpy versions of the three products.

They are the lowering on platforms without kernels (and on any platform
whose extension failed to build). They gather and use dense products only:
no scatter-add, so they stay deterministic too.
"""
from __future__ import annotations

import numpy as np
import jax.numpy as jnp
from jax import lax

from .shapes import FLOAT64, HIGHEST


def _accumulator(dtype):
    return jnp.float64 if np.dtype(dtype) == FLOAT64 else jnp.float32


def _lax_precision(precision):
    return lax.Precision.HIGHEST if precision == HIGHEST else lax.Precision.DEFAULT


def bsmm(x, w, *, layout, precision, out_dtype, transpose=False):
    """``x @ W`` (``transpose=False``) or ``x @ W.T``, with ``W`` densified per group."""
    dense = layout.todense(w)  # (G, C, N)
    if transpose:
        dense = jnp.swapaxes(dense, -1, -2)
    out = jnp.matmul(x, dense, precision=_lax_precision(precision),
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
    out = jnp.einsum("gmkr,gmkc->gkrc", x_blocks, dy_blocks, precision=_lax_precision(precision),
                     preferred_element_type=_accumulator(x.dtype))
    return out.astype(out_dtype)
