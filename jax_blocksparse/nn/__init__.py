"""Neural-network layers over the block-sparse products.

The layers live in one submodule per framework, each imported only when asked for:

* ``jax_blocksparse.nn.flax``: Flax NNX ``BlockSparseLinear``, ``BlockSparseConv``,
  ``SparseLSTMCell`` (Linen variants in ``jax_blocksparse.nn.flax.linen``);
* ``jax_blocksparse.nn.haiku``: Haiku modules of the same names;
* ``jax_blocksparse.nn.equinox``: Equinox modules of the same names.

This package itself imports no framework. The framework-free helpers below (fan-in
initializers, the LSTM gate math) are what all three share, and work with plain JAX.
"""
from ._common import (
    as_layout,
    column_fan_in,
    conv_apply,
    conv_fan_in,
    conv_init,
    conv_normal,
    dense_normal,
    check_lstm_layouts,
    gate_layout,
    linear_apply,
    linear_init,
    lstm_apply,
    lstm_gates,
    lstm_init,
    lstm_init_bias,
    lstm_init_input,
    lstm_init_recurrent,
    lstm_zero_state,
    sparse_normal,
)

__all__ = [
    "as_layout",
    "column_fan_in",
    "conv_apply",
    "conv_fan_in",
    "conv_init",
    "conv_normal",
    "dense_normal",
    "check_lstm_layouts",
    "gate_layout",
    "linear_apply",
    "linear_init",
    "lstm_apply",
    "lstm_gates",
    "lstm_init",
    "lstm_init_bias",
    "lstm_init_input",
    "lstm_init_recurrent",
    "lstm_zero_state",
    "sparse_normal",
]
