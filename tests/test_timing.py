"""The benchmark's per-product timing (jax_blocksparse.timing), against a clock it cannot see
through: chains whose wall time is dispatch + n x per-product + a drift that grows with every
call, as a host or a GPU clock may drift between blocks of runs."""
import jax.numpy as jnp
import pytest

from jax_blocksparse import timing


class _Chain:
    def __init__(self, products, built):
        self.products = products
        built.append(products)

    def __call__(self):
        return jnp.zeros(())


def _fake_clock(monkeypatch, per_product, dispatch=300e-6, drift_per_call=2e-6):
    calls = []

    def seconds(chain, *args):
        calls.append(chain.products)
        return dispatch + chain.products * per_product + drift_per_call * len(calls)

    monkeypatch.setattr(timing, "_seconds", seconds)
    return calls


@pytest.mark.parametrize("per_product,factor", [(100e-6, 4), (5e-6, 26), (0.0, 64)])
def test_marginal_seconds_pairs_runs_and_lengthens_short_chains(monkeypatch, per_product, factor):
    """Long products keep the 4x chain; 5-us products get a chain long enough to span 2 ms
    (1 + ceil(2 ms / (5 us x 16)) = 26); products the clock cannot see get the longest one. The
    runs alternate, so the drift enters the slope once per pair, not once per block of runs."""
    built = []
    calls = _fake_clock(monkeypatch, per_product)
    marginal, chained = timing.marginal_seconds(lambda n: _Chain(n, built), steps=16, repeats=20)
    assert built == ([16, 64] if factor == 4 else [16, 64, 16 * factor])
    timed = calls[6:]  # after the three probe pairs
    assert timed == [16, 16 * factor] * 20
    # One call's drift (2 us) over (factor - 1) x 16 products, against 20 calls' worth unpaired.
    assert marginal == pytest.approx(per_product + 2e-6 / ((factor - 1) * 16), abs=1e-12)
    assert chained > per_product  # the short chain still carries the dispatch
