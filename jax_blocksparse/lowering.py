"""One lowering per platform for each primitive.

* ``cpu``: C++ XLA FFI handlers from ``_jbs_cpu``.
* ``cuda``: CUDA kernels behind XLA FFI handlers from ``_jbs_cuda`` (optional build).
* anything else, or an extension that is missing: the pure-jnp products of
  :mod:`jax_blocksparse.reference`.

The lookup tables are numpy arrays cached on the layout; they enter the
compiled program as constants, so they are uploaded once per executable and
never rebuilt per call.
"""
from __future__ import annotations

import importlib
import importlib.util
import warnings

import numpy as np
import jax
import jax.numpy as jnp

from . import _compat, ops, reference
from .shapes import HIGHEST

_PRECISION_CODE = {"default": 0, HIGHEST: 1}

BSMM_TARGET = "jbs_bsmm"
SAMPLED_TARGET = "jbs_sampled"


def _ffi_bsmm(dense, w, *, layout, precision, out_dtype, transpose):
    groups, rows_m, _ = dense.shape
    table = layout.row_table if transpose else layout.column_table
    out_shape = (groups, rows_m, (table.offsets.shape[0] - 1) * layout.block_size)
    if layout.nnz == 0 or rows_m == 0 or groups == 0:  # nothing to reduce: skip the launch
        return jnp.zeros(out_shape, out_dtype)
    call = jax.ffi.ffi_call(BSMM_TARGET, jax.ShapeDtypeStruct(out_shape, out_dtype))
    return call(dense, w, jnp.asarray(table.offsets), jnp.asarray(table.entries),
                transpose_w=bool(transpose), precision=np.int32(_PRECISION_CODE[precision]))


def _ffi_sampled(x, dy, *, layout, precision, out_dtype):
    out_shape = (x.shape[0], *layout.w_shape)
    if layout.nnz == 0 or x.shape[0] == 0:
        return jnp.zeros(out_shape, out_dtype)
    call = jax.ffi.ffi_call(SAMPLED_TARGET, jax.ShapeDtypeStruct(out_shape, out_dtype))
    return call(x, dy, jnp.asarray(layout.coords), precision=np.int32(_PRECISION_CODE[precision]))


def _ffi_rules():
    return {
        ops.bsmm_p: _compat.lowering_from_function(
            lambda x, w, **p: _ffi_bsmm(x, w, transpose=False, **p)),
        ops.bsmm_t_p: _compat.lowering_from_function(
            lambda dy, w, **p: _ffi_bsmm(dy, w, transpose=True, **p)),
        ops.sampled_p: _compat.lowering_from_function(_ffi_sampled),
    }


def _fallback_rules():
    return {
        ops.bsmm_p: _compat.lowering_from_function(reference.bsmm),
        ops.bsmm_t_p: _compat.lowering_from_function(reference.bsmm_t),
        ops.sampled_p: _compat.lowering_from_function(reference.sampled),
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
    for primitive, rule in rules.items():
        _compat.register_lowering(primitive, rule, platform=platform)


def _install():
    status = {}
    for primitive, rule in _fallback_rules().items():
        _compat.register_lowering(primitive, rule)

    for module_name, ffi_platform, lowering_platform in (("_jbs_cpu", "cpu", "cpu"),
                                                         ("_jbs_cuda", "CUDA", "cuda")):
        module, error = _load_extension(module_name)
        if module is not None:
            _compat.register_ffi_targets(module.registrations(), ffi_platform)
            _register(lowering_platform, _ffi_rules())
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
