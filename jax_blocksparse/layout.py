"""Block layouts: which blocks of a weight matrix are non-zero, and the lookup
tables the kernels walk. Pure numpy, built once per layout and cached."""
from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np

SUPPORTED_BLOCK_SIZES = (8, 16, 32, 64, 128)


class BlockTable(NamedTuple):
    """Compressed block lists for one product direction.

    ``offsets[o]:offsets[o+1]`` are the entries that reduce into output block
    ``o``; ``entries[e] = (input_block, k)`` names the block of the dense
    operand to gather and the index ``k`` of the weight block.
    """

    offsets: np.ndarray  # (n_out_blocks + 1,) int32
    entries: np.ndarray  # (nnz, 2) int32


class SplitTable(NamedTuple):
    """A :class:`BlockTable` whose long output blocks are cut into segments.

    The kernels take ``offsets`` (with the table's ``entries`` unchanged) as if each segment
    were an output block of its own, so that no single CTA walks a hub's whole list; the
    segments' partial sums are then added back: output block ``o`` is the sum over ``s`` of
    segment ``gather[s, o]``, in the order of ``s``, where ``gather`` points past the last
    segment (at a zero block) once ``o`` has no more segments.
    """

    offsets: np.ndarray  # (n_segments + 1,) int32
    gather: np.ndarray   # (max segments per output block, n_out_blocks) int32


# A table is cut only where it has a hub: a list at least SPLIT_HUB_OVER_MEAN times the mean and
# SPLIT_HUB_MIN_ENTRIES long. Then every list longer than both SPLIT_FACTOR_OVER_MEAN times the
# mean and SPLIT_MIN_ENTRIES is cut into pieces no longer than that. Measured on an H200 (NOTES
# v7d, Barabasi-Albert seed layouts): hubs of 4.9x the mean (d = 1/16) ran 1.25x faster cut; at
# 2.5x (d = 1/4) cutting gained nothing, and hubs of 62 entries (d = 1/64) lost to the extra
# merge pass.
SPLIT_FACTOR_OVER_MEAN = 2
SPLIT_MIN_ENTRIES = 32
SPLIT_HUB_OVER_MEAN = 4
SPLIT_HUB_MIN_ENTRIES = 64


def split_long_lists(table: BlockTable) -> SplitTable | None:
    """Cut the lists of ``table`` longer than ``max(2 * mean, 32)`` entries into that many at
    most, of near-equal length, if its longest list is a hub (``>= max(4 * mean, 64)``); None
    when it has none."""
    counts = np.diff(table.offsets.astype(np.int64))
    if counts.size == 0:
        return None
    mean = counts.mean()
    limit = max(SPLIT_FACTOR_OVER_MEAN * int(np.ceil(mean)), SPLIT_MIN_ENTRIES)
    longest = counts.max()
    if longest <= limit or longest < max(SPLIT_HUB_OVER_MEAN * mean, SPLIT_HUB_MIN_ENTRIES):
        return None
    pieces = np.maximum(1, -(-counts // limit))  # segments per output block (empty: one)
    bounds = [table.offsets[0:1].astype(np.int64)]
    for start, count, n in zip(table.offsets[:-1].astype(np.int64), counts, pieces):
        bounds.append(start + (count * np.arange(1, n + 1)) // n)
    offsets = np.concatenate(bounds).astype(np.int32)
    first = np.concatenate([[0], np.cumsum(pieces)[:-1]])
    n_segments = int(pieces.sum())
    gather = np.where(np.arange(pieces.max())[:, None] < pieces[None, :],
                      first[None, :] + np.arange(pieces.max())[:, None], n_segments)
    return SplitTable(_read_only(offsets), _read_only(gather.astype(np.int32)))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _validate_mask(mask) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(
            f"Layout mask must be 2-D with shape (C // block_size, N // block_size); "
            f"got shape {array.shape}")
    if array.dtype != np.bool_:
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise TypeError(f"Layout mask must hold booleans; got dtype {array.dtype}")
        if not np.isin(array, (0, 1)).all():
            raise ValueError(
                f"Layout mask of dtype {array.dtype} must hold only 0 and 1 (or be boolean)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"Layout mask must have at least one block row and column; got {array.shape}")
    return _read_only(array.astype(np.bool_, copy=True))


def _validate_block_size(block_size) -> int:
    if isinstance(block_size, (bool, np.bool_)) or not isinstance(block_size, (int, np.integer)):
        raise TypeError(f"block_size must be an int, got {block_size!r}")
    if int(block_size) not in SUPPORTED_BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {SUPPORTED_BLOCK_SIZES}; got {block_size}")
    return int(block_size)


def _compress(major: np.ndarray, minor: np.ndarray, n_major: int) -> BlockTable:
    """Group the weight blocks by ``major`` (stable, so ``minor`` stays ascending)."""
    order = np.lexsort((minor, major))
    counts = np.bincount(major, minlength=n_major)
    offsets = np.zeros(n_major + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    entries = np.stack([minor[order], order], axis=1).astype(np.int32)
    return BlockTable(_read_only(offsets), _read_only(np.ascontiguousarray(entries)))


class Layout:
    """An immutable block-sparsity pattern.

    ``mask[i, j]`` says whether block ``(i, j)`` of the ``(C, N)`` weight matrix is
    non-zero. Weight blocks are stored as ``w[k]``, ``k`` running row-major over
    the non-zero blocks (``np.argwhere(mask)[k]``), which is exactly the
    ``values`` array of the matrix's BSR form.

    Layouts compare and hash by value, so they can be static arguments of ``jit``.
    """

    __slots__ = ("_mask", "_block_size", "_hash", "_cache")

    def __init__(self, mask, block_size: int = 32):
        object.__setattr__(self, "_mask", _validate_mask(mask))
        object.__setattr__(self, "_block_size", _validate_block_size(block_size))
        digest = hashlib.blake2b(np.packbits(self._mask).tobytes(), digest_size=16).digest()
        object.__setattr__(self, "_hash", hash((self._block_size, self._mask.shape, digest)))
        object.__setattr__(self, "_cache", {})

    def __setattr__(self, name, value):
        raise AttributeError("Layout is immutable")

    def __reduce__(self):
        return (Layout, (self._mask, self._block_size))

    # -- value semantics ----------------------------------------------------
    def __eq__(self, other):
        if not isinstance(other, Layout):
            return NotImplemented
        return (self._hash == other._hash and self._block_size == other._block_size
                and self._mask.shape == other._mask.shape
                and bool(np.array_equal(self._mask, other._mask)))

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return (f"Layout(shape={self.shape}, block_size={self.block_size}, nnz={self.nnz}, "
                f"density={self.density:.4g})")

    # -- properties ---------------------------------------------------------
    @property
    def mask(self) -> np.ndarray:
        return self._mask

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(C // block_size, N // block_size)``."""
        return self._mask.shape

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self._mask.shape
        return rows * self._block_size, cols * self._block_size

    @property
    def nnz(self) -> int:
        return int(self.coords.shape[0])

    @property
    def w_shape(self) -> tuple[int, int, int]:
        return (self.nnz, self._block_size, self._block_size)

    @property
    def density(self) -> float:
        return self.nnz / self._mask.size

    # -- cached lookup tables ------------------------------------------------
    def _cached(self, key, build):
        table = self._cache.get(key)
        if table is None:
            table = build()
            self._cache[key] = table
        return table

    @property
    def coords(self) -> np.ndarray:
        """``(nnz, 2)`` int32: block row and column of ``w[k]``."""
        return self._cached("coords", lambda: _read_only(np.argwhere(self._mask).astype(np.int32)))

    @property
    def column_table(self) -> BlockTable:
        """Blocks grouped by block-column (``x @ W``): entries are ``(row, k)``."""
        def build():
            rows, cols = self.coords[:, 0], self.coords[:, 1]
            return _compress(cols, rows, self._mask.shape[1])
        return self._cached("column_table", build)

    @property
    def row_table(self) -> BlockTable:
        """Blocks grouped by block-row (``dy @ W.T``): entries are ``(column, k)``."""
        def build():
            rows, cols = self.coords[:, 0], self.coords[:, 1]
            return _compress(rows, cols, self._mask.shape[0])
        return self._cached("row_table", build)

    def split_table(self, transpose: bool = False) -> SplitTable | None:
        """:func:`split_long_lists` of the column table (``transpose``: the row table)."""
        key = "split_row_table" if transpose else "split_column_table"
        table = self.row_table if transpose else self.column_table
        if key not in self._cache:  # None (nothing to cut) is cached too
            self._cache[key] = split_long_lists(table)
        return self._cache[key]

    @property
    def dense_index(self) -> np.ndarray:
        """``(rows, cols)`` int32 map from block position to ``k``; ``nnz`` marks zero blocks."""
        def build():
            index = np.full(self._mask.shape, self.nnz, np.int32)
            index[self._mask] = np.arange(self.nnz, dtype=np.int32)
            return _read_only(index)
        return self._cached("dense_index", build)

    # -- conversions -----------------------------------------------------------
    def todense(self, w):
        """The ``(..., C, N)`` matrix with the blocks of ``w`` in place and zeros elsewhere."""
        import jax.numpy as jnp

        w = jnp.asarray(w)
        if w.shape[-3:] != self.w_shape:
            raise ValueError(f"todense expects w of shape (..., {self.w_shape}); got {w.shape}")
        lead = w.shape[:-3]
        bs = self._block_size
        rows, cols = self._mask.shape
        zero_block = jnp.zeros((*lead, 1, bs, bs), w.dtype)
        padded = jnp.concatenate([w, zero_block], axis=-3)
        blocks = jnp.take(padded, jnp.asarray(self.dense_index.reshape(-1)), axis=-3)
        blocks = blocks.reshape(*lead, rows, cols, bs, bs)
        blocks = jnp.swapaxes(blocks, -3, -2)
        return blocks.reshape(*lead, rows * bs, cols * bs)

    def fromdense(self, dense):
        """Gather the non-zero blocks of a ``(..., C, N)`` matrix into ``w`` of shape ``(..., *w_shape)``."""
        import jax.numpy as jnp

        dense = jnp.asarray(dense)
        if dense.shape[-2:] != self.shape:
            raise ValueError(f"fromdense expects a matrix of shape (..., {self.shape}); got {dense.shape}")
        lead = dense.shape[:-2]
        bs = self._block_size
        rows, cols = self._mask.shape
        blocks = dense.reshape(*lead, rows, bs, cols, bs)
        blocks = jnp.swapaxes(blocks, -3, -2).reshape(*lead, rows * cols, bs, bs)
        flat_index = self.coords[:, 0] * cols + self.coords[:, 1]
        return jnp.take(blocks, jnp.asarray(flat_index), axis=-3)


def _register_as_static_pytree():
    """A layout is a pytree with no leaves: jit, vmap and friends carry it as static data, so it
    can be passed like any other argument (no ``static_argnums`` needed), and module frameworks
    that flatten their fields see no arrays in it."""
    import jax

    jax.tree_util.register_pytree_node(Layout, lambda layout: ((), layout),
                                       lambda layout, _: layout)


_register_as_static_pytree()
