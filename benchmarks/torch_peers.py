"""The peers' per-product times (torch's Triton BSR and cuSPARSE CSR), in a process of their own.

    python benchmarks/torch_peers.py MASK.npy BS M DTYPE STEPS

prints one JSON line, {peer name: microseconds per product}, after any failure lines.

Why a process: torch captures each chain in a CUDA graph in global capture mode, and a CUDA call
from any other thread of the process during the capture (JAX's runtime keeps such threads)
invalidates it and leaves both libraries' streams in an error state. Session 6 made JAX idle
before each capture; on the H100 in session 11 a capture still failed (Barabasi-Albert, d =
1/64) and took the rest of the benchmark with it. A process shares no CUDA context with JAX.

The timings need the layout, not bench.py's weights: the blocks get fresh random values.
"""
import json
import sys

import numpy as np


def peer_times(mask, bs, m, dtype_name, steps):
    try:
        import torch
        from torch.sparse._triton_ops import bsr_dense_mm
        from triton.testing import do_bench_cudagraph
    except Exception:
        return {}
    if not torch.cuda.is_available():
        return {}
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype_name]
    # Column form as in the peers' baseline: yT <- W.T @ yT, W (C, N) with the layout's blocks.
    block_mask = torch.from_numpy(np.ascontiguousarray(mask.T)).to("cuda")
    dense_mask = block_mask.repeat_interleave(bs, 0).repeat_interleave(bs, 1)
    a = (torch.randn(dense_mask.shape, device="cuda") * dense_mask / np.sqrt(max(1.0, mask.mean() * mask.shape[0] * bs))).to(dt)
    y0 = torch.randn(a.shape[1], m, device="cuda", dtype=dt)
    variants = {}
    try:
        a_bsr = a.to_sparse_bsr((bs, bs))
        variants["torch_bsr_triton"] = lambda y: bsr_dense_mm(a_bsr, y)
    except Exception as err:
        print("  torch BSR unavailable:", err)
    if mask.mean() <= 0.25 and dtype_name != "float16":
        try:
            a_csr = a.to_sparse_csr()
            variants["torch_csr_cusparse"] = lambda y: a_csr @ y
        except Exception as err:
            print("  torch CSR unavailable:", err)
    out = {}
    for name, op in variants.items():
        def chain(op=op):
            y = y0
            for _ in range(steps):
                y = op(y)
            return y
        try:
            # Compile (Triton) outside the graph capture: a first call inside it invalidates it.
            chain()
            torch.cuda.synchronize()
            out[name] = do_bench_cudagraph(chain, rep=100, return_mode="median") / steps * 1e3
        except Exception as err:
            print(f"  {name} failed: {type(err).__name__}: {str(err)[:120]}")
    return out


if __name__ == "__main__":
    mask_path, bs, m, dtype_name, steps = sys.argv[1:6]
    times = peer_times(np.load(mask_path), int(bs), int(m), dtype_name, int(steps))
    print(json.dumps(times), flush=True)
