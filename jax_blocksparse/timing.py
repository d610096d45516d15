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


def marginal_seconds(make_chain, *args, steps: int = 16, repeats: int = 20):
    """``(marginal, chained)`` seconds per product of ``make_chain(n)(*args)``, a jitted chain
    of ``n`` dependent products (e.g. ``lambda n: chained(product, n)``).

    ``chained`` is a ``steps``-chain's time / ``steps``; it still carries the per-call dispatch
    and host sync (hundreds of microseconds on a GPU), spread over ``steps``. ``marginal`` is
    the slope between chains of ``steps`` and ``4 * steps`` products: what one more product
    costs on the device, as inside a long training step.
    """
    short = median_seconds(make_chain(steps), *args, repeats=repeats)
    long = median_seconds(make_chain(4 * steps), *args, repeats=repeats)
    return (long - short) / (3 * steps), short / steps

