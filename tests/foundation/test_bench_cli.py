"""`apt-daq bench --json`: every figure comes with a baseline measured in the same run."""

import json
import subprocess
import sys


def test_bench_json_lists_figures_with_baselines():
    proc = subprocess.run(
        [sys.executable, "-m", "apt_daq.cli", "bench", "--only", "drivers", "--quick", "--json"],
        capture_output=True, text=True, check=True, timeout=300)
    rows = json.loads(proc.stdout)
    assert rows
    for r in rows:
        assert set(r) >= {"name", "value", "unit", "baseline", "ratio"}
        assert r["value"] > 0 and r["baseline"] > 0
        assert abs(r["ratio"] - r["value"] / r["baseline"]) < 1e-9 * max(1.0, r["ratio"])


def test_bench_rejects_an_unknown_area():
    proc = subprocess.run([sys.executable, "-m", "apt_daq.cli", "bench", "--only", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
