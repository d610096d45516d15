"""Kernel-only view of the seed configuration, for ncu and for XLA's command buffers.

    ncu --kernel-name regex:Tc --metrics gpu__time_duration.sum python3 benchmarks/profile_kernels.py
    python3 benchmarks/profile_kernels.py --graph-report

Runs each product once per density after a warm-up, so a profiler sees one launch per
(op, density); with --graph-report it prints whether XLA captured the chain of products in
a command buffer (CUDA graph), the thing that hides per-launch host overhead.
"""
import argparse

import numpy as np
import jax
import jax.numpy as jnp

import jax_blocksparse as jbs
from bench import STEPS, chain_square, random_mask


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--graph-report", action="store_true")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--densities", type=float, nargs="*", default=[1 / 4, 1 / 16, 1 / 64])
    args = parser.parse_args()
    dtype = jnp.dtype(args.dtype)
    precision = "highest" if dtype == jnp.float32 else "default"
    rng = np.random.default_rng(0)
    for density in args.densities:
        layout = jbs.Layout(random_mask(12288 // 32, density), 32)
        w = jnp.asarray(rng.standard_normal(layout.w_shape) * 0.05, dtype)
        x = jnp.asarray(rng.standard_normal((32, 12288)), dtype)
        ops = {
            "matmul": jax.jit(lambda x, w: jbs.matmul(x, w, layout, precision=precision)),
            "matmul_t": jax.jit(lambda x, w: jbs.matmul_t(x, w, layout, precision=precision)),
            "sampled": jax.jit(lambda x, w: jbs.sampled_matmul(x, x, layout, precision=precision)),
        }
        for name, fn in ops.items():
            fn(x, w).block_until_ready()  # compile and warm
            fn(x, w).block_until_ready()  # the launch a profiler should read
        if args.graph_report:
            chain = chain_square(lambda y, w: jbs.matmul(y, w, layout, precision=precision))
            text = chain.lower(x, w).compile().as_text()
            print(f"d={density:.4g}: {STEPS}-product chain, command buffer in optimized HLO: "
                  f"{'command_buffer' in text}", flush=True)


if __name__ == "__main__":
    main()
