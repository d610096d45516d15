"""Where a benchmarked product's time goes beyond its kernel: per-product cost of dependent
chains of 1, 16 and 64 products in one jit, ours and dense, at seed bf16 (M = 32) d = 1/4 and
1/16. The slope between 16 and 64 is the marginal cost of one product on the device (kernel plus
the gap before the next); the rest of a 16-chain's time is the per-call dispatch and sync that
bench.py spreads over 16 products. Nsight Compute put the d = 1/4 kernel alone at 27.2 us and
the d = 1/16 one at 11.9 us (NOTES, v5 profile), against 39-51 and 17-20 us per product in
bench.py. Each setting of XLA_FLAGS runs in a process of its own (flags are read at start-up):
the defaults, and command buffers (CUDA graphs) off.

Two more layouts, ours only, give the floor under the sparse cells: d = 1/64, and one block per
block-column (a diagonal: 0.75 MB of w, under a microsecond of bandwidth), whose marginal time
is what one product costs whatever its bytes (launch, table reads, pipeline fill, epilogue).
The d = 1/16 and 1/64 targets (12x and 25x: 6.4 and 3.1 us) are measured against that floor.
Last, the same marginal figure for a 32 x 32 x 32 dense dot: XLA's own cost of one dependent
product, under which no kernel of ours can go.

    python benchmarks/overhead_case.py            # from the repo root, after pip install
"""
import os
import subprocess
import sys

SETTINGS = {"default XLA flags": "", "command buffers off": "--xla_gpu_enable_command_buffer="}


def measure():
    import numpy as np
    import jax
    import jax.numpy as jnp

    import jax_blocksparse as jbs
    from jax_blocksparse.timing import chained, marginal_seconds, median_seconds
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench import random_mask

    size = int(os.environ.get("JBS_OVERHEAD_SIZE", 12288))  # smaller for a CPU smoke run
    rng = np.random.default_rng(1)
    blocks = size // 32
    for label, mask in [("1/4", random_mask(blocks, 1 / 4)), ("1/16", random_mask(blocks, 1 / 16)),
                        ("1/64", random_mask(blocks, 1 / 64)),
                        ("diagonal", np.eye(blocks, dtype=bool))]:
        layout = jbs.Layout(mask, 32)
        density = layout.density
        w = jnp.asarray(rng.standard_normal(layout.w_shape) / np.sqrt(density * size), jnp.bfloat16)
        x = jnp.asarray(rng.standard_normal((32, size)), jnp.bfloat16)
        products = [("ours", lambda y, w: jbs.matmul(y, w, layout), w)]
        if label in ("1/4", "1/16"):
            products.append(("dense", lambda y, w: jnp.dot(y, w), layout.todense(w)))
        for name, product, weight in products:
            per_call = {steps: median_seconds(chained(product, steps), x, weight, repeats=30) * 1e6
                        for steps in (1, 16, 64)}
            marginal = (per_call[64] - per_call[16]) / 48
            fixed = per_call[16] - 16 * marginal
            # bench.py's figure: the chains timed in alternation (timing.marginal_seconds)
            paired = marginal_seconds(lambda n: chained(product, n), x, weight, steps=16)[0] * 1e6
            print(f"  d={label:<8s} {name:5s} per product: chain 1 {per_call[1]:7.1f} us, "
                  f"chain 16 {per_call[16] / 16:6.1f} us, chain 64 {per_call[64] / 64:6.1f} us; "
                  f"marginal {marginal:6.1f} us (paired {paired:6.1f}), per-call fixed {fixed:6.1f} us",
                  flush=True)
    # XLA's own floor for one dependent product: a 32 x 32 x 32 dot, whatever kernel XLA picks
    # for it. The diagonal layout's figure minus this one is what our kernel adds to a launch.
    tiny = jnp.asarray(rng.standard_normal((32, 32)) / np.sqrt(32), jnp.bfloat16)
    paired = marginal_seconds(lambda n: chained(lambda y, w: jnp.dot(y, w), n), tiny, tiny,
                              steps=16)[0] * 1e6
    print(f"  32x32x32 dense dot, marginal (paired) per product: {paired:6.1f} us", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        measure()
    else:
        for label, flags in SETTINGS.items():
            print(f"{label} (XLA_FLAGS={flags!r}):", flush=True)
            env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
            subprocess.run([sys.executable, os.path.abspath(__file__), "--measure"], env=env,
                           check=False)
