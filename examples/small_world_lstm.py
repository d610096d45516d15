"""Dense LSTM vs a small-world block-sparse LSTM several times wider, at about equal parameters.

    python examples/small_world_lstm.py                        # CPU-sized default, a few minutes
    python examples/small_world_lstm.py --data enwik8 --hidden 1024 --width-factor 3 \\
        --block-size 32 --steps 5000 --batch 64 --seq-len 200  # GPU scale

The seed's central experiment at small scale: two character-level language models are trained
with the same optimizer, data and step count:

* dense: embedding -> LSTM of width ``--hidden`` -> softmax;
* sparse: the same, but the LSTM is ``--width-factor`` times wider and its recurrent weights are a
  Watts-Strogatz (``--pattern ws``) or Barabasi-Albert (``--pattern ba``) block layout, with the
  graph degree chosen so the whole model has about the dense model's parameter count.

Both cells share the gate math and initialization (``jax_blocksparse.nn``); the dense one uses
``jnp.dot``, the sparse one is ``jax_blocksparse.nn.flax.SparseLSTMCell``. The input projection is
dense in both. Results: bits per character on a held-out split (the last 10% of the text),
parameter count, hidden width, median training-step time, and a PNG of the learning curves
(``--plot``, when matplotlib is importable).

Default data (no download): the source of the Python standard library's top-level modules
(``<stdlib>/*.py``, sorted by name, concatenated as bytes and cut at ``--max-bytes``). Its exact
content depends on the Python version. ``--data PATH`` reads any file instead (enwik8, text8, ...).

Needs flax and optax (``pip install jax_blocksparse[flax]``).
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import sys
import sysconfig
import time

import numpy as np
import jax
import jax.numpy as jnp

try:
    import optax
    from flax import nnx
except ImportError:
    sys.exit("this example needs flax and optax: pip install 'jax_blocksparse[flax]'")

import jax_blocksparse as jbs
from jax_blocksparse import nn as jbs_nn, patterns
from jax_blocksparse.nn.flax import SparseLSTMCell


# -- data ------------------------------------------------------------------------------------
def stdlib_text(max_bytes: int) -> tuple[bytes, str]:
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")))
    chunks, total = [], 0
    for path in files:
        with open(path, "rb") as f:
            chunks.append(f.read())
        total += len(chunks[-1])
        if total >= max_bytes:
            break
    return b"".join(chunks)[:max_bytes], f"{len(chunks)} stdlib modules from {stdlib}"


def load(args):
    if args.data:
        with open(args.data, "rb") as f:
            data = f.read(args.max_bytes)
        source = args.data
    else:
        data, source = stdlib_text(args.max_bytes)
    raw = np.frombuffer(data, np.uint8)
    vocab, tokens = np.unique(raw, return_inverse=True)
    split = int(len(tokens) * 0.9)
    return tokens[:split].astype(np.int32), tokens[split:].astype(np.int32), len(vocab), source


def batches(tokens, batch, seq_len, rng):
    """Random windows of ``seq_len + 1`` tokens: inputs and next-character targets."""
    while True:
        starts = rng.integers(0, len(tokens) - seq_len - 1, size=batch)
        windows = tokens[starts[:, None] + np.arange(seq_len + 1)]
        yield windows[:, :-1], windows[:, 1:]


# -- models ----------------------------------------------------------------------------------
class DenseLSTMCell(nnx.Module):
    """The dense baseline: the same gate math, initialization and forget bias as the sparse cell,
    with ``jnp.dot`` products."""

    def __init__(self, in_features, hidden, *, rngs):
        self.hidden_features = hidden
        fan_in = in_features + hidden
        k1, k2 = jax.random.split(rngs.params())
        self.input_kernel = nnx.Param(jbs_nn.dense_normal(k1, (in_features, 4 * hidden), fan_in=fan_in))
        self.recurrent_kernel = nnx.Param(jbs_nn.dense_normal(k2, (hidden, 4 * hidden), fan_in=fan_in))
        self.bias = nnx.Param(jbs_nn.lstm_init_bias(hidden))

    def __call__(self, carry, x):
        c, h = carry
        z = x @ self.input_kernel[...] + h @ self.recurrent_kernel[...] + self.bias[...]
        c, h = jbs_nn.lstm_gates(z, c)
        return (c, h), h


class CharLM(nnx.Module):
    def __init__(self, vocab, embed, cell, *, rngs):
        self.embed = nnx.Embed(vocab, embed, rngs=rngs)
        self.cell = cell
        self.out = nnx.Linear(cell.hidden_features, vocab, rngs=rngs)

    def __call__(self, tokens):
        x = jnp.swapaxes(self.embed(tokens), 0, 1)  # (T, B, E)
        zeros = jnp.zeros((tokens.shape[0], self.cell.hidden_features), x.dtype)

        def step(carry, x_t):
            return self.cell(carry, x_t)

        _, hs = jax.lax.scan(step, (zeros, zeros), x)
        return self.out(jnp.swapaxes(hs, 0, 1))


def count(state):
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(state))


def sparse_mask(args, n_blocks, degree):
    if args.pattern == "ws":
        return patterns.watts_strogatz(n_blocks, degree, args.rewire, seed=args.seed)
    return patterns.barabasi_albert(n_blocks, degree, seed=args.seed)


def build(args, vocab, kind, target_params=None):
    rngs = nnx.Rngs(args.seed)
    if kind == "dense":
        cell = DenseLSTMCell(args.embed, args.hidden, rngs=rngs)
        return CharLM(vocab, args.embed, cell, rngs=rngs), None
    width = args.hidden * args.width_factor
    n_blocks = width // args.block_size
    # Everything but the recurrent blocks: embedding, dense input projection, bias, readout.
    fixed = vocab * args.embed + args.embed * 4 * width + 4 * width + width * vocab + vocab
    # Pick the graph degree whose total parameter count is closest to the dense model's.
    best = None
    degrees = range(2, n_blocks, 2) if args.pattern == "ws" else range(1, n_blocks)
    for degree in degrees:
        mask = sparse_mask(args, n_blocks, degree)
        total = fixed + 4 * int(mask.sum()) * args.block_size ** 2
        if best is None or abs(total - target_params) < abs(best[0] - target_params):
            best = (total, mask)
        if total > target_params:
            break
    layout = jbs.Layout(best[1], args.block_size)
    cell = SparseLSTMCell(args.embed, layout, rngs=rngs)
    return CharLM(vocab, args.embed, cell, rngs=rngs), layout


# -- training ------------------------------------------------------------------------------------
def train(name, model, args, train_tokens, val_tokens):
    graphdef, params = nnx.split(model, nnx.Param)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))
    opt_state = opt.init(params)

    def loss_fn(params, x, y):
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y).mean()

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    eval_loss = jax.jit(loss_fn)
    val_rng = np.random.default_rng(1234)  # the same held-out windows for every model
    val_batches = [next(batches(val_tokens, args.batch, args.seq_len, val_rng))
                   for _ in range(args.eval_batches)]

    def bits_per_char(params):
        return float(np.mean([eval_loss(params, x, y) for x, y in val_batches])) / math.log(2)

    data = batches(train_tokens, args.batch, args.seq_len, np.random.default_rng(args.seed))
    curve = {"step": [], "train_bpc": [], "val_step": [], "val_bpc": []}
    times, recent = [], []
    for step in range(1, args.steps + 1):
        x, y = next(data)
        start = time.perf_counter()
        params, opt_state, loss = train_step(params, opt_state, x, y)
        loss = float(loss)  # waits for the step
        if step > 1:
            times.append(time.perf_counter() - start)
        recent.append(loss / math.log(2))
        if step % args.log_every == 0 or step == args.steps:
            curve["step"].append(step)
            curve["train_bpc"].append(float(np.mean(recent)))
            recent = []
        if step % args.eval_every == 0 or step == args.steps:
            curve["val_step"].append(step)
            curve["val_bpc"].append(bits_per_char(params))
        done = int(30 * step / args.steps)
        val = f" val {curve['val_bpc'][-1]:.3f}" if curve["val_bpc"] else ""
        print(f"\r{name:>6} [{'#' * done}{'.' * (30 - done)}] {step}/{args.steps} "
              f"train {curve['train_bpc'][-1] if curve['train_bpc'] else recent[-1]:.3f} bpc{val}",
              end="", flush=True)
    print()
    return {"val_bpc": curve["val_bpc"][-1], "step_ms": 1e3 * float(np.median(times)), "curve": curve}


def plot(results, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not importable: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (label, r), color in zip(results.items(), ("tab:blue", "tab:red")):
        c = r["curve"]
        ax.plot(c["step"], c["train_bpc"], color=color, alpha=0.35, label=f"{label} train")
        ax.plot(c["val_step"], c["val_bpc"], "o-", color=color, label=f"{label} held-out")
    ax.set_xlabel("training step")
    ax.set_ylabel("bits per character")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a text file (default: the stdlib's source)")
    parser.add_argument("--max-bytes", type=int, default=4_000_000)
    parser.add_argument("--hidden", type=int, default=256, help="dense LSTM width")
    parser.add_argument("--width-factor", type=int, default=3, help="sparse width / dense width")
    parser.add_argument("--block-size", type=int, default=8)
    parser.add_argument("--pattern", choices=["ws", "ba"], default="ws")
    parser.add_argument("--rewire", type=float, default=0.2, help="Watts-Strogatz rewiring probability")
    parser.add_argument("--embed", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="small_world_lstm.png")
    args = parser.parse_args()

    train_tokens, val_tokens, vocab, source = load(args)
    device = jax.devices()[0]
    print(f"data: {source}: {len(train_tokens):,} train / {len(val_tokens):,} held-out bytes, "
          f"vocab {vocab}")
    print(f"device: {device.device_kind} ({device.platform})")

    dense, _ = build(args, vocab, "dense")
    dense_params = count(nnx.state(dense, nnx.Param))
    sparse, layout = build(args, vocab, "sparse", target_params=dense_params)
    sparse_params = count(nnx.state(sparse, nnx.Param))
    path_length = patterns.average_path_length(layout.mask)
    if abs(sparse_params - dense_params) > 0.1 * dense_params:
        print("warning: no layout within 10% of the dense parameter count; the embedding, input "
              "projection and readout of the wide model alone cost a lot: lower --width-factor "
              "or --embed, or raise --hidden")
    print(f"dense : width {args.hidden}, {dense_params:,} params")
    print(f"sparse: width {layout.shape[0]}, {sparse_params:,} params, recurrent layout "
          f"{args.pattern} {layout.grid_shape[0]}x{layout.grid_shape[1]} blocks of {args.block_size}, "
          f"density {layout.density:.3f}, block-graph path length {path_length:.2f}")

    results = {}
    for name, model, width, n_params in (("dense", dense, args.hidden, dense_params),
                                         ("sparse", sparse, layout.shape[0], sparse_params)):
        results[name] = train(name, model, args, train_tokens, val_tokens)
        results[name].update(width=width, params=n_params)

    print(f"\n{'model':<8}{'width':>7}{'params':>11}{'held-out bpc':>14}{'step ms':>10}")
    for name, r in results.items():
        print(f"{name:<8}{r['width']:>7}{r['params']:>11,}{r['val_bpc']:>14.3f}{r['step_ms']:>10.1f}")
    winner = min(results, key=lambda k: results[k]["val_bpc"])
    gap = abs(results["dense"]["val_bpc"] - results["sparse"]["val_bpc"])
    print(f"lower held-out bits/char: {winner} (by {gap:.3f}) after {args.steps} steps on "
          f"{device.platform}")
    if args.plot:
        title = (f"char LM on {os.path.basename(source) if args.data else 'stdlib source'}, "
                 f"{device.platform}: dense w={args.hidden} ({dense_params:,} p) vs "
                 f"{args.pattern} sparse w={layout.shape[0]} ({sparse_params:,} p)")
        plot(results, args.plot, title)


if __name__ == "__main__":
    main()
