"""Block-sparse products against dense jnp.dot and the peers, in one process, on one card.

    python benchmarks/bench.py [--quick] [--out benchmarks/results]

Products run in chains of dependent products inside one jit (one CUDA graph for torch), so
that nothing can be merged or overlapped across products; each chain's time is the median over
repeats. The figure per product ("us", "dense_us") is the marginal one: the slope between
chains of STEPS and factor x STEPS products, which leaves out the per-call dispatch and host sync
that a wall-clock chain also pays once (~190 us for ours and ~300-400 us for dense at seed on an
H200, NOTES v7 overhead: 12-25 us per product of a 16-chain, and the noisiest part). Since
session 12 the two chains are timed in alternation (the median of paired differences) and
factor grows past 4 where the difference would span under 2 ms (products of a few us), the
"marginal-paired" timing of the JSON (timing.marginal_seconds). Triton's figure
is CUDA-graph device time, which never included it. ``--timing chain`` gives the older figure
(16-chain time / 16); every record carries both ("us_chain", "dense_us_chain").
Writes ``<out>/<gpu>.json``.
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

import jax_blocksparse as jbs  # the installed package: run from the repo root only after pip install
from jax_blocksparse.timing import chained, marginal_seconds, median_seconds

STEPS = 16


def random_mask(blocks, density, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random((blocks, blocks)) < density
    mask[np.arange(blocks), rng.integers(0, blocks, blocks)] = True  # no empty block-row
    return mask


def watts_strogatz_mask(blocks, density, seed=0):
    import networkx as nx
    k = max(2, int(round(density * blocks)) // 2 * 2)
    mask = nx.to_numpy_array(nx.watts_strogatz_graph(blocks, k, 0.2, seed=seed), dtype=bool)
    np.fill_diagonal(mask, True)
    return mask


def barabasi_albert_mask(blocks, density, seed=0):
    """Scale-free: a few hub block-rows and -columns hold many blocks (the long lists that
    ``Layout.split_table`` cuts on CUDA)."""
    m = max(1, int(round(density * blocks / 2)))
    return jbs.patterns.barabasi_albert(blocks, m, seed=seed)


MASKS = {"random": random_mask, "watts_strogatz": watts_strogatz_mask,
         "barabasi_albert": barabasi_albert_mask}


TIMING = "marginal"
OPS = None  # --ops: the products to time (None: all)


def chain_square(product):
    """A function of ``steps``: y <- product(y), steps times; each step needs the last output."""
    return lambda steps: chained(product, steps)


def chain_reduction(product):
    """A function of ``steps``: dw <- product(x, dy) steps times, with one element of dy nudged by
    the last dw: dependent, nearly free."""
    return lambda steps: _reduction_chain(product, steps)


def per_product_us(make_chain, args):
    """(figure, STEPS-chain figure) in microseconds per product; the figure is the marginal one
    unless TIMING is "chain" (module docstring)."""
    if TIMING == "chain":
        short = median_seconds(make_chain(STEPS), *args) / STEPS * 1e6
        return short, short
    marginal, short = marginal_seconds(make_chain, *args, steps=STEPS)
    return marginal * 1e6, short * 1e6


def _reduction_chain(product, steps):
    # The last dy depends on every product. Until session 11 the chain also summed each dw's
    # corner into a float total: likely a second small kernel per step, charged to ours and to
    # dense alike, which weighs on the ratio where ours takes 6-17 us (seed); the next H100 run
    # says by how much (benchmarks/NOTES.md, session 11).
    def run(x, dy):
        for _ in range(steps):
            dw = product(x, dy)
            corner = dw.reshape(-1)[:1].astype(dy.dtype).reshape((1,) * dy.ndim)
            dy = lax.dynamic_update_slice(dy, corner, (0,) * dy.ndim)
        return dy
    return jax.jit(run)


def _glue_only(x, dy):
    """A stand-in for the weight gradient that costs nothing: the reduction chain is then only
    its link (a corner of the last output written into the next dy). The barrier keeps XLA
    from folding the steps' one-element updates into one."""
    return lax.optimization_barrier(dy)[:1, :1] + 1


def torch_peers(mask, bs, m, dtype_name):
    """Per-product microseconds of torch's Triton BSR and cuSPARSE CSR on this layout, or {} when
    unavailable: timed by torch_peers.py in a process of its own (why: its docstring)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_peers.py")
    with tempfile.TemporaryDirectory() as tmp:
        mask_path = os.path.join(tmp, "mask.npy")
        np.save(mask_path, mask)
        try:
            run = subprocess.run([sys.executable, script, mask_path, str(bs), str(m), dtype_name,
                                  str(STEPS)], capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            print("  peers: timed out")
            return {}
    lines = run.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line)
    if run.returncode != 0 or not lines:
        print(f"  peers: exit {run.returncode}: {run.stderr.strip()[-300:]}")
        return {}
    return json.loads(lines[-1])


def relative_error(ours, reference):
    """max |ours - reference| / max |reference|, so that a benchmark never times wrong numbers."""
    ours, reference = (np.asarray(jnp.asarray(a, jnp.float32)) for a in (ours, reference))
    return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-30))


def block_mask(layout):
    """The element mask of the layout's non-zero blocks, for comparing against dense results."""
    bs = layout.block_size
    return jnp.asarray(np.kron(layout.mask, np.ones((bs, bs), bool)))


def bench_config(config, m, size, bs, density, dtype_name, precision, layout_kind, with_peers):
    mask = MASKS[layout_kind](size // bs, density)
    layout = jbs.Layout(mask, bs)
    dtype = jnp.dtype(dtype_name)
    rng = np.random.default_rng(1)
    fan_in = max(1.0, layout.density * size)
    w = jnp.asarray(rng.standard_normal(layout.w_shape) / np.sqrt(fan_in), dtype)
    x = jnp.asarray(rng.standard_normal((m, size)), dtype)
    w_dense = layout.todense(w)
    prec = lax.Precision.HIGHEST if precision == "highest" else lax.Precision.DEFAULT

    ours = {
        "matmul": (chain_square(lambda y, w: jbs.matmul(y, w, layout, precision=precision)), (x, w)),
        "matmul_t": (chain_square(lambda y, w: jbs.matmul_t(y, w, layout, precision=precision)), (x, w)),
        "sampled_matmul": (chain_reduction(lambda a, b: jbs.sampled_matmul(a, b, layout, precision=precision)),
                           (x, x)),
    }
    dense = {
        "matmul": (chain_square(lambda y, w: jnp.dot(y, w, precision=prec)), (x, w_dense)),
        "matmul_t": (chain_square(lambda y, w: jnp.dot(y, w.T, precision=prec)), (x, w_dense)),
        "sampled_matmul": (chain_reduction(lambda a, b: jnp.dot(a.T, b, precision=prec)), (x, x)),
    }
    # torch times float32 at full precision, so the TF32 rows (float32 at DEFAULT) have no peer.
    tf32 = dtype_name == "float32" and precision == "default"
    peers = torch_peers(mask, bs, m, dtype_name) if with_peers and not tf32 else {}
    single = {  # one product each, for the error against dense
        "matmul": lambda: (jbs.matmul(x, w, layout, precision=precision),
                           jnp.dot(x, w_dense, precision=prec)),
        "matmul_t": lambda: (jbs.matmul_t(x, w, layout, precision=precision),
                             jnp.dot(x, w_dense.T, precision=prec)),
        "sampled_matmul": lambda: (layout.todense(jbs.sampled_matmul(x, x, layout, precision=precision)),
                                   jnp.dot(x.T, x, precision=prec) * block_mask(layout)),
    }
    records = []
    for op in ours:
        if OPS and op not in OPS:
            continue
        error = relative_error(*single[op]())
        us, us_chain = per_product_us(*ours[op])
        dense_us, dense_us_chain = per_product_us(*dense[op])
        extra = {}
        if op == "sampled_matmul" and TIMING == "marginal":
            # What the chain's link costs by itself (NOTES, session 13): one small dependent
            # kernel per step that the matmul chains do not have, in ours and in dense alike.
            extra["glue_us"] = round(per_product_us(chain_reduction(_glue_only), (x, x))[0], 2)
        record = dict(op=op, config=config, layout=layout_kind, M=m, C=size, N=size, bs=bs,
                      density=round(float(layout.density), 6), target_density=density,
                      dtype=dtype_name, precision=precision, us=round(us, 2),
                      dense_us=round(dense_us, 2), speedup=round(dense_us / us, 3),
                      us_chain=round(us_chain, 2), dense_us_chain=round(dense_us_chain, 2),
                      rel_error=float(f"{error:.3g}"),
                      peers_us={k: round(v, 2) for k, v in peers.items()} if op == "matmul" else {},
                      **extra)
        records.append(record)
        peer_text = " ".join(f"{k}={v:.1f}" for k, v in record["peers_us"].items())
        print(f"{config:5s} {layout_kind:14s} M={m:5d} K={size:5d} bs={bs:3d} d={density:<8.4g} "
              f"{dtype_name:8s} {precision:7s} {op:15s} {us:9.1f} us  dense {dense_us:9.1f} us  "
              f"x{dense_us / us:6.2f}  err {error:.1e}  (16-chain {us_chain:.1f} / {dense_us_chain:.1f})"
              f"  {peer_text}" + (f"  glue {extra['glue_us']:.1f} us" if extra else ""), flush=True)
    return records


def bench_conv(batch=32, spatial=32, kernel=3, channels=1024, bs=32, density=1 / 8,
               dtype_name="bfloat16"):
    """conv forward, input gradient and filter gradient against dense cuDNN convolution."""
    layout = jbs.Layout(random_mask(channels // bs, density), bs)
    dtype = jnp.dtype(dtype_name)
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.standard_normal(jbs.conv_weight_shape(layout, (kernel, kernel)))
                    / np.sqrt(kernel * kernel * layout.density * channels), dtype)
    x = jnp.asarray(rng.standard_normal((batch, spatial, spatial, channels)), dtype)
    filt = jbs.conv_dense_filter(w, layout)
    sparse = lambda x, w: jbs.conv(x, w, layout)
    dense = lambda x, f: lax.conv_general_dilated(x, f, (1, 1), "SAME",
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def input_grad(conv):
        return lambda dy, w: jax.vjp(lambda x: conv(x, w), dy)[1](dy)[0]

    def filter_grad(conv, w0):
        return lambda x, dy: jax.vjp(lambda w: conv(x, w), w0)[1](dy)[0]

    cases = {
        "conv": (chain_square(sparse), (x, w), chain_square(dense), (x, filt)),
        "conv_dx": (chain_square(input_grad(sparse)), (x, w), chain_square(input_grad(dense)), (x, filt)),
        "conv_dw": (chain_reduction(filter_grad(sparse, w)), (x, x),
                    chain_reduction(filter_grad(dense, filt)), (x, x)),
    }
    dy = x
    single = {  # one product each, for the error against cuDNN
        "conv": lambda: (sparse(x, w), dense(x, filt)),
        "conv_dx": lambda: (input_grad(sparse)(dy, w), input_grad(dense)(dy, filt)),
        "conv_dw": lambda: (jbs.conv_dense_filter(filter_grad(sparse, w)(x, dy), layout),
                            filter_grad(dense, filt)(x, dy) * block_mask(layout)),
    }
    records = []
    for op, (ours_fn, ours_args, dense_fn, dense_args) in cases.items():
        if OPS and op not in OPS:
            continue
        error = relative_error(*single[op]())
        us, us_chain = per_product_us(ours_fn, ours_args)
        dense_us, dense_us_chain = per_product_us(dense_fn, dense_args)
        records.append(dict(us_chain=round(us_chain, 2), dense_us_chain=round(dense_us_chain, 2),
                            op=op, config="conv", layout="random", M=batch * spatial * spatial,
                            C=channels, N=channels, bs=bs, density=round(float(layout.density), 6),
                            target_density=density, kernel=[kernel, kernel], spatial=[spatial, spatial],
                            batch=batch, dtype=dtype_name, precision="default", us=round(us, 2),
                            dense_us=round(dense_us, 2), speedup=round(dense_us / us, 3),
                            rel_error=float(f"{error:.3g}"), peers_us={}))
        print(f"conv  N={batch} {spatial}x{spatial} k={kernel} C=K={channels} bs={bs} d={density:.4g} "
              f"{dtype_name} {op:8s} {us:9.1f} us  dense(cuDNN) {dense_us:9.1f} us  x{dense_us / us:6.2f}"
              f"  err {error:.1e}  (16-chain {us_chain:.1f} / {dense_us_chain:.1f})",
              flush=True)
    return records


def configurations(quick, tf32=False):
    seed_d = (1 / 4, 1 / 16, 1 / 64)
    yield from (("seed", 32, 12288, 32, d, "bfloat16", "default", "random") for d in seed_d)
    yield from (("seed", 32, 12288, 32, d, "float32", "highest", "random") for d in seed_d)
    if tf32:
        # float32 at DEFAULT precision (one TF32 product per k-step instead of 3xTF32's three):
        # against the HIGHEST rows, it tells how much of their time is tensor-core work.
        yield from (("seed", 32, 12288, 32, d, "float32", "default", "random") for d in seed_d)
    # The seed problem at minibatch 64 (the small-world LSTM's batch): the top of the issue's
    # "small batch" range, beyond the 32-row W-streaming tile.
    yield from (("seed64", 64, 12288, 32, d, "bfloat16", "default", "random") for d in seed_d)
    yield from (("wide", 8192, 4096, 32, d, "bfloat16", "default", "random") for d in (1 / 4, 1 / 16))
    yield from (("small", 2048, 4096, bs, 1 / 8, "bfloat16", "default", "random") for bs in (16, 8))
    if not quick:
        yield from (("seed", 32, 12288, 32, d, "bfloat16", "default", "watts_strogatz") for d in seed_d)
        yield from (("wide", 8192, 4096, 32, d, "bfloat16", "default", "watts_strogatz")
                    for d in (1 / 4, 1 / 16))
        yield from (("seed", 32, 12288, 32, d, "bfloat16", "default", "barabasi_albert") for d in seed_d)


def main():
    global STEPS, TIMING, OPS
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip the Watts-Strogatz repeats")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="configs to run: seed seed64 wide small conv")
    parser.add_argument("--dtype", default=None, help="run only this dtype")
    parser.add_argument("--precision", default=None, choices=("default", "highest"),
                        help="run only this precision; 'default' adds the seed float32 rows at "
                             "DEFAULT precision (TF32), which no other run times")
    parser.add_argument("--layout", default=None, choices=sorted(MASKS),
                        help="run only this kind of layout (with --only seed: the repeats too)")
    parser.add_argument("--steps", type=int, default=STEPS,
                        help="dependent products per timed chain (default 16); more spreads the "
                             "per-call dispatch thinner, for both sides")
    parser.add_argument("--timing", choices=("marginal", "chain"), default=TIMING,
                        help="per-product figure: the slope between chains of STEPS and factor x "
                             "STEPS products (default; timing.marginal_seconds), or the "
                             "STEPS-chain time / STEPS")
    parser.add_argument("--ops", nargs="*", default=None,
                        help="products to time: matmul matmul_t sampled_matmul conv conv_dx "
                             "conv_dw (default all; A/B runs of one kernel)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    default_steps, STEPS, TIMING, OPS = STEPS, args.steps, args.timing, args.ops
    device = jax.devices()[0]
    print(f"device: {device.device_kind}  jax {jax.__version__}  cuda kernels: "
          f"{jbs.kernels_available('cuda')}", flush=True)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", device.device_kind).strip("-").lower()
    os.makedirs(args.out, exist_ok=True)
    partial = args.only or args.dtype or args.quick or args.layout or args.ops or args.precision
    suffix = ("-partial" if partial else "") + (f"-steps{STEPS}" if STEPS != default_steps else "")
    path = os.path.join(args.out, f"{gpu}{suffix}.json")
    records = []

    def save():
        # After every configuration, so that a run cut short still leaves what it measured.
        with open(path, "w") as f:
            json.dump({"gpu": device.device_kind, "jax": jax.__version__,
                       "date": datetime.date.today().isoformat(), "steps_per_chain": STEPS,
                       "timing": "marginal-paired" if TIMING == "marginal" else TIMING,
                       "records": records}, f, indent=1)

    for config in configurations(args.quick, tf32=args.precision == "default"):
        if (args.only and config[0] not in args.only or args.dtype and config[5] != args.dtype
                or args.precision and config[6] != args.precision
                or args.layout and config[7] != args.layout):
            continue
        records += bench_config(*config, with_peers=not args.no_peers)
        save()
    if (not args.only or "conv" in args.only) and args.precision != "highest":
        records += bench_conv()
        save()
    print("wrote", path)


if __name__ == "__main__":
    main()
