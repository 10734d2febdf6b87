"""This run's metrics against the commit's, on inputs with known answers and a real checkout."""

import json
import subprocess

import pytest

from gravrev.report.metrics_diff import (
    ABSENT,
    MetricDifference,
    MetricsComparison,
    committed_metrics,
    compare_metrics,
    flatten,
    metric_differences,
    metrics_verdict,
    run_metrics,
)


def test_flatten_names_every_leaf_by_its_key_path():
    assert flatten({"a": {"b": [1, {"c": 2}]}, "d": None, "e": []}) == {
        "a.b[0]": 1,
        "a.b[1].c": 2,
        "d": None,
        "e": [],
    }


def test_metric_differences_lists_exactly_the_differing_key_paths():
    committed = {"a": 1, "b": {"c": [1, 2]}, "d": 0.5, "same": "x"}
    this_run = {"a": 1, "b": {"c": [1, 3]}, "e": True, "same": "x"}
    assert metric_differences("m.json", committed, this_run) == [
        MetricDifference("m.json", "b.c[1]", "2", "3"),
        MetricDifference("m.json", "d", "0.5", ABSENT),
        MetricDifference("m.json", "e", ABSENT, "true"),
    ]
    assert metric_differences("m.json", committed, committed) == []


def test_compare_metrics_says_identical_differs_new_or_missing():
    out = compare_metrics(
        {"same.json": {"x": 1}, "moved.json": {"x": 1}, "gone.json": {}},
        {"same.json": {"x": 1}, "moved.json": {"x": 2}, "new.json": {}},
    )
    verdicts = {c.file: c.verdict for c in out}
    assert verdicts == {
        "gone.json": "missing from this run",
        "moved.json": "differs",
        "new.json": "new in this run",
        "same.json": "identical",
    }
    (moved,) = [c for c in out if c.file == "moved.json"]
    assert [d.key for d in moved.differences] == ["x"]


def test_metrics_verdict_in_words():
    same = MetricsComparison("a.json", "identical", ())
    moved = MetricsComparison("b.json", "differs", (MetricDifference("b.json", "x", "1", "2"),))
    new = MetricsComparison("c.json", "new in this run", ())
    assert metrics_verdict([same, same]) == "identical to the committed ones"
    assert metrics_verdict([same, moved, new]) == (
        "different from the committed ones in 2 of 3 files"
    )
    assert metrics_verdict([new]).startswith("not compared")
    assert metrics_verdict([]).startswith("not compared")


@pytest.fixture
def checkout(tmp_path):
    """A git repository with committed metrics, then one metric changed."""

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    metrics = tmp_path / "data" / "metrics"
    metrics.mkdir(parents=True)
    (metrics / "nulls.json").write_text(json.dumps({"k": 3, "rate": 0.25}))
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "reference")
    (metrics / "nulls.json").write_text(json.dumps({"k": 3, "rate": 0.5}))
    return tmp_path


def test_metrics_against_the_commit_in_a_real_checkout(checkout):
    (comparison,) = compare_metrics(committed_metrics(checkout), run_metrics(checkout))
    assert comparison.verdict == "differs"
    assert comparison.differences == (MetricDifference("nulls.json", "rate", "0.25", "0.5"),)


def test_outside_git_there_is_no_reference(tmp_path):
    assert committed_metrics(tmp_path) == {}
