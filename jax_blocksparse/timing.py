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


def chained(product, steps: int):
    """A jitted ``(y, w) -> y`` that applies ``y = product(y, w)`` ``steps`` times.

    Each step needs the previous one's output, so nothing can be merged or overlapped, and the
    per-call dispatch is paid once for ``steps`` products: time it and divide by ``steps``.
    """
    def run(y, w):
        for _ in range(steps):
            y = product(y, w)
        return y
    return jax.jit(run)
