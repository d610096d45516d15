"""Hub block lists cut into segments (``Layout.split_table``, on by default on CUDA, switched on
here for every platform): the tables, and the products computed through them against float64
dense references."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

import jax_blocksparse as jbs
from jax_blocksparse import lowering, patterns
from jax_blocksparse.layout import BlockTable, split_long_lists
from helpers import assert_close, blocks_of, dense_weight, f64, random_array, random_mask


def hub_mask(rng, rows=80, cols=12, density=0.1):
    """A random mask with one full block-column and one full block-row: lists of 80 and 12
    entries against a mean of ~8 and ~1."""
    mask = random_mask(rng, rows, cols, density)
    mask[:, 4] = True
    mask[17, :] = True
    mask[:, 9] = False  # an empty block-column
    return mask


def test_balanced_lists_are_not_cut(rng):
    layout = jbs.Layout(np.ones((40, 40), bool), 8)
    assert layout.split_table() is None and layout.split_table(transpose=True) is None
    assert split_long_lists(BlockTable(np.zeros(1, np.int32), np.zeros((0, 2), np.int32))) is None


def test_only_hubs_trigger_a_cut(rng):
    """Cut where the longest list is >= 4x the mean and >= 64 entries, not below either."""
    def column_lengths(lengths):
        mask = np.zeros((max(lengths), len(lengths)), bool)
        for col, n in enumerate(lengths):
            mask[:n, col] = True
        return jbs.Layout(mask, 8).split_table()
    assert column_lengths([100] + [20] * 40) is not None     # 4.7x the mean, 100 long
    assert column_lengths([70] + [25] * 40) is None          # 2.7x: balanced enough
    assert column_lengths([60] + [5] * 40) is None           # 9x, but shorter than 64


@pytest.mark.parametrize("transpose", [False, True])
def test_segments_partition_each_list_in_order(rng, transpose):
    layout = jbs.Layout(patterns.barabasi_albert(600, 4, seed=1), 8)
    table = layout.row_table if transpose else layout.column_table
    split = layout.split_table(transpose)
    assert split is not None
    counts = np.diff(table.offsets)
    limit = max(2 * int(np.ceil(counts.mean())), 32)
    assert counts.max() > limit  # the hubs
    n_segments = split.offsets.shape[0] - 1
    assert split.offsets[0] == 0 and split.offsets[-1] == table.offsets[-1]
    assert np.all(np.diff(split.offsets) >= 0)
    assert set(table.offsets.tolist()) <= set(split.offsets.tolist())  # a refinement
    for o in range(counts.size):
        segments = [int(s) for s in split.gather[:, o] if s < n_segments]
        # every padding slot points at the zero block, and only after the segments
        assert all(s == n_segments for s in split.gather[len(segments):, o])
        assert segments == list(range(segments[0], segments[0] + len(segments)))
        assert split.offsets[segments[0]] == table.offsets[o]
        assert split.offsets[segments[-1] + 1] == table.offsets[o + 1]
        lengths = np.diff(split.offsets[segments[0]:segments[-1] + 2])
        assert lengths.max() <= limit and lengths.max() - lengths.min() <= 1
    assert layout.split_table(transpose) is split  # built once per layout


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16, np.float64],
                         ids=lambda d: np.dtype(d).name)
def test_products_through_cut_lists(rng, monkeypatch, dtype):
    monkeypatch.setattr(lowering, "SPLIT_LIST_PLATFORMS", frozenset({"cpu", "cuda"}))
    mask = hub_mask(rng)
    layout = jbs.Layout(mask, 8)
    assert layout.split_table() is not None and layout.split_table(transpose=True) is None
    wide = jbs.Layout(mask.T.copy(), 8)  # the hub row becomes a long list of matmul_t
    assert wide.split_table(transpose=True) is not None
    for lay in (layout, wide):
        C, N = lay.shape
        x = random_array(rng, (5, C), dtype)
        dy = random_array(rng, (5, N), dtype)
        w = random_array(rng, lay.w_shape, dtype)
        Wd = dense_weight(lay.mask, 8, f64(w))
        y = jbs.matmul(x, w, lay, precision="highest")
        dx = jbs.matmul_t(dy, w, lay, precision="highest")
        assert y.dtype == dtype and dx.dtype == dtype
        assert_close(y, f64(x) @ Wd, dtype)
        assert_close(dx, f64(dy) @ Wd.T, dtype)


def test_gradients_and_determinism_through_cut_lists(rng, monkeypatch):
    monkeypatch.setattr(lowering, "SPLIT_LIST_PLATFORMS", frozenset({"cpu", "cuda"}))
    mask = hub_mask(rng, rows=72)
    layout = jbs.Layout(mask, 8)
    C, N = layout.shape
    x = random_array(rng, (6, C), np.float32)
    w = random_array(rng, layout.w_shape, np.float32)
    loss = jax.jit(jax.value_and_grad(
        lambda x, w: jnp.sum(jnp.tanh(jbs.matmul(x, w, layout, precision="highest"))),
        argnums=(0, 1)))
    value, (gx, gw) = loss(x, w)
    Wd = dense_weight(mask, 8, f64(w))
    y = f64(x) @ Wd
    dy = 1 - np.tanh(y) ** 2
    assert_close(value, np.sum(np.tanh(y)), np.float32)
    assert_close(gx, dy @ Wd.T, np.float32)
    assert_close(gw, blocks_of(mask, 8, f64(x).T @ dy), np.float32)
    again = loss(x, w)
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree_util.tree_leaves((value, gx, gw)),
                               jax.tree_util.tree_leaves(again)))


def test_weight_stack_through_cut_lists(rng, monkeypatch):
    """vmap over w: the groups of one launch share the cut table."""
    monkeypatch.setattr(lowering, "SPLIT_LIST_PLATFORMS", frozenset({"cpu", "cuda"}))
    mask = hub_mask(rng, rows=64)
    layout = jbs.Layout(mask, 8)
    C, N = layout.shape
    ws = random_array(rng, (3, *layout.w_shape), np.float32)
    x = random_array(rng, (4, C), np.float32)
    ys = jax.vmap(lambda w: jbs.matmul(x, w, layout, precision="highest"))(ws)
    for b in range(3):
        assert_close(ys[b], f64(x) @ dense_weight(mask, 8, f64(ws[b])), np.float32)
