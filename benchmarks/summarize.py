"""The README's figures table, the issue's targets and the peer cells, from a results JSON.

    python benchmarks/summarize.py benchmarks/results/nvidia-h100-80gb-hbm3.json [more.json ...]

Later files replace the records of earlier ones with the same configuration, so a run cut short
and finished by a partial one (``bench.py --only ...``) can be read as one; ``--merge OUT``
writes that union.
"""

import argparse
import json
from collections import defaultdict, namedtuple

OPS = ("matmul", "matmul_t", "sampled_matmul")
# The speedup targets: (config, layout, dtype, precision) -> {target density: speedup}.
TARGETS = {("seed", "random", "bfloat16", "default"): {1 / 4: 3.5, 1 / 16: 12, 1 / 64: 25},
           ("seed", "random", "float32", "highest"): {1 / 4: 3, 1 / 16: 10, 1 / 64: 25},
           ("wide", "random", "bfloat16", "default"): {1 / 4: 2.5, 1 / 16: 8}}
SMALL_TARGETS = {16: 4, 8: 3}

Key = namedtuple("Key", "config layout dtype precision bs M density op")


def precision(record):
    """A record's precision; records that predate the field ran float32 at HIGHEST only."""
    return record.get("precision") or ("highest" if record["dtype"] == "float32" else "default")


def dtype_label(record):
    """The dtype, with the precision for float32, whose two precisions are problems of their own
    (DEFAULT is TF32)."""
    return record["dtype"] + (f" {precision(record)}" if record["dtype"] == "float32" else "")


def record_key(record):
    return Key(record["config"], record.get("layout", "random"), record["dtype"], precision(record),
               record["bs"], record["M"], record.get("target_density", record["density"]),
               record["op"])


def merged(paths):
    header, records = None, {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        header = header or {k: v for k, v in data.items() if k != "records"}
        for record in data["records"]:
            records[record_key(record)] = record
    return header, list(records.values())


def table(records):
    """Markdown rows: problem -> 'matmul / matmul_t / sampled' speedups per density."""
    cells = defaultdict(dict)
    for r in records:
        if r["config"] == "conv":
            continue
        problem = (r["config"], r.get("layout", "random"), dtype_label(r), r["M"], r["C"], r["bs"])
        cells[problem].setdefault(r.get("target_density", r["density"]), {})[r["op"]] = r["speedup"]
    lines = ["| problem | densities: matmul / matmul_t / sampled_matmul |", "|---|---|"]
    for (config, layout, dtype, m, c, bs), by_density in cells.items():
        parts = []
        for density in sorted(by_density, reverse=True):
            figures = " / ".join(f"{by_density[density][op]:.3g}" if op in by_density[density] else "-"
                                 for op in OPS)
            parts.append(f"1/{round(1 / density)}: {figures}")
        lines.append(f"| {config} {layout} M={m} {c}x{c} bs {bs} {dtype} | {'; '.join(parts)} |")
    conv = [r for r in records if r["config"] == "conv"]
    if conv:
        lines.append("| conv (forward / input grad / filter grad vs cuDNN) | "
                     + " / ".join(f"{r['speedup']:.3g}" for r in conv) + " |")
    return lines


def verdicts(records):
    """Each target cell and each matmul cell against the peers, met or not."""
    lines = []
    by_key = {record_key(r): r for r in records}
    for (config, layout, dtype, precision), targets in TARGETS.items():
        for density, target in targets.items():
            for op in OPS:
                r = next((r for k, r in by_key.items()
                          if (k.config, k.layout, k.dtype, k.precision) == (config, layout, dtype, precision)
                          and abs(k.density - density) < 1e-9 and k.op == op), None)
                if r is not None:
                    lines.append(f"{config} {dtype} 1/{round(1 / density)} {op}: {r['speedup']:.3g}x "
                                 f"({r['us']} us) target {target}x: "
                                 f"{'met' if r['speedup'] >= target else 'short'}")
    for r in records:
        if r["config"] == "small" and r["op"] == "matmul":
            target = SMALL_TARGETS.get(r["bs"])
            lines.append(f"small bs {r['bs']} matmul: {r['speedup']:.3g}x target {target}x: "
                         f"{'met' if target and r['speedup'] >= target else 'short'}")
    # matmul_t and sampled_matmul at >= 75% of matmul's speedup in the same configuration
    for key, r in by_key.items():
        if key.op == "matmul":
            for op in OPS[1:]:
                other = by_key.get(key._replace(op=op))
                if other is not None and other["speedup"] < 0.75 * r["speedup"]:
                    glue = other.get("glue_us")
                    # The reduction chain's link by itself (bench.py _glue_only), taken out of
                    # both sides: what the share would be without it.
                    without = ("" if glue is None or glue >= other["us"] else
                               f" ({(other['dense_us'] - glue) / (other['us'] - glue) / r['speedup']:.0%}"
                               f" without the chain's {glue}-us link)")
                    lines.append(f"{key.config} {key.layout} {dtype_label(r)} bs {key.bs} "
                                 f"1/{round(1 / key.density)} {op}: "
                                 f"{other['speedup'] / r['speedup']:.0%} of matmul's speedup{without}")
    for r in records:
        for peer, us in (r.get("peers_us") or {}).items():
            if us <= r["us"]:
                lines.append(f"peer faster: {r['config']} {r.get('layout', 'random')} {dtype_label(r)} "
                             f"bs {r['bs']} 1/{round(1 / r.get('target_density', r['density']))}: "
                             f"{peer} {us} us against ours {r['us']}")
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--merge", help="write the union of the records here")
    args = parser.parse_args()
    header, records = merged(args.paths)
    print(f"{header.get('gpu')}, jax {header.get('jax')}, {header.get('date')}, "
          f"timing {header.get('timing', 'marginal')}")
    print("\n".join(table(records)))
    print()
    print("\n".join(verdicts(records)))
    if args.merge:
        with open(args.merge, "w") as f:
            json.dump(dict(header, records=records), f, indent=1)


if __name__ == "__main__":
    main()
