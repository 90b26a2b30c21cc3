"""The store benchmark times a baseline's per-step work as well as EVOS's, under its own report name."""

import json

import pytest

from script_modules import load_script


def test_a_baselines_store_is_timed_under_its_own_report_and_an_unknown_one_is_refused(tmp_path):
    bench = load_script("bench_store")
    bench.main(bench.Args(sizes=["1e6"], steps=3, strategy="errormap", out=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store_cpu_errormap.json", "store_cpu_errormap.md"]
    row = json.loads((tmp_path / "store_cpu_errormap.json").read_text())["sizes"]["1e6"]
    assert row["pixels"] == 10**6 and row["pool_share"] == 0.0 and row["select_ms"] > 0
    with pytest.raises(SystemExit, match="error: --strategy must be one of evos, .*, got 'nope'"):
        bench.main(bench.Args(sizes=["1e6"], strategy="nope", out=tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()
