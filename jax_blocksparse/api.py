"""The public products: validation at trace time, then one primitive bind."""
from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from . import ops, shapes
from .layout import Layout


def _finish(result, final_dtype, out_shape):
    result = result.reshape(out_shape)
    return result if result.dtype == final_dtype else result.astype(final_dtype)


def _dense_times_weight(where, bind, dense, dense_name, w, layout, transposed, precision,
                        preferred_element_type):
    """Shared body of ``matmul`` and ``matmul_t``: validate, flatten the leading dims, bind."""
    shapes.check_layout(layout, where)
    dense, w = jnp.asarray(dense), jnp.asarray(w)
    rows, cols = layout.shape
    features, out_features = (cols, rows) if transposed else (rows, cols)
    meaning = "N = layout.shape[1]" if transposed else "C = layout.shape[0]"
    shapes.check_features(where, dense_name, dense.shape, features, meaning)
    shapes.check_weight(where, w.shape, layout)
    dtype = shapes.common_dtype(where, **{dense_name: dense, "w": w})
    kernel_dtype, final_dtype = shapes.result_dtypes(where, dtype, preferred_element_type)
    m = shapes.leading_size(dense.shape)
    out = bind(dense.reshape(1, m, features), w[None], layout=layout,
               precision=shapes.normalize_precision(precision), out_dtype=kernel_dtype)
    return _finish(out, final_dtype, (*dense.shape[:-1], out_features))


def matmul(x, w, layout: Layout, *, precision=None, preferred_element_type=None):
    """``x @ W`` for the block-sparse ``W`` described by ``(w, layout)``.

    ``x`` has shape ``(..., C)``; the result has shape ``(..., N)``.
    """
    return _dense_times_weight("jax_blocksparse.matmul", ops.bsmm, x, "x", w, layout, False,
                               precision, preferred_element_type)


def matmul_t(dy, w, layout: Layout, *, precision=None, preferred_element_type=None):
    """``dy @ W.T``: ``dy`` of shape ``(..., N)`` to ``(..., C)``."""
    return _dense_times_weight("jax_blocksparse.matmul_t", ops.bsmm_t, dy, "dy", w, layout, True,
                               precision, preferred_element_type)


def sampled_matmul(x, dy, layout: Layout, *, precision=None, preferred_element_type=None):
    """The blocks of ``x.T @ dy`` at the layout's non-zero positions, shape ``layout.w_shape``.

    The contraction runs over all leading dimensions of ``x`` and ``dy``, which must match.
    """
    where = "jax_blocksparse.sampled_matmul"
    shapes.check_layout(layout, where)
    x, dy = jnp.asarray(x), jnp.asarray(dy)
    rows, cols = layout.shape
    shapes.check_features(where, "x", x.shape, rows, "C = layout.shape[0]")
    shapes.check_features(where, "dy", dy.shape, cols, "N = layout.shape[1]")
    shapes.check_same_leading(where, x.shape, dy.shape)
    dtype = shapes.common_dtype(where, x=x, dy=dy)
    kernel_dtype, final_dtype = shapes.result_dtypes(where, dtype, preferred_element_type)
    m = shapes.leading_size(x.shape)
    dw = ops.sampled(x.reshape(1, m, rows), dy.reshape(1, m, cols), layout=layout,
                     precision=shapes.normalize_precision(precision), out_dtype=kernel_dtype)
    return _finish(dw, final_dtype, layout.w_shape)


class BlocksparseMatMul:
    """The 2017 TensorFlow interface: ``bsmm = BlocksparseMatMul(mask, block_size)``,
    ``w`` of shape ``bsmm.w_shape``, then ``y = bsmm(x, w)``."""

    def __init__(self, layout_mask, block_size: int = 32, *, precision=None):
        self.layout = Layout(layout_mask, block_size)
        self.precision = precision

    @property
    def w_shape(self):
        return self.layout.w_shape

    @property
    def block_size(self):
        return self.layout.block_size

    def __call__(self, x, w):
        return matmul(x, w, self.layout, precision=self.precision)

    def transpose(self, dy, w):
        return matmul_t(dy, w, self.layout, precision=self.precision)

    def weight_grad(self, x, dy):
        return sampled_matmul(x, dy, self.layout, precision=self.precision)

    def init_weights(self, key, dtype=np.float32):
        """Normal weights scaled by each output column's true fan-in (non-zero inputs)."""
        import jax

        fan_in = self.layout.mask.sum(axis=0)[self.layout.coords[:, 1]] * self.block_size
        scale = jnp.asarray(1.0 / np.sqrt(np.maximum(fan_in, 1)), dtype)[:, None, None]
        return jax.random.normal(key, self.w_shape, dtype) * scale
