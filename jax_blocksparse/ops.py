"""The three block-sparse primitives and their transformation rules.

Every primitive works on a group axis ``G`` in front: a stack of weights that
share one layout. Users never see it (the public functions bind ``G = 1``);
``vmap`` over the weights folds its axis into ``G``, so a batch of weights is
one kernel launch, never a Python loop.

=====================  ==========================  ===================
primitive              operands                    result
=====================  ==========================  ===================
``bsmm_p``             x (G, M, C), w (G, nnz, b, b)   y = x @ W  (G, M, N)
``bsmm_t_p``           dy (G, M, N), w                 dx = dy @ W.T (G, M, C)
``sampled_p``          x (G, M, C), dy (G, M, N)       blocks of x.T @ dy (G, nnz, b, b)
=====================  ==========================  ===================

All three are bilinear and transpose into each other:

* ``y = x @ W``:      ct_x = ct @ W.T (bsmm_t),   ct_W = sampled(x, ct)
* ``dx = dy @ W.T``:  ct_dy = ct @ W (bsmm),      ct_W = sampled(ct, dy)
* ``dW = x.T @ dy``:  ct_x = dy @ ct_W.T (bsmm_t), ct_dy = x @ ct_W (bsmm)

Params shared by all: ``layout`` (static, hashable), ``precision``
(``"default"`` or ``"highest"``) and ``out_dtype`` (the input dtype, or
float32 for 16-bit inputs).

The convolution's three primitives (``conv_p``, ``conv_dx_p``, ``conv_dw_p``)
follow the same pattern; they are described in their section below.
"""
from __future__ import annotations

import functools

import numpy as np
import jax
import jax.numpy as jnp

from . import _compat, partitioning

bsmm_p = _compat.Primitive("blocksparse_matmul")
bsmm_t_p = _compat.Primitive("blocksparse_matmul_t")
sampled_p = _compat.Primitive("blocksparse_sampled_matmul")


# -- binding -----------------------------------------------------------------
def bsmm(x, w, *, layout, precision, out_dtype):
    return bsmm_p.bind(x, w, layout=layout, precision=precision, out_dtype=np.dtype(out_dtype))


def bsmm_t(dy, w, *, layout, precision, out_dtype):
    return bsmm_t_p.bind(dy, w, layout=layout, precision=precision, out_dtype=np.dtype(out_dtype))


def sampled(x, dy, *, layout, precision, out_dtype):
    return sampled_p.bind(x, dy, layout=layout, precision=precision, out_dtype=np.dtype(out_dtype))


# -- eager evaluation ------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _compiled(primitive, params):
    return jax.jit(functools.partial(primitive.bind, **dict(params)))


def _eager(primitive):
    def impl(*operands, **params):
        # A primitive has no eager form but its compiled one: under jax.disable_jit() the jit
        # would call bind again, and bind this impl, without end.
        with jax.disable_jit(False):
            return _compiled(primitive, tuple(sorted(params.items())))(*operands)
    return impl


for _primitive in (bsmm_p, bsmm_t_p, sampled_p):
    _primitive.def_impl(_eager(_primitive))


# -- abstract evaluation -----------------------------------------------------------
def _expect(condition, primitive, message, *operands):
    if not condition:
        shapes = ", ".join(f"{o.shape} {o.dtype}" for o in operands)
        raise TypeError(f"{primitive}: {message}; operands: {shapes}")


def _check_weight(name, operand, w, layout):
    _expect(operand.ndim == 3 and w.ndim == 4, name, "expected (G, M, features) and (G, nnz, b, b)",
            operand, w)
    _expect(w.shape[1:] == layout.w_shape and w.shape[0] == operand.shape[0], name,
            f"w must be (G, *{layout.w_shape}) with the operand's G", operand, w)
    _expect(operand.dtype == w.dtype, name, "operands must share a dtype", operand, w)


def _result(shape, out_dtype, first, second, reduces=False):
    """A product's abstract result. On a mesh whose axes are explicit (shardings in the types),
    its sharding is what the partitioning rules keep of the operands'."""
    sharding = partitioning.result_type_sharding(first, second, len(shape), reduces)
    if sharding is None:
        return _compat.ShapedArray(shape, out_dtype)
    return _compat.ShapedArray(shape, out_dtype, sharding=sharding)


def _bsmm_abstract(x, w, *, layout, precision, out_dtype):
    _check_weight("blocksparse_matmul", x, w, layout)
    rows, cols = layout.shape
    _expect(x.shape[2] == rows, "blocksparse_matmul", f"x features must be C = {rows}", x, w)
    return _result((x.shape[0], x.shape[1], cols), out_dtype, x, w)


def _bsmm_t_abstract(dy, w, *, layout, precision, out_dtype):
    _check_weight("blocksparse_matmul_t", dy, w, layout)
    rows, cols = layout.shape
    _expect(dy.shape[2] == cols, "blocksparse_matmul_t", f"dy features must be N = {cols}", dy, w)
    return _result((dy.shape[0], dy.shape[1], rows), out_dtype, dy, w)


def _sampled_abstract(x, dy, *, layout, precision, out_dtype):
    name = "blocksparse_sampled_matmul"
    rows, cols = layout.shape
    _expect(x.ndim == 3 and dy.ndim == 3 and x.shape[:2] == dy.shape[:2], name,
            "expected x (G, M, C) and dy (G, M, N) with equal G and M", x, dy)
    _expect(x.shape[2] == rows and dy.shape[2] == cols, name,
            f"features must be C = {rows} and N = {cols}", x, dy)
    _expect(x.dtype == dy.dtype, name, "operands must share a dtype", x, dy)
    return _result((x.shape[0], *layout.w_shape), out_dtype, x, dy, reduces=True)


bsmm_p.def_abstract_eval(_bsmm_abstract)
bsmm_t_p.def_abstract_eval(_bsmm_t_abstract)
sampled_p.def_abstract_eval(_sampled_abstract)


# -- transposition (JVPs follow from bilinearity) ---------------------------------------
# A cotangent arrives in the product's out_dtype (say float32 for bf16 inputs);
# it is cast to the operands' dtype so that each gradient has its primal's dtype.
def _like(ct, reference):
    return ct.astype(reference.dtype)


def _define_transposes(forward_p, forward, transposed_p, transposed, reduction_p, reduction):
    """Rules of a family of three bilinear primitives that are each other's transposes:
    ``y = forward(x, w)``, ``dx = transposed(dy, w)`` (the adjoint in x) and
    ``dw = reduction(x, dy)`` (the adjoint in w). Each cotangent is cast to, and each gradient
    produced in, the dtype of the operand it pairs with."""
    def out(reference):
        return {"out_dtype": reference.dtype}

    _compat.define_bilinear(
        forward_p,
        lambda ct, x, w, **p: transposed(_like(ct, w), w, **{**p, **out(w)}),
        lambda ct, x, w, **p: reduction(x, _like(ct, x), **{**p, **out(x)}))
    _compat.define_bilinear(
        transposed_p,
        lambda ct, dy, w, **p: forward(_like(ct, w), w, **{**p, **out(w)}),
        lambda ct, dy, w, **p: reduction(_like(ct, dy), dy, **{**p, **out(dy)}))
    _compat.define_bilinear(
        reduction_p,
        lambda ct, x, dy, **p: transposed(dy, _like(ct, dy), **{**p, **out(dy)}),
        lambda ct, x, dy, **p: forward(x, _like(ct, x), **{**p, **out(x)}))


_define_transposes(bsmm_p, bsmm, bsmm_t_p, bsmm_t, sampled_p, sampled)


# -- batching ---------------------------------------------------------------------------
def _into_group(operand, axis, size):
    """``(..., B at axis, ...)`` -> ``(B * G, ...)``; an unbatched operand is broadcast."""
    if axis is None:
        operand = jnp.broadcast_to(operand, (size, *operand.shape))
    else:
        operand = jnp.moveaxis(operand, axis, 0)
    return operand.reshape(size * operand.shape[1], *operand.shape[2:])


def _group_count(operand, axis):
    """The size of ``G`` in an operand whose vmapped axis (if any) is ``axis``."""
    shape = list(operand.shape)
    if axis is not None:
        del shape[axis]
    return shape[0]


def _split_group(out, size, groups):
    """``(B * G, ...)`` -> ``(B, G, ...)``, undoing :func:`_into_group`."""
    return out.reshape(size, groups, *out.shape[1:])


def _into_second_axis(operand, axis):
    """``(G, X, ...)`` batched at ``axis`` -> ``(G, B * X, ...)``, with ``B`` and ``X``: the batch
    becomes more rows (a matmul's M) or more images (a convolution's Nb), one launch for all."""
    operand = jnp.moveaxis(operand, axis, 1)
    g, b, x = operand.shape[:3]
    return operand.reshape(g, b * x, *operand.shape[3:]), b, x


def _dense_times_weight_batcher(primitive):
    """vmap of ``primitive(dense, w)``: a batch of dense operands against one weight stack
    folds into the dense operand's second axis; batched weights use the group axis."""
    def rule(operands, axes, **params):
        dense, w = operands
        dense_axis, w_axis = axes
        if w_axis is None:
            folded, size, inner = _into_second_axis(dense, dense_axis)
            out = primitive.bind(folded, w, **params)
            return out.reshape(out.shape[0], size, inner, *out.shape[2:]), 1
        size = w.shape[w_axis]
        out = primitive.bind(_into_group(dense, dense_axis, size), _into_group(w, w_axis, size),
                             **params)
        return _split_group(out, size, _group_count(w, w_axis)), 0
    return rule


def _reduction_batcher(primitive):
    """vmap of ``primitive(x, dy)`` (a weight-shaped result): the batch becomes groups."""
    def rule(operands, axes, **params):
        x, dy = operands
        x_axis, dy_axis = axes
        size = x.shape[x_axis] if x_axis is not None else dy.shape[dy_axis]
        out = primitive.bind(_into_group(x, x_axis, size), _into_group(dy, dy_axis, size), **params)
        return _split_group(out, size, _group_count(x, x_axis)), 0
    return rule


_compat.register_batching(bsmm_p, _dense_times_weight_batcher(bsmm_p))
_compat.register_batching(bsmm_t_p, _dense_times_weight_batcher(bsmm_t_p))
_compat.register_batching(sampled_p, _reduction_batcher(sampled_p))


# == convolution ================================================================================
# Block-sparse over features, dense over three spatial dimensions (the public function inserts
# singleton dimensions for 1-D and 2-D). Internal shapes, with T = prod(kernel) taps in row-major
# order over (kd, kh, kw):
#
# =================  ===============================================  =============================
# primitive          operands                                         result
# =================  ===============================================  =============================
# ``conv_p``         x (G, Nb, *in_spatial, C), w (G, nnz, T, b, b)   y (G, Nb, *out_spatial, N)
# ``conv_dx_p``      dy (G, Nb, *out_spatial, N), w                   dx (G, Nb, *in_spatial, C)
# ``conv_dw_p``      x, dy                                            dw (G, nnz, T, b, b)
# =================  ===============================================  =============================
#
#   y[g, n, p, o-block] = sum_t sum_{e in block-column o} x[g, n, p*s + t*d - pad_lo, i(e)-block]
#                                                         @ w[g, k(e), t]
# (zero where the source position is out of range). conv_dx_p is its adjoint in x (a transposed
# convolution), conv_dw_p its adjoint in w. All three are bilinear and transpose into each other:
#
# * ``y = conv(x, w)``:      ct_x = conv_dx(ct, w),  ct_w = conv_dw(x, ct)
# * ``dx = conv_dx(dy, w)``: ct_dy = conv(ct, w),    ct_w = conv_dw(ct, dy)
# * ``dw = conv_dw(x, dy)``: ct_x = conv_dx(dy, ct), ct_dy = conv(x, ct)
#
# Params shared by all three: ``layout``, the forward geometry ``kernel``, ``strides``,
# ``dilation``, ``pad_lo`` (3 ints each), ``in_spatial`` (x's spatial shape) and ``out_spatial``
# (y's), ``precision`` and ``out_dtype``. Both spatial shapes travel with every primitive, so each
# transpose is a plain re-bind.
conv_p = _compat.Primitive("blocksparse_conv")
conv_dx_p = _compat.Primitive("blocksparse_conv_dx")
conv_dw_p = _compat.Primitive("blocksparse_conv_dw")

CONV_GEOMETRY = ("kernel", "strides", "dilation", "pad_lo", "in_spatial", "out_spatial")


def conv(x, w, **params):
    return conv_p.bind(x, w, **_conv_params(params))


def conv_dx(dy, w, **params):
    return conv_dx_p.bind(dy, w, **_conv_params(params))


def conv_dw(x, dy, **params):
    return conv_dw_p.bind(x, dy, **_conv_params(params))


def _conv_params(params):
    """Canonical (hashable, exactly typed) params, so equal convolutions share one compilation."""
    out = dict(params)
    for name in CONV_GEOMETRY:
        out[name] = tuple(int(v) for v in params[name])
    out["out_dtype"] = np.dtype(params["out_dtype"])
    return out


for _primitive in (conv_p, conv_dx_p, conv_dw_p):
    _primitive.def_impl(_eager(_primitive))


def _check_conv_dense(name, operand, spatial, features, what, *operands):
    _expect(operand.ndim == 6, name, f"{what} must be (G, Nb, D, H, W, features)", *operands)
    _expect(tuple(operand.shape[2:5]) == tuple(spatial), name,
            f"{what} spatial dimensions must be {tuple(spatial)}", *operands)
    _expect(operand.shape[5] == features, name, f"{what} features must be {features}", *operands)


def _check_conv_weight(name, dense, w, layout, kernel):
    taps = int(np.prod(kernel))
    bs = layout.block_size
    _expect(w.ndim == 5 and tuple(w.shape[1:]) == (layout.nnz, taps, bs, bs)
            and w.shape[0] == dense.shape[0], name,
            f"w must be (G, {layout.nnz}, {taps}, {bs}, {bs}) with the operand's G", dense, w)
    _expect(dense.dtype == w.dtype, name, "operands must share a dtype", dense, w)


def _conv_product_abstract(name, dense, what, w, layout, kernel, dense_dims, out_dims, out_dtype):
    """The forward convolution and its input gradient: `dense` (x or dy) times the filter `w`.
    dense_dims and out_dims are each (spatial, features): in_spatial with the layout's rows on
    the x side, out_spatial with its columns on the dy side."""
    _check_conv_dense(name, dense, *dense_dims, what, dense, w)
    _check_conv_weight(name, dense, w, layout, kernel)
    out_spatial, out_features = out_dims
    return _result((dense.shape[0], dense.shape[1], *out_spatial, out_features), out_dtype,
                   dense, w)


def _conv_abstract(x, w, *, layout, kernel, in_spatial, out_spatial, out_dtype, **_):
    rows, cols = layout.shape
    return _conv_product_abstract("blocksparse_conv", x, "x", w, layout, kernel,
                                  (in_spatial, rows), (out_spatial, cols), out_dtype)


def _conv_dx_abstract(dy, w, *, layout, kernel, in_spatial, out_spatial, out_dtype, **_):
    rows, cols = layout.shape
    return _conv_product_abstract("blocksparse_conv_dx", dy, "dy", w, layout, kernel,
                                  (out_spatial, cols), (in_spatial, rows), out_dtype)


def _conv_dw_abstract(x, dy, *, layout, kernel, in_spatial, out_spatial, out_dtype, **_):
    name = "blocksparse_conv_dw"
    rows, cols = layout.shape
    _check_conv_dense(name, x, in_spatial, rows, "x", x, dy)
    _check_conv_dense(name, dy, out_spatial, cols, "dy", x, dy)
    _expect(x.shape[:2] == dy.shape[:2], name, "x and dy must have equal G and Nb", x, dy)
    _expect(x.dtype == dy.dtype, name, "operands must share a dtype", x, dy)
    bs = layout.block_size
    return _result((x.shape[0], layout.nnz, int(np.prod(kernel)), bs, bs), out_dtype, x, dy,
                   reduces=True)


conv_p.def_abstract_eval(_conv_abstract)
conv_dx_p.def_abstract_eval(_conv_dx_abstract)
conv_dw_p.def_abstract_eval(_conv_dw_abstract)


_define_transposes(conv_p, conv, conv_dx_p, conv_dx, conv_dw_p, conv_dw)


_compat.register_batching(conv_p, _dense_times_weight_batcher(conv_p))
_compat.register_batching(conv_dx_p, _dense_times_weight_batcher(conv_dx_p))
_compat.register_batching(conv_dw_p, _reduction_batcher(conv_dw_p))


# == shard-local twins ==========================================================================
# Each primitive lowers through its partitioning rule (partitioning.py), which decides how the
# operands are split over a device mesh and binds the primitive's twin on each device's part.
# The twin has the same operands, params and abstract evaluation; it only ever appears inside a
# lowering (after every transformation), so it needs no JVP, transpose or batching rule, and it
# is what lowering.py lowers to the kernels. On a single device the rule binds the twin on the
# whole operands, so the program is the twin's alone.
def _shard_local_twin(primitive, abstract):
    twin = _compat.Primitive(f"{primitive.name}_on_shard")
    twin.def_abstract_eval(abstract)
    return twin


SHARD_LOCAL = {primitive: _shard_local_twin(primitive, abstract) for primitive, abstract in (
    (bsmm_p, _bsmm_abstract), (bsmm_t_p, _bsmm_t_abstract), (sampled_p, _sampled_abstract),
    (conv_p, _conv_abstract), (conv_dx_p, _conv_dx_abstract), (conv_dw_p, _conv_dw_abstract))}

# The products whose result is weight-shaped: they reduce over the dense operands' batch axis.
REDUCES_BATCH = frozenset({sampled_p, conv_dw_p})
