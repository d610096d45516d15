"""The 2017 blocksparse README example, ported line by line to JAX.

    python examples/simple.py [--hidden-size 4096] [--block-size 32] [--minibatch-size 64]

Prints the result, checks it against the dense product, and times it against
dense ``jnp.dot`` on the current default device (CPU or GPU).
"""
import argparse

import numpy as np
import jax
import jax.numpy as jnp

from jax_blocksparse import BlocksparseMatMul
from jax_blocksparse.timing import median_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-size", type=int, default=4096)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--minibatch-size", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()

    hidden_size, block_size, minibatch_size = args.hidden_size, args.block_size, args.minibatch_size

    # Create a (random) sparsity pattern
    sparsity = np.random.randint(2, size=(hidden_size // block_size, hidden_size // block_size))

    # Initialize the sparse matrix multiplication object
    bsmm = BlocksparseMatMul(sparsity, block_size=block_size)

    # Initialize block-sparse weights
    w = bsmm.init_weights(jax.random.PRNGKey(0), dtype=args.dtype)

    # Block-sparse matrix multiplication, compiled
    y_fn = jax.jit(bsmm)

    # Run
    x = jnp.ones((minibatch_size, hidden_size), dtype=args.dtype)
    result = y_fn(x, w)
    print(result)

    dense_w = bsmm.layout.todense(w)
    dense_fn = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32).astype(x.dtype))
    expected = np.asarray(dense_fn(x, dense_w), np.float64)
    error = np.linalg.norm(np.asarray(result, np.float64) - expected) / np.linalg.norm(expected)
    tolerance = 1e-2 if args.dtype != "float32" else 3e-3
    print(f"relative error vs dense: {error:.2e} ({'OK' if error < tolerance else 'MISMATCH'})")

    device = jax.devices()[0]
    sparse_s = median_seconds(y_fn, x, w)
    dense_s = median_seconds(dense_fn, x, dense_w)
    print(f"device: {device.device_kind} ({device.platform})")
    print(f"layout: {bsmm.layout}")
    print(f"block-sparse: {sparse_s * 1e6:9.1f} us | dense jnp.dot: {dense_s * 1e6:9.1f} us | "
          f"speedup {dense_s / sparse_s:.2f}x")
    if error >= tolerance:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
