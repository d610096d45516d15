"""The Flax (NNX and Linen), Haiku and Equinox layers (linear, convolution, LSTM cell).

Each framework is optional: its tests skip when it is not installed. Every layer is checked for
shapes, fan-in initialization, value and gradients against a dense float64 reference built from
the same masked weights (with jnp scatters, not the library), a jit-compiled optax training step,
and an orbax save/restore round trip.
"""
from functools import partial

import numpy as np
import pytest
import jax
import jax.numpy as jnp

import jax_blocksparse as jbs
from jax_blocksparse import nn as jbs_nn

BS = 8


# -- framework adapters: a uniform (params, pure apply, getters) view of each layer ---------------
class NNX:
    name = "flax.nnx"

    def __init__(self):
        pytest.importorskip("flax")
        from flax import nnx
        from jax_blocksparse.nn import flax as layers
        self.nnx, self.layers = nnx, layers

    def _split(self, module):
        graphdef, state = self.nnx.split(module)
        return graphdef, state

    def linear(self, layout, use_bias=True, param_dtype=jnp.float64, dtype=None, seed=0):
        module = self.layers.BlockSparseLinear(layout, use_bias=use_bias, param_dtype=param_dtype,
                                               dtype=dtype, rngs=self.nnx.Rngs(seed))
        graphdef, state = self._split(module)
        apply = lambda state, x: self.nnx.merge(graphdef, state)(x)
        get = lambda s: (_value(s["kernel"]), _value(s["bias"]) if use_bias else None)
        return state, apply, get

    def conv(self, layout, kernel_size, use_bias=True, param_dtype=jnp.float64, dtype=None, seed=0,
             **conv_args):
        module = self.layers.BlockSparseConv(layout, kernel_size, use_bias=use_bias,
                                             param_dtype=param_dtype, dtype=dtype,
                                             rngs=self.nnx.Rngs(seed), **conv_args)
        graphdef, state = self._split(module)
        apply = lambda state, x: self.nnx.merge(graphdef, state)(x)
        get = lambda s: (_value(s["kernel"]), _value(s["bias"]) if use_bias else None)
        return state, apply, get

    def lstm(self, n_in, layout, input_layout=None, param_dtype=jnp.float64, seed=0):
        module = self.layers.SparseLSTMCell(n_in, layout, input_layout=input_layout,
                                            param_dtype=param_dtype, rngs=self.nnx.Rngs(seed))
        graphdef, state = self._split(module)

        def step(state, x, c, h):
            (c, h), y = self.nnx.merge(graphdef, state)((c, h), x)
            return c, h

        get = lambda s: (_value(s["input_kernel"]), _value(s["recurrent_kernel"]), _value(s["bias"]))
        return state, step, get


class Linen:
    name = "flax.linen"

    def __init__(self):
        pytest.importorskip("flax")
        from jax_blocksparse.nn.flax import linen as layers
        self.layers = layers

    def linear(self, layout, use_bias=True, param_dtype=jnp.float64, dtype=None, seed=0):
        module = self.layers.BlockSparseLinear(layout, use_bias=use_bias, param_dtype=param_dtype,
                                               dtype=dtype)
        params = module.init(jax.random.key(seed), jnp.zeros((1, layout.shape[0]), param_dtype))
        get = lambda p: (p["params"]["kernel"], p["params"]["bias"] if use_bias else None)
        return params, module.apply, get

    def conv(self, layout, kernel_size, use_bias=True, param_dtype=jnp.float64, dtype=None, seed=0,
             **conv_args):
        module = self.layers.BlockSparseConv(layout, kernel_size, use_bias=use_bias,
                                             param_dtype=param_dtype, dtype=dtype, **conv_args)
        sample = jax.ShapeDtypeStruct(_conv_sample(layout, kernel_size, param_dtype).shape, param_dtype)
        params = module.lazy_init(jax.random.key(seed), sample)  # no forward pass to compile
        get = lambda p: (p["params"]["kernel"], p["params"]["bias"] if use_bias else None)
        return params, module.apply, get

    def lstm(self, n_in, layout, input_layout=None, param_dtype=jnp.float64, seed=0):
        module = self.layers.SparseLSTMCell(layout, input_layout=input_layout, param_dtype=param_dtype)
        carry = module.initialize_carry(None, (1, n_in))
        params = module.init(jax.random.key(seed), carry, jnp.zeros((1, n_in), param_dtype))

        def step(p, x, c, h):
            (c, h), _ = module.apply(p, (c, h), x)
            return c, h

        get = lambda p: (p["params"]["input_kernel"], p["params"]["recurrent_kernel"],
                         p["params"]["bias"])
        return params, step, get


class Haiku:
    name = "haiku"

    def __init__(self):
        self.hk = pytest.importorskip("haiku")
        from jax_blocksparse.nn import haiku as layers
        self.layers = layers

    def linear(self, layout, use_bias=True, param_dtype=jnp.float64, dtype=None, seed=0):
        hk, layers = self.hk, self.layers
        model = hk.without_apply_rng(hk.transform(lambda x: layers.BlockSparseLinear(
            layout, with_bias=use_bias, param_dtype=param_dtype, dtype=dtype)(x)))
        params = model.init(jax.random.key(seed), jnp.zeros((1, layout.shape[0]), param_dtype))
        get = lambda p: (p["block_sparse_linear"]["w"],
                         p["block_sparse_linear"]["b"] if use_bias else None)
        return params, model.apply, get

    def conv(self, layout, kernel_size, use_bias=True, param_dtype=jnp.float64, dtype=None, seed=0,
             **conv_args):
        hk, layers = self.hk, self.layers
        model = hk.without_apply_rng(hk.transform(lambda x: layers.BlockSparseConv(
            layout, kernel_size, with_bias=use_bias, param_dtype=param_dtype, dtype=dtype,
            **conv_args)(x)))
        params = model.init(jax.random.key(seed), _conv_sample(layout, kernel_size, param_dtype))
        get = lambda p: (p["block_sparse_conv"]["w"],
                         p["block_sparse_conv"]["b"] if use_bias else None)
        return params, model.apply, get

    def lstm(self, n_in, layout, input_layout=None, param_dtype=jnp.float64, seed=0):
        hk, layers = self.hk, self.layers

        def forward(x, c, h):
            cell = layers.SparseLSTMCell(layout, input_layout=input_layout, param_dtype=param_dtype)
            _, state = cell(x, hk.LSTMState(hidden=h, cell=c))
            return state.cell, state.hidden

        model = hk.without_apply_rng(hk.transform(forward))
        zeros = jnp.zeros((1, layout.shape[0]), param_dtype)
        params = model.init(jax.random.key(seed), jnp.zeros((1, n_in), param_dtype), zeros, zeros)
        get = lambda p: (p["sparse_lstm_cell"]["w_x"], p["sparse_lstm_cell"]["w_h"],
                         p["sparse_lstm_cell"]["b"])
        return params, model.apply, get


class Equinox:
    name = "equinox"

    def __init__(self):
        pytest.importorskip("equinox")
        from jax_blocksparse.nn import equinox as layers
        self.layers = layers

    def linear(self, layout, use_bias=True, param_dtype=jnp.float64, dtype=None, seed=0):
        model = self.layers.BlockSparseLinear(layout, use_bias=use_bias, param_dtype=param_dtype,
                                              dtype=dtype, key=jax.random.key(seed))
        return model, lambda m, x: m(x), lambda m: (m.weight, m.bias)

    def conv(self, layout, kernel_size, use_bias=True, param_dtype=jnp.float64, dtype=None, seed=0,
             **conv_args):
        model = self.layers.BlockSparseConv(layout, kernel_size, use_bias=use_bias,
                                            param_dtype=param_dtype, dtype=dtype,
                                            key=jax.random.key(seed), **conv_args)
        return model, lambda m, x: m(x), lambda m: (m.weight, m.bias)

    def lstm(self, n_in, layout, input_layout=None, param_dtype=jnp.float64, seed=0):
        model = self.layers.SparseLSTMCell(n_in, layout, input_layout=input_layout,
                                           param_dtype=param_dtype, key=jax.random.key(seed))

        def step(m, x, c, h):
            h, c = m(x, (h, c))
            return c, h

        return model, step, lambda m: (m.weight_ih, m.weight_hh, m.bias)


def _value(variable):
    return variable[...]  # an nnx.Variable, or an array


def _conv_sample(layout, kernel_size, dtype):
    """A zero ``(1, *spatial, C)`` input large enough for any kernel in these tests."""
    return jnp.zeros((1, *(8,) * np.size(kernel_size), layout.shape[0]), dtype)


@pytest.fixture(params=[NNX, Linen, Haiku, Equinox], ids=lambda a: a.name)
def fw(request):
    return request.param()


# -- independent dense references ------------------------------------------------------------
def dense_from_blocks(mask, block_size, w):
    """The (C, N) matrix from the blocks ``w`` (row-major over ``mask``), by jnp scatter."""
    mask = np.asarray(mask, bool)
    rows, cols = np.nonzero(mask)
    r = (rows[:, None, None] * block_size + np.arange(block_size)[None, :, None])
    c = (cols[:, None, None] * block_size + np.arange(block_size)[None, None, :])
    dense = jnp.zeros((mask.shape[0] * block_size, mask.shape[1] * block_size), w.dtype)
    return dense.at[np.broadcast_to(r, w.shape), np.broadcast_to(c, w.shape)].set(w)


def dense_linear(w, b, x, mask):
    y = x @ dense_from_blocks(mask, BS, w)
    return y if b is None else y + b


def dense_lstm_step(w_x, w_h, b, x, c, h, mask, input_mask=None):
    gate_mask = np.tile(mask, (1, 4))
    W_x = w_x if input_mask is None else dense_from_blocks(np.tile(input_mask, (1, 4)), BS, w_x)
    z = x @ W_x + h @ dense_from_blocks(gate_mask, BS, w_h) + b
    H = mask.shape[1] * BS
    i, f, g, o = z[..., :H], z[..., H:2 * H], z[..., 2 * H:3 * H], z[..., 3 * H:]
    sig = lambda v: 1.0 / (1.0 + jnp.exp(-v))
    c = sig(f) * c + sig(i) * jnp.tanh(g)
    return c, sig(o) * jnp.tanh(c)


def dense_conv_filter(mask, block_size, w):
    """The dense ``(*kernel_size, C, K)`` HWIO filter from the blocks ``w`` of shape
    ``(nnz, *kernel_size, bs, bs)`` (row-major over ``mask``), by jnp scatter."""
    mask = np.asarray(mask, bool)
    rows, cols = np.nonzero(mask)
    r = rows[:, None, None] * block_size + np.arange(block_size)[None, :, None]
    c = cols[:, None, None] * block_size + np.arange(block_size)[None, None, :]
    shape = (len(rows), block_size, block_size)
    taps = jnp.moveaxis(w, 0, -3)  # (*kernel_size, nnz, bs, bs)
    dense = jnp.zeros((*w.shape[1:-2], mask.shape[0] * block_size, mask.shape[1] * block_size), w.dtype)
    return dense.at[..., np.broadcast_to(r, shape), np.broadcast_to(c, shape)].set(taps)


_CONV_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def dense_conv(w, b, x, mask, strides=1, padding="SAME", dilation=1):
    nd = x.ndim - 2
    expand = lambda v: (v,) * nd if isinstance(v, int) else tuple(v)
    y = jax.lax.conv_general_dilated(x, dense_conv_filter(mask, BS, w), expand(strides), padding,
                                     rhs_dilation=expand(dilation), dimension_numbers=_CONV_DIMS[nd],
                                     precision=jax.lax.Precision.HIGHEST)
    return y if b is None else y + b


def rect_mask():
    mask = np.array([[1, 0, 1, 1, 0],
                     [1, 0, 0, 1, 0],
                     [0, 0, 1, 1, 1]], bool)  # column 1 has no inputs
    return mask


def square_mask():
    from jax_blocksparse import patterns
    pytest.importorskip("networkx")
    return patterns.watts_strogatz(6, 2, 0.3, seed=1)


# -- BlockSparseLinear ---------------------------------------------------------------------------
@pytest.mark.parametrize("use_bias", [True, False])
def test_linear_shapes_values_grads(fw, rng, use_bias):
    mask = rect_mask()
    layout = jbs.Layout(mask, BS)
    params, apply, get = fw.linear(layout, use_bias=use_bias)
    w, b = get(params)
    assert w.shape == layout.w_shape and w.dtype == jnp.float64
    assert (b is None) == (not use_bias)
    if use_bias:
        assert b.shape == (layout.shape[1],)
        params = jax.tree.map(lambda a: a + 0.1 if a.shape == b.shape else a, params)
        w, b = get(params)
    x = jnp.asarray(rng.standard_normal((2, 3, layout.shape[0])))
    y = jax.jit(apply)(params, x)
    assert y.shape == (2, 3, layout.shape[1]) and y.dtype == jnp.float64
    np.testing.assert_allclose(y, dense_linear(w, b, x, mask), rtol=1e-12, atol=1e-12)

    ct = jnp.asarray(rng.standard_normal(y.shape))
    g_params, g_x = jax.jit(jax.grad(lambda p, x: jnp.sum(apply(p, x) * ct), argnums=(0, 1)))(params, x)
    ref = jax.grad(lambda w, b, x: jnp.sum(dense_linear(w, b, x, mask) * ct),
                   argnums=(0, 1, 2) if use_bias else (0, 2))(w, b, x)
    g_w, g_b = get(g_params)
    np.testing.assert_allclose(g_w, ref[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(g_x, ref[-1], rtol=1e-10, atol=1e-10)
    if use_bias:
        np.testing.assert_allclose(g_b, ref[1], rtol=1e-10, atol=1e-10)


def test_linear_fan_in_init(fw):
    mask = np.zeros((4, 3), bool)
    mask[:, 0] = True        # fan-in 4 * 16 = 64
    mask[2, 1] = True        # fan-in 16
    # column 2 has no inputs (and no weights)
    layout = jbs.Layout(mask, 16)
    params, _, get = fw.linear(layout, param_dtype=jnp.float32, seed=3)
    w, b = get(params)
    w = np.asarray(w)
    col = layout.coords[:, 1]
    assert np.std(w[col == 0]) == pytest.approx(1 / 8, rel=0.15)
    assert np.std(w[col == 1]) == pytest.approx(1 / 4, rel=0.15)
    assert np.all(np.asarray(b) == 0)


def test_linear_dtypes_and_mask_input(fw, rng):
    mask = rect_mask()
    layout = jbs.Layout(mask, BS)
    params, apply, get = fw.linear(layout, param_dtype=jnp.float32, dtype=jnp.bfloat16)
    assert get(params)[0].dtype == jnp.float32
    x = jnp.asarray(rng.standard_normal((4, layout.shape[0])), jnp.float32)
    y = apply(params, x)
    assert y.dtype == jnp.bfloat16
    w, b = get(params)
    ref = dense_linear(jnp.asarray(w, jnp.float64), jnp.asarray(b, jnp.float64),
                       jnp.asarray(x, jnp.float64), mask)
    assert np.linalg.norm(np.asarray(y, np.float64) - ref) / np.linalg.norm(ref) < 2e-2
    # params follow the input dtype when dtype is None (promotion), float32 here
    params, apply, _ = fw.linear(layout, param_dtype=jnp.float32)
    assert apply(params, x).dtype == jnp.float32


def test_mask_plus_block_size():
    from jax_blocksparse.nn import as_layout
    layout = as_layout(rect_mask(), 8)
    assert layout == jbs.Layout(rect_mask(), 8)
    assert as_layout(layout) is layout
    with pytest.raises(ValueError, match="contradicts"):
        as_layout(layout, 16)
    with pytest.raises(TypeError, match="block_size"):
        as_layout(rect_mask())


def test_core_import_is_framework_free():
    import subprocess
    import sys
    code = ("import sys, jax_blocksparse, jax_blocksparse.nn, jax_blocksparse.patterns; "
            "bad = [m for m in ('flax', 'haiku', 'equinox', 'optax', 'networkx') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- SparseLSTMCell ------------------------------------------------------------------------------
@pytest.mark.parametrize("sparse_input", [False, True], ids=["dense_input", "sparse_input"])
def test_lstm_values_and_grads(fw, rng, sparse_input):
    mask = square_mask()
    layout = jbs.Layout(mask, BS)
    hidden = layout.shape[0]
    n_in, input_mask, input_layout = 5, None, None
    if sparse_input:
        input_mask = rng.random((2, mask.shape[1])) < 0.5
        input_mask[0, 0] = True
        input_layout = jbs.Layout(input_mask, BS)
        n_in = input_layout.shape[0]
    params, step, get = fw.lstm(n_in, layout, input_layout)
    w_x, w_h, b = get(params)
    assert w_h.shape == (4 * layout.nnz, BS, BS)
    assert w_x.shape == ((n_in, 4 * hidden) if not sparse_input else (4 * input_layout.nnz, BS, BS))
    assert b.shape == (4 * hidden,)
    np.testing.assert_array_equal(np.asarray(b).reshape(4, hidden), np.repeat([[0.], [1.], [0.], [0.]], hidden, 1))

    xs = jnp.asarray(rng.standard_normal((2, 2, n_in)))  # 2 steps, batch 2
    ct = jnp.asarray(rng.standard_normal((2, hidden)))

    def unroll(stepper, p):
        c = h = jnp.zeros((2, hidden), jnp.float64)
        for x in xs:
            c, h = stepper(p, x, c, h)
        return c, h

    ref_step = lambda p, x, c, h: dense_lstm_step(*p, x, c, h, mask, input_mask)

    def loss(stepper, p):
        c, h = unroll(stepper, p)
        return jnp.sum(h * ct) + jnp.sum(c), (c, h)

    (_, (c, h)), grads = jax.jit(jax.value_and_grad(partial(loss, step), has_aux=True))(params)
    (_, (c_ref, h_ref)), refs = jax.jit(jax.value_and_grad(partial(loss, ref_step), has_aux=True))(
        (w_x, w_h, b))
    assert h.shape == (2, hidden)
    np.testing.assert_allclose(h, h_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c, c_ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(get(grads), refs):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)


def test_lstm_rejects_rectangular_layout(fw):
    with pytest.raises(ValueError, match="square"):
        fw.lstm(4, jbs.Layout(rect_mask(), BS))


# -- BlockSparseConv -----------------------------------------------------------------------------
CONV_CASES = {
    "1d": dict(kernel_size=3, spatial=(11,), args=dict(dilation=2)),
    "2d": dict(kernel_size=(3, 2), spatial=(7, 6), args=dict(strides=(2, 1), padding="VALID")),
    "3d": dict(kernel_size=(2, 2, 2), spatial=(4, 5, 3),
               args=dict(padding=((1, 0), (0, 1), (1, 1)), strides=(1, 2, 1))),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_shapes_values_grads(fw, rng, case):
    cfg = CONV_CASES[case]
    mask = rect_mask()
    layout = jbs.Layout(mask, BS)
    kernel_size = tuple(np.atleast_1d(cfg["kernel_size"]))
    use_bias = case != "3d"
    params, apply, get = fw.conv(layout, cfg["kernel_size"], use_bias=use_bias, **cfg["args"])
    w, b = get(params)
    assert w.shape == (layout.nnz, *kernel_size, BS, BS) == jbs.conv_weight_shape(layout, kernel_size)
    assert w.dtype == jnp.float64
    assert (b is None) == (not use_bias)
    if use_bias:
        assert b.shape == (layout.shape[1],)
        params = jax.tree.map(lambda a: a + 0.1 if a.shape == b.shape else a, params)
        w, b = get(params)
    x = jnp.asarray(rng.standard_normal((2, *cfg["spatial"], layout.shape[0])))
    ref, ref_vjp = jax.vjp(lambda w, b, x: dense_conv(w, b, x, mask, **cfg["args"]), w, b, x)
    ct = jnp.asarray(rng.standard_normal(ref.shape))

    @jax.jit
    def forward_backward(p, x):  # one compilation for the value and the gradients
        y, vjp = jax.vjp(apply, p, x)
        return y, vjp(ct)

    y, (g_params, g_x) = forward_backward(params, x)
    assert y.shape == ref.shape and y.shape[-1] == layout.shape[1] and y.dtype == jnp.float64
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    r_w, r_b, r_x = ref_vjp(ct)
    g_w, g_b = get(g_params)
    np.testing.assert_allclose(g_w, r_w, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(g_x, r_x, rtol=1e-10, atol=1e-10)
    if use_bias:
        np.testing.assert_allclose(g_b, r_b, rtol=1e-10, atol=1e-10)


def test_conv_fan_in_init(fw):
    layout = jbs.Layout(rect_mask(), BS)  # block-columns 3 and 4 get 3 and 1 input blocks
    params, _, get = fw.conv(layout, (3, 2), param_dtype=jnp.float32, seed=3)
    w, b = get(params)
    w = np.asarray(w)
    col = layout.coords[:, 1]
    assert np.std(w[col == 3]) == pytest.approx(1 / np.sqrt(3 * BS * 6), rel=0.1)
    assert np.std(w[col == 4]) == pytest.approx(1 / np.sqrt(1 * BS * 6), rel=0.15)
    assert np.all(np.asarray(b) == 0)
    np.testing.assert_array_equal(jbs_nn.conv_fan_in(layout, (3, 2))[::BS],
                                  np.array([2, 0, 2, 3, 1]) * BS * 6)


def test_conv_dtypes_and_batch_dims(fw, rng):
    mask = rect_mask()
    layout = jbs.Layout(mask, BS)
    params, apply, get = fw.conv(layout, (3, 2), param_dtype=jnp.float32, dtype=jnp.bfloat16)
    assert get(params)[0].dtype == jnp.float32
    x = jnp.asarray(rng.standard_normal((2, 3, 5, 4, layout.shape[0])), jnp.float32)
    y = jax.jit(apply)(params, x)  # two leading batch dims
    assert y.shape == (2, 3, 5, 4, layout.shape[1]) and y.dtype == jnp.bfloat16
    w, b = (jnp.asarray(a, jnp.float64) for a in get(params))
    ref = dense_conv(w, b, jnp.asarray(x, jnp.float64).reshape(6, 5, 4, -1), mask).reshape(y.shape)
    assert np.linalg.norm(np.asarray(y, np.float64) - ref) / np.linalg.norm(ref) < 2e-2
    unbatched = jax.eval_shape(apply, params, x[0, 0])
    assert unbatched.shape == (5, 4, layout.shape[1]) and unbatched.dtype == jnp.bfloat16


# -- training and checkpointing --------------------------------------------------------------------
def test_linear_optax_training_step(fw, rng):
    optax = pytest.importorskip("optax")
    mask = rect_mask()
    layout = jbs.Layout(mask, BS)
    params, apply, _ = fw.linear(layout, param_dtype=jnp.float32)
    x = jnp.asarray(rng.standard_normal((64, layout.shape[0])), jnp.float32)
    target_w = jnp.asarray(rng.standard_normal((layout.shape[0], layout.shape[1])) * 0.2, jnp.float32)
    y = x @ target_w * np.repeat(mask.any(axis=0), BS)  # reachable part of a dense target

    loss_fn = lambda p: jnp.mean((apply(p, x) - y) ** 2)
    params, first = fit(optax, params, loss_fn, 3e-2, 40)
    assert float(loss_fn(params)) < 0.3 * float(first)


def fit(optax, params, loss_fn, learning_rate, steps):
    """``steps`` jit-compiled adam steps; returns the trained params and the first loss."""
    opt = optax.adam(learning_rate)

    @jax.jit
    def train_step(p, state):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, state = opt.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    state = opt.init(params)
    first = None
    for _ in range(steps):
        params, state, loss = train_step(params, state)
        first = loss if first is None else first
    return params, first


def test_conv_optax_training_step(fw, rng):
    optax = pytest.importorskip("optax")
    mask = rect_mask()
    layout = jbs.Layout(mask, BS)
    params, apply, _ = fw.conv(layout, (3, 2), param_dtype=jnp.float32)
    x = jnp.asarray(rng.standard_normal((8, 6, 6, layout.shape[0])), jnp.float32)
    target_w = jnp.asarray(rng.standard_normal((3, 2, *layout.shape)) * 0.1, jnp.float32)
    y = jax.lax.conv_general_dilated(x, target_w, (1, 1), "SAME",
                                     dimension_numbers=_CONV_DIMS[2])
    y = y * np.repeat(mask.any(axis=0), BS)  # reachable part of a dense target

    loss_fn = lambda p: jnp.mean((apply(p, x) - y) ** 2)
    params, first = fit(optax, params, loss_fn, 3e-2, 40)
    assert float(loss_fn(params)) < 0.3 * float(first)


def test_lstm_optax_training_step(fw, rng):
    optax = pytest.importorskip("optax")
    layout = jbs.Layout(square_mask(), BS)
    hidden = layout.shape[0]
    params, step, _ = fw.lstm(3, layout, param_dtype=jnp.float32)
    xs = jnp.asarray(rng.standard_normal((4, 16, 3)), jnp.float32)
    target = jnp.tanh(jnp.sum(xs, axis=0) @ jnp.ones((3, hidden), jnp.float32) * 0.3)

    def loss_fn(p):
        c = h = jnp.zeros((16, hidden), jnp.float32)
        for x in xs:
            c, h = step(p, x, c, h)
        return jnp.mean((h - target) ** 2)

    opt = optax.adam(1e-2)

    @jax.jit
    def train_step(p, state):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, state = opt.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    state = opt.init(params)
    losses = []
    for _ in range(25):
        params, state, loss = train_step(params, state)
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]


def test_orbax_round_trip(fw, rng, tmp_path):
    layout = jbs.Layout(rect_mask(), BS)
    params, apply, get = fw.linear(layout, param_dtype=jnp.float32, seed=5)
    x = jnp.asarray(rng.standard_normal((3, layout.shape[0])), jnp.float32)
    round_trip(params, apply, get, x, tmp_path)


def test_conv_orbax_round_trip(fw, rng, tmp_path):
    layout = jbs.Layout(rect_mask(), BS)
    params, apply, get = fw.conv(layout, (3, 2), param_dtype=jnp.float32, seed=5, strides=2)
    x = jnp.asarray(rng.standard_normal((2, 6, 5, layout.shape[0])), jnp.float32)
    round_trip(params, apply, get, x, tmp_path)


def round_trip(params, apply, get, x, tmp_path):
    """Save ``params`` (shifted off their init values) with orbax, restore, compare."""
    ocp = pytest.importorskip("orbax.checkpoint")
    params = jax.tree.map(lambda a: a + 1.0, params)  # not the init values
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", params)
    checkpointer.wait_until_finished()
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    restored = checkpointer.restore(tmp_path / "ckpt", abstract)
    for a, b in zip(get(params), get(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(apply(params, x), apply(restored, x))
