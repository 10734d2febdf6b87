"""`make benchmark` runs and reports its three ratios (tiny sizes; nothing here is timed)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the benchmark script

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_script_writes_its_three_ratios(tmp_path):
    out = tmp_path / "benchmark.json"
    args = ["--preset", "smoke", "--steps", "2", "--warmup", "1", "--repeats", "1", "--runs", "2",
            "--out", str(out)]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("ratio_ours_over_trainer", "fraction_of_matmul", "parallel_efficiency"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    for row in ("gravrev / Trainer", "achieved / matmul", "parallel efficiency"):
        assert row in proc.stdout, row
    assert result["preset"] == "smoke"
