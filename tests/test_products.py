"""Forward products against float64 dense references, on the default device."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

import jax_blocksparse as jbs
from helpers import (BLOCK_SIZES, DTYPES, LAYOUT_NAMES, assert_close, blocks_of, default_backend_is_gpu,
                     dense_weight, f64, named_masks, random_array, random_mask)

ON_GPU = default_backend_is_gpu()


def _expected(product, mask, bs, x, other):
    if product == "matmul":
        return f64(x) @ dense_weight(mask, bs, f64(other))
    if product == "matmul_t":
        return f64(x) @ dense_weight(mask, bs, f64(other)).T
    lead_x = f64(x).reshape(-1, x.shape[-1])
    lead_dy = f64(other).reshape(-1, other.shape[-1])
    return blocks_of(mask, bs, lead_x.T @ lead_dy)


def _run(product, rng, mask, bs, lead, dtype, precision=None, preferred=None):
    layout = jbs.Layout(mask, bs)
    rows, cols = layout.shape
    if product == "matmul":
        x, other = random_array(rng, (*lead, rows), dtype), random_array(rng, layout.w_shape, dtype)
        out = jbs.matmul(x, other, layout, precision=precision, preferred_element_type=preferred)
    elif product == "matmul_t":
        x, other = random_array(rng, (*lead, cols), dtype), random_array(rng, layout.w_shape, dtype)
        out = jbs.matmul_t(x, other, layout, precision=precision, preferred_element_type=preferred)
    else:
        x, other = random_array(rng, (*lead, rows), dtype), random_array(rng, (*lead, cols), dtype)
        out = jbs.sampled_matmul(x, other, layout, precision=precision, preferred_element_type=preferred)
    return out, _expected(product, mask, bs, x, other)


PRODUCTS = ("matmul", "matmul_t", "sampled_matmul")


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("bs", BLOCK_SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_and_block_size(rng, product, bs, dtype):
    grid = (3, 4) if bs <= 32 else (2, 3)
    mask = random_mask(rng, *grid, density=0.5)
    out, expected = _run(product, rng, mask, bs, (37,), dtype, precision="highest")
    assert out.dtype == np.dtype(dtype)
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("layout_name", LAYOUT_NAMES)
@pytest.mark.parametrize("m", [1, 7, 130])
def test_edge_layouts_and_row_counts(rng, product, layout_name, m):
    mask = named_masks(rng)[layout_name]
    out, expected = _run(product, rng, mask, 8, (m,), np.float32, precision="highest")
    assert_close(out, expected, np.float32)


@pytest.mark.parametrize("product", PRODUCTS)
def test_leading_dimensions(rng, product):
    mask = random_mask(rng, 4, 3)
    out, expected = _run(product, rng, mask, 16, (2, 3, 5), np.float32, precision="highest")
    if product != "sampled_matmul":
        assert out.shape[:-1] == (2, 3, 5)
    assert_close(out, expected.reshape(out.shape), np.float32)


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("dtype,preferred", [(jnp.bfloat16, np.float32), (np.float16, np.float32),
                                             (jnp.bfloat16, np.float16), (np.float32, jnp.bfloat16)],
                         ids=lambda d: np.dtype(d).name)
def test_preferred_element_type(rng, product, dtype, preferred):
    mask = random_mask(rng, 3, 3)
    out, expected = _run(product, rng, mask, 16, (19,), dtype, precision="highest", preferred=preferred)
    assert out.dtype == np.dtype(preferred)
    assert_close(out, expected, preferred)


@pytest.mark.parametrize("product", PRODUCTS)
def test_default_precision_float32(rng, product):
    # DEFAULT may use TF32 on GPU; it must still be TF32-accurate.
    mask = random_mask(rng, 4, 4)
    out, expected = _run(product, rng, mask, 32, (65,), np.float32, precision=None)
    assert_close(out, expected, np.float32, precision="default", on_gpu=ON_GPU)


# NaN bit patterns by name, per element width: the quiet NaN that ``jnp.nan`` makes; NaNs whose
# payload fills the top of the mantissa (CUDA's canonical NaN, and all bits set as in a poisoned
# buffer), which an integer rounding to tf32 (+ half an ulp) would carry into the sign and zero;
# and one whose payload lies only in the low 13 bits, which TF32 tensor cores ignore (such a NaN
# enters them as an infinity).
_NAN_BITS = {"quiet": {4: 0x7FC00000, 2: None}, "top_payload": {4: 0x7FFFFFFF, 2: 0x7FFF},
             "all_ones": {4: 0xFFFFFFFF, 2: 0xFFFF}, "low_payload": {4: 0x7F800001, 2: None}}


def _with_nan(x, row, col, pattern):
    """x with element (row, col) set to the NaN of ``pattern``, bit for bit."""
    bits = _NAN_BITS[pattern][x.dtype.itemsize]
    if bits is None:  # the 16-bit quiet NaN and low payloads: what jnp.nan rounds to
        return x.at[row, col].set(jnp.nan)
    host = np.array(x)
    host.view(np.uint32 if x.dtype.itemsize == 4 else np.uint16)[row, col] = bits
    return jnp.asarray(host)


def _check_nan_propagation(rng, product, m, bs, dtype, precision, pattern):
    """One NaN in the dense operand (row r0 of x, or of dy for matmul_t) must come out in every
    output it enters through a present block: a kernel that rounds or splits its operands with
    integer arithmetic could turn it into a finite number. Outputs it cannot reach stay finite
    and right: the other rows of y, and every other row of the sampled product's blocks. Along
    its own row of y, what absent blocks give is left to the kernel (a dense fallback multiplies
    the NaN by explicit zeros). A NaN with only a low payload may come out as an infinity on
    TF32 routes (non-finite is required of it, not NaN)."""
    mask = random_mask(rng, 5, 4, density=0.5)
    mask[:, 1] = False  # an empty block-column
    layout = jbs.Layout(mask, bs)
    rows, cols = layout.shape
    r0 = m // 2
    sampled = product == "sampled_matmul"
    if product == "matmul_t":
        # dy's column feeds block-column nb of w's transposed products
        nb = int(np.flatnonzero(mask.any(axis=0))[-1])
        poisoned_col = nb * bs + bs // 2
        x = random_array(rng, (m, cols), dtype)
        other = random_array(rng, layout.w_shape, dtype)
    else:
        ib = int(np.flatnonzero(mask.any(axis=1))[-1])
        poisoned_col = ib * bs + bs // 2
        x = random_array(rng, (m, rows), dtype)
        other = random_array(rng, (m, cols), dtype) if sampled else random_array(rng, layout.w_shape, dtype)
    expected = _expected(product, mask, bs, x, other)  # before the NaN: what every other output is
    x = _with_nan(x, r0, poisoned_col, pattern)
    assert np.isnan(f64(x)[r0, poisoned_col])
    kw = dict(precision=precision)
    if product == "matmul":
        out = np.asarray(jbs.matmul(x, other, layout, **kw).astype(jnp.float32))
        reached = np.zeros(out.shape, bool)
        for jb in np.flatnonzero(mask[ib]):
            reached[r0, jb * bs:(jb + 1) * bs] = True
    elif product == "matmul_t":
        out = np.asarray(jbs.matmul_t(x, other, layout, **kw).astype(jnp.float32))
        reached = np.zeros(out.shape, bool)
        for i in np.flatnonzero(mask[:, nb]):
            reached[r0, i * bs:(i + 1) * bs] = True
    else:
        out = np.asarray(jbs.sampled_matmul(x, other, layout, **kw).astype(jnp.float32))
        reached = np.zeros(out.shape, bool)
        # block k of w is the k-th present block in row-major order
        for k, flat in enumerate(np.flatnonzero(mask.reshape(-1))):
            if flat // mask.shape[1] == ib:
                reached[k, poisoned_col - ib * bs, :] = True
    assert reached.any()
    if pattern == "low_payload":
        assert not np.isfinite(out[reached]).any(), "a NaN input came out as a number"
    else:
        assert np.isnan(out[reached]).all(), "a NaN input came out as a number or an infinity"
    if sampled:
        unreachable = ~reached
    else:
        unreachable = np.ones(out.shape, bool)
        unreachable[r0] = False
    assert np.isfinite(out[unreachable]).all(), "a NaN reached outputs it does not feed"
    assert_close(out[unreachable], expected[unreachable], dtype, precision or "highest",
                 on_gpu=ON_GPU)


_NAN_DTYPES = dict(argnames="dtype,precision",
                   argvalues=[(np.float32, "highest"), (np.float32, "default"), (jnp.bfloat16, None),
                              (np.float16, None)],
                   ids=["f32-highest", "f32-default", "bf16", "f16"])


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("m", [20, 48, 300])
@pytest.mark.parametrize("bs", [8, 16, 32])
@pytest.mark.parametrize(**_NAN_DTYPES)
def test_a_nan_reaches_every_output_it_feeds_and_no_other(rng, product, m, bs, dtype, precision):
    _check_nan_propagation(rng, product, m, bs, dtype, precision, "quiet")


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("m,bs", [(20, 32), (48, 32), (300, 8)])
@pytest.mark.parametrize(**_NAN_DTYPES)
@pytest.mark.parametrize("pattern", ["top_payload", "all_ones", "low_payload"])
def test_nans_of_every_payload_reach_the_outputs_they_feed(rng, product, m, bs, dtype, precision,
                                                          pattern):
    """The bit patterns of _NAN_BITS, on the float32 routes that round operands to tf32 (M <= 32
    and 48 at bs 32: the W-streaming tiles and the short weight gradient; 300 rows at bs 8) and
    the 16-bit ones."""
    if _NAN_BITS[pattern][np.dtype(dtype).itemsize] is None:
        pytest.skip("no such 16-bit pattern beyond jnp.nan's")
    _check_nan_propagation(rng, product, m, bs, dtype, precision, pattern)


def test_zero_rows(rng):
    layout = jbs.Layout(random_mask(rng, 2, 2), 8)
    x = jnp.zeros((0, 16), jnp.float32)
    w = random_array(rng, layout.w_shape, np.float32)
    assert jbs.matmul(x, w, layout).shape == (0, 16)
    dw = jbs.sampled_matmul(x, jnp.zeros((0, 16), jnp.float32), layout)
    np.testing.assert_array_equal(np.asarray(dw), 0.0)


def test_empty_layout_gives_zeros(rng):
    layout = jbs.Layout(np.zeros((3, 2), bool), 8)
    x = random_array(rng, (5, 24), np.float32)
    w = jnp.zeros(layout.w_shape, jnp.float32)
    y = jbs.matmul(x, w, layout)
    assert y.shape == (5, 16)
    np.testing.assert_array_equal(np.asarray(y), 0.0)


def test_results_are_deterministic(rng):
    layout = jbs.Layout(random_mask(rng, 8, 8, 0.5), 32)
    x = random_array(rng, (300, 256), np.float32)
    dy = random_array(rng, (300, 256), np.float32)
    w = random_array(rng, layout.w_shape, np.float32)
    step = jax.jit(lambda x, dy, w: (jbs.matmul(x, w, layout), jbs.matmul_t(dy, w, layout),
                                     jbs.sampled_matmul(x, dy, layout)))
    first = [np.asarray(a) for a in step(x, dy, w)]
    second = [np.asarray(a) for a in step(x, dy, w)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_seed_interface(rng):
    mask = rng.integers(2, size=(4, 4))
    bsmm = jbs.BlocksparseMatMul(mask, block_size=8)
    w = bsmm.init_weights(jax.random.PRNGKey(0))
    assert w.shape == bsmm.w_shape
    x = random_array(rng, (3, 32), np.float32)
    # The seed interface keeps jnp.matmul's default precision: TF32 is allowed on GPU.
    assert_close(bsmm(x, w), f64(x) @ dense_weight(mask, 8, f64(w)), np.float32, precision="default",
                 on_gpu=ON_GPU)


def test_dense_sampled_gate():
    """Where the CUDA lowering takes the dense path for sampled_matmul: 16-bit, long reductions,
    dense enough layouts, and a float32 temporary of at most DENSE_SAMPLED_MAX_TEMP_BYTES."""
    from jax_blocksparse import lowering
    m = lowering.DENSE_SAMPLED_MIN_ROWS
    dense_enough = jbs.Layout(np.ones((4, 4), bool), 32)
    sparse = jbs.Layout(np.eye(16, dtype=bool), 32)
    x = lambda groups, rows, dtype=jnp.bfloat16: jax.ShapeDtypeStruct((groups, rows, 128), dtype)
    assert lowering._dense_sampled_applies(x(1, m), dense_enough)
    assert lowering._dense_sampled_applies(x(2, m, jnp.float16), dense_enough)
    assert not lowering._dense_sampled_applies(x(1, m - 1), dense_enough)
    assert not lowering._dense_sampled_applies(x(1, m, jnp.float32), dense_enough)
    assert not lowering._dense_sampled_applies(jax.ShapeDtypeStruct((1, m, 512), jnp.bfloat16),
                                               sparse)
    # G x C x N x 4 bytes: 128 x 128 x 4 = 64 KiB per group.
    cap_groups = lowering.DENSE_SAMPLED_MAX_TEMP_BYTES // (128 * 128 * 4)
    assert lowering._dense_sampled_applies(x(cap_groups, m), dense_enough)
    assert not lowering._dense_sampled_applies(x(cap_groups + 1, m), dense_enough)


def test_transposed_operand_gate(monkeypatch):
    """Where the CUDA lowering hands matmul / matmul_t their dense operand transposed
    (``jbs_bsmm_at``): on a device that runs the sm_90a kernels, for 16-bit operands, bs 16 (and
    bs 32 when the experiment ``wgmma_tma_at`` is named), more than 128 rows in multiples of 8;
    never under ``no_wgmma_tma_at``."""
    from jax_blocksparse import lowering
    operand = lambda rows, dtype=jnp.bfloat16: jax.ShapeDtypeStruct((2, rows, 64), dtype)
    layout = lambda bs: jbs.Layout(np.ones((64 // bs, 2), bool), bs)
    hopper, other = (lambda: True), (lambda: False)
    monkeypatch.delenv("JBS_CUDA_EXPERIMENT", raising=False)  # the run may name some
    assert lowering._transposed_operand_applies(operand(264), layout(16), hopper)
    assert not lowering._transposed_operand_applies(operand(264), layout(32), hopper)
    monkeypatch.setenv("JBS_CUDA_EXPERIMENT", "no_wgmma_tma_at")
    assert not lowering._transposed_operand_applies(operand(264), layout(16), hopper)
    monkeypatch.setenv("JBS_CUDA_EXPERIMENT", "no_dense_small_blocks,wgmma_tma_at")
    for bs in (16, 32):
        assert lowering._transposed_operand_applies(operand(264), layout(bs), hopper)
        assert lowering._transposed_operand_applies(operand(136, np.float16), layout(bs), hopper)
    assert not lowering._transposed_operand_applies(operand(264), layout(16), other)
    assert not lowering._transposed_operand_applies(operand(264), layout(16), None)
    assert not lowering._transposed_operand_applies(operand(128), layout(16), hopper)
    assert not lowering._transposed_operand_applies(operand(260), layout(16), hopper)
    assert not lowering._transposed_operand_applies(operand(264, np.float32), layout(16), hopper)
    for bs in (8, 64):
        assert not lowering._transposed_operand_applies(operand(264), layout(bs), hopper)


def test_dense_small_blocks_gate(monkeypatch):
    """Where the CUDA lowering runs bs <= 16 products as dense GEMMs (NOTES v22): 16-bit, at
    least 2048 rows, density >= 1/8, a dense temporary within the cap; never under
    ``no_dense_small_blocks``."""
    from jax_blocksparse import lowering
    operand = lambda rows, groups=1, dtype=jnp.bfloat16: jax.ShapeDtypeStruct((groups, rows, 64),
                                                                              dtype)
    mask = np.zeros((8, 8), bool)
    mask[:, :2] = True  # density 1/4
    monkeypatch.delenv("JBS_CUDA_EXPERIMENT", raising=False)
    for bs in (8, 16):
        assert lowering._dense_small_blocks_applies(operand(2048), jbs.Layout(mask, bs))
    assert not lowering._dense_small_blocks_applies(operand(2048), jbs.Layout(mask, 32))
    assert not lowering._dense_small_blocks_applies(operand(2047), jbs.Layout(mask, 8))
    assert not lowering._dense_small_blocks_applies(operand(2048, dtype=np.float32),
                                                    jbs.Layout(mask, 8))
    sparse = np.eye(8, dtype=bool)  # density 1/8 exactly: still dense; 1/16 not
    assert lowering._dense_small_blocks_applies(operand(2048), jbs.Layout(sparse, 8))
    sparser = np.zeros((16, 16), bool)
    sparser[np.arange(16), np.arange(16)] = True
    assert not lowering._dense_small_blocks_applies(operand(2048), jbs.Layout(sparser, 8))
    monkeypatch.setattr(lowering, "DENSE_SAMPLED_MAX_TEMP_BYTES", 2 * 64 * 64 * 4 - 1)
    assert not lowering._dense_small_blocks_applies(operand(2048, groups=2), jbs.Layout(mask, 8))
    monkeypatch.setenv("JBS_CUDA_EXPERIMENT", "no_dense_small_blocks")
    assert not lowering._dense_small_blocks_applies(operand(2048), jbs.Layout(mask, 16))


@pytest.mark.parametrize("layout_name", [n for n in LAYOUT_NAMES if n != "no_blocks"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16, np.float32],
                         ids=lambda d: np.dtype(d).name)
def test_dense_sampled_path(rng, layout_name, dtype):
    """The CUDA lowering's dense path for sampled_matmul (one GEMM, then a gather of the blocks;
    taken for long 16-bit reductions at high density), run as plain jnp on this backend, with
    two operand groups, against float64."""
    from jax_blocksparse import lowering
    mask = named_masks(rng)[layout_name]
    layout = jbs.Layout(mask, 8)
    rows, cols = layout.shape
    x, dy = random_array(rng, (2, 37, rows), dtype), random_array(rng, (2, 37, cols), dtype)
    out = lowering.dense_sampled(jnp.asarray(x), jnp.asarray(dy), layout=layout,
                                 precision="highest", out_dtype=dtype)
    assert out.shape == (2, *layout.w_shape) and out.dtype == np.dtype(dtype)
    for g in range(2):
        assert_close(out[g], blocks_of(mask, 8, f64(x[g]).T @ f64(dy[g])), dtype)
