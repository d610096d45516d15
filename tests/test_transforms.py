"""Every JAX transformation, composed and to second order, against dense float64 math."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp
from jax.test_util import check_grads

import jax_blocksparse as jbs
from helpers import blocks_of, dense_weight, f64, random_array, random_mask, relative_error

TOL = 1e-10  # everything here is float64


@pytest.fixture
def problem(rng):
    mask = random_mask(rng, 4, 3, 0.5)
    layout = jbs.Layout(mask, 8)
    x = random_array(rng, (5, 32), np.float64)
    w = random_array(rng, layout.w_shape, np.float64)
    dy = random_array(rng, (5, 24), np.float64)
    return layout, x, w, dy


def W(layout, w):
    return dense_weight(layout.mask, layout.block_size, f64(w))


def close(actual, expected, tol=TOL):
    err = relative_error(actual, expected)
    assert err < tol, f"relative error {err:.3e}"


# -- gradients of each product against hand-derived float64 formulas --------------------------
def test_matmul_gradients(rng, problem):
    layout, x, w, _ = problem
    r = random_array(rng, (5, 24), np.float64)
    gx, gw = jax.grad(lambda x, w: jnp.sum(jbs.matmul(x, w, layout) * r), argnums=(0, 1))(x, w)
    close(gx, f64(r) @ W(layout, w).T)
    close(gw, blocks_of(layout.mask, 8, f64(x).T @ f64(r)))


def test_matmul_t_gradients(rng, problem):
    layout, _, w, dy = problem
    r = random_array(rng, (5, 32), np.float64)
    gdy, gw = jax.grad(lambda dy, w: jnp.sum(jbs.matmul_t(dy, w, layout) * r), argnums=(0, 1))(dy, w)
    close(gdy, f64(r) @ W(layout, w))
    close(gw, blocks_of(layout.mask, 8, f64(r).T @ f64(dy)))


def test_sampled_gradients(rng, problem):
    layout, x, _, dy = problem
    r = random_array(rng, layout.w_shape, np.float64)
    gx, gdy = jax.grad(lambda x, dy: jnp.sum(jbs.sampled_matmul(x, dy, layout) * r),
                       argnums=(0, 1))(x, dy)
    R = W(layout, r)
    close(gx, f64(dy) @ R.T)
    close(gdy, f64(x) @ R)


@pytest.mark.parametrize("product", ["matmul", "matmul_t", "sampled_matmul"])
def test_check_grads_second_order(problem, product):
    layout, x, w, dy = problem
    fn = {"matmul": lambda a, b: jbs.matmul(a, b, layout),
          "matmul_t": lambda a, b: jbs.matmul_t(a, b, layout),
          "sampled_matmul": lambda a, b: jbs.sampled_matmul(a, b, layout)}[product]
    args = {"matmul": (x, w), "matmul_t": (dy, w), "sampled_matmul": (x, dy)}[product]
    check_grads(lambda a, b: jnp.tanh(fn(a, b)), args, order=2, modes=("fwd", "rev"))


# -- forward mode ---------------------------------------------------------------------------
def test_jvp_with_symbolic_zero_tangents(rng, problem):
    layout, x, w, _ = problem
    tx = random_array(rng, x.shape, np.float64)
    tw = random_array(rng, w.shape, np.float64)
    _, only_x = jax.jvp(lambda x: jbs.matmul(x, w, layout), (x,), (tx,))
    close(only_x, f64(tx) @ W(layout, w))
    _, only_w = jax.jvp(lambda w: jbs.matmul(x, w, layout), (w,), (tw,))
    close(only_w, f64(x) @ W(layout, tw))
    _, both = jax.jvp(lambda x, w: jbs.matmul(x, w, layout), (x, w), (tx, tw))
    close(both, f64(tx) @ W(layout, w) + f64(x) @ W(layout, tw))


def test_jacfwd_equals_jacrev(problem):
    layout, x, w, _ = problem
    f = lambda w: jbs.matmul(x[:2], w, layout)
    close(jax.jacfwd(f)(w), jax.jacrev(f)(w))


def test_linearize(rng, problem):
    layout, x, w, _ = problem
    tw = random_array(rng, w.shape, np.float64)
    y, f_lin = jax.linearize(lambda w: jnp.sin(jbs.matmul(x, w, layout)), w)
    Y = f64(x) @ W(layout, w)
    close(y, np.sin(Y))
    close(f_lin(tw), np.cos(Y) * (f64(x) @ W(layout, tw)))


def test_zero_cotangent_paths(problem):
    layout, x, w, _ = problem
    # The product's output is cut off from the loss: its cotangent is a symbolic zero.
    g = jax.grad(lambda w: jnp.sum(jax.lax.stop_gradient(jbs.matmul(x, w, layout))) + jnp.sum(w))(w)
    np.testing.assert_array_equal(np.asarray(g), 1.0)
    gx = jax.grad(lambda x: jnp.sum(jbs.matmul(x, jax.lax.stop_gradient(w), layout)))(x)
    close(gx, np.ones((5, 24)) @ W(layout, w).T)


# -- second order ---------------------------------------------------------------------------
def test_hessian_vector_product(rng, problem):
    layout, x, w, _ = problem
    v = random_array(rng, w.shape, np.float64)
    loss = lambda w: jnp.sum(jbs.matmul(x, w, layout) ** 3)
    hvp = jax.jvp(jax.grad(loss), (w,), (v,))[1]
    # d/dw sum((xW)^3) = blocks(x.T 3(xW)^2); its derivative along V: blocks(x.T 6 (xW)(xV)).
    Y, V = f64(x) @ W(layout, w), f64(x) @ W(layout, v)
    close(hvp, blocks_of(layout.mask, 8, f64(x).T @ (6 * Y * V)))
    close(hvp, jax.grad(lambda w: jnp.vdot(jax.grad(loss)(w), v))(w))


# -- vmap -----------------------------------------------------------------------------------
def test_vmap_over_x_non_leading_axis(rng, problem):
    layout, _, w, _ = problem
    xs = random_array(rng, (5, 3, 32), np.float64)  # batch on axis 1
    ys = jax.vmap(lambda x: jbs.matmul(x, w, layout), in_axes=1, out_axes=2)(xs)
    close(ys, np.moveaxis(np.moveaxis(f64(xs), 1, 0) @ W(layout, w), 0, 2))


def test_vmap_over_w_stack(rng, problem):
    layout, x, _, _ = problem
    ws = random_array(rng, (layout.nnz, 3, 8, 8), np.float64)  # stack on axis 1
    ys = jax.vmap(lambda w: jbs.matmul(x, w, layout), in_axes=1)(ws)
    expected = np.stack([f64(x) @ W(layout, ws[:, b]) for b in range(3)])
    close(ys, expected)
    # One launch for the stack, not a loop: the jaxpr has a single primitive.
    jaxpr = jax.make_jaxpr(jax.vmap(lambda w: jbs.matmul(x, w, layout), in_axes=1))(ws)
    names = [e.primitive.name for e in jaxpr.jaxpr.eqns]
    assert names.count("blocksparse_matmul") == 1


def test_vmap_over_both(rng, problem):
    layout, _, _, _ = problem
    xs = random_array(rng, (4, 5, 32), np.float64)
    ws = random_array(rng, (4, *layout.w_shape), np.float64)
    ys = jax.vmap(lambda x, w: jbs.matmul(x, w, layout))(xs, ws)
    close(ys, np.stack([f64(xs[b]) @ W(layout, ws[b]) for b in range(4)]))
    dys = random_array(rng, (5, 4, 24), np.float64)
    dxs = jax.vmap(lambda dy, w: jbs.matmul_t(dy, w, layout), in_axes=(1, 0))(dys, ws)
    close(dxs, np.stack([f64(dys[:, b]) @ W(layout, ws[b]).T for b in range(4)]))


@pytest.mark.parametrize("axes", [(0, None), (None, 1), (2, 0)])
def test_vmap_sampled(rng, problem, axes):
    layout, _, _, _ = problem
    size = 3
    x_shape = [5, 32]
    dy_shape = [5, 24]
    if axes[0] is not None:
        x_shape.insert(axes[0], size)
    if axes[1] is not None:
        dy_shape.insert(axes[1], size)
    x = random_array(rng, tuple(x_shape), np.float64)
    dy = random_array(rng, tuple(dy_shape), np.float64)
    out = jax.vmap(lambda a, b: jbs.sampled_matmul(a, b, layout), in_axes=axes)(x, dy)
    pick = lambda a, ax, b: f64(a) if ax is None else np.take(f64(a), b, axis=ax)
    expected = np.stack([blocks_of(layout.mask, 8, pick(x, axes[0], b).T @ pick(dy, axes[1], b))
                         for b in range(size)])
    close(out, expected)


def test_vmap_matmul_t_over_dy_only(rng, problem):
    layout, _, w, _ = problem
    dys = random_array(rng, (5, 24, 2), np.float64)
    out = jax.vmap(lambda dy: jbs.matmul_t(dy, w, layout), in_axes=2)(dys)
    close(out, np.stack([f64(dys[..., b]) @ W(layout, w).T for b in range(2)]))


def test_per_example_gradients(rng, problem):
    layout, x, w, _ = problem
    targets = random_array(rng, (5, 24), np.float64)
    loss = lambda w, xi, ti: jnp.sum((jbs.matmul(xi, w, layout) - ti) ** 2)
    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(w, x, targets)
    Wd = W(layout, w)
    expected = np.stack([blocks_of(layout.mask, 8, np.outer(f64(x[i]), 2 * (f64(x[i]) @ Wd - f64(targets[i]))))
                         for i in range(5)])
    close(grads, expected)


def test_nested_vmap_of_grad_over_weight_stack(rng, problem):
    layout, x, _, _ = problem
    ws = random_array(rng, (2, *layout.w_shape), np.float64)
    g = jax.vmap(jax.grad(lambda w: jnp.sum(jnp.tanh(jbs.matmul(x, w, layout)))))(ws)
    expected = np.stack([blocks_of(layout.mask, 8, f64(x).T @ (1 - np.tanh(f64(x) @ W(layout, ws[b])) ** 2))
                         for b in range(2)])
    close(g, expected)


# -- control flow and rematerialisation --------------------------------------------------------
def _square_problem(rng):
    mask = random_mask(rng, 4, 4, 0.5)
    layout = jbs.Layout(mask, 8)
    w = random_array(rng, layout.w_shape, np.float64) * 0.3
    h0 = random_array(rng, (3, 32), np.float64)
    return layout, w, h0


def test_scan_and_its_gradient(rng):
    layout, w, h0 = _square_problem(rng)

    def run(w, h0, product):
        def step(h, _):
            h = jnp.tanh(product(h, w))
            return h, jnp.sum(h)
        h, sums = jax.lax.scan(step, h0, None, length=4)
        return jnp.sum(h) + jnp.sum(sums)

    sparse = lambda h, w: jbs.matmul(h, w, layout)
    dense = lambda h, w: h @ layout.todense(w)
    close(run(w, h0, sparse), run(w, h0, dense))
    close(jax.grad(run)(w, h0, sparse), jax.grad(run)(w, h0, dense))


def test_checkpoint(rng):
    layout, w, h0 = _square_problem(rng)
    body = lambda h, w: jnp.tanh(jbs.matmul(jnp.tanh(jbs.matmul(h, w, layout)), w, layout))
    remat = jax.checkpoint(body)
    close(jax.grad(lambda w: jnp.sum(remat(h0, w)))(w), jax.grad(lambda w: jnp.sum(body(h0, w)))(w))
    close(jax.grad(lambda w: jnp.sum(remat(h0, w)))(w),
          jax.grad(lambda w: jnp.sum(jnp.tanh(jnp.tanh(h0 @ layout.todense(w)) @ layout.todense(w))))(w))


def test_jit_with_layout_as_static_argument(rng):
    layout, w, h0 = _square_problem(rng)
    f = jax.jit(jbs.matmul, static_argnums=2)
    same = jbs.Layout(layout.mask.copy(), 8)
    close(f(h0, w, layout), f(h0, w, same))
    close(f(h0, w, layout), f64(h0) @ W(layout, w))


def test_under_disable_jit(rng, problem):
    """jax.disable_jit() (op-by-op debugging): each product still runs its compiled kernel, and
    its gradient is the float64 one."""
    layout, x, w, dy = problem
    r = random_array(rng, (5, 24), np.float64)
    with jax.disable_jit():
        y = jbs.matmul(x, w, layout)
        dx = jbs.matmul_t(dy, w, layout)
        dw = jbs.sampled_matmul(x, dy, layout)
        gw = jax.grad(lambda w: jnp.sum(jbs.matmul(x, w, layout) * r))(w)
    close(y, f64(x) @ W(layout, w))
    close(dx, f64(dy) @ W(layout, w).T)
    close(dw, blocks_of(layout.mask, 8, f64(x).T @ f64(dy)))
    close(gw, blocks_of(layout.mask, 8, f64(x).T @ f64(r)))
