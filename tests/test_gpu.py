"""CUDA kernels: every variant, on the GPU. Skipped cleanly without a GPU."""
import os

import numpy as np
import pytest
import jax
import jax.numpy as jnp

import jax_blocksparse as jbs
from conftest import gpu_devices
from helpers import (BLOCK_SIZES, DTYPES, assert_close, blocks_of, dense_weight, f64, named_masks,
                     random_array, random_mask)

GPUS = gpu_devices()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not GPUS, reason="no GPU visible to JAX")]


def _put(a):
    return jax.device_put(a, GPUS[0])


def _check_sampled_per_group(x, dys, layout, mask, out_dtype, dtype):
    """sampled_matmul(x, dy) vmapped over the groups dy of dys, against float64 per group."""
    dws = jax.vmap(lambda dy: jbs.sampled_matmul(x, dy, layout,
                                                 preferred_element_type=out_dtype))(dys)
    assert dws.dtype == np.dtype(out_dtype or dtype)
    for g in range(dys.shape[0]):
        assert_close(dws[g], blocks_of(mask, layout.block_size, f64(x).T @ f64(dys[g])),
                     out_dtype or dtype, on_gpu=True)


def test_cuda_kernels_are_built():
    assert jbs.kernels_available("cuda"), jbs.unavailable_reason("cuda")


# 1, 20: the <= 32-row kernels (one, two k16 steps); 48: <= 64 rows (64-row W streaming)
@pytest.mark.parametrize("m", [1, 20, 48, 67, 300])
@pytest.mark.parametrize("bs", BLOCK_SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("precision", ["default", "highest"])
def test_every_kernel_variant(rng, m, bs, dtype, precision):
    if precision == "default" and np.dtype(dtype) != np.float32:
        pytest.skip("precision only changes float32")
    grid = (5, 4) if bs <= 32 else (3, 2)
    mask = random_mask(rng, *grid, density=0.5)
    mask[:, 1] = False  # an empty block-column
    layout = jbs.Layout(mask, bs)
    C, N = layout.shape
    x, dy = _put(random_array(rng, (m, C), dtype)), _put(random_array(rng, (m, N), dtype))
    w = _put(random_array(rng, layout.w_shape, dtype))
    Wd = dense_weight(mask, bs, f64(w))
    kw = dict(precision=precision)
    check = lambda out, ref: assert_close(out, ref, dtype, precision, on_gpu=True)
    check(jbs.matmul(x, w, layout, **kw), f64(x) @ Wd)
    check(jbs.matmul_t(dy, w, layout, **kw), f64(dy) @ Wd.T)
    check(jbs.sampled_matmul(x, dy, layout, **kw), blocks_of(mask, bs, f64(x).T @ f64(dy)))


@pytest.mark.parametrize("bs", [8, 16, 32])
@pytest.mark.parametrize("out_dtype", [None, jnp.float32], ids=["same", "float32"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_large_batch_over_tall_layouts(rng, bs, out_dtype, dtype):
    """130 rows (a row tile and a tail), 16-bit, bs 8, 16 and 32, over a 300 x 10 block layout and
    its transpose: more than 256 block-rows (at bs 8 the union-panel kernel builds its union
    tables 256 block-rows at a time), a last group of fewer than 128 / bs block-columns, an empty
    block-column, a full one (a hub: matmul's table is cut into segments), and a block-row used
    by a single column."""
    mask = random_mask(rng, 300, 10, density=0.1)
    mask[:, 2] = False  # an empty block-column
    mask[:, 7] = True  # a full one, across both union windows
    mask[40, :] = False
    mask[40, 5] = True  # a block-row only column 5 uses
    layout = jbs.Layout(mask, bs)
    assert layout.split_table() is not None and layout.split_table(transpose=True) is None
    C, N = layout.shape
    x, dy = _put(random_array(rng, (130, C), dtype)), _put(random_array(rng, (130, N), dtype))
    w = _put(random_array(rng, layout.w_shape, dtype))
    Wd = dense_weight(mask, bs, f64(w))
    kw = dict(preferred_element_type=out_dtype)
    y = jbs.matmul(x, w, layout, **kw)
    dx = jbs.matmul_t(dy, w, layout, **kw)
    assert y.dtype == dx.dtype == (out_dtype or dtype)
    assert_close(y, f64(x) @ Wd, out_dtype or dtype, on_gpu=True)
    assert_close(dx, f64(dy) @ Wd.T, out_dtype or dtype, on_gpu=True)


@pytest.mark.parametrize("out_dtype", [None, jnp.float32], ids=["same", "float32"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_large_batch_over_many_block_columns(rng, out_dtype, dtype):
    """bs 32, 16-bit, 300 rows (a 256-row tile and a partial one) and 330 output block-columns
    of ~19 blocks both ways: 660 tiles of 256 rows, enough for 2 CTAs per SM on any card up to
    330 SMs, and columns of >= 16 blocks on average, so matmul and matmul_t take the mma.sync
    256-row tile (sparser or smaller outputs take the 128-row one, covered above). On an sm_90a
    build and card the TMA-fed wgmma tile takes every M > 128 instead; JBS_CUDA_EXPERIMENT=
    no_wgmma brings the mma.sync tiles back there. Empty block-rows and block-columns, and a
    full block-row."""
    mask = random_mask(rng, 24, 330, density=0.8)
    mask[:, 4] = False
    mask[2, :] = False
    mask[3, :] = True
    kw = dict(preferred_element_type=out_dtype)

    layout = jbs.Layout(mask, 32)
    C, N = layout.shape
    x, w = _put(random_array(rng, (300, C), dtype)), _put(random_array(rng, layout.w_shape, dtype))
    y = jbs.matmul(x, w, layout, **kw)
    assert_close(y, f64(x) @ dense_weight(mask, 32, f64(w)), out_dtype or dtype, on_gpu=True)

    # matmul_t's output block-columns are w's block-rows
    layout_t = jbs.Layout(mask.T, 32)
    C, N = layout_t.shape
    dy = _put(random_array(rng, (300, N), dtype))
    w = _put(random_array(rng, layout_t.w_shape, dtype))
    dx = jbs.matmul_t(dy, w, layout_t, **kw)
    assert_close(dx, f64(dy) @ dense_weight(mask.T, 32, f64(w)).T, out_dtype or dtype, on_gpu=True)


@pytest.mark.parametrize("out_dtype", [None, jnp.float32], ids=["same", "float32"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_sampled_dense_gemm_route(rng, out_dtype, dtype):
    """sampled_matmul over a long reduction at high density, which the CUDA lowering computes as
    one dense GEMM and a gather of the blocks (lowering.dense_sampled), with an empty
    block-column and vmapped operand groups."""
    from jax_blocksparse import lowering
    mask = random_mask(rng, 6, 5, density=0.6)
    mask[:, 2] = False
    layout = jbs.Layout(mask, 32)
    C, N = layout.shape
    m = lowering.DENSE_SAMPLED_MIN_ROWS + 3
    x = _put(random_array(rng, (m, C), dtype))
    dys = _put(random_array(rng, (2, m, N), dtype))
    assert lowering._dense_sampled_applies(x[None], layout)
    _check_sampled_per_group(x, dys, layout, mask, out_dtype, dtype)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_large_batch_over_long_reductions(rng, dtype):
    """bs 32, 16-bit, 130 rows, reductions over 600 block-rows (on sm_90a the TMA-fed wgmma
    tile: a full column wraps its 4-stage mbarrier ring 150 times), for matmul (600 x 12 layout)
    and matmul_t (its transpose), with an empty block-column, a full one and a block-row only one
    column uses."""
    mask = random_mask(rng, 600, 12, density=0.1)
    mask[:, 3] = False
    mask[:, 8] = True
    mask[550, :] = False
    mask[550, 5] = True

    layout = jbs.Layout(mask, 32)
    C, N = layout.shape
    x, w = _put(random_array(rng, (130, C), dtype)), _put(random_array(rng, layout.w_shape, dtype))
    assert_close(jbs.matmul(x, w, layout), f64(x) @ dense_weight(mask, 32, f64(w)), dtype,
                 on_gpu=True)

    layout_t = jbs.Layout(mask.T, 32)  # matmul_t reduces over w's block-columns
    C, N = layout_t.shape
    dy = _put(random_array(rng, (130, N), dtype))
    w = _put(random_array(rng, layout_t.w_shape, dtype))
    assert_close(jbs.matmul_t(dy, w, layout_t), f64(dy) @ dense_weight(mask.T, 32, f64(w)).T,
                 dtype, on_gpu=True)


@pytest.mark.parametrize("m", [33, 48, 64])
@pytest.mark.parametrize("bs", [32, 64, 128])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_64_row_w_streaming(rng, m, bs, dtype):
    """33 to 64 rows, 16-bit, bs >= 32, columns and rows averaging >= 16 blocks: the 64-row
    W-streaming tile, for matmul and matmul_t (the small layouts above stay row-tiled)."""
    grid = 40 if bs == 32 else 24
    mask = random_mask(rng, grid, grid, density=0.8)
    mask[:, 3] = False  # an empty block-column
    mask[5, :] = False  # an empty block-row
    layout = jbs.Layout(mask, bs)
    assert layout.nnz >= 16 * grid  # the launcher's condition for this tile
    C, N = layout.shape
    x, dy = _put(random_array(rng, (m, C), dtype)), _put(random_array(rng, (m, N), dtype))
    w = _put(random_array(rng, layout.w_shape, dtype))
    Wd = dense_weight(mask, bs, f64(w))
    assert_close(jbs.matmul(x, w, layout), f64(x) @ Wd, dtype, on_gpu=True)
    assert_close(jbs.matmul_t(dy, w, layout), f64(dy) @ Wd.T, dtype, on_gpu=True)


@pytest.mark.parametrize("bs", [32, 64, 128])
def test_64_row_w_streaming_over_a_weight_stack_to_float32(rng, bs):
    """40 rows, float16, bs >= 32, columns and rows averaging >= 16 blocks (the 64-row
    W-streaming tile: rows <= 64 and nnz >= 16 * out_blocks), writing float32
    (preferred_element_type) over two weight stacks (G = 2), for matmul and matmul_t, with an
    empty block-row and block-column. No list is a hub, so no split table changes out_blocks."""
    grid = 40 if bs == 32 else 24
    mask = random_mask(rng, grid, grid, density=0.8)
    mask[:, 3] = False  # an empty block-column
    mask[5, :] = False  # an empty block-row
    layout = jbs.Layout(mask, bs)
    assert layout.nnz >= 16 * grid  # the launcher's condition for this tile, both products
    assert layout.split_table() is None and layout.split_table(transpose=True) is None
    C, N = layout.shape
    x = _put(random_array(rng, (40, C), np.float16))
    dys = _put(random_array(rng, (2, 40, N), np.float16))
    ws = _put(random_array(rng, (2, *layout.w_shape), np.float16))
    f32 = dict(preferred_element_type=jnp.float32)
    ys = jax.vmap(lambda w: jbs.matmul(x, w, layout, **f32))(ws)
    dxs = jax.vmap(lambda dy, w: jbs.matmul_t(dy, w, layout, **f32))(dys, ws)
    assert ys.dtype == dxs.dtype == jnp.float32
    for g in range(2):
        Wd = dense_weight(mask, bs, f64(ws[g]))
        assert_close(ys[g], f64(x) @ Wd, np.float32, on_gpu=True)
        assert_close(dxs[g], f64(dys[g]) @ Wd.T, np.float32, on_gpu=True)


# the <= 32-row kernels and the row-tiled ones (on sm_90a the wgmma tile, unless no_wgmma)
@pytest.mark.parametrize("m", [20, 129])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_float32_output_from_16_bit_inputs(rng, dtype, m):
    layout = jbs.Layout(random_mask(rng, 6, 6), 32)
    x = _put(random_array(rng, (m, 192), dtype))
    dy = _put(random_array(rng, (m, 192), dtype))
    w = _put(random_array(rng, layout.w_shape, dtype))
    Wd = dense_weight(layout.mask, 32, f64(w))
    f32 = dict(preferred_element_type=jnp.float32)
    outs = (jbs.matmul(x, w, layout, **f32), jbs.matmul_t(dy, w, layout, **f32),
            jbs.sampled_matmul(x, dy, layout, **f32))
    refs = (f64(x) @ Wd, f64(dy) @ Wd.T, blocks_of(layout.mask, 32, f64(x).T @ f64(dy)))
    for out, ref in zip(outs, refs):
        assert out.dtype == jnp.float32
        assert_close(out, ref, np.float32)


def test_weight_stack_runs_as_one_group_launch(rng):
    layout = jbs.Layout(random_mask(rng, 4, 4), 16)
    ws = _put(random_array(rng, (3, *layout.w_shape), np.float32))
    x = _put(random_array(rng, (40, 64), np.float32))
    dy = _put(random_array(rng, (3, 40, 64), np.float32))
    ys = jax.vmap(lambda w: jbs.matmul(x, w, layout, precision="highest"))(ws)
    dws = jax.vmap(lambda d: jbs.sampled_matmul(x, d, layout, precision="highest"))(dy)
    for b in range(3):
        assert_close(ys[b], f64(x) @ dense_weight(layout.mask, 16, f64(ws[b])), np.float32)
        assert_close(dws[b], blocks_of(layout.mask, 16, f64(x).T @ f64(dy[b])), np.float32)


@pytest.mark.parametrize("m", [20, 48])
def test_16_bit_kernels_over_a_weight_stack(rng, m):
    """vmap over w and over dy: one launch over 3 groups of the <= 32 / <= 64-row W-streaming
    kernels and of the short sampled kernel (bs 32, bf16), on a layout whose columns hold >= 16
    blocks, so that M = 48 takes the 64-row tile."""
    mask = np.ones((20, 3), bool)
    mask[7, :] = False  # an empty block-row
    mask[2, 0] = False
    layout = jbs.Layout(mask, 32)
    assert layout.nnz >= 16 * 3
    C, N = layout.shape
    ws = _put(random_array(rng, (3, *layout.w_shape), jnp.bfloat16))
    x = _put(random_array(rng, (m, C), jnp.bfloat16))
    dys = _put(random_array(rng, (3, m, N), jnp.bfloat16))
    ys = jax.vmap(lambda w: jbs.matmul(x, w, layout))(ws)
    dxs = jax.vmap(lambda dy, w: jbs.matmul_t(dy, w, layout))(dys, ws)
    dws = jax.vmap(lambda dy: jbs.sampled_matmul(x, dy, layout))(dys)
    for b in range(3):
        Wd = dense_weight(mask, 32, f64(ws[b]))
        assert_close(ys[b], f64(x) @ Wd, jnp.bfloat16, on_gpu=True)
        assert_close(dxs[b], f64(dys[b]) @ Wd.T, jnp.bfloat16, on_gpu=True)
        assert_close(dws[b], blocks_of(mask, 32, f64(x).T @ f64(dys[b])), jnp.bfloat16, on_gpu=True)


@pytest.mark.parametrize("bs", [16, 32])
@pytest.mark.parametrize("out_dtype", [None, jnp.float32], ids=["same", "float32"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_transposed_operand_tile_over_a_weight_stack(rng, monkeypatch, bs, out_dtype, dtype):
    """Experiment `wgmma_tma_at` (NOTES v26), named for this test only: on sm_90a, matmul and
    matmul_t read their dense operand transposed (`jbs_bsmm_at`). 264 rows: a 256-row tile and
    one of 8 rows whose last three m64 slabs lie wholly past the end; two weight stacks; an empty
    block-column and block-row. Elsewhere the lowering must keep `jbs_bsmm`."""
    from jax_blocksparse import _jbs_cuda
    # Added to what the run names, not instead: the C++ side reads the variable once per process
    # (`no_wgmma`, say), possibly during this test.
    named = os.environ.get("JBS_CUDA_EXPERIMENT", "")
    monkeypatch.setenv("JBS_CUDA_EXPERIMENT", f"{named},wgmma_tma_at" if named else "wgmma_tma_at")
    mask = random_mask(rng, 11, 9, density=0.4)
    mask[:, 3] = False
    mask[5, :] = False
    layout = jbs.Layout(mask, bs)
    C, N = layout.shape
    ws = _put(random_array(rng, (2, *layout.w_shape), dtype))
    x = _put(random_array(rng, (264, C), dtype))
    dys = _put(random_array(rng, (2, 264, N), dtype))
    kw = dict(preferred_element_type=out_dtype)
    forward = jax.jit(jax.vmap(lambda w: jbs.matmul(x, w, layout, **kw)))
    backward = jax.jit(jax.vmap(lambda dy, w: jbs.matmul_t(dy, w, layout, **kw)))
    for fn, args in ((forward, (ws,)), (backward, (dys, ws))):
        assert ("jbs_bsmm_at" in fn.lower(*args).as_text()) == _jbs_cuda.wgmma_available()
    ys, dxs = forward(ws), backward(dys, ws)
    for g in range(2):
        Wd = dense_weight(mask, bs, f64(ws[g]))
        assert_close(ys[g], f64(x) @ Wd, out_dtype or dtype, on_gpu=True)
        assert_close(dxs[g], f64(dys[g]) @ Wd.T, out_dtype or dtype, on_gpu=True)


@pytest.mark.parametrize("bs", [16, 32])
@pytest.mark.parametrize("out_dtype", [None, jnp.float32], ids=["same", "float32"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_large_batch_over_partial_column_clusters(rng, bs, out_dtype, dtype):
    """16-bit, bs 16 and 32, 300 rows (a tile tail in every row tiling), two weight stacks,
    matmul and matmul_t over 70 block-columns (not a multiple of any column grouping): an empty
    block-column, a full one, an empty block-row and a block-row that only one column uses.
    matmul_t runs over the transposed layout, whose 70 block-rows are its output block-columns.
    Written for the cluster kernels of session 12 (NOTES v24, measured and removed); on today's
    routes the TMA-fed tiles on sm_90a (x transposed at bs 16) or the mma.sync tiles."""
    mask = random_mask(rng, 20, 70, density=0.2)
    mask[:, 11] = False
    mask[:, 40] = True
    mask[6, :] = False
    mask[13, :] = False
    mask[13, 66] = True
    kw = dict(preferred_element_type=out_dtype)
    for mask_now, product in ((mask, "matmul"), (mask.T, "matmul_t")):
        layout = jbs.Layout(mask_now, bs)
        C, N = layout.shape
        ws = _put(random_array(rng, (2, *layout.w_shape), dtype))
        if product == "matmul":
            x = _put(random_array(rng, (300, C), dtype))
            outs = jax.jit(jax.vmap(lambda w: jbs.matmul(x, w, layout, **kw)))(ws)
        else:
            x = _put(random_array(rng, (300, N), dtype))
            outs = jax.jit(jax.vmap(lambda w: jbs.matmul_t(x, w, layout, **kw)))(ws)
        assert outs.dtype == np.dtype(out_dtype or dtype)
        for g in range(2):
            Wd = dense_weight(mask_now, bs, f64(ws[g]))
            want = f64(x) @ (Wd if product == "matmul" else Wd.T)
            assert_close(outs[g], want, out_dtype or dtype, on_gpu=True)


EDGE_LAYOUTS = ("single_block", "dense", "empty_rows_and_columns", "one_long_column")


# m = 1: the <= 32-row W-streaming kernels (and at bs 32 the short sampled kernel). 16-bit, bs 8,
# m = 100 and 300: the union panels (rows > 64). 16-bit, bs 32: m = 100 the 128-row tile (rows
# > 64 but not > 128), m = 300 on sm_90a the TMA-fed wgmma tile (rows > 128: a 256-row tile and a
# 44-row tail). float32 (3xTF32) takes the row-tiled kernel past 32 rows, float64 the SIMT one.
@pytest.mark.parametrize("m", [1, 100, 300])
@pytest.mark.parametrize("bs", [8, 32])
@pytest.mark.parametrize("layout_name", EDGE_LAYOUTS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float32, np.float64],
                         ids=lambda d: np.dtype(d).name)
def test_edge_layouts_over_a_weight_stack(rng, m, bs, layout_name, dtype):
    """A single block, a fully dense layout, empty block-rows and block-columns, and one long
    block-column, for all three products vmapped over two weight stacks / two dy (G = 2), at
    M = 1 and at M not a multiple of the kernels' row tiles. 16-bit matmul_t writes float32
    (preferred_element_type), matmul the input dtype. These layouts are too small for the
    64-row W-streaming tile (nnz < 16 * out_blocks) and for a split table."""
    mask = named_masks(rng)[layout_name]
    layout = jbs.Layout(mask, bs)
    assert layout.split_table() is None and layout.split_table(transpose=True) is None
    C, N = layout.shape
    x = _put(random_array(rng, (m, C), dtype))
    dys = _put(random_array(rng, (2, m, N), dtype))
    ws = _put(random_array(rng, (2, *layout.w_shape), dtype))
    dx_dtype = jnp.float32 if np.dtype(dtype).itemsize == 2 else None
    kw = dict(precision="highest")
    ys = jax.vmap(lambda w: jbs.matmul(x, w, layout, **kw))(ws)
    dxs = jax.vmap(lambda dy, w: jbs.matmul_t(dy, w, layout, preferred_element_type=dx_dtype,
                                              **kw))(dys, ws)
    dws = jax.vmap(lambda dy: jbs.sampled_matmul(x, dy, layout, **kw))(dys)
    assert ys.dtype == dws.dtype == np.dtype(dtype) and dxs.dtype == np.dtype(dx_dtype or dtype)
    for g in range(2):
        Wd = dense_weight(mask, bs, f64(ws[g]))
        assert_close(ys[g], f64(x) @ Wd, dtype, on_gpu=True)
        assert_close(dxs[g], f64(dys[g]) @ Wd.T, dx_dtype or dtype, on_gpu=True)
        assert_close(dws[g], blocks_of(mask, bs, f64(x).T @ f64(dys[g])), dtype, on_gpu=True)


def test_large_layout_with_long_column(rng):
    mask = random_mask(rng, 48, 48, 1 / 8)
    mask[:, 7] = True
    layout = jbs.Layout(mask, 32)
    x = _put(random_array(rng, (257, 1536), jnp.bfloat16))
    w = _put(random_array(rng, layout.w_shape, jnp.bfloat16))
    y = jbs.matmul(x, w, layout, preferred_element_type=jnp.float32)
    assert_close(y, f64(x) @ dense_weight(mask, 32, f64(w)), np.float32)
    dw = jbs.sampled_matmul(x, x, layout, preferred_element_type=jnp.float32)
    assert_close(dw, blocks_of(mask, 32, f64(x).T @ f64(x)), np.float32)


@pytest.mark.parametrize("m", [7, 32, 50])
@pytest.mark.parametrize("out_dtype", [None, jnp.float32], ids=["same", "float32"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_short_sampled_over_long_rows(rng, m, out_dtype, dtype):
    """sampled_matmul for M <= 64, bs 32 (the persistent-warp kernel: row runs for M <= 32, two
    row chunks for M = 50) on a layout large enough that each warp gets many blocks: long runs of
    one block-row, a row full but for one block, an empty row and an empty column."""
    mask = random_mask(rng, 40, 40, 0.3)
    mask[3, :] = True
    mask[4, :] = False
    mask[:, 9] = False
    layout = jbs.Layout(mask, 32)
    x = _put(random_array(rng, (m, 1280), dtype))
    dy = _put(random_array(rng, (m, 1280), dtype))
    dw = jbs.sampled_matmul(x, dy, layout, preferred_element_type=out_dtype)
    assert dw.dtype == (out_dtype or dtype)
    assert_close(dw, blocks_of(mask, 32, f64(x).T @ f64(dy)), out_dtype or dtype, on_gpu=True)


@pytest.mark.parametrize("m", [1, 7, 16, 17, 32])
@pytest.mark.parametrize("precision", ["default", "highest"])
def test_short_sampled_float32(rng, m, precision):
    """sampled_matmul in float32 for M <= 32, bs 32, TF32 and 3xTF32: the persistent-warp kernel
    (one 16-row chunk per block up to M = 16, two from 17, row runs in both). Same layout as
    test_short_sampled_over_long_rows: long runs of one block-row, an empty row and column."""
    mask = random_mask(rng, 40, 40, 0.3)
    mask[3, :] = True
    mask[4, :] = False
    mask[:, 9] = False
    layout = jbs.Layout(mask, 32)
    x = _put(random_array(rng, (m, 1280), np.float32))
    dy = _put(random_array(rng, (m, 1280), np.float32))
    dw = jbs.sampled_matmul(x, dy, layout, precision=precision)
    assert dw.dtype == np.float32
    assert_close(dw, blocks_of(mask, 32, f64(x).T @ f64(dy)), np.float32, precision, on_gpu=True)


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16], ids=lambda d: np.dtype(d).name)
def test_bitwise_determinism(rng, dtype):
    layout = jbs.Layout(random_mask(rng, 32, 32, 0.25), 32)
    x = _put(random_array(rng, (4096, 1024), dtype))
    dy = _put(random_array(rng, (4096, 1024), dtype))
    w = _put(random_array(rng, layout.w_shape, dtype))
    step = jax.jit(lambda x, dy, w: (jbs.matmul(x, w, layout), jbs.matmul_t(dy, w, layout),
                                     jbs.sampled_matmul(x, dy, layout)))
    first = [np.asarray(f64(a)) for a in step(x, dy, w)]
    for _ in range(2):
        again = [np.asarray(f64(a)) for a in step(x, dy, w)]
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("m", [20, 300])  # W streaming and row-tiled launches
@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16], ids=lambda d: np.dtype(d).name)
def test_chained_products_read_what_came_before(rng, m, dtype):
    """Back-to-back products in one jit, each reading the previous one's output, with w
    rewritten by an XLA fusion between them, so that a kernel that read anything stale (a launch
    overlapping the one before it, as the rejected `early_start` experiment did, NOTES v8a)
    would fail one step's check. Every step is checked against float64 products of the step's
    own inputs, as returned by the same jit."""
    layout = jbs.Layout(random_mask(rng, 24, 24, 0.3), 32)
    size = layout.shape[0]
    x = _put(random_array(rng, (m, size), dtype))
    scale = np.sqrt(0.3 * size) / 2  # keeps the chain's values near unit size
    w = _put((random_array(rng, layout.w_shape, np.float32) / scale).astype(dtype))

    @jax.jit
    def chain(y, w):
        ys, ws, grads = [y], [], []
        for step in range(4):
            w = (w * 0.75 + 0.01 * (step + 1)).astype(w.dtype)
            ws.append(w)
            y = jbs.matmul(y, w, layout, precision="highest")
            ys.append(y)
            y = jbs.matmul_t(y, w, layout, precision="highest")
            ys.append(y)
            grads.append(jbs.sampled_matmul(ys[-3], y, layout, precision="highest"))
        return ys, ws, grads

    ys, ws, grads = chain(x, w)
    for step in range(4):
        Wd = dense_weight(layout.mask, 32, f64(ws[step]))
        y_in, y_mid, y_out = (f64(ys[2 * step + i]) for i in range(3))
        assert_close(ys[2 * step + 1], y_in @ Wd, dtype, on_gpu=True)
        assert_close(ys[2 * step + 2], y_mid @ Wd.T, dtype, on_gpu=True)
        assert_close(grads[step], blocks_of(layout.mask, 32, y_in.T @ y_out), dtype, on_gpu=True)


def test_gradients_on_gpu(rng):
    layout = jbs.Layout(random_mask(rng, 4, 4, 0.5), 32)
    x = _put(random_array(rng, (50, 128), np.float32))
    w = _put(random_array(rng, layout.w_shape, np.float32))
    r = random_array(rng, (50, 128), np.float32)
    gx, gw = jax.jit(jax.grad(lambda x, w: jnp.sum(jbs.matmul(x, w, layout, precision="highest") * r),
                              argnums=(0, 1)))(x, w)
    Wd = dense_weight(layout.mask, 32, f64(w))
    assert_close(gx, f64(r) @ Wd.T, np.float32)
    assert_close(gw, blocks_of(layout.mask, 32, f64(x).T @ f64(r)), np.float32)


@pytest.mark.parametrize("bs", BLOCK_SIZES)
@pytest.mark.parametrize("dtype,precision", [(np.float32, "highest"), (np.float32, "default"),
                                             (jnp.bfloat16, "default"), (np.float16, "default")],
                         ids=lambda v: v if isinstance(v, str) else np.dtype(v).name)
def test_sampled_long_reduction_few_blocks(rng, bs, dtype, precision):
    # Few blocks and many rows: the tensor-core kernel splits M across warps (slice partials
    # summed in a fixed order), a path the short-M variant test never reaches.
    mask = random_mask(rng, 3, 2, density=0.5)
    mask[0, 0] = True
    layout = jbs.Layout(mask, bs)
    C, N = layout.shape
    m = 1031
    x, dy = _put(random_array(rng, (m, C), dtype)), _put(random_array(rng, (m, N), dtype))
    out = jbs.sampled_matmul(x, dy, layout, precision=precision)
    assert_close(out, blocks_of(mask, bs, f64(x).T @ f64(dy)), dtype, precision, on_gpu=True)


@pytest.mark.parametrize("nnz", [300, 700, 1400, 2900])
@pytest.mark.parametrize("bs", [8, 16, 32, 64])
@pytest.mark.parametrize("dtype,precision", [(np.float32, "highest"), (jnp.bfloat16, "default"),
                                             (np.float16, "default")],
                         ids=lambda v: v if isinstance(v, str) else np.dtype(v).name)
def test_sampled_long_reduction_slice_counts(rng, nnz, bs, dtype, precision):
    """M >= 512: the kernel splits each block's rows over the fewest warps (1, 2, 4 or 8 slices)
    whose grid still fills the card. On a 132-SM card these block counts take 8, 4, 2 and 1
    slices at bs 8, 16 and 32 (2, 1, 1, 1 at bs 64, whose 4 slices the few-blocks test runs);
    consecutive blocks share block-rows, so a's loads are shared within a CTA as well."""
    blocks = 64
    mask = np.zeros((blocks, blocks), bool)
    mask.reshape(-1)[rng.choice(blocks * blocks, nnz, replace=False)] = True
    layout = jbs.Layout(mask, bs)
    m = 520
    x = random_array(rng, (m, blocks * bs), dtype)
    dy = random_array(rng, (m, blocks * bs), dtype)
    out = jbs.sampled_matmul(_put(x), _put(dy), layout, precision=precision)
    rows, cols = np.nonzero(mask)  # row-major: the order of layout.coords
    xb = f64(x).reshape(m, blocks, bs)[:, rows]
    db = f64(dy).reshape(m, blocks, bs)[:, cols]
    assert_close(out, np.einsum("mki,mkj->kij", xb, db), dtype, precision, on_gpu=True)


@pytest.mark.parametrize("bs", [8, 16])
@pytest.mark.parametrize("out_dtype", [None, jnp.float32], ids=["same", "float32"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_sampled_small_blocks_over_partial_tiles(rng, bs, out_dtype, dtype):
    """Small blocks, a long reduction (600 rows: a partial 32-row chunk) and a layout dense
    enough for 128 x 128 dense tiles (the dense-tile kernel at bs 8, which wants a CTA per SM;
    bs 16 stays on the per-block kernel): 1520 x ~1480 columns, so the last tile row and column are partial (12 x 12 tiles),
    with an empty block-row, an empty block-column, one whole tile without blocks, and two
    groups of inputs through vmap."""
    t = 128 // bs  # blocks per tile side
    mask = random_mask(rng, 1520 // bs, 1480 // bs, density=0.3)
    mask[5, :] = False
    mask[:, 17] = False
    mask[t:2 * t, 2 * t:3 * t] = False
    layout = jbs.Layout(mask, bs)
    C, N = layout.shape
    m = 600
    x, dy = random_array(rng, (2, m, C), dtype), random_array(rng, (2, m, N), dtype)
    out = jax.vmap(lambda x, dy: jbs.sampled_matmul(x, dy, layout,
                                                    preferred_element_type=out_dtype))(
        _put(x), _put(dy))
    assert out.dtype == (out_dtype or dtype)
    rows, cols = np.nonzero(mask)  # row-major: the order of layout.coords
    for g in range(2):
        xb = f64(x[g]).reshape(m, -1, bs)[:, rows]
        db = f64(dy[g]).reshape(m, -1, bs)[:, cols]
        assert_close(out[g], np.einsum("mki,mkj->kij", xb, db), out_dtype or dtype, on_gpu=True)


def _conv_mask(rng):
    """3 x 2 input x output blocks, with an empty output block-column."""
    mask = random_mask(rng, 3, 2, density=0.5)
    mask[:, 0] = False
    mask[1, 1] = True
    return mask


def _dense_conv_references(mask, bs, filt, x, dy, strides, padding, dilation):
    """float64 dense convolution of x with the dense filter `filt`, its input gradient for dy,
    and its filter gradient cut into the layout's blocks, laid out as the block filter
    (nnz, *kernel, bs, bs)."""
    from test_conv import dense_conv
    y, vjp = jax.vjp(lambda x, f: dense_conv(x, f, strides, padding, dilation), f64(x), filt)
    dx, dfilt = vjp(f64(dy))
    kernel = dfilt.shape[:-2]
    dw = np.stack([blocks_of(mask, bs, np.asarray(dfilt)[tap]) for tap in np.ndindex(*kernel)],
                  axis=1)
    return y, dx, dw.reshape(-1, *kernel, bs, bs)


@pytest.mark.parametrize("batch", [1, 5])  # 12 and 60 output rows: both kernel regimes
@pytest.mark.parametrize("bs", [8, 16, 32, 64])
@pytest.mark.parametrize("dtype,precision", [(np.float32, "default"), (np.float32, "highest"),
                                             (jnp.bfloat16, "default"), (np.float16, "default"),
                                             (np.float64, "highest")],
                         ids=["f32-tf32", "f32-highest", "bf16", "f16", "f64"])
def test_conv_kernel_variants(rng, batch, bs, dtype, precision):
    """The implicit-GEMM CUDA convolution (forward and input gradient) and the filter gradient,
    with stride, dilation and asymmetric padding, against float64 dense convolution."""
    from test_conv import dense_filter
    mask = _conv_mask(rng)
    layout = jbs.Layout(mask, bs)
    C, K = layout.shape
    strides, dilation, padding = (2, 1), (1, 2), ((1, 2), (0, 1))
    x = _put(random_array(rng, (batch, 7, 6, C), dtype))
    w = _put(random_array(rng, jbs.conv_weight_shape(layout, (3, 2)), dtype))
    filt = dense_filter(mask, bs, w)
    conv = lambda x, w: jbs.conv(x, w, layout, strides=strides, padding=padding,
                                 dilation=dilation, precision=precision)
    y, vjp = jax.vjp(conv, x, w)
    dy = _put(random_array(rng, y.shape, dtype))
    dx, dw = vjp(dy)
    ref, ref_dx, ref_dw = _dense_conv_references(mask, bs, filt, x, dy, strides, padding,
                                                 dilation)
    check = lambda out, expected: assert_close(out, expected, dtype, precision, on_gpu=True)
    check(y, ref)
    check(dx, ref_dx)
    check(dw, ref_dw)


# batch 37: the filter gradient splits its 37 tiles into 4 uneven segments (9, 9, 9, 10).
@pytest.mark.parametrize("batch", [1, 5, 37])
@pytest.mark.parametrize("kernel_size,dilation,padding", [
    ((3, 3), (1, 1), "SAME"),
    ((3, 2), (1, 2), ((1, 2), (0, 1))),
], ids=["3x3-same", "3x2-dilated-asymmetric"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_conv_stride_one_halo_kernels(rng, batch, kernel_size, dilation, padding, dtype):
    """Stride 1, 16-bit, bs 32: the halo-tile kernels (forward, input gradient, and the filter
    gradient in one segment or several), against float64 dense."""
    from test_conv import dense_filter
    mask = _conv_mask(rng)
    layout = jbs.Layout(mask, 32)
    C, K = layout.shape
    x = _put(random_array(rng, (batch, 9, 7, C), dtype))
    w = _put(random_array(rng, jbs.conv_weight_shape(layout, kernel_size), dtype))
    filt = dense_filter(mask, 32, w)
    conv = lambda x, w: jbs.conv(x, w, layout, strides=1, padding=padding, dilation=dilation)
    y, vjp = jax.vjp(conv, x, w)
    dy = _put(random_array(rng, y.shape, dtype))
    dx, dw = vjp(dy)
    ref, ref_dx, ref_dw = _dense_conv_references(mask, 32, filt, x, dy, (1, 1), padding,
                                                 dilation)
    check = lambda out, expected: assert_close(out, expected, dtype, on_gpu=True)
    check(y, ref)
    check(dx, ref_dx)
    check(dw, ref_dw)


@pytest.mark.parametrize("bs,batch", [(8, 1), (16, 1), (32, 1), (64, 1), (128, 1), (128, 3)])
@pytest.mark.parametrize("dtype,precision", [(np.float32, "default"), (np.float32, "highest"),
                                             (jnp.bfloat16, "default"), (np.float16, "default")],
                         ids=["f32-tf32", "f32-highest", "bf16", "f16"])
def test_conv_gather_kernels_over_a_weight_stack(rng, bs, batch, dtype, precision):
    """The implicit-GEMM convolution kernel (strided: never the halo tiles) vmapped over two
    weight stacks (G = 2). Batch 1: 15 output rows forward and 30 for the input gradient, so
    both take the <= 32-row tile (test_conv_kernel_variants' input gradient has >= 42 rows);
    bs 128 in both regimes (batch 3: 45 and 90 rows). Forward, input and filter gradients,
    with an empty output block-column, against float64 dense convolution."""
    from test_conv import dense_filter
    mask = _conv_mask(rng)
    layout = jbs.Layout(mask, bs)
    C, K = layout.shape
    strides, dilation, padding = (2, 1), (1, 2), ((1, 2), (0, 1))
    x = _put(random_array(rng, (batch, 5, 6, C), dtype))
    ws = _put(random_array(rng, (2, *jbs.conv_weight_shape(layout, (3, 2))), dtype))
    conv = lambda x, w: jbs.conv(x, w, layout, strides=strides, padding=padding,
                                 dilation=dilation, precision=precision)
    y_shape = jax.eval_shape(conv, x, ws[0]).shape
    assert y_shape == (batch, 3, 5, K)  # 15 output positions per image; the input has 30
    dys = _put(random_array(rng, (2, *y_shape), dtype))

    def forward_and_back(w, dy):
        y, vjp = jax.vjp(conv, x, w)
        return (y, *vjp(dy))

    ys, dxs, dws = jax.vmap(forward_and_back)(ws, dys)
    check = lambda out, expected: assert_close(out, expected, dtype, precision, on_gpu=True)
    for g in range(2):
        filt = dense_filter(mask, bs, ws[g])
        ref, ref_dx, ref_dw = _dense_conv_references(mask, bs, filt, x, dys[g], strides,
                                                     padding, dilation)
        check(ys[g], ref)
        check(dxs[g], ref_dx)
        check(dws[g], ref_dw)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_conv_halo_kernels_over_a_weight_stack(rng, dtype):
    """Stride 1, 16-bit, bs 32 (the halo-tile kernels), vmapped over two weight stacks (G = 2):
    the forward written as float32 (preferred_element_type; the input gradient and the filter
    gradient come back in the input dtype), the filter gradient in two segments of output tiles
    (17 images of one 9 x 7 tile each), with an empty output block-column, against float64."""
    from jax_blocksparse import lowering
    from test_conv import dense_filter
    mask = _conv_mask(rng)
    layout = jbs.Layout(mask, 32)
    C, K = layout.shape
    batch = 17
    assert lowering.halo_filter_grad_segments(2, layout.nnz, batch, kernel=(1, 3, 3),
                                              dilation=(1, 1, 1), out_spatial=(1, 9, 7)) == 2
    x = _put(random_array(rng, (batch, 9, 7, C), dtype))
    ws = _put(random_array(rng, (2, *jbs.conv_weight_shape(layout, (3, 3))), dtype))
    dys = _put(random_array(rng, (2, batch, 9, 7, K), dtype))
    conv = lambda x, w: jbs.conv(x, w, layout, strides=1, padding="SAME",
                                 preferred_element_type=jnp.float32)

    def forward_and_back(w, dy):
        y, vjp = jax.vjp(conv, x, w)
        return (y, *vjp(dy.astype(jnp.float32)))  # exact: dy holds 16-bit values

    ys, dxs, dws = jax.vmap(forward_and_back)(ws, dys)
    assert ys.dtype == jnp.float32 and dxs.dtype == dws.dtype == np.dtype(dtype)
    for g in range(2):
        filt = dense_filter(mask, 32, ws[g])
        ref, ref_dx, ref_dw = _dense_conv_references(mask, 32, filt, x, dys[g], (1, 1), "SAME",
                                                     (1, 1))
        assert_close(ys[g], ref, np.float32, on_gpu=True)
        assert_close(dxs[g], ref_dx, dtype, on_gpu=True)
        assert_close(dws[g], ref_dw, dtype, on_gpu=True)


STRIDE_ONE_CONV_CASES = [  # spatial, kernel, padding, dilation: output tiles of 256 positions
    ((16, 16), (3, 3), "SAME", (1, 1)),
    ((32, 32), (3, 3), ((2, 0), (1, 1)), (2, 1)),
    ((20, 24), (5, 5), "VALID", (1, 1)),
    ((16, 16), (1, 3), "SAME", (1, 1)),
    ((3, 16, 16), (3, 3, 3), "SAME", (1, 1, 1)),
    ((300,), (3,), ((2, 1),), (2,)),
]


@pytest.mark.parametrize("spatial,kernel,padding,dilation", STRIDE_ONE_CONV_CASES,
                         ids=["16x16", "32x32-dilated", "5x5", "1x3", "3d", "1d"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_stride_one_conv_over_large_images(rng, spatial, kernel, padding, dilation, dtype):
    """Stride-1, 16-bit, bs 32 convolutions whose outputs fill 256-position tiles (the shapes
    the TMA + wgmma convolution (NOTES v21) takes on sm_90a; the halo or gather kernels otherwise):
    forward and input gradient against float64, over a layout with an empty block-row and an
    empty block-column, two images."""
    import jax.lax as lax
    mask = random_mask(rng, 3, 3, 0.7)
    mask[1, :] = False
    mask[:, 2] = False
    mask[0, 0] = mask[2, 1] = True
    layout = jbs.Layout(mask, 32)
    C, K = layout.shape
    taps = int(np.prod(kernel))
    x = _put(random_array(rng, (2, *spatial, C), dtype))
    w = _put(random_array(rng, jbs.conv_weight_shape(layout, kernel), dtype))
    nd = len(spatial)
    numbers = {1: ("NHC", "HIO", "NHC"), 2: ("NHWC", "HWIO", "NHWC"),
               3: ("NDHWC", "DHWIO", "NDHWC")}[nd]
    filt = np.zeros((taps, C, K))
    w64 = f64(w).reshape(layout.nnz, taps, 32, 32)
    for t in range(taps):
        filt[t] = dense_weight(mask, 32, w64[:, t])
    filt = jnp.asarray(filt.reshape(*kernel, C, K))
    dense = lambda x: lax.conv_general_dilated(x, filt, (1,) * nd, padding, rhs_dilation=dilation,
                                               dimension_numbers=numbers,
                                               precision=lax.Precision.HIGHEST)
    conv = lambda x: jbs.conv(x, w, layout, strides=1, padding=padding, dilation=dilation)
    y, vjp = jax.vjp(conv, x)
    y_ref, vjp_ref = jax.vjp(dense, jnp.asarray(f64(x)))
    assert y.shape == y_ref.shape
    assert_close(y, y_ref, dtype, on_gpu=True)
    dy = _put(random_array(rng, y.shape, dtype))
    (dx,) = vjp(dy)
    (dx_ref,) = vjp_ref(jnp.asarray(f64(dy)))
    assert_close(dx, dx_ref, dtype, on_gpu=True)


@pytest.mark.parametrize("route", ["dense", "kernels"])
@pytest.mark.parametrize("bs", [8, 16])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_small_blocks_over_a_large_batch(rng, monkeypatch, route, bs, dtype):
    """bs 8 and 16, 16-bit, 2053 rows over a layout of density ~1/2 with an empty block-row and
    block-column, all three products against float64: by default as dense GEMMs
    (`_dense_small_blocks_applies`, NOTES v22), and with `no_dense_small_blocks` on the block
    kernels (the union panels, the transposed-operand tile at bs 16, the dense tiles)."""
    if route == "kernels":
        named = os.environ.get("JBS_CUDA_EXPERIMENT", "")
        monkeypatch.setenv("JBS_CUDA_EXPERIMENT", f"{named},no_dense_small_blocks")
    mask = random_mask(rng, 12, 10, density=0.5)
    mask[3, :] = False
    mask[:, 4] = False
    layout = jbs.Layout(mask, bs)
    C, N = layout.shape
    x, dy = _put(random_array(rng, (2053, C), dtype)), _put(random_array(rng, (2053, N), dtype))
    w = _put(random_array(rng, layout.w_shape, dtype))
    Wd = dense_weight(mask, bs, f64(w))
    check = lambda out, ref: assert_close(out, ref, dtype, on_gpu=True)
    check(jbs.matmul(x, w, layout), f64(x) @ Wd)
    check(jbs.matmul_t(dy, w, layout), f64(dy) @ Wd.T)
    check(jbs.sampled_matmul(x, dy, layout), blocks_of(mask, bs, f64(x).T @ f64(dy)))


@pytest.mark.parametrize("out_dtype", [None, jnp.float32], ids=["same", "float32"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_sampled_long_reduction_over_block_pairs(rng, out_dtype, dtype):
    """sampled_matmul, bs 32, 16-bit, 2100 rows (a partial last 64-row step) over a layout with
    an odd number of blocks, block-rows holding one block (pairs that straddle two block-rows)
    and several, an empty block-row and block-column (the `wgmma_tma_sampled` experiment's
    shapes; the block-pair kernels otherwise), vmapped over two groups, against float64."""
    mask = random_mask(rng, 7, 9, density=0.4)
    mask[2, :] = False
    mask[:, 5] = False
    mask[4, :] = False
    mask[4, 7] = True  # a block-row with a single block
    if mask.sum() % 2 == 0:
        mask[6, 0] = not mask[6, 0]
    assert mask.sum() % 2 == 1
    layout = jbs.Layout(mask, 32)
    C, N = layout.shape
    x = _put(random_array(rng, (2100, C), dtype))
    dys = _put(random_array(rng, (2, 2100, N), dtype))
    _check_sampled_per_group(x, dys, layout, mask, out_dtype, dtype)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=lambda d: np.dtype(d).name)
def test_sampled_long_reduction_over_enough_block_pairs_to_fill_the_card(rng, dtype):
    """sampled_matmul, bs 32, 16-bit, 2100 rows over ~1200 blocks (an odd count, an empty
    block-row and block-column): enough block pairs to fill 3 CTAs per SM of any Hopper card,
    where the `wgmma_tma_sampled` experiment routes by default (NOTES v23, session 13), against
    float64."""
    mask = random_mask(rng, 48, 48, density=0.53)
    mask[7, :] = False
    mask[:, 30] = False
    if mask.sum() % 2 == 0:
        mask[0, 0] = not mask[0, 0]
    assert mask.sum() % 2 == 1 and mask.sum() >= 1100
    layout = jbs.Layout(mask, 32)
    C, N = layout.shape
    x = _put(random_array(rng, (2100, C), dtype))
    dys = _put(random_array(rng, (1, 2100, N), dtype))
    _check_sampled_per_group(x, dys, layout, mask, None, dtype)
