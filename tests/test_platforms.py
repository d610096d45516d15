"""The pure-jnp fallback, and the CPU FFI kernels called explicitly on the CPU device."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

import jax_blocksparse as jbs
from jax_blocksparse import reference
from helpers import assert_close, blocks_of, dense_weight, f64, random_array, random_mask


def test_cpu_kernels_are_built():
    # CI installs the package, so the CPU FFI path (not the fallback) is what the suite tests.
    assert jbs.kernels_available("cpu"), jbs.unavailable_reason("cpu")


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16, np.float64], ids=lambda d: np.dtype(d).name)
def test_fallback_products(rng, dtype):
    mask = random_mask(rng, 4, 3)
    layout = jbs.Layout(mask, 16)
    x = random_array(rng, (2, 9, 64), dtype)
    dy = random_array(rng, (2, 9, 48), dtype)
    w = random_array(rng, (2, *layout.w_shape), dtype)
    params = dict(layout=layout, precision="highest", out_dtype=np.dtype(dtype))
    y = reference.bsmm(x, w, **params)
    dx = reference.bsmm_t(dy, w, **params)
    dw = reference.sampled(x, dy, **params)
    for g in range(2):
        Wd = dense_weight(mask, 16, f64(w[g]))
        assert_close(y[g], f64(x[g]) @ Wd, dtype)
        assert_close(dx[g], f64(dy[g]) @ Wd.T, dtype)
        assert_close(dw[g], blocks_of(mask, 16, f64(x[g]).T @ f64(dy[g])), dtype)


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16, np.float16, np.float64],
                         ids=lambda d: np.dtype(d).name)
def test_cpu_device_explicitly(rng, dtype):
    cpu = jax.devices("cpu")[0]
    mask = random_mask(rng, 5, 4)
    layout = jbs.Layout(mask, 32)
    x = jax.device_put(random_array(rng, (33, 160), dtype), cpu)
    dy = jax.device_put(random_array(rng, (33, 128), dtype), cpu)
    w = jax.device_put(random_array(rng, layout.w_shape, dtype), cpu)
    Wd = dense_weight(mask, 32, f64(w))
    y = jax.jit(lambda x, w: jbs.matmul(x, w, layout))(x, w)
    assert y.devices() == {cpu}
    assert_close(y, f64(x) @ Wd, dtype)
    assert_close(jbs.matmul_t(dy, w, layout), f64(dy) @ Wd.T, dtype)
    assert_close(jbs.sampled_matmul(x, dy, layout), blocks_of(mask, 32, f64(x).T @ f64(dy)), dtype)


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_handlers_reject_inconsistent_calls_with_an_error(rng, platform):
    """Calls that bypass the Python checks come back as FFI errors naming the shapes, not crashes."""
    devices = [d for d in jax.devices() if d.platform == platform] if platform == "gpu" else jax.devices("cpu")
    if not devices or (platform == "gpu" and not jbs.kernels_available("cuda")):
        pytest.skip(f"no {platform} kernels here")
    layout = jbs.Layout(random_mask(rng, 3, 2), 8)
    table = layout.column_table
    a = jax.device_put(jnp.ones((1, 4, 24), jnp.float32), devices[0])
    w = jax.device_put(jnp.ones((1, *layout.w_shape), jnp.float32), devices[0])
    wrong_out = jax.ShapeDtypeStruct((1, 4, 17), jnp.float32)  # not a multiple of the block size
    call = jax.jit(lambda a, w: jax.ffi.ffi_call("jbs_bsmm", wrong_out)(
        a, w, jnp.asarray(table.offsets), jnp.asarray(table.entries), transpose_w=False,
        precision=np.int32(0)))
    with pytest.raises(Exception, match=r"jbs_bsmm: .*out \(1, 4, 17\) float32"):
        jax.block_until_ready(call(a, w))
    bad_type = jax.ShapeDtypeStruct((1, 4, 16), jnp.float16)
    call = jax.jit(lambda a, w: jax.ffi.ffi_call("jbs_bsmm", bad_type)(
        a, w, jnp.asarray(table.offsets), jnp.asarray(table.entries), transpose_w=False,
        precision=np.int32(0)))
    with pytest.raises(Exception, match="unsupported dtypes"):
        jax.block_until_ready(call(a, w))
