"""One lowering per platform for each primitive.

* ``cpu``: C++ XLA FFI handlers from ``_jbs_cpu``.
* ``cuda``: CUDA kernels behind XLA FFI handlers from ``_jbs_cuda`` (optional build). The
  convolution primitives use the ``jbs_conv`` / ``jbs_conv_dw`` targets when the module registers
  them (today ``_jbs_cuda`` registers ``jbs_conv``: forward and input gradient), and otherwise, and
  for float64, the patch-based composite of :mod:`jax_blocksparse.conv`, which runs on the CUDA
  matmul kernels. ``jbs_conv_dw_halo`` takes the filter gradients it supports
  (``halo_filter_grad_applies``), split into segments of output positions whose partial sums it
  adds in a fixed order. ``sampled_matmul`` of 16-bit operands over long reductions at high
  density is one dense GEMM plus a gather of the blocks (``dense_sampled``), which measured
  faster than the block kernel there. 16-bit bs-16 products over long batches on Hopper read
  their dense operand transposed (``jbs_bsmm_at``; bs 32 too under the experiment
  ``wgmma_tma_at``), and bs <= 16 products over long batches at density >= 1/8 run as dense
  GEMMs (``_dense_small_blocks_applies``).
* anything else, or an extension that is missing: the pure-jnp products of
  :mod:`jax_blocksparse.reference`.

These rules lower each primitive's shard-local twin (``ops.SHARD_LOCAL``), on whatever part of
the operands a device holds; the primitive itself lowers through its partitioning rule
(:mod:`jax_blocksparse.partitioning`).

The lookup tables are numpy arrays cached on the layout; they enter the
compiled program as constants, so they are uploaded once per executable and
never rebuilt per call.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import warnings

import numpy as np
import jax
import jax.numpy as jnp

from . import _compat, ops, partitioning, reference
from .conv import composite_conv, composite_conv_dw, composite_conv_dx
from .shapes import HIGHEST

_PRECISION_CODE = {"default": 0, HIGHEST: 1}

BSMM_TARGET = "jbs_bsmm"
# jbs_bsmm's contract with the dense operand stored transposed, (G, Ka, M): CUDA, sm_90a,
# 16-bit, bs 16 and 32 only (``_transposed_operand_applies``).
BSMM_AT_TARGET = "jbs_bsmm_at"
SAMPLED_TARGET = "jbs_sampled"
CONV_TARGET = "jbs_conv"
CONV_DW_TARGET = "jbs_conv_dw"
# jbs_conv_dw's contract plus a second result (float partial sums of the segments), for the
# stride-1 16-bit bs-32 cases of the CUDA halo-tile kernel only.
CONV_DW_HALO_TARGET = "jbs_conv_dw_halo"


# Platforms on which a layout's hub lists are cut into segments (``Layout.split_table``): a GPU
# balances its CTAs that way; a CPU thread pool gains nothing from it.
SPLIT_LIST_PLATFORMS = frozenset({"cuda"})


def _ffi_bsmm(dense, w, *, layout, precision, out_dtype, transpose, platform,
              wgmma_available=None):
    groups, rows_m, _ = dense.shape
    bs = layout.block_size
    table = layout.row_table if transpose else layout.column_table
    out_blocks = table.offsets.shape[0] - 1
    out_shape = (groups, rows_m, out_blocks * bs)
    if layout.nnz == 0 or rows_m == 0 or groups == 0:  # nothing to reduce: skip the launch
        return jnp.zeros(out_shape, out_dtype)
    if platform == "cuda" and _dense_small_blocks_applies(dense, layout):
        return reference.bsmm(dense, w, layout=layout, precision=precision, out_dtype=out_dtype,
                              transpose=transpose)
    split = layout.split_table(transpose) if platform in SPLIT_LIST_PLATFORMS else None
    offsets = table.offsets if split is None else split.offsets
    # Segments of a cut list are summed in float32 (float64 for float64), then rounded once.
    call_dtype = out_dtype if split is None else np.promote_types(out_dtype, np.float32)
    call_shape = (groups, rows_m, (offsets.shape[0] - 1) * bs)
    target, operand = BSMM_TARGET, dense
    if platform == "cuda" and _transposed_operand_applies(dense, layout, wgmma_available):
        target, operand = BSMM_AT_TARGET, jnp.swapaxes(dense, 1, 2)
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(call_shape, call_dtype))
    out = call(operand, w, jnp.asarray(offsets), jnp.asarray(table.entries),
               transpose_w=bool(transpose), precision=np.int32(_PRECISION_CODE[precision]))
    if split is None:
        return out
    return _add_segments(out, split.gather, bs).astype(out_dtype)


def _transposed_operand_applies(dense, layout, wgmma_available):
    """Whether the product reads its dense operand transposed (one XLA transpose per call,
    ``jbs_bsmm_at``; benchmarks/NOTES.md v26), so that the TMA + wgmma tile's boxes have 128-byte
    rows: a Hopper SM takes in ~0.5 box rows per cycle whatever their width up to 128 bytes
    (the session-12 probe), so bs 16's 32-byte rows left it at half its bytes. Adopted at bs 16
    (H100, small d = 1/8: 190.7 -> 128.7 us); at bs 32 (64-byte rows, near L2's byte cap already)
    it lost (wide 329 -> 356 us), so bs 32 only under the experiment ``wgmma_tma_at``;
    ``no_wgmma_tma_at`` turns it off. Only where the kernel exists: a device that runs this
    build's sm_90a image (``wgmma_available``), 16-bit, more than 128 rows, a multiple of 8 (x^T's
    rows must be 16-byte multiples for a tensor map)."""
    rows = dense.shape[1]
    block_sizes = (16, 32) if cuda_experiment_enabled("wgmma_tma_at") else (16,)
    return (wgmma_available is not None and not cuda_experiment_enabled("no_wgmma_tma_at")
            and layout.block_size in block_sizes and dense.dtype in (jnp.bfloat16, jnp.float16)
            and rows > 128 and rows % 8 == 0 and wgmma_available())


def _add_segments(parts, gather, bs):
    """Output block o = the sum over s of segment gather[s, o] of ``parts`` (G, M, segments x bs),
    s ascending: constant gathers and adds, so XLA fuses them without atomics."""
    groups, rows_m, _ = parts.shape
    parts = parts.reshape(groups, rows_m, -1, bs)
    parts = jnp.concatenate([parts, jnp.zeros((groups, rows_m, 1, bs), parts.dtype)], axis=2)
    total = jnp.take(parts, jnp.asarray(gather[0]), axis=2)
    for row in gather[1:]:
        total = total + jnp.take(parts, jnp.asarray(row), axis=2)
    return total.reshape(groups, rows_m, gather.shape[1] * bs)


def _ffi_sampled(x, dy, *, layout, precision, out_dtype, platform):
    out_shape = (x.shape[0], *layout.w_shape)
    if layout.nnz == 0 or x.shape[0] == 0:
        return jnp.zeros(out_shape, out_dtype)
    if platform == "cuda" and (_dense_sampled_applies(x, layout)
                               or _dense_small_blocks_applies(x, layout)):
        return dense_sampled(x, dy, layout=layout, precision=precision, out_dtype=out_dtype)
    call = jax.ffi.ffi_call(SAMPLED_TARGET, jax.ShapeDtypeStruct(out_shape, out_dtype))
    return call(x, dy, jnp.asarray(layout.coords), precision=np.int32(_PRECISION_CODE[precision]))


# Where the CUDA lowering computes sampled_matmul as a dense GEMM plus a gather (dense_sampled):
# 16-bit operands, M >= DENSE_SAMPLED_MIN_ROWS, density >= DENSE_SAMPLED_MIN_DENSITY. On an
# H200 at M = 8192, C = N = 4096 the block kernel took ~250 us at d = 1/16 and ~500 at 1/4, the
# dense path ~405 at both (benchmarks/NOTES.md v20): crossover near d = 0.16. Measured at
# M = 8192 only, hence the conservative row bound. The dense float32 temporary (G x C x N) is
# capped, so that a very wide layout (a 20k-unit recurrent layer: 1.7 GB per group) keeps the
# block kernel's memory use instead of trading it for a speedup measured at 4096 x 4096.
DENSE_SAMPLED_MIN_ROWS = 4096
DENSE_SAMPLED_MIN_DENSITY = 3 / 16
DENSE_SAMPLED_MAX_TEMP_BYTES = 1 << 30


def _dense_sampled_applies(x, layout):
    rows, cols = layout.shape
    temp_bytes = x.shape[0] * rows * cols * 4
    return (x.dtype in (jnp.bfloat16, jnp.float16) and x.shape[1] >= DENSE_SAMPLED_MIN_ROWS
            and layout.density >= DENSE_SAMPLED_MIN_DENSITY
            and temp_bytes <= DENSE_SAMPLED_MAX_TEMP_BYTES)


def _dense_small_blocks_applies(a, layout):
    """All three products as dense GEMMs (``layout.todense``, then the vendor GEMM; the weight
    gradient as ``dense_sampled``; benchmarks/NOTES.md v22) for 16-bit operands, bs <= 16,
    M >= 2048, density >= 1/8. Measured on an H100 (small, d = 1/8, matmul): bs 16 190.7 ->
    88.1 us, bs 8 241.1 -> 89.2 (0.43x / 0.34x -> 0.94x / 0.93x of the dense product of the same
    shape): a Hopper SM takes in ~0.5 TMA box rows per cycle (the session-12 probe), so blocks
    of 16- and 32-byte rows cannot feed the tensor cores, and the floor arithmetic (NOTES v2)
    leaves no register-resident tiling of random layouts much above 1x. The dense temporary is
    capped as for ``dense_sampled``, so that a very wide layout keeps the block kernels' memory
    use. ``no_dense_small_blocks`` in ``JBS_CUDA_EXPERIMENT`` keeps the block kernels (their
    tests, A/B runs)."""
    rows, cols = layout.shape
    temp_bytes = a.shape[0] * rows * cols * 4  # the dense weight (or float32 gradient) per group
    return (not cuda_experiment_enabled("no_dense_small_blocks") and layout.block_size <= 16
            and a.shape[1] >= 2048 and layout.density >= 1 / 8
            and a.dtype in (jnp.bfloat16, jnp.float16)
            and temp_bytes <= DENSE_SAMPLED_MAX_TEMP_BYTES)


def dense_sampled(x, dy, *, layout, precision, out_dtype):
    """sampled_matmul as the dense ``x.T @ dy`` on the vendor GEMM, then a gather of the layout's
    blocks. Where the blocks cover a large share of the matrix and M is long, the dense product at
    cuBLAS's tensor-core rate can cost less than the block kernel's: wide d = 1/4 ran 500 us in
    the block kernel against ~405 for this path (NOTES v20). Deterministic: one GEMM and a
    constant gather, no atomics."""
    groups = x.shape[0]
    bs = layout.block_size
    block_rows, block_cols = layout.grid_shape
    full = jnp.einsum("gmc,gmn->gcn", x, dy, precision=reference.lax_precision(precision),
                      preferred_element_type=jnp.float32)
    tiles = full.reshape(groups, block_rows, bs, block_cols, bs).transpose(0, 1, 3, 2, 4)
    rows, cols = (jnp.asarray(layout.coords[:, i]) for i in (0, 1))
    return tiles[:, rows, cols].astype(out_dtype)


def _geometry_attributes(params):
    """The forward geometry as the FFI's 3-element int64 array attributes."""
    return {name: np.asarray(params[name], np.int64)
            for name in ("kernel", "strides", "dilation", "pad_lo")}


def _ffi_conv(dense, w, *, layout, precision, out_dtype, transpose, **params):
    """``conv_p`` (``transpose=False``, dense = x) or ``conv_dx_p`` (dense = dy)."""
    groups, batch = dense.shape[:2]
    table = layout.row_table if transpose else layout.column_table
    spatial = params["in_spatial"] if transpose else params["out_spatial"]
    out_shape = (groups, batch, *spatial, (table.offsets.shape[0] - 1) * layout.block_size)
    if layout.nnz == 0 or dense.size == 0 or np.prod(out_shape) == 0:  # nothing to reduce
        return jnp.zeros(out_shape, out_dtype)
    call = jax.ffi.ffi_call(CONV_TARGET, jax.ShapeDtypeStruct(out_shape, out_dtype))
    return call(dense, w, jnp.asarray(table.offsets), jnp.asarray(table.entries),
                transpose_w=bool(transpose), precision=np.int32(_PRECISION_CODE[precision]),
                **_geometry_attributes(params))


def _ffi_conv_dw(x, dy, *, layout, precision, out_dtype, **params):
    bs = layout.block_size
    out_shape = (x.shape[0], layout.nnz, int(np.prod(params["kernel"])), bs, bs)
    if layout.nnz == 0 or x.size == 0 or dy.size == 0:
        return jnp.zeros(out_shape, out_dtype)
    call = jax.ffi.ffi_call(CONV_DW_TARGET, jax.ShapeDtypeStruct(out_shape, out_dtype))
    return call(x, dy, jnp.asarray(layout.coords), precision=np.int32(_PRECISION_CODE[precision]),
                **_geometry_attributes(params))


def _ffi_conv_forward(x, w, **params):
    return _ffi_conv(x, w, transpose=False, **params)


def _ffi_conv_input_grad(dy, w, **params):
    return _ffi_conv(dy, w, transpose=True, **params)


def _unless_float64(kernel, composite):
    """``kernel``, except that float64 operands take ``composite`` (the CUDA convolution kernel
    runs on tensor cores, which have no float64 path; the matmul composite has one)."""
    def lower(a, b, **params):
        return (composite if a.dtype == np.float64 else kernel)(a, b, **params)
    return lower


def cuda_experiment_enabled(name):
    """Whether ``JBS_CUDA_EXPERIMENT`` (a comma-separated list) names ``name``: kernel variants
    still being measured, off by default, and ``no_*`` opt-outs of adopted ones, so that one
    build can time and test them against the defaults (``benchmarks/gpu_run.sh ab``). Read at
    trace time."""
    return name in os.environ.get("JBS_CUDA_EXPERIMENT", "").split(",")


def _halo_tile_rows(kernel, dilation, out_spatial):
    """Output rows per tile of the halo kernels, or None where they do not apply (the C++
    ``MakeHaloGeometry`` in conv_halo_tensor_core.cu)."""
    depth, height, width = out_spatial
    if math.prod(kernel) > 9 or not (1 <= width <= 128 and depth >= 1 and height >= 1):
        return None
    tile_rows = min(128 // width, height)
    halo = (((kernel[0] - 1) * dilation[0] + 1) * (tile_rows + (kernel[1] - 1) * dilation[1])
            * (width + (kernel[2] - 1) * dilation[2]))
    return tile_rows if halo <= 256 else None


def halo_filter_grad_applies(x, *, layout, out_dtype, kernel, strides, dilation, out_spatial,
                             **_):
    """Whether ``jbs_conv_dw_halo`` takes this filter gradient: the C++ side's conditions,
    decided at trace time."""
    half = np.dtype(x.dtype) in (np.dtype(jnp.bfloat16), np.dtype(jnp.float16))
    if not half or np.dtype(out_dtype) not in (np.dtype(x.dtype), np.dtype(np.float32)):
        return False
    if layout.block_size != 32 or any(s != 1 for s in strides):
        return False
    return _halo_tile_rows(kernel, dilation, out_spatial) is not None


# The halo filter gradient runs one CTA per (block pair, segment of output tiles). One segment
# per block pair left the configuration (128 pairs) with a CTA per SM; about 1024 CTAs
# keep every SM of an H100/H200 a few CTAs deep. A segment keeps at least 8 tiles, so that its
# pipeline fills, and the segments' float partial sums cost one extra pass over
# segments x (the gradient's size).
_DW_TARGET_CTAS = 1024
_DW_MIN_TILES_PER_SEGMENT = 8
_DW_MAX_SEGMENTS = 64  # kMaxConvDwSegments in conv_halo_tensor_core.h


def halo_filter_grad_segments(groups, nnz, batch, *, kernel, dilation, out_spatial):
    """How many segments ``jbs_conv_dw_halo`` splits the output positions into (1: none)."""
    tiles = batch * out_spatial[0] * -(-out_spatial[1] // _halo_tile_rows(kernel, dilation,
                                                                          out_spatial))
    wanted = -(-_DW_TARGET_CTAS // max(1, groups * nnz))
    segments = min(wanted, tiles // _DW_MIN_TILES_PER_SEGMENT, _DW_MAX_SEGMENTS)
    if cuda_experiment_enabled("conv_dw_unsplit"):
        segments = 1
    return max(segments, 1)


def _ffi_conv_dw_halo(x, dy, *, layout, precision, out_dtype, **params):
    bs = layout.block_size
    groups, batch = x.shape[:2]
    out_shape = (groups, layout.nnz, int(np.prod(params["kernel"])), bs, bs)
    if layout.nnz == 0 or x.size == 0 or dy.size == 0:
        return jnp.zeros(out_shape, out_dtype)
    segments = halo_filter_grad_segments(groups, layout.nnz, batch, kernel=params["kernel"],
                                         dilation=params["dilation"],
                                         out_spatial=params["out_spatial"])
    # The handler's partial sums: (segments, *out_shape), or a leading 0 for a single segment.
    partials_shape = (segments if segments > 1 else 0, *out_shape)
    call = jax.ffi.ffi_call(CONV_DW_HALO_TARGET,
                            (jax.ShapeDtypeStruct(out_shape, out_dtype),
                             jax.ShapeDtypeStruct(partials_shape, jnp.float32)))
    dw, _ = call(x, dy, jnp.asarray(layout.coords), precision=np.int32(_PRECISION_CODE[precision]),
                 **_geometry_attributes(params))
    return dw


def _halo_filter_grad_or(fallback):
    def lower(x, dy, **params):
        if halo_filter_grad_applies(x, **params):
            return _ffi_conv_dw_halo(x, dy, **params)
        return fallback(x, dy, **params)
    return lower


def conv_implementations(targets, float64_kernels=True):
    """The functions that lower the convolution primitives next to the FFI targets ``targets``:
    the FFI calls for the targets that are registered, the patch-based composite (on the matmul
    primitives) for the others, and for float64 where the kernels lack it."""
    forward, input_grad, filter_grad = composite_conv, composite_conv_dx, composite_conv_dw
    if CONV_TARGET in targets:
        forward, input_grad = _ffi_conv_forward, _ffi_conv_input_grad
        if not float64_kernels:
            forward = _unless_float64(forward, composite_conv)
            input_grad = _unless_float64(input_grad, composite_conv_dx)
    if CONV_DW_TARGET in targets:
        filter_grad = _ffi_conv_dw if float64_kernels else _unless_float64(_ffi_conv_dw,
                                                                          composite_conv_dw)
    if CONV_DW_HALO_TARGET in targets:
        filter_grad = _halo_filter_grad_or(filter_grad)
    return {ops.conv_p: forward, ops.conv_dx_p: input_grad, ops.conv_dw_p: filter_grad}


def _ffi_rules(targets, platform, wgmma_available=None):
    """``wgmma_available``: the CUDA module's query, where it registers ``jbs_bsmm_at``."""
    float64_conv = platform == "cpu"
    if BSMM_AT_TARGET not in targets:
        wgmma_available = None
    bsmm = dict(platform=platform, wgmma_available=wgmma_available)
    return {
        ops.bsmm_p: _compat.lowering_from_function(
            lambda x, w, **p: _ffi_bsmm(x, w, transpose=False, **bsmm, **p)),
        ops.bsmm_t_p: _compat.lowering_from_function(
            lambda dy, w, **p: _ffi_bsmm(dy, w, transpose=True, **bsmm, **p)),
        ops.sampled_p: _compat.lowering_from_function(
            lambda x, dy, **p: _ffi_sampled(x, dy, platform=platform, **p)),
        **{primitive: _compat.lowering_from_function(fn)
           for primitive, fn in conv_implementations(targets, float64_conv).items()},
    }


def _fallback_rules():
    return {
        ops.bsmm_p: _compat.lowering_from_function(reference.bsmm),
        ops.bsmm_t_p: _compat.lowering_from_function(reference.bsmm_t),
        ops.sampled_p: _compat.lowering_from_function(reference.sampled),
        ops.conv_p: _compat.lowering_from_function(reference.conv),
        ops.conv_dx_p: _compat.lowering_from_function(reference.conv_dx),
        ops.conv_dw_p: _compat.lowering_from_function(reference.conv_dw),
    }


def _load_extension(name):
    """``(module, None)`` or ``(None, why it could not be loaded)``."""
    try:
        return importlib.import_module(f"jax_blocksparse.{name}"), None
    except ImportError as err:
        return None, f"{type(err).__name__}: {err}"


def _module_exists(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a missing parent package
        return False


def _jax_has_cuda_plugin():
    # Looks for the plugin package without initialising any backend.
    return any(_module_exists(name) for name in ("jax_cuda13_plugin", "jax_cuda12_plugin",
                                                 "jax_plugins.xla_cuda13", "jax_plugins.xla_cuda12"))


def _register(platform, rules):
    """Each primitive's platform rule lowers its shard-local twin (the kernel on one device's
    part of the operands); the primitive itself lowers through its partitioning rule."""
    for primitive, rule in rules.items():
        _compat.register_lowering(ops.SHARD_LOCAL[primitive], rule, platform=platform)


def _install():
    status = {}
    for primitive, rule in _fallback_rules().items():
        _compat.register_lowering(ops.SHARD_LOCAL[primitive], rule)
        _compat.register_lowering(primitive, partitioning.partitioned_lowering(
            primitive, ops.SHARD_LOCAL[primitive], primitive in ops.REDUCES_BATCH))

    for module_name, ffi_platform, lowering_platform in (("_jbs_cpu", "cpu", "cpu"),
                                                         ("_jbs_cuda", "CUDA", "cuda")):
        module, error = _load_extension(module_name)
        if module is not None:
            targets = module.registrations()
            _compat.register_ffi_targets(targets, ffi_platform)
            _register(lowering_platform, _ffi_rules(set(targets), lowering_platform,
                                                    getattr(module, "wgmma_available", None)))
        else:
            _register(lowering_platform, _fallback_rules())
        status[lowering_platform] = error

    if status["cpu"] is not None:
        warnings.warn("jax_blocksparse: the CPU extension did not load, so CPU products use the "
                      f"slow pure-jnp fallback ({status['cpu']}). Reinstall with `pip install .`.",
                      RuntimeWarning, stacklevel=3)
    if status["cuda"] is not None and _jax_has_cuda_plugin():
        warnings.warn("jax_blocksparse: JAX can use a CUDA GPU, but this build has no CUDA kernels "
                      f"({status['cuda']}); GPU products use the slow pure-jnp fallback. Rebuild "
                      "with nvcc on the PATH, or force it: CMAKE_ARGS=\"-DJBS_CUDA=ON\" pip install .",
                      RuntimeWarning, stacklevel=3)
    return status


_UNAVAILABLE = _install()


def kernels_available(platform: str) -> bool:
    """Whether compiled kernels back the products on ``platform`` ("cpu" or "cuda")."""
    return _UNAVAILABLE.get(platform, "no kernels for this platform") is None


def unavailable_reason(platform: str):
    """Why ``platform`` runs the pure-jnp fallback, or None when kernels are available."""
    return _UNAVAILABLE.get(platform, f"jax_blocksparse has no kernels for platform {platform!r}")
