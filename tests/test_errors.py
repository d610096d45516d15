"""Bad input is refused at trace time, with messages that name shapes and dtypes."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

import jax_blocksparse as jbs


@pytest.fixture
def layout():
    return jbs.Layout(np.array([[1, 0], [1, 1], [0, 1]], bool), 8)  # C = 24, N = 16


def _w(layout, dtype=jnp.float32):
    return jnp.ones(layout.w_shape, dtype)


def test_wrong_feature_size(layout):
    with pytest.raises(ValueError, match=r"\(4, 20\).*C = layout.shape\[0\] = 24"):
        jbs.matmul(jnp.ones((4, 20), jnp.float32), _w(layout), layout)
    with pytest.raises(ValueError, match=r"\(4, 24\).*N = layout.shape\[1\] = 16"):
        jbs.matmul_t(jnp.ones((4, 24), jnp.float32), _w(layout), layout)


def test_wrong_weight_shape(layout):
    with pytest.raises(ValueError, match=r"w has shape \(5, 8, 8\).*\(4, 8, 8\)"):
        jbs.matmul(jnp.ones((4, 24), jnp.float32), jnp.ones((5, 8, 8), jnp.float32), layout)


def test_mixed_dtypes(layout):
    with pytest.raises(TypeError, match="x: bfloat16, w: float32"):
        jbs.matmul(jnp.ones((4, 24), jnp.bfloat16), _w(layout), layout)
    with pytest.raises(TypeError, match="x: float32, dy: float16"):
        jbs.sampled_matmul(jnp.ones((4, 24), jnp.float32), jnp.ones((4, 16), jnp.float16), layout)


def test_integer_dtypes(layout):
    with pytest.raises(TypeError, match="int32"):
        jbs.matmul(jnp.ones((4, 24), jnp.int32), _w(layout, jnp.int32), layout)


def test_mismatched_leading_dimensions(layout):
    with pytest.raises(ValueError, match=r"\(4, 24\).*\(5, 16\)"):
        jbs.sampled_matmul(jnp.ones((4, 24), jnp.float32), jnp.ones((5, 16), jnp.float32), layout)


def test_not_a_layout():
    with pytest.raises(TypeError, match="Layout"):
        jbs.matmul(jnp.ones((4, 24), jnp.float32), jnp.ones((3, 8, 8), jnp.float32), np.ones((3, 2), bool))


def test_bad_precision_and_preferred_type(layout):
    with pytest.raises(ValueError, match="precision"):
        jbs.matmul(jnp.ones((4, 24), jnp.float32), _w(layout), layout, precision="bogus")
    with pytest.raises(TypeError, match="preferred_element_type"):
        jbs.matmul(jnp.ones((4, 24), jnp.float32), _w(layout), layout, preferred_element_type=jnp.int32)


def test_errors_happen_at_trace_time(layout):
    traced = jax.jit(lambda x, w: jbs.matmul(x, w, layout))
    with pytest.raises(ValueError, match="feature"):
        traced.lower(jax.ShapeDtypeStruct((4, 23), jnp.float32), jax.ShapeDtypeStruct((4, 8, 8), jnp.float32))
