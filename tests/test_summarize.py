"""benchmarks/summarize.py: a partial run's records replace the full run's, and the verdicts
follow the issue's rules (targets, 75% of matmul's speedup, peers)."""

import importlib.util
import json
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "summarize.py")


@pytest.fixture(scope="module")
def summarize():
    spec = importlib.util.spec_from_file_location("summarize", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(op, us, dense_us, density=0.0625, peers=None, config="seed", dtype="bfloat16",
            precision=None):
    precision = precision or ("highest" if dtype == "float32" else "default")
    return dict(op=op, config=config, layout="random", M=32, C=12288, N=12288, bs=32,
                density=density + 0.001, target_density=density, dtype=dtype,
                precision=precision, us=us,
                dense_us=dense_us, speedup=dense_us / us, peers_us=peers or {})


def _write(tmp_path, name, records):
    path = tmp_path / name
    path.write_text(json.dumps({"gpu": "card", "jax": "0", "date": "d", "records": records}))
    return str(path)


def test_later_files_replace_records_of_the_same_configuration(summarize, tmp_path):
    full = _write(tmp_path, "full.json", [_record("matmul", 10.0, 100.0), _record("matmul_t", 9.0, 100.0)])
    partial = _write(tmp_path, "partial.json", [_record("matmul", 8.0, 104.0)])
    _, records = summarize.merged([full, partial])
    by_op = {r["op"]: r for r in records}
    assert len(records) == 2
    assert by_op["matmul"]["us"] == 8.0 and by_op["matmul_t"]["us"] == 9.0


def test_verdicts_name_targets_the_75_percent_rule_and_faster_peers(summarize):
    records = [_record("matmul", 8.0, 104.0, peers={"torch_bsr_triton": 7.5}),
               _record("matmul_t", 8.5, 104.0),
               _record("sampled_matmul", 16.0, 120.0)]
    lines = summarize.verdicts(records)
    assert "seed bfloat16 1/16 matmul: 13x (8.0 us) target 12x: met" in lines
    assert any(line.startswith("seed bfloat16 1/16 sampled_matmul:") and line.endswith("short")
               for line in lines)
    # 7.5 / 13 = 58% of matmul's speedup; matmul_t's 94% is not listed
    assert any("sampled_matmul: 58% of matmul's speedup" in line for line in lines)
    assert not any("matmul_t:" in line and "of matmul's speedup" in line for line in lines)
    assert any(line.startswith("peer faster: seed random bfloat16 bs 32 1/16: torch_bsr_triton 7.5")
               for line in lines)


def test_float32_precisions_are_kept_apart_and_only_highest_has_targets(summarize, tmp_path):
    """bench.py --precision default adds TF32 rows of the float32 problem: they must neither
    replace the HIGHEST records nor be judged against the HIGHEST targets."""
    highest = _record("matmul", 30.0, 276.0, dtype="float32")
    tf32 = _record("matmul", 12.0, 100.0, dtype="float32", precision="default")
    _, records = summarize.merged([_write(tmp_path, "highest.json", [highest]),
                                   _write(tmp_path, "tf32.json", [tf32])])
    assert sorted(r["us"] for r in records) == [12.0, 30.0]
    lines = summarize.verdicts(records)
    targets = [line for line in lines if line.startswith("seed float32 1/16 matmul")]
    assert targets == ["seed float32 1/16 matmul: 9.2x (30.0 us) target 10x: short"]
    rows = summarize.table(records)
    assert any("float32 highest |" in row and "1/16: 9.2 / - / -" in row for row in rows)
    assert any("float32 default |" in row and "1/16: 8.33 / - / -" in row for row in rows)
    # A record from before the field: float32 ran at HIGHEST only, so it is that problem's.
    old = dict(highest, us=31.0)
    del old["precision"]
    _, records = summarize.merged([_write(tmp_path, "old.json", [old]),
                                   _write(tmp_path, "tf32_again.json", [tf32])])
    assert sorted(r["us"] for r in records) == [12.0, 31.0]
    # The 75% rule names the precision of a float32 cell.
    lines = summarize.verdicts([dict(tf32), _record("matmul_t", 20.0, 100.0, dtype="float32",
                                                     precision="default")])
    assert any(line.startswith("seed random float32 default bs 32 1/16 matmul_t: 60%")
               for line in lines)
