"""jax_blocksparse.patterns: determinism and graph properties of the masks, block pruning."""
import numpy as np
import pytest

import jax_blocksparse as jbs
from jax_blocksparse import patterns

from helpers import blocks_of, dense_weight, f64

nx = pytest.importorskip("networkx")


def test_random_density_and_determinism():
    a = patterns.random(20, 30, 0.25, seed=3)
    assert a.dtype == np.bool_ and a.shape == (20, 30)
    assert a.sum() == 150
    np.testing.assert_array_equal(a, patterns.random(20, 30, 0.25, seed=3))
    assert not np.array_equal(a, patterns.random(20, 30, 0.25, seed=4))
    assert patterns.random(4, 4, 1e-6, seed=0).sum() == 1  # at least one block
    with pytest.raises(ValueError, match="density"):
        patterns.random(4, 4, 0.0)


@pytest.mark.parametrize("make", [
    lambda seed: patterns.watts_strogatz(64, 4, 0.2, seed),
    lambda seed: patterns.barabasi_albert(64, 2, seed),
], ids=["watts_strogatz", "barabasi_albert"])
def test_graph_masks(make):
    mask = make(7)
    assert mask.dtype == np.bool_ and mask.shape == (64, 64)
    np.testing.assert_array_equal(mask, make(7))
    assert not np.array_equal(mask, make(8))
    np.testing.assert_array_equal(mask, mask.T)
    assert mask.diagonal().all()
    jbs.Layout(mask, 8)  # ready for a Layout


def test_graph_mask_densities():
    ws = patterns.watts_strogatz(100, 6, 0.1, seed=0)
    # rewiring keeps the edge count: n * k / 2 edges, each stored twice, plus the diagonal
    assert ws.sum() == 100 * 6 + 100
    ba = patterns.barabasi_albert(100, 3, seed=0)
    assert ba.sum() == 2 * (100 - 3) * 3 + 100


def test_average_path_length_small_world():
    mask = patterns.watts_strogatz(256, 6, 0.1, seed=0)
    length = patterns.average_path_length(mask)
    assert 1.0 < length < 5.0
    # a ring lattice (p=0) is far from small-world
    assert patterns.average_path_length(patterns.watts_strogatz(256, 6, 0.0, seed=0)) > 10
    assert patterns.average_path_length(patterns.barabasi_albert(256, 3, seed=0)) < 5.0


def test_average_path_length_exact_and_disconnected():
    path = np.eye(4, dtype=bool)
    for i in range(3):
        path[i, i + 1] = True  # directed entries count as undirected edges
    # path graph 0-1-2-3: distances 1,2,3,1,2,1 over 6 pairs
    assert patterns.average_path_length(path) == pytest.approx(10 / 6)
    two_parts = np.zeros((5, 5), bool)
    two_parts[0, 1] = two_parts[1, 2] = True  # component {0,1,2}; {3}, {4} isolated
    assert patterns.average_path_length(two_parts) == pytest.approx(4 / 3)
    assert patterns.average_path_length(np.ones((1, 1), bool)) == 0.0


def test_from_dense_density(rng):
    bs = 8
    W = rng.standard_normal((4 * bs, 6 * bs))
    scales = rng.permutation(24).reshape(4, 6) + 1.0  # distinct block magnitudes
    W = W * np.kron(scales, np.ones((bs, bs)))
    layout, w = patterns.from_dense(W, bs, density=0.25)
    assert isinstance(layout, jbs.Layout) and layout.nnz == 6
    np.testing.assert_array_equal(layout.mask, scales > 18)
    np.testing.assert_array_equal(f64(w), blocks_of(layout.mask, bs, W))
    kept = dense_weight(layout.mask, bs, f64(w))
    np.testing.assert_array_equal(kept[np.kron(layout.mask, np.ones((bs, bs), bool))],
                                  W[np.kron(layout.mask, np.ones((bs, bs), bool))])


def test_from_dense_threshold_and_errors(rng):
    bs = 8
    W = np.zeros((2 * bs, 3 * bs), np.float32)
    W[:bs, bs:2 * bs] = 1.0           # norm 8
    W[bs:, 2 * bs:] = 0.5             # norm 4
    layout, w = patterns.from_dense(W, bs, threshold=4.0)
    assert layout.mask.tolist() == [[False, True, False], [False, False, True]]
    assert w.dtype == np.float32 and w.shape == layout.w_shape
    layout, _ = patterns.from_dense(W, bs, threshold=100.0)  # nothing passes: keep the largest
    assert layout.mask.tolist() == [[False, True, False], [False, False, False]]
    layout, _ = patterns.from_dense(W, bs, density=1e-9)
    assert layout.nnz == 1
    with pytest.raises(ValueError, match="exactly one"):
        patterns.from_dense(W, bs)
    with pytest.raises(ValueError, match="exactly one"):
        patterns.from_dense(W, bs, density=0.5, threshold=1.0)
    with pytest.raises(ValueError, match="multiple of block_size"):
        patterns.from_dense(W[:-1], bs, density=0.5)
