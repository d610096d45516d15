"""A small case of every kernel, for compute-sanitizer (memcheck, racecheck)."""
import numpy as np
import jax
import jax.numpy as jnp

import jax_blocksparse as jbs

rng = np.random.default_rng(0)
for bs in jbs.SUPPORTED_BLOCK_SIZES:
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        mask = rng.random((3, 2)) < 0.6
        mask[0, 0] = True
        layout = jbs.Layout(mask, bs)
        C, N = layout.shape
        x = jnp.asarray(rng.standard_normal((37, C)), dtype)
        dy = jnp.asarray(rng.standard_normal((37, N)), dtype)
        w = jnp.asarray(rng.standard_normal(layout.w_shape), dtype)
        for precision in ("default", "highest"):
            outs = (jbs.matmul(x, w, layout, precision=precision),
                    jbs.matmul_t(dy, w, layout, precision=precision),
                    jbs.sampled_matmul(x, dy, layout, precision=precision))
            jax.block_until_ready(outs)
print("sanitize case done")
