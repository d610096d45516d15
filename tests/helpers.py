"""Independent float64 references: they use numpy and the mask only, never the library."""
import networkx as nx
import numpy as np
import jax
import jax.numpy as jnp

DTYPES = (np.float32, jnp.bfloat16, np.float16, np.float64)
BLOCK_SIZES = (8, 16, 32, 64, 128)


def dense_weight(mask, block_size, w):
    """The (C, N) float64 matrix: block (i, j) of the k-th non-zero in row-major order."""
    mask = np.asarray(mask, bool)
    w = np.asarray(w, np.float64)
    dense = np.zeros((mask.shape[0] * block_size, mask.shape[1] * block_size))
    k = 0
    for i in range(mask.shape[0]):
        for j in range(mask.shape[1]):
            if mask[i, j]:
                dense[i * block_size:(i + 1) * block_size, j * block_size:(j + 1) * block_size] = w[k]
                k += 1
    assert k == w.shape[0]
    return dense


def blocks_of(mask, block_size, dense):
    mask = np.asarray(mask, bool)
    out = [dense[i * block_size:(i + 1) * block_size, j * block_size:(j + 1) * block_size]
           for i in range(mask.shape[0]) for j in range(mask.shape[1]) if mask[i, j]]
    return np.array(out, np.float64).reshape(-1, block_size, block_size)


def f64(a):
    return np.asarray(jnp.asarray(a).astype(jnp.float64))


def random_array(rng, shape, dtype):
    """Normal data, rounded to ``dtype``; the float64 view of the rounded values is the truth."""
    return jnp.asarray(rng.standard_normal(shape)).astype(dtype)


def relative_error(actual, expected):
    actual, expected = f64(actual), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.all(np.isfinite(actual)), "non-finite values in the result"
    scale = np.linalg.norm(expected)
    return np.linalg.norm(actual - expected) / (scale if scale > 0 else 1.0)


def tolerance(out_dtype, precision="highest", on_gpu=False):
    out_dtype = np.dtype(out_dtype)
    if out_dtype == np.float64:
        return 1e-12
    if out_dtype == np.float32:
        return 3e-3 if (on_gpu and precision == "default") else 1e-5
    if out_dtype == np.float16:
        return 2e-3
    return 1e-2  # bfloat16: 8 mantissa bits on output


def assert_close(actual, expected, out_dtype, precision="highest", on_gpu=False):
    err = relative_error(actual, expected)
    tol = tolerance(out_dtype, precision, on_gpu)
    assert err < tol, f"relative error {err:.3e} exceeds {tol:.1e} for {np.dtype(out_dtype)}"


# -- layouts ---------------------------------------------------------------------------
def random_mask(rng, rows, cols, density=0.35):
    mask = rng.random((rows, cols)) < density
    mask[rng.integers(rows), rng.integers(cols)] = True
    return mask


def watts_strogatz_mask(n, k=2, p=0.3, seed=0):
    graph = nx.watts_strogatz_graph(n, k, p, seed=seed)
    mask = nx.to_numpy_array(graph, dtype=bool)
    np.fill_diagonal(mask, True)
    return mask


def named_masks(rng, rows=6, cols=5):
    empty_rows_cols = random_mask(rng, rows, cols, 0.6)
    empty_rows_cols[1, :] = False
    empty_rows_cols[:, 2] = False
    empty_rows_cols[0, 0] = True
    one_long_column = np.zeros((rows * 2, cols), bool)
    one_long_column[:, 3] = True
    one_long_column[0, 0] = one_long_column[5, 1] = True
    single = np.zeros((rows, cols), bool)
    single[rows // 2, cols - 1] = True
    return {
        "random": random_mask(rng, rows, cols),
        "watts_strogatz": watts_strogatz_mask(max(rows, cols), seed=int(rng.integers(1000))),
        "dense": np.ones((rows, cols), bool),
        "single_block": single,
        "empty_rows_and_columns": empty_rows_cols,
        "no_blocks": np.zeros((rows, cols), bool),
        "one_long_column": one_long_column,
    }


LAYOUT_NAMES = ("random", "watts_strogatz", "dense", "single_block", "empty_rows_and_columns",
                "no_blocks", "one_long_column")


def on_gpu(array):
    return any(d.platform == "gpu" for d in jnp.asarray(array).devices())


def default_backend_is_gpu():
    return jax.default_backend() == "gpu"
