import os
import zlib

# Several host devices, so that the partitioning tests (test_sharding.py) have a mesh on any
# machine. Set before JAX starts a backend; it touches the CPU platform only.
HOST_DEVICES = 4
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={HOST_DEVICES}")

import jax  # noqa: E402  (after XLA_FLAGS)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# float64 is a supported dtype (and check_grads needs it).
jax.config.update("jax_enable_x64", True)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device and the CUDA kernels")


@pytest.fixture
def rng(request):
    """Fresh random data for every test, reproducible from the test id and JBS_TEST_SEED."""
    seed = zlib.crc32(request.node.nodeid.encode()) ^ int(os.environ.get("JBS_TEST_SEED", "0"))
    return np.random.default_rng(seed)


def gpu_devices():
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


def pytest_collection_modifyitems(config, items):
    """JBS_TEST_SHARD=i/n keeps every n-th collected test from the i-th: benchmarks/gpu_run.sh
    runs n shards side by side on one GPU, since the GPU suite is bound by XLA compiles on the
    host's cores (one process ran past the device's 10-minute call limit on an H100)."""
    shard = os.environ.get("JBS_TEST_SHARD")
    if not shard:
        return
    index, count = (int(part) for part in shard.split("/"))
    if not 0 <= index < count:
        raise pytest.UsageError(f"JBS_TEST_SHARD={shard}: want i/n with 0 <= i < n")
    kept = [item for k, item in enumerate(items) if k % count == index]
    config.hook.pytest_deselected(items=[item for k, item in enumerate(items) if k % count != index])
    items[:] = kept
