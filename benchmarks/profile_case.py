"""One launch of each kernel the issues' benchmarks time, for Nsight Compute
(``benchmarks/gpu_run.sh profile``):
- seed bf16 (M = 32): matmul at d = 1/4, 1/16 and 1/64; matmul_t at 1/64 (where torch's Triton
  kernel was faster than matmul on the H200); sampled_matmul at 1/4;
- seed float32 at 1/4 and 1/16: matmul and matmul_t at HIGHEST, matmul at DEFAULT (TF32);
- seed64 bf16 matmul at 1/4 and 1/64; wide bf16 matmul at 1/4;
- small (M = 2048, d = 1/8) bs 16 and bs 8: matmul and sampled_matmul;
- the issue's convolution, forward and filter gradient.
Every product is compiled before anything runs, so that each kernel launches once.
JBS_PROFILE_CASES (substrings of the case names, comma-separated) keeps only some.
"""
import os
import sys

# Without this, XLA takes most of the card up front and Nsight Compute saves and restores all of
# it around every replay pass: 300 s were not enough for 6 kernels (session 4), 22 s are now.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np
import jax
import jax.numpy as jnp

import jax_blocksparse as jbs
from bench import random_mask

rng = np.random.default_rng(0)
bf16 = jnp.bfloat16


def normal(shape):
    return jnp.asarray(rng.standard_normal(shape), bf16)


cases = []
for name, m, size, density in [("seed 1/4", 32, 12288, 1 / 4), ("seed 1/16", 32, 12288, 1 / 16),
                               ("seed 1/64", 32, 12288, 1 / 64), ("wide 1/4", 8192, 4096, 1 / 4)]:
    layout = jbs.Layout(random_mask(size // 32, density), 32)
    x, w = normal((m, size)), normal(layout.w_shape)
    cases.append((f"{name} matmul", jax.jit(lambda x, w, l=layout: jbs.matmul(x, w, l)), (x, w)))
    if name == "seed 1/64":
        cases.append((f"{name} matmul_t", jax.jit(lambda x, w, l=layout: jbs.matmul_t(x, w, l)),
                      (x, w)))
    if name == "seed 1/4":
        cases.append((f"{name} sampled_matmul",
                      jax.jit(lambda x, l=layout: jbs.sampled_matmul(x, x, l)), (x,)))
    if name in ("seed 1/4", "seed 1/16"):
        # float32: HIGHEST (3xTF32) for both products, and matmul at DEFAULT (one TF32 product
        # per k-step): where matmul runs 12% behind matmul_t at 1/16 on both cards, and how much
        # of HIGHEST's time is tensor-core work.
        x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
        for op, precision in (("matmul", "highest"), ("matmul_t", "highest"), ("matmul", "default")):
            product = getattr(jbs, op)
            cases.append((f"{name} {op} float32 {precision}",
                          jax.jit(lambda x, w, l=layout, f=product, p=precision: f(x, w, l, precision=p)),
                          (x32, w32)))

# seed64 (M = 64): the 64-row W-streaming tile (d = 1/4) and two 32-row tiles (d = 1/64), whose
# waves the experiment w_stream_64_one_wave changes (NOTES v30).
for name, density in (("seed64 1/4", 1 / 4), ("seed64 1/64", 1 / 64)):
    layout = jbs.Layout(random_mask(12288 // 32, density), 32)
    x, w = normal((64, 12288)), normal(layout.w_shape)
    cases.append((f"{name} matmul", jax.jit(lambda x, w, l=layout: jbs.matmul(x, w, l)), (x, w)))

for bs in (16, 8):  # small: M = 2048, 4096 x 4096, d = 1/8
    layout = jbs.Layout(random_mask(4096 // bs, 1 / 8), bs)
    x, w = normal((2048, 4096)), normal(layout.w_shape)
    cases.append((f"small bs {bs} matmul", jax.jit(lambda x, w, l=layout: jbs.matmul(x, w, l)),
                  (x, w)))
    cases.append((f"small bs {bs} sampled_matmul",
                  jax.jit(lambda x, l=layout: jbs.sampled_matmul(x, x, l)), (x,)))

layout = jbs.Layout(random_mask(1024 // 32, 1 / 8), 32)
x = normal((32, 32, 32, 1024))
w = normal(jbs.conv_weight_shape(layout, (3, 3)))
conv = lambda x, w: jbs.conv(x, w, layout)
cases.append(("conv forward", jax.jit(conv), (x, w)))
cases.append(("conv filter gradient",
              jax.jit(lambda x, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]), (x, x)))

# JBS_PROFILE_CASES: comma-separated substrings of the case names to keep (default: every case).
wanted = [part for part in os.environ.get("JBS_PROFILE_CASES", "").split(",") if part]
cases = [case for case in cases if not wanted or any(part in case[0] for part in wanted)]
compiled = [(name, fn.lower(*args).compile(), args) for name, fn, args in cases]
for name, fn, args in compiled:
    print(name, file=sys.stderr, flush=True)
    jax.block_until_ready(fn(*args))
print("profile case done")
