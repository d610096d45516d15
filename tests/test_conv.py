"""Block-sparse convolution against float64 dense lax.conv_general_dilated."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp
from jax import lax
from jax.test_util import check_grads

import jax_blocksparse as jbs
from helpers import assert_close, dense_weight, f64, random_array, random_mask, relative_error

DIMENSION_NUMBERS = {1: ("NHC", "HIO", "NHC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def dense_filter(mask, bs, w):
    """(*kernel, C, K) float64 filter, built tap by tap with the independent dense_weight."""
    w = f64(w)
    kernel = w.shape[1:-2]
    out = np.zeros((*kernel, mask.shape[0] * bs, mask.shape[1] * bs))
    for tap in np.ndindex(*kernel):
        out[tap] = dense_weight(mask, bs, w[(slice(None), *tap)])
    return out


def dense_conv(x, filt, strides, padding, dilation):
    nd = x.ndim - 2
    return lax.conv_general_dilated(jnp.asarray(x).astype(jnp.float64), jnp.asarray(filt), strides, padding,
                                    rhs_dilation=dilation, dimension_numbers=DIMENSION_NUMBERS[nd],
                                    precision=lax.Precision.HIGHEST)


CASES = [  # spatial, kernel, strides, padding, dilation
    ((9,), (3,), (1,), "SAME", (1,)),
    ((10,), (2,), (2,), "VALID", (2,)),
    ((7, 6), (3, 3), (1, 1), "SAME", (1, 1)),
    ((8, 9), (3, 2), (2, 1), "VALID", (1, 2)),
    ((7, 7), (3, 3), (2, 2), ((1, 2), (0, 1)), (1, 1)),
    ((5, 4, 6), (2, 3, 1), (1, 2, 1), "SAME", (2, 1, 1)),
    ((4, 4), (1, 1), (1, 1), "VALID", (1, 1)),
]


@pytest.mark.parametrize("spatial,kernel,strides,padding,dilation", CASES)
@pytest.mark.parametrize("bs", [8, 16, 32])
def test_forward_matches_dense(rng, spatial, kernel, strides, padding, dilation, bs):
    mask = random_mask(rng, 3, 2, 0.5)
    mask[:, 1] = False  # an empty block-column
    layout = jbs.Layout(mask, bs)
    C, K = layout.shape
    x = random_array(rng, (2, *spatial, C), np.float32)
    w = random_array(rng, jbs.conv_weight_shape(layout, kernel), np.float32)
    y = jbs.conv(x, w, layout, strides=strides, padding=padding, dilation=dilation, precision="highest")
    expected = dense_conv(x, dense_filter(mask, bs, w), strides, padding, dilation)
    assert y.shape == expected.shape
    assert_close(y, expected, np.float32)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_16_bit(rng, dtype):
    layout = jbs.Layout(random_mask(rng, 2, 3), 16)
    x = random_array(rng, (2, 6, 5, 32), dtype)
    w = random_array(rng, jbs.conv_weight_shape(layout, (3, 3)), dtype)
    y = jbs.conv(x, w, layout)
    assert y.dtype == np.dtype(dtype)
    assert_close(y, dense_conv(x, dense_filter(layout.mask, 16, w), (1, 1), "SAME", (1, 1)), dtype)


def test_gradients_match_dense_autodiff(rng):
    layout = jbs.Layout(random_mask(rng, 2, 2, 0.6), 8)
    x = random_array(rng, (2, 6, 5, 16), np.float64)
    w = random_array(rng, jbs.conv_weight_shape(layout, (3, 2)), np.float64)
    r = random_array(rng, (2, 3, 5, 16), np.float64)
    conv = lambda x, w: jbs.conv(x, w, layout, strides=(2, 1), padding=((1, 1), (0, 1)))
    gx, gw = jax.grad(lambda x, w: jnp.sum(conv(x, w) * r), argnums=(0, 1))(x, w)
    filt = jnp.asarray(dense_filter(layout.mask, 8, w))
    dense = lambda x, f: jnp.sum(dense_conv(x, f, (2, 1), ((1, 1), (0, 1)), (1, 1)) * r)
    gx_ref, gf_ref = jax.grad(dense, argnums=(0, 1))(jnp.asarray(f64(x)), filt)
    assert relative_error(gx, gx_ref) < 1e-10
    # the filter gradient, read back at the non-zero blocks, is the weight gradient
    gw_dense = dense_filter(layout.mask, 8, gw)
    assert relative_error(gw_dense, np.asarray(gf_ref) * (dense_filter(layout.mask, 8, np.ones_like(w)) != 0)) < 1e-10


def test_check_grads_second_order(rng):
    layout = jbs.Layout(random_mask(rng, 2, 2, 0.6), 8)
    x = random_array(rng, (1, 5, 16), np.float64)
    w = random_array(rng, jbs.conv_weight_shape(layout, (3,)), np.float64)
    check_grads(lambda x, w: jnp.tanh(jbs.conv(x, w, layout, padding="SAME")), (x, w), order=2,
                modes=("fwd", "rev"))


def test_vmap_over_x_w_and_both(rng):
    layout = jbs.Layout(random_mask(rng, 2, 2, 0.6), 8)
    xs = random_array(rng, (3, 2, 5, 16), np.float64)
    ws = random_array(rng, (3, *jbs.conv_weight_shape(layout, (2,))), np.float64)
    f = lambda x, w: jbs.conv(x, w, layout, padding="VALID")
    both = jax.vmap(f)(xs, ws)
    only_x = jax.vmap(f, in_axes=(0, None))(xs, ws[0])
    only_w = jax.vmap(f, in_axes=(None, 0))(xs[0], ws)
    for b in range(3):
        assert relative_error(both[b], dense_conv(xs[b], dense_filter(layout.mask, 8, ws[b]), (1,), "VALID", (1,))) < 1e-10
        assert relative_error(only_x[b], f(xs[b], ws[0])) < 1e-12
        assert relative_error(only_w[b], f(xs[0], ws[b])) < 1e-12


def test_scan_and_checkpoint(rng):
    layout = jbs.Layout(random_mask(rng, 2, 2, 0.6), 8)
    x = random_array(rng, (1, 6, 16), np.float64)
    w = random_array(rng, jbs.conv_weight_shape(layout, (3,)), np.float64) * 0.3
    support = dense_filter(layout.mask, 8, np.ones(w.shape)) != 0

    def run(conv_step, weights):
        step = jax.checkpoint(lambda h, weights: jnp.tanh(conv_step(h, weights)))
        return jnp.sum(jax.lax.scan(lambda h, _: (step(h, weights), None), x, None, length=3)[0])

    sparse_step = lambda h, w: jbs.conv(h, w, layout)
    dense_step = lambda h, f: dense_conv(h, f, (1,), "SAME", (1,))
    filt = jnp.asarray(dense_filter(layout.mask, 8, w))
    assert relative_error(run(sparse_step, w), run(dense_step, filt)) < 1e-10
    grad_w = jax.grad(lambda w: run(sparse_step, w))(w)
    grad_f = jax.grad(lambda f: run(dense_step, f))(filt)
    assert relative_error(dense_filter(layout.mask, 8, grad_w), np.asarray(grad_f) * support) < 1e-10


def test_dense_filter_helper(rng):
    layout = jbs.Layout(random_mask(rng, 3, 2), 8)
    w = random_array(rng, jbs.conv_weight_shape(layout, (2, 3)), np.float32)
    np.testing.assert_array_equal(f64(jbs.conv_dense_filter(w, layout)), dense_filter(layout.mask, 8, w))


def test_one_by_one_is_the_matmul(rng):
    layout = jbs.Layout(random_mask(rng, 2, 2), 8)
    x = random_array(rng, (2, 3, 3, 16), np.float32)
    w = random_array(rng, jbs.conv_weight_shape(layout, (1, 1)), np.float32)
    jaxpr = jax.make_jaxpr(lambda x, w: jbs.conv(x, w, layout, padding="VALID"))(x, w)
    assert [e.primitive.name for e in jaxpr.jaxpr.eqns].count("blocksparse_matmul") == 1
    np.testing.assert_array_equal(np.asarray(jbs.conv(x, w, layout, padding="VALID")),
                                  np.asarray(jbs.matmul(x, w.reshape(layout.w_shape), layout)))


def test_bad_inputs(rng):
    layout = jbs.Layout(random_mask(rng, 2, 2), 8)
    x = jnp.ones((2, 5, 5, 16), jnp.float32)
    w = jnp.ones(jbs.conv_weight_shape(layout, (3, 3)), jnp.float32)
    with pytest.raises(ValueError, match=r"\(2, 5, 5, 12\).*C = layout.shape\[0\] = 16"):
        jbs.conv(jnp.ones((2, 5, 5, 12), jnp.float32), w, layout)
    with pytest.raises(ValueError, match="w has shape"):
        jbs.conv(x, jnp.ones((layout.nnz, 3, 8, 8), jnp.float32), layout)
    with pytest.raises(ValueError, match="1 to 3 spatial"):
        jbs.conv(jnp.ones((2, 16), jnp.float32), w, layout)
    with pytest.raises(TypeError, match="x: float32, w: bfloat16"):
        jbs.conv(x, w.astype(jnp.bfloat16), layout)
    with pytest.raises(ValueError, match="padding"):
        jbs.conv(x, w, layout, padding="FULL")
    with pytest.raises(ValueError, match="padding"):
        jbs.conv(x, w, layout, padding=((1, 1),))
