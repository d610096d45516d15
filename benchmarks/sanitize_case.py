"""A small case of every kernel path, for compute-sanitizer (memcheck, racecheck).

Paths: tensor-core 16-bit (bf16), TF32 (float32 DEFAULT), 3xTF32 (float32 HIGHEST), and the SIMT
kernels (float64); block sizes 8, 32 and 128; M <= 32 and 48 (the W-streaming tiles), M with
tile tails, 100 rows (the 128-row tile), 256-row tiles and M > 512 (split-M sampled, 8 slices and fewer); and the CUDA convolution in bf16 and float32: forward
and input gradient strided, dilated and padded (the gather kernel), and the stride-1 halo-tile
kernels (forward, input gradient, filter gradient in one segment and in two), and stride-1
convolutions over a 16 x 16 image. Then a jitted
chain of dependent products with w rewritten between them.
"""
import os

# Under memcheck every allocation is tracked: XLA's preallocation of most of a 141 GB card made
# compute-sanitizer itself crash on an H200.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np
import jax
import jax.numpy as jnp

import jax_blocksparse as jbs

jax.config.update("jax_enable_x64", True)
rng = np.random.default_rng(0)
cases = [(jnp.bfloat16, "default"), (jnp.float32, "default"), (jnp.float32, "highest"),
         (jnp.float64, "highest")]
for bs in (8, 32, 128):
    for dtype, precision in cases:
        for m in (20, 37, 600):
            mask = rng.random((3, 2)) < 0.6
            mask[0, 0] = True
            layout = jbs.Layout(mask, bs)
            C, N = layout.shape
            x = jnp.asarray(rng.standard_normal((m, C)), dtype)
            dy = jnp.asarray(rng.standard_normal((m, N)), dtype)
            w = jnp.asarray(rng.standard_normal(layout.w_shape), dtype)
            outs = (jbs.matmul(x, w, layout, precision=precision),
                    jbs.matmul_t(dy, w, layout, precision=precision),
                    jbs.sampled_matmul(x, dy, layout, precision=precision))
            jax.block_until_ready(outs)
# bs 32, 300 rows over 330 output block-columns of ~17 blocks: the 256-row tile
mask = rng.random((20, 330)) < 0.85
for w_mask in (mask, mask.T):
    layout = jbs.Layout(w_mask, 32)
    C, N = layout.shape
    w = jnp.asarray(rng.standard_normal(layout.w_shape), jnp.bfloat16)
    x, dy = (jnp.asarray(rng.standard_normal((300, d)), jnp.bfloat16) for d in (C, N))
    jax.block_until_ready((jbs.matmul(x, w, layout), jbs.matmul_t(dy, w, layout)))
# M >= 512 over hundreds of blocks: 4 and 2 warps per block's rows on a 132-SM card (the
# one-block-per-CTA split above takes all 8)
for nnz in (700, 1400):
    mask = np.zeros((64, 64), bool)
    mask.reshape(-1)[rng.choice(64 * 64, nnz, replace=False)] = True
    layout = jbs.Layout(mask, 32)
    x, dy = (jnp.asarray(rng.standard_normal((520, 2048)), jnp.bfloat16) for _ in range(2))
    jax.block_until_ready(jbs.sampled_matmul(x, dy, layout))
# bs 32, 2100 rows, an odd number of blocks: block pairs over a long reduction (the
# `wgmma_tma_sampled_ungated` experiment on sm_90a; `wgmma_tma_sampled` alone routes only
# layouts whose block pairs fill the card)
mask = rng.random((5, 6)) < 0.4
mask[0, 0] = True
if mask.sum() % 2 == 0:
    mask[4, 5] = not mask[4, 5]
layout = jbs.Layout(mask, 32)
x, dy = (jnp.asarray(rng.standard_normal((2100, d)), jnp.bfloat16) for d in layout.shape)
jax.block_until_ready(jbs.sampled_matmul(x, dy, layout))
# Small blocks, M >= 512, a fifth of the blocks present: 128 x 128 dense tiles at bs 8, the
# per-block kernel at bs 16 (12 x 12 tiles, the last row and column partial, one tile
# without blocks); the products too (the union panels at bs 8; at bs 16 the 256-row TMA tile
# of `wgmma_tma_bs16` on sm_90a, 520 rows leaving the third tile 8)
for bs in (8, 16):
    t = 128 // bs
    mask = rng.random((1480 // bs, 1480 // bs)) < 0.2
    mask[:t, :t] = False
    layout = jbs.Layout(mask, bs)
    x, dy = (jnp.asarray(rng.standard_normal((520, layout.shape[0])), jnp.bfloat16)
             for _ in range(2))
    w = jnp.asarray(rng.standard_normal(layout.w_shape), jnp.bfloat16)
    jax.block_until_ready((jbs.sampled_matmul(x, dy, layout), jbs.matmul(x, w, layout),
                           jbs.matmul_t(dy, w, layout)))
# 48 rows over columns of >= 16 blocks: the 64-row W-streaming tile
layout = jbs.Layout(np.ones((16, 2), bool), 32)
x = jnp.asarray(rng.standard_normal((48, 512)), jnp.bfloat16)
w = jnp.asarray(rng.standard_normal(layout.w_shape), jnp.bfloat16)
jax.block_until_ready(jbs.matmul(x, w, layout))
# 100 rows, bs 32, 16-bit: the 128-row tile capped for 4 CTAs per SM (on sm_90a the rows 65-128
# that the wgmma tile leaves), over two weight stacks
layout = jbs.Layout(rng.random((4, 3)) < 0.6, 32)
layout = jbs.Layout(np.logical_or(layout.mask, np.eye(4, 3, dtype=bool)), 32)
x = jnp.asarray(rng.standard_normal((100, layout.shape[0])), jnp.bfloat16)
dy = jnp.asarray(rng.standard_normal((100, layout.shape[1])), jnp.bfloat16)
ws = jnp.asarray(rng.standard_normal((2, *layout.w_shape)), jnp.bfloat16)
jax.block_until_ready((jax.vmap(lambda w: jbs.matmul(x, w, layout))(ws),
                       jax.vmap(lambda w: jbs.matmul_t(dy, w, layout))(ws)))
for bs in (16, 32):
    for dtype in (jnp.bfloat16, jnp.float32):
        mask = rng.random((3, 2)) < 0.6
        mask[0, 0] = True
        layout = jbs.Layout(mask, bs)
        C, K = layout.shape
        # 12 and 36 output rows: both kernel regimes; 17 images: a stride-1 filter gradient of
        # 17 tiles in 2 segments
        for batch in (1, 3, 17):
            x = jnp.asarray(rng.standard_normal((batch, 7, 6, C)), dtype)
            w = jnp.asarray(rng.standard_normal(jbs.conv_weight_shape(layout, (3, 2))), dtype)
            # strided: the gather kernel; stride 1 (bf16, bs 32): the halo-tile kernel
            for strides in ((2, 1), (1, 1)):
                conv = lambda x, w: jbs.conv(x, w, layout, strides=strides,
                                             padding=((1, 2), (0, 1)), dilation=(1, 2))
                y, vjp = jax.vjp(conv, x, w)
                jax.block_until_ready((y, vjp(jnp.ones_like(y))))
# Stride-1 bf16 convolutions whose outputs fill 256-position tiles (a 16 x 16 image: the
# TMA + wgmma convolution's shapes on sm_90a, NOTES v21), forward and input gradient.
layout = jbs.Layout(rng.random((3, 2)) < 0.6, 32)
layout = jbs.Layout(np.logical_or(layout.mask, np.eye(3, 2, dtype=bool)), 32)
C, K = layout.shape
x = jnp.asarray(rng.standard_normal((2, 16, 16, C)), jnp.bfloat16)
w = jnp.asarray(rng.standard_normal(jbs.conv_weight_shape(layout, (3, 3))), jnp.bfloat16)
y, vjp = jax.vjp(lambda x: jbs.conv(x, w, layout, padding="SAME"), x)
jax.block_until_ready((y, vjp(jnp.ones_like(y))))
# Back-to-back products in one jit, each reading what the one before wrote.
layout = jbs.Layout(rng.random((8, 8)) < 0.5, 32)
x = jnp.asarray(rng.standard_normal((20, 256)), jnp.bfloat16)
w = jnp.asarray(rng.standard_normal(layout.w_shape) / 16, jnp.bfloat16)


@jax.jit
def chain(y, w):
    for _ in range(3):
        w = w * 0.5
        y = jbs.matmul_t(jbs.matmul(y, w, layout), w, layout)
    return y


jax.block_until_ready(chain(x, w))
print("sanitize case done")
