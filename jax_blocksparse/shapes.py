"""Trace-time validation of the public products, and their dtype and precision rules."""
from __future__ import annotations

import math

import numpy as np
import jax.numpy as jnp
from jax import lax

from .layout import Layout

# float64 runs through the same kernels, accumulating in float64.
SUPPORTED_DTYPES = tuple(np.dtype(d) for d in (jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64))
FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)

DEFAULT, HIGHEST = "default", "highest"


def check_layout(layout, where: str) -> Layout:
    if not isinstance(layout, Layout):
        raise TypeError(f"{where}: layout must be a jax_blocksparse.Layout, got {type(layout).__name__}")
    return layout


def _check_dtype(name: str, dtype, where: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{where}: {name} has dtype {dtype}; supported dtypes are "
            f"{', '.join(str(d) for d in SUPPORTED_DTYPES)}")
    return dtype


def common_dtype(where: str, **operands) -> np.dtype:
    """The one dtype every operand shares; mixed or unsupported dtypes are errors."""
    dtypes = {name: _check_dtype(name, op.dtype, where) for name, op in operands.items()}
    if len(set(dtypes.values())) != 1:
        described = ", ".join(f"{name}: {dtype}" for name, dtype in dtypes.items())
        raise TypeError(f"{where}: operands must share one dtype; got {described}. "
                        "Cast them explicitly (e.g. x.astype(w.dtype)).")
    return next(iter(dtypes.values()))


def check_features(where: str, name: str, shape, expected: int, meaning: str):
    if len(shape) < 1:
        raise ValueError(f"{where}: {name} must have at least one dimension (features last); got a scalar")
    if shape[-1] != expected:
        raise ValueError(
            f"{where}: {name} has shape {tuple(shape)}, whose last (feature) dimension must be "
            f"{meaning} = {expected}")


def check_weight(where: str, w_shape, layout: Layout):
    if tuple(w_shape) != layout.w_shape:
        raise ValueError(
            f"{where}: w has shape {tuple(w_shape)} but the layout needs layout.w_shape = "
            f"{layout.w_shape} (nnz, block_size, block_size)")


def check_same_leading(where: str, x_shape, dy_shape):
    if tuple(x_shape[:-1]) != tuple(dy_shape[:-1]):
        raise ValueError(
            f"{where}: x {tuple(x_shape)} and dy {tuple(dy_shape)} must have the same leading "
            f"dimensions, since the product contracts over all of them")


def leading_size(shape) -> int:
    return math.prod(shape[:-1])


def normalize_precision(precision) -> str:
    """Map ``jnp.matmul``'s precision argument to the kernels' two modes.

    DEFAULT lets float32 run on TF32 tensor cores; HIGH and HIGHEST both ask for
    full float32 accuracy (HIGH has no cheaper exact-enough mode on these kernels).
    """
    if precision is None:
        return DEFAULT
    if isinstance(precision, (tuple, list)):
        modes = [normalize_precision(p) for p in precision]
        return HIGHEST if HIGHEST in modes else DEFAULT
    if isinstance(precision, str):
        try:
            precision = lax.Precision(precision)
        except ValueError as err:
            raise ValueError(f"unknown precision {precision!r}") from err
    if not isinstance(precision, lax.Precision):
        raise TypeError(f"precision must be None, a string or jax.lax.Precision; got {precision!r}")
    return DEFAULT if precision == lax.Precision.DEFAULT else HIGHEST


def result_dtypes(where: str, in_dtype: np.dtype, preferred_element_type):
    """``(kernel_out, final_out)``: what the kernel writes and what the user gets.

    Kernels write either the input dtype or float32 (float64 for float64 input);
    any other requested dtype is a cast of the float32 result.
    """
    if preferred_element_type is None:
        return in_dtype, in_dtype
    final = np.dtype(preferred_element_type)
    if not jnp.issubdtype(final, jnp.floating):
        raise TypeError(f"{where}: preferred_element_type must be a floating dtype; got {final}")
    if final == in_dtype:
        return in_dtype, final
    if in_dtype == FLOAT64:
        return FLOAT64, final
    return FLOAT32, final
