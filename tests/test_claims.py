import copy
import json
import math

import pytest

from gravrev.claims.inputs import pool
from gravrev.claims.rules import claims_report, evaluate_claims, size_verdict
from gravrev.claims.schema import VERDICTS, load_paper_claims, validate_report

UP = [0.42, 0.45, 0.40]
DOWN = [-0.40, -0.42, -0.45]
MIXED = [0.10, -0.10, 0.05]

# (claim id, measured inputs, expected verdict): every claim reaches every verdict.
CASES = [
    ("alignment_step1", UP, "holds"),
    ("alignment_step1", MIXED, "does not hold"),
    ("alignment_step1", [0.43], "not comparable"),
    ("alignment_step20", [0.64, 0.65, 0.66], "holds"),
    ("alignment_step20", DOWN, "does not hold"),
    ("alignment_step20", [], "not comparable"),
    ("final_alignment_unblocked", [0.65, 0.64, 0.66], "holds"),
    ("final_alignment_unblocked", MIXED, "does not hold"),
    ("final_alignment_unblocked", [0.6], "not comparable"),
    ("alignment_rises", {"early": UP, "late": [0.64, 0.65, 0.66]}, "holds"),
    ("alignment_rises", {"early": [0.64, 0.65, 0.66], "late": UP}, "does not hold"),
    ("alignment_rises", {"early": [0.4], "late": [0.6]}, "not comparable"),
    ("null_exceedance", {"k": 24, "n": 24}, "holds"),
    ("null_exceedance", {"k": 23, "n": 24}, "does not hold"),
    ("null_exceedance", {"k": 0, "n": 0}, "not comparable"),
    ("final_alignment_blocked", {"blocked": [-0.2, -0.22, -0.21], "unblocked": UP}, "holds"),
    ("final_alignment_blocked", {"blocked": [0.2, 0.22, 0.21], "unblocked": UP}, "does not hold"),
    ("final_alignment_blocked", {"blocked": [-0.2], "unblocked": [0.6]}, "not comparable"),
    ("harmfulness_unblocked", {"finetuned": [18.0, 20.0, 22.0], "safe": 2.0}, "holds"),
    ("harmfulness_unblocked", {"finetuned": [1.0, 3.0, 2.5], "safe": 2.0}, "does not hold"),
    ("harmfulness_unblocked", {"finetuned": [19.0], "safe": 2.0}, "not comparable"),
    ("harmfulness_blocked", {"blocked": [8.0, 9.0, 8.5], "unblocked": [18, 20, 22]}, "holds"),
    (
        "harmfulness_blocked",
        {"blocked": [19, 21, 22.5], "unblocked": [18, 20, 22]},
        "does not hold",
    ),
    ("harmfulness_blocked", {"blocked": [8.0], "unblocked": [19.0]}, "not comparable"),
    ("task_cost", {"blocked": [80, 79, 81], "unblocked": [81, 80, 83]}, "holds"),
    ("task_cost", {"blocked": [60, 62, 61], "unblocked": [80, 81, 82]}, "does not hold"),
    ("task_cost", {"blocked": [80], "unblocked": [81]}, "not comparable"),
]


def _entry(cid, inputs):
    (entry,) = [e for e in evaluate_claims({cid: inputs}, "tiny") if e["id"] == cid]
    return entry


@pytest.mark.parametrize("cid, inputs, verdict", CASES)
def test_each_claim_reaches_each_verdict(cid, inputs, verdict):
    entry = _entry(cid, inputs)
    assert entry["verdict"] == verdict
    assert entry["preset"] == "tiny"
    assert entry["rule"].endswith(".") and len(entry["rule"]) > 20
    if verdict == "not comparable":
        assert "Not comparable" in entry["rule"]


def test_cases_cover_every_claim_and_verdict():
    ids = {c["id"] for c in load_paper_claims()}
    assert {(cid, v) for cid, _, v in CASES} == {(i, v) for i in ids for v in VERDICTS}


def test_missing_id_is_not_comparable():
    entries = evaluate_claims({"alignment_step1": UP}, "smoke")
    by_id = {e["id"]: e for e in entries}
    assert by_id["alignment_step1"]["verdict"] == "holds"
    missing = by_id["harmfulness_blocked"]
    assert missing["verdict"] == "not comparable" and missing["measured"] is None
    assert "absent" in missing["rule"] and "smoke" in missing["rule"]


def test_unknown_id_raises():
    with pytest.raises(ValueError, match="alignment_step2"):
        evaluate_claims({"alignment_step2": UP}, "tiny")


def test_unpaired_lengths_raise():
    with pytest.raises(ValueError, match="harmfulness_blocked"):
        evaluate_claims({"harmfulness_blocked": {"blocked": [1, 2], "unblocked": [1]}}, "x")


def test_within_paper_2sd():
    assert _entry("alignment_step1", [0.42, 0.43, 0.44])["within_paper_2sd"] is True
    far = _entry("alignment_step1", [0.90, 0.92, 0.91])
    assert far["verdict"] == "holds" and far["within_paper_2sd"] is False
    blocked = _entry("final_alignment_blocked", {"blocked": [-0.2, -0.22, -0.21], "unblocked": UP})
    assert blocked["within_paper_2sd"] is True
    assert _entry("alignment_rises", {"early": UP, "late": UP})["within_paper_2sd"] is None
    assert _entry("null_exceedance", {"k": 24, "n": 24})["within_paper_2sd"] is None


def test_measured_values():
    e = _entry("null_exceedance", {"k": 20, "n": 24})
    m = e["measured"]
    assert (m["k"], m["n"]) == (20, 24) and m["wilson_low"] < 20 / 24 < m["wilson_high"]
    assert e["paper"] == {"count": 24, "of": 24}
    h = _entry("harmfulness_blocked", {"blocked": [8.0, 9.0, 10.0], "unblocked": [18, 20, 22]})
    assert h["measured"]["mean"] == pytest.approx(9.0)
    assert h["measured"]["difference"]["mean"] == pytest.approx(-11.0)
    assert h["paper"]["mean"] == 8.5 and h["paper"]["sd"] == 1.5


def test_task_cost_tolerance():
    inputs = {"blocked": [77, 78, 79], "unblocked": [80, 81, 82]}
    assert _entry("task_cost", inputs)["verdict"] == "holds"
    assert _entry("task_cost", {**inputs, "tolerance": 2.0})["verdict"] == "does not hold"


def _report():
    measured = {cid: inputs for cid, inputs, v in CASES if v == "holds"}
    measured["alignment_step1"] = [0.43]  # n = 1: NaN sd must become null in JSON
    return claims_report(measured, "tiny", n_runs=3)


def test_report_round_trips_through_strict_json():
    report = _report()
    validate_report(report)
    text = json.dumps(report, allow_nan=False)
    back = json.loads(text)
    assert back == report
    validate_report(back)
    assert back["n_runs"] == 3 and len(back["claims"]) == len(load_paper_claims())


def test_validate_rejects_missing_id():
    report = _report()
    report["claims"] = [c for c in report["claims"] if c["id"] != "task_cost"]
    with pytest.raises(ValueError, match="task_cost"):
        validate_report(report)


def test_validate_rejects_bad_verdict():
    report = _report()
    report["claims"][2]["verdict"] = "mostly holds"
    with pytest.raises(ValueError, match=report["claims"][2]["id"]):
        validate_report(report)


def test_validate_rejects_duplicate():
    report = _report()
    report["claims"].append(copy.deepcopy(report["claims"][0]))
    with pytest.raises(ValueError, match="more than once"):
        validate_report(report)


def test_validate_rejects_missing_number_in_compared_claim():
    report = _report()
    entry = next(c for c in report["claims"] if c["id"] == "alignment_step20")
    entry["measured"]["sd"] = math.nan
    with pytest.raises(ValueError, match="alignment_step20.*sd"):
        validate_report(report)
    entry["measured"]["sd"] = 0.01
    del entry["rule"]
    with pytest.raises(ValueError, match="alignment_step20.*rule"):
        validate_report(report)


SIZE_CASES = [
    # (claim, measured, direction, size verdict)
    ({"mean": 0.4, "sd": 0.05}, {"mean": 0.9, "ci_low": 0.3, "ci_high": 1.5}, "holds", "holds"),
    ({"mean": 0.4, "sd": 0.05}, {"mean": 0.49, "ci_low": 0.48, "ci_high": 0.5}, "holds", "holds"),
    ({"mean": 0.4, "sd": 0.05}, {"mean": 0.52, "ci_low": 0.51, "ci_high": 0.53}, "holds",
     "does not hold"),
    ({"mean": 0.4, "sd": 0.05}, {"mean": 0.4, "ci_low": 0.3, "ci_high": 0.5}, "not comparable",
     "not comparable"),
    ({"count": 24, "of": 24}, {"k": 12, "n": 12}, "holds", "holds"),
    ({"count": 24, "of": 24}, {"k": 11, "n": 12}, "does not hold", "does not hold"),
    ({"statement": "little task cost"}, {"mean": 1.0}, "holds", "not comparable"),
]


@pytest.mark.parametrize(("claim", "measured", "direction", "size"), SIZE_CASES)
def test_size_verdict(claim, measured, direction, size):
    verdict, rule = size_verdict(claim, measured, direction)
    assert verdict == size
    assert rule.endswith(".")


def test_pool_joins_runs_and_keeps_each_runs_history():
    per = {
        "h0": {"alignment_step1": [0.1, 0.2], "null_exceedance": {"k": 3, "n": 4},
               "harmfulness_unblocked": {"finetuned": [20.0, 30.0], "safe": 5.0},
               "task_cost": {"blocked": [1.0], "unblocked": [2.0], "tolerance": 5.0}},
        "h1": {"alignment_step1": [0.3], "null_exceedance": {"k": 4, "n": 4},
               "harmfulness_unblocked": {"finetuned": [40.0], "safe": 7.0},
               "task_cost": {"blocked": [3.0], "unblocked": [4.0], "tolerance": 5.0}},
    }
    inputs, groups = pool(per)
    assert inputs["alignment_step1"] == [0.1, 0.2, 0.3]
    assert groups["alignment_step1"] == ["h0", "h0", "h1"]
    assert inputs["null_exceedance"] == {"k": 7, "n": 8}
    assert inputs["harmfulness_unblocked"] == {"finetuned": [20.0, 30.0, 40.0],
                                               "safe": [5.0, 5.0, 7.0]}
    assert inputs["task_cost"]["tolerance"] == 5.0
    assert groups["task_cost"] == ["h0", "h1"]


def test_grouped_verdict_needs_the_histories_to_agree():
    # Every history positive and tight, but far apart: over histories the interval holds 0.
    values = [0.10, 0.11, 0.12, 0.80, 0.81, 0.82]
    labels = ["h0"] * 3 + ["h1"] * 3
    (runs,) = [e for e in evaluate_claims({"alignment_step1": values}, "tiny")
               if e["id"] == "alignment_step1"]
    (grouped,) = [e for e in evaluate_claims({"alignment_step1": values}, "tiny",
                                                    groups={"alignment_step1": labels})
                  if e["id"] == "alignment_step1"]
    assert runs["verdict"] == "holds" and grouped["verdict"] == "does not hold"
    assert grouped["measured"]["df"] == 1 and "random intercept" in grouped["rule"]


def test_harmfulness_unblocked_pairs_each_run_with_its_own_theta_s():
    inputs = {"finetuned": [20.0, 22.0, 40.0, 42.0], "safe": [18.0, 18.0, 2.0, 2.0]}
    entry = _entry("harmfulness_unblocked", inputs)
    assert entry["measured"]["difference"]["mean"] == pytest.approx(21.0)
    assert entry["measured"]["safe"] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="'safe' must be finite, one value or one per run"):
        _entry("harmfulness_unblocked", {"finetuned": [20.0, 22.0], "safe": [1.0, 2.0, 3.0]})


def test_every_claims_source_names_a_function_that_exists():
    import importlib

    for c in load_paper_claims():
        module, _, name = c["source"]["function"].rpartition(".")
        assert callable(getattr(importlib.import_module(module), name, None)), c["id"]
