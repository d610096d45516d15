"""Wall-clock timing of compiled JAX functions, shared by the examples and the benchmark."""
from __future__ import annotations

import statistics
import time

import jax


def median_seconds(fn, *args, repeats: int = 20) -> float:
    """Median wall time of ``fn(*args)`` over ``repeats`` runs, after one warm-up call.

    The warm-up keeps compilation out of the figure; blocking on every result keeps
    asynchronous dispatch from hiding device time.
    """
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)
