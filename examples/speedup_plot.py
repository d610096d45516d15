"""Speedup of ``jbs.matmul`` over dense ``jnp.dot`` versus sparsity, on the current device.

    python examples/speedup_plot.py                 # GPU: the seed's figure; CPU: reduced size
    python examples/speedup_plot.py --hidden 4096 --out speedup.png

Redraws the seed's figure: ``x @ W`` with a ``(hidden, hidden)`` weight of block size 32, for a
minibatch of 32 in bfloat16 and float32, plus one wide-batch float32 curve. Random block layouts
(``jax_blocksparse.patterns.random``) at each sparsity; the dense baseline multiplies the same
matrix with its zeros stored. On GPU the default is hidden 12288; on CPU it is hidden 2048 (and
the plot is labelled CPU). Each time is the median over ``--repeats`` calls, after a warm-up, of
one jitted chain of CHAIN dependent products, divided by CHAIN: as in ``benchmarks/bench.py``,
this keeps the per-call dispatch (tens of microseconds) out of products that take a few.
"""
from __future__ import annotations

import argparse

import numpy as np
import jax
import jax.numpy as jnp

import jax_blocksparse as jbs
from jax_blocksparse.timing import chained, median_seconds
from jax_blocksparse import patterns

CHAIN = 8


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, help="default: 12288 on GPU, 2048 on CPU")
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--minibatch", type=int, default=32)
    parser.add_argument("--wide-batch", type=int, help="default: 8192 on GPU, 512 on CPU")
    parser.add_argument("--sparsity", type=float, nargs="+",
                        default=[0.5, 0.75, 0.875, 0.9375, 0.96875, 0.984375])
    parser.add_argument("--repeats", type=int, help="default: 50 on GPU, 10 on CPU")
    parser.add_argument("--out", help="PNG path (default: speedup_<platform>.png)")
    args = parser.parse_args()

    device = jax.devices()[0]
    on_cpu = device.platform == "cpu"
    hidden = args.hidden or (2048 if on_cpu else 12288)
    wide = args.wide_batch or (512 if on_cpu else 8192)
    repeats = args.repeats or (10 if on_cpu else 50)
    label = f"{device.device_kind} ({device.platform})"
    curves = [(f"minibatch {args.minibatch}, bfloat16", args.minibatch, jnp.bfloat16),
              (f"minibatch {args.minibatch}, float32", args.minibatch, jnp.float32),
              (f"minibatch {wide}, float32", wide, jnp.float32)]
    n_blocks = hidden // args.block_size
    print(f"device: {label}; hidden {hidden}, block size {args.block_size}")

    rng = np.random.default_rng(0)
    results = {name: [] for name, _, _ in curves}
    total, done = len(curves) * len(args.sparsity), 0
    for name, batch, dtype in curves:
        x = jnp.asarray(rng.standard_normal((batch, hidden)), dtype)
        dense_fn = chained(jnp.dot, CHAIN)
        t_dense = None
        for sparsity in args.sparsity:
            layout = jbs.Layout(patterns.random(n_blocks, n_blocks, 1.0 - sparsity, seed=1), args.block_size)
            w = jnp.asarray(rng.standard_normal(layout.w_shape) * 0.02, dtype)
            W = layout.todense(w)
            sparse_fn = chained(lambda y, w, layout=layout: jbs.matmul(y, w, layout), CHAIN)
            if t_dense is None:  # the dense product's time does not depend on the zeros
                t_dense = median_seconds(dense_fn, x, W, repeats=repeats) / CHAIN
            t_sparse = median_seconds(sparse_fn, x, w, repeats=repeats) / CHAIN
            results[name].append((sparsity, t_dense, t_sparse))
            done += 1
            bar = "#" * int(30 * done / total)
            print(f"\r[{bar:<30}] {done}/{total} {name}, sparsity {sparsity:.4f}: "
                  f"speedup {t_dense / t_sparse:.2f}x     ", end="", flush=True)
            del W, w
    print()

    print(f"\n{'curve':<28}{'sparsity':>10}{'dense us':>11}{'sparse us':>11}{'speedup':>9}")
    for name, rows in results.items():
        for sparsity, t_dense, t_sparse in rows:
            print(f"{name:<28}{sparsity:>10.4f}{t_dense * 1e6:>11.1f}{t_sparse * 1e6:>11.1f}"
                  f"{t_dense / t_sparse:>9.2f}")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not importable: no plot")
        return
    out = args.out or f"speedup_{device.platform}.png"
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, rows in results.items():
        s = np.array([r[0] for r in rows])
        ax.plot(1.0 / (1.0 - s), [r[1] / r[2] for r in rows], "o-", label=name)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ticks = [1.0 / (1.0 - s) for s in args.sparsity]
    ax.set_xticks(ticks, [f"{s:.3g}" for s in args.sparsity])
    ax.set_xlabel("sparsity (fraction of zero blocks)")
    ax.set_ylabel("speedup over dense jnp.dot")
    ax.set_title(f"jbs.matmul vs dense, hidden {hidden}, block {args.block_size}: {label}"
                 + (" [CPU, reduced size]" if on_cpu else ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
