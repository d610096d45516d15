"""Data-parallel training of a block-sparse MLP: the batch split over every device, the weights
replicated, one jit-compiled step.

    python examples/data_parallel.py [--devices 4] [--hidden 2048] [--block-size 32] [--steps 50]

On a machine with one device (a CPU, one GPU), ``--devices N`` asks XLA for N host devices, so
the example runs anywhere. It prints the mesh, the collectives in the compiled step (the batch is
never gathered; the weight gradients are summed with all-reduces), the loss as it trains, the
largest difference from the same step on one device, and the step time on the mesh and on one
device.
"""
import argparse
import os
import sys


def parse():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=4,
                        help="host devices to ask XLA for, where JAX would otherwise see one")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--density", type=float, default=1 / 8)
    parser.add_argument("--batch", type=int, default=256, help="global batch, split over devices")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--learning-rate", type=float, default=0.02)
    return parser.parse_args()


ARGS = parse()
# Before JAX starts: it reads XLA_FLAGS once (the flag only adds host devices; GPUs are unaffected).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={ARGS.devices}")

import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

import jax_blocksparse as jbs  # noqa: E402
from jax_blocksparse.timing import median_seconds  # noqa: E402


def init(key, layouts, features):
    keys = jax.random.split(key, len(layouts) + 1)
    params = [{"w": jax.random.normal(k, layout.w_shape) / np.sqrt(layout.shape[0] * layout.density),
               "b": jnp.zeros(layout.shape[1])} for k, layout in zip(keys, layouts)]
    readout = jax.random.normal(keys[-1], (features, 1)) / np.sqrt(features)
    return {"layers": params, "readout": readout}


def forward(params, layouts, x):
    for layer, layout in zip(params["layers"], layouts):
        x = jax.nn.gelu(jbs.matmul(x, layer["w"], layout) + layer["b"])
    return x @ params["readout"]


def main():
    devices = jax.devices()
    if len(devices) < 2:
        devices = jax.devices("cpu")
    mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)
    batch = ARGS.batch - ARGS.batch % len(devices)
    grid = ARGS.hidden // ARGS.block_size
    layouts = [jbs.Layout(jbs.patterns.random(grid, grid, ARGS.density, seed=seed),
                          block_size=ARGS.block_size) for seed in (1, 2)]

    key_params, key_teacher, key_data = jax.random.split(jax.random.PRNGKey(0), 3)
    params = init(key_params, layouts, ARGS.hidden)
    teacher = init(key_teacher, layouts, ARGS.hidden)

    def loss(params, x):
        target = forward(teacher, layouts, x)
        return jnp.mean((forward(params, layouts, x) - target) ** 2)

    def step(params, x):
        value, grads = jax.value_and_grad(loss)(params, x)
        return jax.tree.map(lambda p, g: p - ARGS.learning_rate * g, params, grads), value

    rows = NamedSharding(mesh, P("data", None))
    replicated = NamedSharding(mesh, P())
    train_step = jax.jit(step, in_shardings=(replicated, rows), out_shardings=(replicated, None))
    params = jax.device_put(params, replicated)
    x = jax.device_put(jax.random.normal(key_data, (batch, ARGS.hidden)), rows)

    text = train_step.lower(params, x).compile().as_text()
    print(f"mesh: {len(devices)} x {devices[0].device_kind} ({devices[0].platform}), "
          f"batch {batch} split {batch // len(devices)} per device; layouts {layouts[0]}")
    print(f"compiled step: {text.count('all-gather(')} all-gathers, "
          f"{text.count('all-reduce(')} all-reduces")

    # The same step on one device, from the same parameters: the mesh must not change the math.
    one = devices[0]
    single_step = jax.jit(step)
    on_mesh, _ = train_step(params, x)
    alone, _ = single_step(jax.device_put(params, one), jax.device_put(x, one))
    difference = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))
                     for a, b in zip(jax.tree.leaves(on_mesh), jax.tree.leaves(alone)))
    print(f"largest relative difference from one device after a step: {difference:.1e}")

    for i in range(ARGS.steps):
        params, value = train_step(params, x)
        if i % max(1, ARGS.steps // 5) == 0 or i == ARGS.steps - 1:
            print(f"step {i:4d}  loss {float(value):.5f}")

    mesh_s = median_seconds(train_step, params, x)
    one_s = median_seconds(single_step, jax.device_put(params, one), jax.device_put(x, one))
    print(f"step time: {mesh_s * 1e3:.2f} ms on {len(devices)} devices, {one_s * 1e3:.2f} ms on one")
    if text.count("all-gather(") or difference > 1e-4:
        sys.exit(1)


if __name__ == "__main__":
    main()
