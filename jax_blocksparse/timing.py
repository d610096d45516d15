"""Wall-clock timing of compiled JAX functions, shared by the examples and the benchmark."""
from __future__ import annotations

import math
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


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def _paired_difference(short_chain, long_chain, *args):
    """(short, long - short) seconds of one run of each, the short one first."""
    short = _seconds(short_chain, *args)
    return short, _seconds(long_chain, *args) - short


def marginal_seconds(make_chain, *args, steps: int = 16, repeats: int = 20,
                     min_span_seconds: float = 2e-3, max_factor: int = 64):
    """``(marginal, chained)`` seconds per product of ``make_chain(n)(*args)``, a jitted chain
    of ``n`` dependent products (e.g. ``lambda n: chained(product, n)``).

    ``chained`` is a ``steps``-chain's time / ``steps``; it still carries the per-call dispatch
    and host sync (hundreds of microseconds on a GPU), spread over ``steps``. ``marginal`` is
    the slope between chains of ``steps`` and ``factor * steps`` products: what one more product
    costs on the device, as inside a long training step.

    The two chains are timed in alternation and the slope is the median of the paired
    differences, so that a drift of the clocks or the host between two blocks of runs does not
    enter it. ``factor`` is 4, or more (up to ``max_factor``) where the products are so short
    that the difference would span less than ``min_span_seconds``: the host's jitter (tens of
    microseconds per call) must stay small against the span it is divided into.
    """
    short_chain = make_chain(steps)
    jax.block_until_ready(short_chain(*args))
    factor = 4
    long_chain = make_chain(factor * steps)
    jax.block_until_ready(long_chain(*args))
    probe = statistics.median(_paired_difference(short_chain, long_chain, *args)[1]
                              for _ in range(3))
    span_per_product = probe / ((factor - 1) * steps)
    if probe < min_span_seconds:
        wanted = (max_factor if span_per_product <= 0
                  else 1 + math.ceil(min_span_seconds / (span_per_product * steps)))
        wanted = min(max_factor, max(factor, wanted))
        if wanted != factor:
            factor = wanted
            long_chain = make_chain(factor * steps)
            jax.block_until_ready(long_chain(*args))
    shorts, differences = zip(*(_paired_difference(short_chain, long_chain, *args)
                                for _ in range(repeats)))
    marginal = statistics.median(differences) / ((factor - 1) * steps)
    return marginal, statistics.median(shorts) / steps
