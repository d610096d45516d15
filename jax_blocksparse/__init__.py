"""Block-sparse matrix products for JAX, with CUDA and CPU kernels behind the XLA FFI."""
from .layout import Layout, SUPPORTED_BLOCK_SIZES
from .api import matmul, matmul_t, sampled_matmul, BlocksparseMatMul
from .conv import conv, conv_weight_shape, conv_dense_filter
from .lowering import kernels_available, unavailable_reason
from .shapes import SUPPORTED_DTYPES
from . import patterns

__version__ = "0.1.0"

__all__ = [
    "Layout",
    "matmul",
    "matmul_t",
    "sampled_matmul",
    "BlocksparseMatMul",
    "patterns",
    "conv",
    "conv_weight_shape",
    "conv_dense_filter",
    "kernels_available",
    "unavailable_reason",
    "SUPPORTED_BLOCK_SIZES",
    "SUPPORTED_DTYPES",
]
