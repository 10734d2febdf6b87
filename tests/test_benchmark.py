"""`make benchmark` runs and reports its four ratios (tiny sizes; nothing here is timed)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from gravrev.report.provenance import pipeline_profile, profile_shares, shares_text
from gravrev.store.atomic import write_json

pytestmark = pytest.mark.slow  # runs the benchmark script

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_script_writes_its_four_ratios(tmp_path):
    out = tmp_path / "benchmark.json"
    args = ["--preset", "smoke", "--steps", "2", "--warmup", "1", "--repeats", "1", "--runs", "2",
            "--out", str(out)]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("ratio_ours_over_trainer", "fraction_of_matmul", "parallel_efficiency"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    for row in ("gravrev / Trainer", "achieved / pinned sgemm peak", "parallel efficiency"):
        assert row in proc.stdout, row
    assert result["preset"] == "smoke"
    # tmp_path has no data/timings: the profile says it needs a pipeline run
    assert result["pipeline"] is None and "run the pipeline first" in proc.stdout


def test_the_pipeline_profile_splits_steps_by_kind_and_training_share(tmp_path):
    for label, seconds in (("history", 10.0), ("history_metrics", 2.0), ("01_history", 4.0),
                           ("vrev", 4.0)):
        write_json(tmp_path / f"{label}.json", {"stage": label, "seconds": seconds})
    write_json(tmp_path / "history_phases.json", {"pretrain": 3.0, "h0_helpful": 5.0})
    profile = pipeline_profile(tmp_path, 2, ["history", "vrev"])
    assert list(profile["step"]) == ["history", "history_metrics", "01_history", "vrev"]
    assert list(profile["kind"]) == ["run", "metrics", "render", "run"]
    assert profile["training_share"].iloc[0] == 8.0 / (10.0 * 2)
    shares = profile_shares(profile, 2)
    assert (shares.run_share, shares.metrics_share, shares.render_share) == (0.7, 0.1, 0.2)
    assert shares.training_share == 0.4 and shares.recorded_steps == ("history",)
    assert "training runs filled 40%" in shares_text(shares)
