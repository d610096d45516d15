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


def _record(op, us, dense_us, density=0.0625, peers=None, config="seed", dtype="bfloat16"):
    return dict(op=op, config=config, layout="random", M=32, C=12288, N=12288, bs=32,
                density=density + 0.001, target_density=density, dtype=dtype, us=us,
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
