"""Every use of JAX internals lives here, so a JAX upgrade touches one file.

Supported: jax 0.10.2 through 0.12.x. The names below are the semi-public
``jax.interpreters`` entry points that custom-primitive libraries rely on.
"""
from __future__ import annotations

import jax
from jax.extend.core import Primitive  # public since jax 0.4.36
from jax.interpreters import ad, batching, mlir
from jax._src import dispatch

try:  # public home of ShapedArray
    from jax.core import ShapedArray
except ImportError:  # pragma: no cover - future jax moving it
    from jax._src.core import ShapedArray  # type: ignore

__all__ = [
    "Primitive",
    "ShapedArray",
    "define_bilinear",
    "register_batching",
    "register_lowering",
    "lowering_from_function",
    "register_ffi_targets",
    "lower_with_devices",
    "lowering_for_export",
]


def define_bilinear(primitive, lhs_transpose, rhs_transpose):
    """JVP and transpose rules of a primitive linear in each of its two operands.

    JAX's helper also handles symbolic-zero tangents and cotangents, and the
    accumulation protocol of newer transposes, so we do not reimplement it.
    """
    ad.defbilinear(primitive, lhs_transpose, rhs_transpose)


def register_batching(primitive, rule):
    batching.primitive_batchers[primitive] = rule


def register_lowering(primitive, rule, platform=None):
    if platform is None:
        mlir.register_lowering(primitive, rule)
    else:
        mlir.register_lowering(primitive, rule, platform=platform)


def lowering_from_function(fn):
    """A lowering rule that traces ``fn(*operands, **params)`` with jax.numpy."""
    return mlir.lower_fun(fn, multiple_results=False)


def register_ffi_targets(registrations, platform):
    for name, capsule in registrations.items():
        jax.ffi.register_ffi_target(name, capsule, platform=platform)


def lower_with_devices(primitive):
    """Lower programs holding ``primitive`` with their device assignment known, which
    ``custom_partitioning`` needs to build its mesh (as JAX's own partitioned cuDNN primitives
    declare)."""
    dispatch.prim_requires_devices_during_lowering.add(primitive)


def lowering_for_export(ctx):
    """Whether a lowering rule runs for ``jax.export``, which cannot serialize the Python
    callbacks of ``custom_partitioning``."""
    return ctx.module_context.lowering_parameters.for_export
