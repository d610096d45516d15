"""Block-sparse convolution against float64 dense lax.conv_general_dilated."""
import functools

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from jax import lax
from jax.test_util import check_grads

import jax_blocksparse as jbs
from jax_blocksparse import lowering, ops, reference
from jax_blocksparse.conv import composite_conv, composite_conv_dw, composite_conv_dx
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


# -- the convolution primitives ----------------------------------------------------------------
def primitive_names(fn, *args):
    return [e.primitive.name for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns]


def test_the_conv_primitives_are_used(rng):
    layout = jbs.Layout(random_mask(rng, 2, 2), 8)
    x = random_array(rng, (2, 5, 5, 16), np.float32)
    w = random_array(rng, jbs.conv_weight_shape(layout, (3, 3)), np.float32)
    conv = lambda x, w: jbs.conv(x, w, layout, strides=2)
    forward = primitive_names(conv, x, w)
    assert forward.count("blocksparse_conv") == 1 and "blocksparse_matmul" not in forward
    backward = primitive_names(jax.grad(lambda x, w: jnp.sum(conv(x, w)), argnums=(0, 1)), x, w)
    assert backward.count("blocksparse_conv_dx") == 1 and backward.count("blocksparse_conv_dw") == 1
    assert not any(name.startswith("blocksparse_matmul") for name in backward)


def sparse_mask(rng):
    """3 x 3 blocks with an empty block-row (1) and an empty block-column (2)."""
    mask = random_mask(rng, 3, 3, 0.7)
    mask[1, :] = False
    mask[:, 2] = False
    mask[0, 0] = mask[2, 1] = True
    return mask


GRAD_CASES = [  # spatial, kernel, strides, padding, dilation: stride 2, dilation, asymmetric pads
    ((11,), (3,), (2,), ((2, 1),), (2,)),
    ((7, 8), (3, 2), (2, 2), ((1, 2), (-1, 1)), (2, 1)),
    ((5, 6, 4), (2, 3, 2), (2, 1, 2), ((0, 1), (2, 0), (1, 1)), (1, 2, 1)),
]


@pytest.mark.parametrize("spatial,kernel,strides,padding,dilation", GRAD_CASES,
                         ids=["1d", "2d", "3d"])
def test_gradients_strided_dilated_padded(rng, spatial, kernel, strides, padding, dilation):
    mask = sparse_mask(rng)
    layout = jbs.Layout(mask, 8)
    x = random_array(rng, (2, *spatial, 24), np.float64)
    w = random_array(rng, jbs.conv_weight_shape(layout, kernel), np.float64)
    conv = lambda x, w: jbs.conv(x, w, layout, strides=strides, padding=padding, dilation=dilation)
    dense = lambda x, f: dense_conv(x, f, strides, padding, dilation)
    filt = jnp.asarray(dense_filter(mask, 8, w))
    y, expected = conv(x, w), dense(jnp.asarray(f64(x)), filt)
    assert relative_error(y, expected) < 1e-12
    np.testing.assert_array_equal(np.asarray(y)[..., 16:], 0.0)  # the empty block-column
    r = random_array(rng, y.shape, np.float64)
    gx, gw = jax.grad(lambda x, w: jnp.sum(conv(x, w) * r), argnums=(0, 1))(x, w)
    gx_ref, gf_ref = jax.grad(lambda x, f: jnp.sum(dense(x, f) * r), argnums=(0, 1))(jnp.asarray(f64(x)), filt)
    assert relative_error(gx, gx_ref) < 1e-12
    np.testing.assert_array_equal(np.asarray(gx)[..., 8:16], 0.0)  # the empty block-row
    support = dense_filter(mask, 8, np.ones(w.shape)) != 0
    assert relative_error(dense_filter(mask, 8, gw), np.asarray(gf_ref) * support) < 1e-12


def test_check_grads_second_order_strided(rng):
    layout = jbs.Layout(sparse_mask(rng), 8)
    x = random_array(rng, (1, 7, 24), np.float64)
    w = random_array(rng, jbs.conv_weight_shape(layout, (3,)), np.float64)
    conv = lambda x, w: jnp.tanh(jbs.conv(x, w, layout, strides=2, dilation=2, padding=((2, 1),)))
    check_grads(conv, (x, w), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float32], ids=lambda d: np.dtype(d).name)
def test_gradient_dtypes(rng, dtype):
    """Gradients come back in the primal's dtype, also from a wider preferred_element_type."""
    layout = jbs.Layout(sparse_mask(rng), 16)
    x = random_array(rng, (2, 6, 5, 48), dtype)
    w = random_array(rng, jbs.conv_weight_shape(layout, (3, 3)), dtype)
    r = random_array(rng, (2, 3, 3, 48), np.float32)
    conv = lambda x, w: jbs.conv(x, w, layout, strides=2, padding="SAME",
                                 preferred_element_type=jnp.float32, precision="highest")
    gx, gw = jax.grad(lambda x, w: jnp.sum(conv(x, w) * r), argnums=(0, 1))(x, w)
    assert gx.dtype == np.dtype(dtype) and gw.dtype == np.dtype(dtype)
    filt = jnp.asarray(dense_filter(layout.mask, 16, w))
    dense = lambda x, f: jnp.sum(dense_conv(x, f, (2, 2), "SAME", (1, 1)) * f64(r))
    gx_ref, gf_ref = jax.grad(dense, argnums=(0, 1))(jnp.asarray(f64(x)), filt)
    support = dense_filter(layout.mask, 16, np.ones(w.shape)) != 0
    assert_close(gx, gx_ref, dtype)
    assert_close(dense_filter(layout.mask, 16, gw), np.asarray(gf_ref) * support, dtype)


# Internal (G, Nb, D, H, W, C) geometry shared by the implementation tests below.
GEOMETRY = dict(kernel=(2, 3, 2), strides=(2, 1, 2), dilation=(1, 2, 1), pad_lo=(0, 2, 1),
                in_spatial=(5, 6, 4), out_spatial=(3, 4, 3))
GEOMETRY_PADDING = ((0, 1), (2, 0), (1, 1))  # the same, as the public function's padding


def internal_problem(rng, layout, groups=2, batch=2):
    rows, cols = layout.shape
    taps = int(np.prod(GEOMETRY["kernel"]))
    x = random_array(rng, (groups, batch, *GEOMETRY["in_spatial"], rows), np.float64)
    w = random_array(rng, (groups, layout.nnz, taps, layout.block_size, layout.block_size), np.float64)
    dy = random_array(rng, (groups, batch, *GEOMETRY["out_spatial"], cols), np.float64)
    return x, w, dy


def dense_internal(layout, x, w, dy):
    """Per group: y = conv(x, w), dx = conv's transpose applied to dy, dw = blocks of the filter
    gradient, from float64 lax.conv_general_dilated and its autodiff."""
    ys, dxs, dws = [], [], []
    strides, dilation = GEOMETRY["strides"], GEOMETRY["dilation"]
    for g in range(x.shape[0]):
        filt = jnp.asarray(dense_filter(layout.mask, layout.block_size,
                                        f64(w[g]).reshape(layout.nnz, *GEOMETRY["kernel"], *w.shape[-2:])))
        fn = lambda x, f: dense_conv(x, f, strides, GEOMETRY_PADDING, dilation)
        y, vjp = jax.vjp(fn, jnp.asarray(f64(x[g])), filt)
        dx, dfilt = vjp(jnp.asarray(f64(dy[g])))
        ys.append(y)
        dxs.append(dx)
        blocks = np.asarray(dfilt).reshape(-1, *layout.shape)  # (T, C, K)
        dws.append(np.stack([blocks[:, i * layout.block_size:(i + 1) * layout.block_size,
                                    j * layout.block_size:(j + 1) * layout.block_size]
                             for i, j in layout.coords]))
    return np.stack(ys), np.stack(dxs), np.stack(dws)


IMPLEMENTATIONS = {
    "cpu_ffi": (ops.conv, ops.conv_dx, ops.conv_dw),  # the registered CPU lowering
    "jnp_fallback": (reference.conv, reference.conv_dx, reference.conv_dw),
    "cuda_composite": (composite_conv, composite_conv_dx, composite_conv_dw),
}


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_implementations_match_dense(rng, impl):
    """The CPU kernels, the pure-jnp fallback of other platforms and the patch composite that
    CUDA falls back on, each on G = 2 groups with an empty block-row and block-column."""
    layout = jbs.Layout(sparse_mask(rng), 8)
    x, w, dy = internal_problem(rng, layout)
    params = dict(layout=layout, precision="highest", out_dtype=np.float64, **GEOMETRY)
    conv, conv_dx, conv_dw = (jax.jit(functools.partial(f, **params)) for f in IMPLEMENTATIONS[impl])
    y_ref, dx_ref, dw_ref = dense_internal(layout, x, w, dy)
    assert relative_error(conv(x, w), y_ref) < 1e-12
    assert relative_error(conv_dx(dy, w), dx_ref) < 1e-12
    assert relative_error(conv_dw(x, dy), dw_ref) < 1e-12


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_empty_problems(impl):
    """No batch members, or an empty output extent: empty results and zero weight gradients."""
    layout = jbs.Layout(np.array([[1, 0], [1, 1]], bool), 8)
    base = dict(layout=layout, precision="highest", out_dtype=np.float32, kernel=(1, 3, 3),
                strides=(1, 1, 1), dilation=(1, 1, 1))
    w = jnp.ones((1, 3, 9, 8, 8), jnp.float32)
    for batch, pad_lo, in_spatial, out_spatial in ((0, (0, 1, 1), (1, 5, 5), (1, 5, 5)),
                                                   (2, (0, 0, 0), (1, 2, 2), (1, 0, 0))):
        params = dict(base, pad_lo=pad_lo, in_spatial=in_spatial, out_spatial=out_spatial)
        conv, conv_dx, conv_dw = (jax.jit(functools.partial(f, **params)) for f in IMPLEMENTATIONS[impl])
        x = jnp.ones((1, batch, *in_spatial, 16), jnp.float32)
        dy = jnp.ones((1, batch, *out_spatial, 16), jnp.float32)
        assert conv(x, w).shape == dy.shape and conv_dx(dy, w).shape == x.shape
        dx = np.asarray(conv_dx(dy, w))
        np.testing.assert_array_equal(dx, np.zeros_like(dx))
        np.testing.assert_array_equal(np.asarray(conv_dw(x, dy)), np.zeros((1, 3, 9, 8, 8)))


def test_lowering_choice_follows_the_registered_targets():
    """CUDA uses the conv FFI targets once the extension registers them, the composite before."""
    with_targets = lowering.conv_implementations({"jbs_bsmm", "jbs_sampled", "jbs_conv", "jbs_conv_dw"})
    assert composite_conv not in with_targets.values()
    assert composite_conv_dx not in with_targets.values()
    assert composite_conv_dw not in with_targets.values()
    without = lowering.conv_implementations({"jbs_bsmm", "jbs_sampled"})
    assert list(without.values()) == [composite_conv, composite_conv_dx, composite_conv_dw]


def test_kernels_write_every_output_element(rng):
    """Outputs land in a donated NaN-filled buffer (XLA aliases it to the result), so an element
    the kernel skipped would stay NaN; empty block-columns and -rows must come back as zeros."""
    layout = jbs.Layout(sparse_mask(rng), 8)
    x, w, dy = internal_problem(rng, layout, groups=1)
    params = dict(layout=layout, precision="highest", out_dtype=np.float64, **GEOMETRY)
    for fn, a, b in ((ops.conv, x, w), (ops.conv_dx, dy, w), (ops.conv_dw, x, dy)):
        out = jax.eval_shape(lambda a, b: fn(a, b, **params), a, b)
        poisoned = jax.jit(lambda poison, a, b: fn(a, b, **params), donate_argnums=0, keep_unused=True)
        result = poisoned(jnp.full(out.shape, jnp.nan, out.dtype), a, b)
        assert not np.isnan(np.asarray(result)).any()
        np.testing.assert_array_equal(np.asarray(result), np.asarray(jax.jit(
            lambda a, b: fn(a, b, **params))(a, b)))  # and bitwise reproducible
    y = ops.conv(x, w, **params)
    dx = ops.conv_dx(dy, w, **params)
    np.testing.assert_array_equal(np.asarray(y)[..., 16:], 0.0)
    np.testing.assert_array_equal(np.asarray(dx)[..., 8:16], 0.0)


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_conv_handlers_reject_inconsistent_calls(rng, platform):
    """Shared validation: the CPU handlers (both targets) and, on a GPU, the CUDA jbs_conv."""
    devices = [d for d in jax.devices() if d.platform == "gpu"] if platform == "gpu" else jax.devices("cpu")
    if not devices:
        pytest.skip("no GPU visible to JAX")
    with jax.default_device(devices[0]):
        _check_conv_handler_errors(rng, check_dw=platform == "cpu")


def _check_conv_handler_errors(rng, check_dw):
    layout = jbs.Layout(random_mask(rng, 2, 2), 8)
    table = layout.column_table
    a = jnp.ones((1, 2, 1, 5, 5, 16), jnp.float32)
    w = jnp.ones((1, layout.nnz, 4, 8, 8), jnp.float32)  # 4 taps, but the kernel has 9
    geometry = {name: np.asarray(v, np.int64) for name, v in
                dict(kernel=(1, 3, 3), strides=(1, 1, 1), dilation=(1, 1, 1), pad_lo=(0, 1, 1)).items()}
    out = jax.ShapeDtypeStruct((1, 2, 1, 5, 5, 16), jnp.float32)
    call = jax.jit(lambda a, w: jax.ffi.ffi_call("jbs_conv", out)(
        a, w, jnp.asarray(table.offsets), jnp.asarray(table.entries), transpose_w=False,
        precision=np.int32(0), **geometry))
    with pytest.raises(Exception, match=r"jbs_conv: .*T = prod\(kernel\) = 9.*w \(1, \d+, 4, 8, 8\)"):
        jax.block_until_ready(call(a, w))
    if not check_dw:  # the filter gradient has no CUDA target (it lowers to the composite)
        return
    bad = dict(geometry, strides=np.asarray((1, 0, 1), np.int64))
    dw_out = jax.ShapeDtypeStruct((1, layout.nnz, 9, 8, 8), jnp.float32)
    call = jax.jit(lambda a, b: jax.ffi.ffi_call("jbs_conv_dw", dw_out)(
        a, b, jnp.asarray(layout.coords), precision=np.int32(0), **bad))
    with pytest.raises(Exception, match=r"jbs_conv_dw: .*must be positive.*strides=\(1, 0, 1\)"):
        jax.block_until_ready(call(a, jnp.ones((1, 2, 1, 5, 5, 16), jnp.float32)))


def test_halo_filter_grad_routing(monkeypatch):
    """Which filter gradients the CUDA halo-tile kernel is sent (the trace-time mirror of the
    handler's MakeHaloGeometry), and how many segments it splits their positions into."""
    layout = jbs.Layout(np.ones((2, 2), bool), 32)
    x = jax.ShapeDtypeStruct((1, 2, 1, 32, 32, 64), jnp.bfloat16)
    base = dict(layout=layout, out_dtype=jnp.bfloat16, kernel=(1, 3, 3), strides=(1, 1, 1),
                dilation=(1, 1, 1), out_spatial=(1, 32, 32))
    applies = lambda x=x, **change: lowering.halo_filter_grad_applies(x, **{**base, **change})
    assert applies()
    assert applies(out_dtype=jnp.float32)
    assert applies(x=jax.ShapeDtypeStruct(x.shape, jnp.float16), out_dtype=jnp.float16)
    assert not applies(x=jax.ShapeDtypeStruct(x.shape, jnp.float32), out_dtype=jnp.float32)
    assert not applies(layout=jbs.Layout(np.ones((4, 4), bool), 16))
    assert not applies(strides=(1, 2, 1))
    assert not applies(kernel=(3, 3, 3))                         # 27 taps
    assert not applies(out_spatial=(1, 4, 129))                  # a row longer than a tile
    assert applies(out_spatial=(1, 4, 128), kernel=(1, 1, 1))   # one row of 128
    assert not applies(out_spatial=(1, 4, 128))                  # its 3x3 halo: 3 x 130 > 256
    assert not applies(dilation=(1, 8, 8))                       # halo 20 x 48

    segments = lambda groups, nnz, batch, out_spatial=(1, 32, 32), kernel=(1, 3, 3): \
        lowering.halo_filter_grad_segments(groups, nnz, batch, kernel=kernel,
                                           dilation=(1, 1, 1), out_spatial=out_spatial)
    # The benchmark: 128 pairs, 32 images of 8 tiles (4 rows of 32) -> 8 segments
    assert segments(1, 128, 32) == 8
    assert segments(4, 128, 32) == 2                      # groups count as pairs
    assert segments(1, 4, 32) == 32                       # few pairs: 8 tiles per segment at most
    assert segments(1, 1, 1000) == 64                     # the handler's limit
    assert segments(1, 4, 1) == 1                         # 8 tiles: one segment
    assert segments(1, 4096, 32) == 1                     # enough pairs already
    assert segments(1, 4, 3, out_spatial=(2, 9, 7)) == 1  # 9 rows of 7 per tile: 6 tiles
    monkeypatch.setenv("JBS_CUDA_EXPERIMENT", "stream,conv_dw_unsplit")
    assert lowering.cuda_experiment_enabled("conv_dw_unsplit")
    assert segments(1, 128, 32) == 1
    monkeypatch.setenv("JBS_CUDA_EXPERIMENT", "conv_dw_unsplits")
    assert not lowering.cuda_experiment_enabled("conv_dw_unsplit")
