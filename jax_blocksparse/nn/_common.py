"""Framework-free pieces shared by the Flax, Haiku and Equinox layers.

Everything here is a pure function of arrays and a :class:`Layout`; the framework modules only
create parameters (with these initializers) and call these apply functions.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import jax
import jax.numpy as jnp

from ..api import matmul
from ..conv import conv, conv_weight_shape
from ..layout import Layout


def as_layout(layout, block_size: int | None = None) -> Layout:
    """A :class:`Layout` from a Layout, or from a boolean block mask plus ``block_size``."""
    if isinstance(layout, Layout):
        if block_size is not None and block_size != layout.block_size:
            raise ValueError(f"block_size={block_size} contradicts the layout's block size "
                             f"{layout.block_size}")
        return layout
    if block_size is None:
        raise TypeError("pass a jax_blocksparse.Layout, or a block mask together with block_size=")
    return Layout(layout, block_size)


# -- initialization ------------------------------------------------------------------------
def column_fan_in(layout: Layout) -> np.ndarray:
    """``(N,)`` true fan-in of each output column: non-zero input blocks reaching it * block_size."""
    per_block_column = layout.mask.sum(axis=0) * layout.block_size
    return np.repeat(per_block_column, layout.block_size)


def sparse_normal(key, layout: Layout, dtype=jnp.float32, *, fan_in=None, gain: float = 1.0):
    """Normal block weights of shape ``layout.w_shape``, std ``gain / sqrt(fan_in)`` per column.

    ``fan_in`` is the ``(N,)`` per-column fan-in (default :func:`column_fan_in`); a layer whose
    outputs also receive other inputs (the LSTM's input and recurrent products) passes the total.
    Columns without inputs count as fan-in 1.
    """
    fan_in = column_fan_in(layout) if fan_in is None else np.broadcast_to(fan_in, (layout.shape[1],))
    scale = _block_column_scale(layout, fan_in, gain)
    w = jax.random.normal(key, layout.w_shape, jnp.float32) * jnp.asarray(scale[:, None, :], jnp.float32)
    return w.astype(dtype)


def _block_column_scale(layout: Layout, fan_in, gain: float) -> np.ndarray:
    """``(nnz, bs)``: ``gain / sqrt(fan_in)`` of each block's output columns (fan-in 0 counts as 1)."""
    cols = layout.coords[:, 1] * layout.block_size
    block_fan_in = np.asarray(fan_in)[cols[:, None] + np.arange(layout.block_size)]
    return gain / np.sqrt(np.maximum(block_fan_in, 1))


def dense_normal(key, shape, dtype=jnp.float32, *, fan_in=None, gain: float = 1.0):
    """Normal ``(C, N)`` dense weights with std ``gain / sqrt(fan_in)`` per column (default C)."""
    fan_in = shape[0] if fan_in is None else np.broadcast_to(fan_in, (shape[1],))
    scale = gain / np.sqrt(np.maximum(fan_in, 1))
    w = jax.random.normal(key, shape, jnp.float32) * jnp.asarray(scale, jnp.float32)
    return w.astype(dtype)


# -- BlockSparseLinear ---------------------------------------------------------------------------
def compute_dtype(dtype, *arrays):
    """The layer's compute dtype: ``dtype`` if given, else the promoted dtype of the operands."""
    if dtype is not None:
        return jnp.dtype(dtype)
    return jnp.result_type(*[a for a in arrays if a is not None])


def linear_apply(x, w, b, layout: Layout, *, dtype=None, precision=None):
    """``x @ W + b`` with the block-sparse ``W``; operands cast to the compute dtype first."""
    dtype = compute_dtype(dtype, x, w, b)
    y = matmul(jnp.asarray(x, dtype), jnp.asarray(w, dtype), layout, precision=precision)
    if b is not None:
        y = y + jnp.asarray(b, dtype)
    return y


def linear_init(key, layout: Layout, param_dtype=jnp.float32, use_bias: bool = True):
    """``(w, b)``: fan-in-scaled normal blocks and a zero bias (or ``None``)."""
    w = sparse_normal(key, layout, param_dtype)
    b = jnp.zeros((layout.shape[1],), param_dtype) if use_bias else None
    return w, b


# -- BlockSparseConv -----------------------------------------------------------------------------
def conv_kernel_size(kernel_size) -> tuple:
    """``kernel_size`` as a tuple of 1 to 3 positive ints; a bare int means a 1-D kernel."""
    ks = tuple(int(k) for k in np.atleast_1d(kernel_size))
    if not 1 <= len(ks) <= 3 or any(k < 1 for k in ks) or np.ndim(kernel_size) > 1:
        raise ValueError(f"BlockSparseConv: kernel_size must be 1 to 3 positive ints; got {kernel_size!r}")
    return ks


def conv_padding(padding):
    """``padding`` in a hashable form: the string, or a tuple of ``(lo, hi)`` int pairs."""
    if isinstance(padding, str):
        return padding
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def conv_fan_in(layout: Layout, kernel_size) -> np.ndarray:
    """``(K,)`` true fan-in of each output channel: non-zero input blocks reaching its
    block-column * block_size * prod(kernel_size)."""
    return column_fan_in(layout) * math.prod(conv_kernel_size(kernel_size))


def conv_normal(key, layout: Layout, kernel_size, dtype=jnp.float32, *, gain: float = 1.0):
    """Normal filter blocks of shape ``conv_weight_shape(layout, kernel_size)``, with std
    ``gain / sqrt(fan_in)`` per output channel (:func:`conv_fan_in`)."""
    kernel_size = conv_kernel_size(kernel_size)
    scale = _block_column_scale(layout, conv_fan_in(layout, kernel_size), gain)  # (nnz, bs)
    scale = scale.reshape(layout.nnz, *(1,) * (len(kernel_size) + 1), layout.block_size)
    w = jax.random.normal(key, conv_weight_shape(layout, kernel_size), jnp.float32)
    return (w * jnp.asarray(scale, jnp.float32)).astype(dtype)


def conv_init(key, layout: Layout, kernel_size, param_dtype=jnp.float32, use_bias: bool = True):
    """``(w, b)``: fan-in-scaled normal filter blocks and a zero ``(K,)`` bias (or ``None``)."""
    w = conv_normal(key, layout, kernel_size, param_dtype)
    b = jnp.zeros((layout.shape[1],), param_dtype) if use_bias else None
    return w, b


def conv_apply(x, w, b, layout: Layout, *, strides=1, padding="SAME", dilation=1, dtype=None,
               precision=None):
    """:func:`jax_blocksparse.conv` plus bias, operands cast to the compute dtype first.

    ``x`` is ``(*batch, *spatial, C)`` with ``w.ndim - 3`` spatial dimensions and any number of
    leading batch dimensions (none included); they are flattened into one for the convolution.
    """
    dtype = compute_dtype(dtype, x, w, b)
    x, w = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
    nd = w.ndim - 3
    if x.ndim < nd + 1:
        raise ValueError(f"BlockSparseConv: a {nd}-D kernel needs inputs (*batch, {nd} spatial, C); "
                         f"got shape {x.shape}")
    batch = x.shape[:x.ndim - nd - 1]
    y = conv(x.reshape(-1, *x.shape[len(batch):]), w, layout, strides=strides,
             padding=conv_padding(padding), dilation=dilation, precision=precision)
    y = y.reshape(*batch, *y.shape[1:])
    if b is not None:
        y = y + jnp.asarray(b, dtype)
    return y


# -- SparseLSTMCell ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def gate_layout(layout: Layout) -> Layout:
    """The ``(C, 4 * H)`` layout of the four gate products: ``layout``'s mask tiled four times
    along the columns, so the gates ``[i, f, g, o]`` share one connectivity and run as one
    block-sparse product (one kernel launch) instead of four."""
    return Layout(np.tile(layout.mask, (1, 4)), layout.block_size)


def lstm_fan_in(input_size: int, recurrent: Layout, input_layout: Layout | None) -> np.ndarray:
    """``(4 * H,)`` total fan-in of each gate pre-activation (input part + recurrent part)."""
    rec = column_fan_in(gate_layout(recurrent))
    inp = input_size if input_layout is None else column_fan_in(gate_layout(input_layout))
    return rec + inp


def lstm_init_input(key, input_size: int, recurrent: Layout, input_layout: Layout | None = None,
                    param_dtype=jnp.float32):
    """``w_x``: dense ``(input_size, 4H)`` when ``input_layout`` is None, else block-sparse of shape
    ``gate_layout(input_layout).w_shape``; scaled by each gate column's total fan-in."""
    fan_in = lstm_fan_in(input_size, recurrent, input_layout)
    if input_layout is None:
        return dense_normal(key, (input_size, 4 * recurrent.shape[1]), param_dtype, fan_in=fan_in)
    return sparse_normal(key, gate_layout(input_layout), param_dtype, fan_in=fan_in)


def lstm_init_recurrent(key, input_size: int, recurrent: Layout, input_layout: Layout | None = None,
                        param_dtype=jnp.float32):
    """``w_h`` of shape ``gate_layout(recurrent).w_shape``, scaled by the total fan-in."""
    fan_in = lstm_fan_in(input_size, recurrent, input_layout)
    return sparse_normal(key, gate_layout(recurrent), param_dtype, fan_in=fan_in)


def lstm_init_bias(hidden: int, param_dtype=jnp.float32, forget_bias: float = 1.0):
    """``(4H,)`` zeros, with the forget-gate quarter set to ``forget_bias``."""
    return jnp.zeros((4, hidden), param_dtype).at[1].set(forget_bias).reshape(4 * hidden)


def lstm_init(key, input_size: int, recurrent: Layout, input_layout: Layout | None = None,
              param_dtype=jnp.float32, forget_bias: float = 1.0):
    """``(w_x, w_h, b)`` for :func:`lstm_apply` (see the three ``lstm_init_*`` functions)."""
    kx, kh = jax.random.split(key)
    return (lstm_init_input(kx, input_size, recurrent, input_layout, param_dtype),
            lstm_init_recurrent(kh, input_size, recurrent, input_layout, param_dtype),
            lstm_init_bias(recurrent.shape[1], param_dtype, forget_bias))


def check_lstm_layouts(recurrent: Layout, input_layout: Layout | None):
    rows, cols = recurrent.shape
    if rows != cols:
        raise ValueError(f"SparseLSTMCell: the recurrent layout must be square (hidden, hidden); "
                         f"got shape {recurrent.shape}")
    if input_layout is not None and input_layout.shape[1] != cols:
        raise ValueError(f"SparseLSTMCell: input_layout must have shape (input_size, {cols}); "
                         f"got {input_layout.shape}")


def lstm_gates(z, c):
    """The LSTM update from pre-activations ``z = [i, f, g, o]`` (``(..., 4H)``) and cell ``c``.

    Returns ``(new_c, new_h)``.
    """
    i, f, g, o = jnp.split(z, 4, axis=-1)
    new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
    return new_c, new_h


def lstm_apply(x, h, c, w_x, w_h, b, recurrent: Layout, input_layout: Layout | None = None, *,
               dtype=None, precision=None):
    """One LSTM step; returns ``(new_c, new_h)``.

    ``z = x @ W_x + h @ W_h + b`` where ``W_h`` (and ``W_x`` when ``input_layout`` is given) are
    block-sparse over the tiled :func:`gate_layout`; a dense ``W_x`` uses ``jnp.dot``.
    """
    dtype = compute_dtype(dtype, x, h, w_x, w_h, b)
    x, h, c = jnp.asarray(x, dtype), jnp.asarray(h, dtype), jnp.asarray(c, dtype)
    z = matmul(h, jnp.asarray(w_h, dtype), gate_layout(recurrent), precision=precision)
    if input_layout is None:
        z = z + jnp.dot(x, jnp.asarray(w_x, dtype), precision=precision)
    else:
        z = z + matmul(x, jnp.asarray(w_x, dtype), gate_layout(input_layout), precision=precision)
    z = z + jnp.asarray(b, dtype)
    return lstm_gates(z, c)


def lstm_zero_state(batch_shape, hidden: int, dtype=jnp.float32):
    """``(c, h)`` zeros of shape ``(*batch_shape, hidden)``."""
    zeros = jnp.zeros((*tuple(batch_shape), hidden), dtype)
    return zeros, zeros
