import os
import zlib

import jax
import numpy as np
import pytest

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
