"""Prune a trained dense MLP to 1/8 block density, fine-tune it sparse, and compare.

    python examples/pruning.py
    python examples/pruning.py --hidden 4096 --block-size 32 --density 0.125   # GPU scale

The seed's question "prune, then run sparse": an MLP ``64 -> H -> H -> H -> 10`` is trained on
scikit-learn's bundled handwritten digits (no download; the example exits with a message when
scikit-learn is not importable). Its two ``H x H`` hidden layers are then pruned with
``jax_blocksparse.patterns.from_dense`` (block-magnitude pruning) to ``--density`` of their blocks
and fine-tuned as block-sparse layers (the input and output layers stay dense). Prints test
accuracy before pruning, right after, and after fine-tuning, the parameter counts, and the
inference time of the dense and the sparse model on ``--infer-batch`` rows.

Needs optax (any of the framework extras installs it).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import jax
import jax.numpy as jnp

try:
    from sklearn.datasets import load_digits
except ImportError:
    sys.exit("scikit-learn is not importable: this example uses its bundled digits data "
             "(pip install scikit-learn). Skipping.")
try:
    import optax
except ImportError:
    sys.exit("this example needs optax: pip install optax")

import jax_blocksparse as jbs
from jax_blocksparse.timing import median_seconds
from jax_blocksparse import patterns


def init_mlp(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def forward(params, x, layouts):
    """``layouts[i]`` is None for a dense layer, else the Layout of block-sparse layer ``i``."""
    for i, (p, layout) in enumerate(zip(params, layouts)):
        x = (x @ p["w"] if layout is None else jbs.matmul(x, p["w"], layout)) + p["b"]
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return x


def train(params, layouts, data, steps, lr, batch, seed, name):
    x_train, y_train = data
    opt = optax.adam(lr)
    state = opt.init(params)

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(forward(p, x, layouts), y).mean()

    @jax.jit
    def step(p, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, state = opt.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    rng = np.random.default_rng(seed)
    for i in range(1, steps + 1):
        idx = rng.integers(0, len(x_train), batch)
        params, state, loss = step(params, state, x_train[idx], y_train[idx])
        if i % 10 == 0 or i == steps:
            bar = "#" * int(30 * i / steps)
            print(f"\r{name:<10} [{bar:<30}] {i}/{steps} loss {float(loss):.4f}", end="", flush=True)
    print()
    return params


def accuracy(params, layouts, x, y):
    return float(np.mean(np.asarray(jnp.argmax(forward(params, x, layouts), -1)) == y))


def count(params, layouts):
    return sum(int(np.prod(p["w"].shape)) + p["b"].size for p in params)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--density", type=float, default=1 / 8)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--infer-batch", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(args.seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = len(x) // 5
    x_test, y_test, x_train, y_train = x[:n_test], y[:n_test], x[n_test:], y[n_test:]
    device = jax.devices()[0]
    print(f"digits: {len(x_train)} train / {len(x_test)} test; device {device.device_kind} ({device.platform})")

    H = args.hidden
    sizes = [64, H, H, H, 10]
    dense_layouts = [None] * 4
    params = init_mlp(jax.random.key(args.seed), sizes)
    params = train(params, dense_layouts, (x_train, y_train), args.steps, args.lr, args.batch,
                   args.seed, "dense")
    acc_dense = accuracy(params, dense_layouts, x_test, y_test)

    # Prune the two hidden H x H layers by block magnitude.
    sparse_params, sparse_layouts = [], []
    for i, p in enumerate(params):
        if i in (1, 2):
            layout, w = patterns.from_dense(np.asarray(p["w"]), args.block_size, density=args.density)
            sparse_params.append({"w": w, "b": p["b"]})
            sparse_layouts.append(layout)
        else:
            sparse_params.append(p)
            sparse_layouts.append(None)
    acc_pruned = accuracy(sparse_params, sparse_layouts, x_test, y_test)
    sparse_params = train(sparse_params, sparse_layouts, (x_train, y_train), args.finetune_steps,
                          args.lr, args.batch, args.seed + 1, "fine-tune")
    acc_finetuned = accuracy(sparse_params, sparse_layouts, x_test, y_test)

    xb = jnp.asarray(np.resize(x_test, (args.infer_batch, 64)))
    t_dense = median_seconds(jax.jit(lambda p, x: forward(p, x, dense_layouts)), params, xb)
    t_sparse = median_seconds(jax.jit(lambda p, x: forward(p, x, sparse_layouts)), sparse_params, xb)
    hidden_layout = sparse_layouts[1]
    print(f"\npruned layers: {H}x{H}, block size {args.block_size}, kept {hidden_layout.nnz} of "
          f"{hidden_layout.mask.size} blocks (density {hidden_layout.density:.3f})")
    print(f"parameters: dense {count(params, dense_layouts):,}, sparse {count(sparse_params, sparse_layouts):,}")
    print(f"test accuracy: dense {acc_dense:.4f} | pruned, before fine-tuning {acc_pruned:.4f} | "
          f"after sparse fine-tuning {acc_finetuned:.4f}")
    print(f"inference on {args.infer_batch} rows ({device.platform}): dense {t_dense * 1e3:.2f} ms, "
          f"sparse {t_sparse * 1e3:.2f} ms, speedup {t_dense / t_sparse:.2f}x")


if __name__ == "__main__":
    main()
