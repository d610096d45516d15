import functools
import pickle

import numpy as np
import pytest
import jax
import jax.numpy as jnp

import jax_blocksparse as jbs
from helpers import blocks_of, dense_weight, f64, random_array, random_mask


def test_properties(rng):
    mask = random_mask(rng, 5, 7)
    layout = jbs.Layout(mask, 16)
    assert layout.block_size == 16
    assert layout.shape == (80, 112)
    assert layout.nnz == mask.sum()
    assert layout.w_shape == (mask.sum(), 16, 16)
    assert layout.density == pytest.approx(mask.sum() / mask.size)
    np.testing.assert_array_equal(layout.mask, mask)
    with pytest.raises(ValueError):
        layout.mask[0, 0] = not layout.mask[0, 0]
    with pytest.raises(AttributeError):
        layout.block_size = 8


def test_mask_is_copied(rng):
    mask = random_mask(rng, 3, 3)
    layout = jbs.Layout(mask, 8)
    mask[:] = ~mask
    np.testing.assert_array_equal(layout.mask, ~mask)


def test_value_equality_and_hash(rng):
    mask = random_mask(rng, 4, 4)
    a, b = jbs.Layout(mask, 8), jbs.Layout(mask.astype(np.int8), 8)
    assert a == b and hash(a) == hash(b)
    assert a != jbs.Layout(mask, 16)
    other = mask.copy()
    other[0, 0] = not other[0, 0]
    assert a != jbs.Layout(other, 8)
    assert pickle.loads(pickle.dumps(a)) == a
    assert len({a, b}) == 1


def test_block_order_is_bsr_values_order(rng):
    mask = random_mask(rng, 4, 5)
    layout = jbs.Layout(mask, 8)
    dense = rng.standard_normal(layout.shape)
    w = layout.fromdense(jnp.asarray(dense))
    expected = np.stack([dense[i * 8:(i + 1) * 8, j * 8:(j + 1) * 8] for i, j in np.argwhere(mask)])
    np.testing.assert_array_equal(np.asarray(w), expected)


def test_todense_fromdense_round_trip(rng):
    mask = random_mask(rng, 3, 6)
    layout = jbs.Layout(mask, 16)
    w = random_array(rng, layout.w_shape, np.float32)
    dense = layout.todense(w)
    np.testing.assert_array_equal(f64(dense), dense_weight(mask, 16, f64(w)))
    np.testing.assert_array_equal(np.asarray(layout.fromdense(dense)), np.asarray(w))
    stacked = jnp.stack([w, 2 * w])
    assert layout.todense(stacked).shape == (2, *layout.shape)
    np.testing.assert_array_equal(f64(layout.fromdense(layout.todense(stacked))), f64(stacked))
    np.testing.assert_array_equal(blocks_of(mask, 16, dense_weight(mask, 16, f64(w))), f64(w))


def test_tables_are_built_once_and_describe_the_mask(rng):
    mask = random_mask(rng, 6, 5)
    layout = jbs.Layout(mask, 8)
    assert layout.column_table is layout.column_table
    assert layout.row_table is layout.row_table
    coords = np.argwhere(mask)
    for table, major, minor in ((layout.column_table, 1, 0), (layout.row_table, 0, 1)):
        offsets, entries = table
        assert offsets[0] == 0 and offsets[-1] == layout.nnz
        for o in range(len(offsets) - 1):
            ks = entries[offsets[o]:offsets[o + 1], 1]
            assert np.all(coords[ks, major] == o)
            np.testing.assert_array_equal(entries[offsets[o]:offsets[o + 1], 0], coords[ks, minor])
            assert np.all(np.diff(coords[ks, minor]) > 0)
        assert sorted(entries[:, 1]) == list(range(layout.nnz))


def test_layout_is_a_valid_static_argument(rng):
    layout = jbs.Layout(random_mask(rng, 2, 2), 8)
    f = jax.jit(lambda x, layout: x * layout.nnz, static_argnums=1)
    assert float(f(1.0, layout)) == layout.nnz


@pytest.mark.parametrize("mask", [np.ones(3, bool), np.ones((2, 2, 2), bool)])
def test_bad_mask_rank(mask):
    with pytest.raises(ValueError, match="2-D"):
        jbs.Layout(mask, 8)


def test_bad_mask_values():
    with pytest.raises(ValueError, match="only 0 and 1"):
        jbs.Layout(np.array([[0, 2]]), 8)
    with pytest.raises(TypeError, match="booleans"):
        jbs.Layout(np.array([["a"]]), 8)


@pytest.mark.parametrize("bs", [0, 4, 12, 256, 32.0, True])
def test_bad_block_size(bs):
    with pytest.raises((ValueError, TypeError), match="block_size"):
        jbs.Layout(np.ones((2, 2), bool), bs)


def test_layout_is_a_leafless_pytree(rng):
    layout = jbs.Layout(random_mask(rng, 2, 3), 8)
    assert jax.tree_util.tree_leaves(layout) == []
    x = random_array(rng, (4, 16), np.float32)
    w = random_array(rng, layout.w_shape, np.float32)
    # No static_argnums needed: the layout travels as static pytree data. HIGHEST: on a GPU
    # float32 DEFAULT runs on TF32 tensor cores, which this tolerance is not about.
    matmul = functools.partial(jbs.matmul, precision="highest")
    y = jax.jit(matmul)(x, w, layout)
    np.testing.assert_allclose(f64(y), f64(x) @ dense_weight(layout.mask, 8, f64(w)), rtol=1e-5, atol=1e-5)
    ys = jax.vmap(matmul, in_axes=(0, None, None))(jnp.stack([x, 2 * x]), w, layout)
    assert ys.shape == (2, 4, 24)
