"""Partitioning rules: the products under ``jit`` over arrays sharded across devices.

XLA's partitioner knows nothing of a custom call. Without rules it gathers every operand onto
every device and runs the whole product on each, so data-parallel training would run no faster
than on one device and hold the whole batch on every one. Each primitive therefore lowers
through ``custom_partitioning`` to its shard-local twin (``ops.SHARD_LOCAL``), with these rules:

* The group axis ``G`` (a stack of weights under ``vmap``) stays sharded, on the dense operands
  and the weights alike: each device multiplies its own weights.
* The dense operands' batch axis (``M`` of the products, ``Nb`` of the convolutions) stays
  sharded: each device multiplies its own rows. ``sampled_matmul`` and the filter gradient
  reduce over that axis: each device computes its part of the sum in float32 (float64 for
  float64), one ``psum`` over the batch's mesh axes adds the parts, and the sum is rounded once
  to the result's dtype, as XLA does for a dense dot sharded along its contraction.
* Every other axis (features, spatial positions, the blocks of ``w``) is gathered first: the
  layout couples all of them.

On one device, and inside ``shard_map`` (every axis manual), ``custom_partitioning`` lowers the
twin on the whole operands, so such programs are exactly what they were without rules.
``jax.export`` cannot serialize ``custom_partitioning``'s Python callbacks, so an exported
program holds the twin without rules: on a mesh, XLA then runs each product replicated.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import jax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _compat


_NO_MESH = jax.sharding.AbstractMesh((), ())


class _Split(NamedTuple):
    """The mesh axes that a product keeps on its group axis and on its batch axis."""
    group: tuple
    batch: tuple


def _mesh_axes(sharding, dim):
    """The mesh axes that shard dimension ``dim`` of an operand, as a tuple."""
    spec = sharding.spec
    entry = spec[dim] if dim < len(spec) else None
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def _choose_split(first, second, reduces):
    """What stays sharded, from the operands' shardings: ``G`` as the dense operand has it (else
    as the second operand has it), the batch axis as the dense operand (or dy) has it, less any
    axis that ``G`` already uses."""
    group = _mesh_axes(first, 0) or _mesh_axes(second, 0)
    batch = _mesh_axes(first, 1) or (_mesh_axes(second, 1) if reduces else ())
    return _Split(group, tuple(axis for axis in batch if axis not in group))


def _spec(rank, group, batch):
    entries = [group or None, batch or None] + [None] * (rank - 2)
    return PartitionSpec(*entries[:rank])


def _sharding(mesh, rank, group, batch):
    return NamedSharding(mesh, _spec(rank, group, batch))


def result_type_sharding(first, second, result_rank, reduces):
    """The result's sharding in its type, for meshes whose axes are explicit
    (``jax.sharding.AxisType.Explicit``, where shardings are part of the types): the axes that
    the rules keep, taken from the operands' types. None where those name no axis (Auto axes,
    one device), which leaves the type as JAX makes it by default."""
    if getattr(first, "sharding", None) is None or getattr(second, "sharding", None) is None:
        return None
    split = _choose_split(first.sharding, second.sharding, reduces)
    batch = () if reduces else split.batch
    if not (split.group or batch):
        return None
    mesh = first.sharding.mesh if not first.sharding.mesh.empty else second.sharding.mesh
    return NamedSharding(mesh, _spec(result_rank, split.group, batch))


def _shardings(mesh, split, arg_shapes, result_shape, reduces):
    """The operands' and the result's shardings under ``split``: the dense operands keep both
    axes, w only ``G``, a weight-shaped result only ``G`` (its batch axis is summed away)."""
    first, second = arg_shapes
    args = (_sharding(mesh, len(first.shape), split.group, split.batch),
            _sharding(mesh, len(second.shape), split.group, split.batch if reduces else ()))
    result = _sharding(mesh, len(result_shape.shape), split.group, () if reduces else split.batch)
    return args, result


def _replicated(mesh, arg_shapes, result_shape):
    """Where the partitioner hands over shardings without a mesh (no NamedSharding anywhere in
    the program): run replicated, on a one-axis mesh over the same devices."""
    if mesh.empty:
        devices = sorted(arg_shapes[0].sharding.device_set, key=lambda device: device.id)
        mesh = Mesh(np.array(devices), ("replicated",))
    whole = _Split((), ())
    return (mesh, whole, *_shardings(mesh, whole, arg_shapes, result_shape, False))


def _plan(mesh, arg_shapes, result_shape, reduces):
    if not all(isinstance(shape.sharding, NamedSharding) for shape in arg_shapes):
        return _replicated(mesh, arg_shapes, result_shape)
    split = _choose_split(*(shape.sharding for shape in arg_shapes), reduces)
    return (mesh, split, *_shardings(mesh, split, arg_shapes, result_shape, reduces))


def _on_shard(twin, params, reduces, split):
    """The function each device runs on its part of the operands."""
    if not (reduces and split.batch):
        return lambda a, b: twin.bind(a, b, **params)
    out_dtype = params["out_dtype"]
    partial_params = {**params, "out_dtype": np.promote_types(out_dtype, np.float32)}

    def reduce_over_batch(a, b):
        # Off any context mesh (jax.set_mesh): under one with explicit axes, jax 0.12 lowers
        # the psum's scalar adder with sharding annotations that XLA rejects ("Unsupported
        # reduction computation").
        with jax.sharding.use_abstract_mesh(_NO_MESH):
            part = twin.bind(a, b, **partial_params)
            return jax.lax.psum(part, split.batch).astype(out_dtype)
    return reduce_over_batch


def _factor_rule(reduces):
    """Shardy's form of the same rules: ``g`` (G) and ``m`` (the batch axis) pass through, ``m``
    is a reduction for the weight-shaped products, every other axis must be replicated."""
    def rule(params, mesh, operand_types, result_types):
        del params, mesh
        first, second = (len(t.shape) for t in operand_types)
        (result,) = (len(t.shape) for t in result_types)
        names = {role: [f"{role}{i}" for i in range(rank)]
                 for role, rank in (("a", first), ("b", second), ("o", result))}
        a = ["g", "m", *names["a"][2:]]
        b = ["g", "m", *names["b"][2:]] if reduces else ["g", *names["b"][1:]]
        out = ["g", *names["o"][1:]] if reduces else ["g", "m", *names["o"][2:]]
        others = tuple(f for f in (*a, *b, *out) if f not in ("g", "m"))
        factors = {"need_replication_factors": others}
        if reduces:
            factors["reduction_factors"] = ("m",)
        return f"{' '.join(a)}, {' '.join(b)} -> {' '.join(out)}", factors
    return rule


def partitioned_lowering(primitive, twin, reduces):
    """The lowering rule of ``primitive``: its shard-local twin ``twin`` under the rules above;
    ``reduces``: the result is weight-shaped, a sum over the batch axis."""

    def whole(a, b, params):
        return twin.bind(a, b, **dict(params))

    lowered = custom_partitioning(whole, static_argnums=(2,))

    def partition(params, mesh, arg_shapes, result_shape):
        mesh, split, args, result = _plan(mesh, arg_shapes, result_shape, reduces)
        return mesh, _on_shard(twin, dict(params), reduces, split), result, args

    def infer_sharding_from_operands(params, mesh, arg_shapes, result_shape):
        return _plan(mesh, arg_shapes, result_shape, reduces)[3]

    lowered.def_partition(partition=partition,
                          infer_sharding_from_operands=infer_sharding_from_operands,
                          sharding_rule=_factor_rule(reduces))
    with_rules = _compat.lowering_from_function(
        lambda a, b, **params: lowered(a, b, tuple(sorted(params.items()))))
    without_rules = _compat.lowering_from_function(twin.bind)

    def rule(ctx, *operands, **params):
        if _compat.lowering_for_export(ctx):
            return without_rules(ctx, *operands, **params)
        return with_rules(ctx, *operands, **params)

    _compat.lower_with_devices(primitive)
    return rule
