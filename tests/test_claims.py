import copy
import json
import math

import pytest

from gravrev.claims.inputs import Missing, pool
from gravrev.claims.preregistered import RULES
from gravrev.claims.rules import claims_report, evaluate_claims, size_verdict
from gravrev.claims.schema import VERDICTS, VERSIONS, load_paper_claims, validate_report
from gravrev.report.headline import headline, standing

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


def _order(block: list, base: list, push: list, harm: tuple = (10.0, 20.0, 30.0)) -> dict:
    """block, baseline and push arms' runs: alignment as given, non-refusal at T and the area
    under non-refusal shifted by `harm` (block, baseline, push)."""
    out = {}
    for arm, align, shift in zip(("block", "unblocked", "push"), (block, base, push), harm,
                                 strict=True):
        out[f"{arm}:alignment"] = align
        out[f"{arm}:non_refusal"] = [shift + i for i in range(len(align))]
        out[f"{arm}:area_non_refusal"] = [10 * shift + 2 * i for i in range(len(align))]
    out["span"] = 100.0  # the logged steps' span: the areas' mean levels are 1% to 3%
    return out


ORDERED = _order([-0.2, -0.25, -0.22], [0.6, 0.62, 0.61], [0.8, 0.81, 0.83])
READOUT = {"lens_score": [1.0, 1.2], "lens_percentile": [99.0, 97.0],
           "change_score": [0.5, 0.4], "change_percentile": [100.0, 96.0], "n_null": [100, 100]}
CORRELATION = {"rho": [0.95, 0.90, 0.97], "p": [0.001, 0.01, 0.001],
               "rho_harmful_compliance": [0.8, 0.7, 0.9], "p_harmful_compliance": [0.02] * 3,
               "at_bound_non_refusal": [False] * 3, "at_bound_harmful_compliance": [False] * 3,
               "n_steps": [5, 5, 5]}
NULL = {"all_exceed": [True, True, True], "n_exceed": [4, 4, 4], "n_steps": [4, 4, 4]}
REHEARSAL = {"rehearsal": [7.0, 7.3, 6.9], "baseline": [10.0, 10.4, 9.9]}

CASES += [  # the revised version's claims
    ("matched_null_every_trajectory", NULL, "holds"),
    ("matched_null_every_trajectory", {**NULL, "all_exceed": [True, False, True]},
     "does not hold"),
    ("matched_null_every_trajectory", {"all_exceed": [], "n_exceed": [], "n_steps": []},
     "not comparable"),
    ("vocabulary_readout", READOUT, "holds"),
    ("vocabulary_readout", {**READOUT, "change_percentile": [100.0, 90.0]}, "does not hold"),
    ("vocabulary_readout", Missing("mediation.json has no readout."), "not comparable"),
    ("alignment_harm_correlation", CORRELATION, "holds"),
    ("alignment_harm_correlation", {**CORRELATION, "rho": [0.5, -0.6, 0.2]}, "does not hold"),
    ("alignment_harm_correlation", {**{k: v[:1] for k, v in CORRELATION.items()},
                                    "p": [None]}, "not comparable"),
    ("block_baseline_push", ORDERED, "holds"),
    ("block_baseline_push", _order([-0.2, -0.25, -0.22], [0.6, 0.62, 0.61], [0.5, 0.55, 0.52]),
     "does not hold"),
    ("block_baseline_push", {k: v[:1] if isinstance(v, list) else v
                             for k, v in ORDERED.items()}, "not comparable"),
    ("rehearsal_opposes", REHEARSAL, "holds"),
    ("rehearsal_opposes", {"rehearsal": [10.5, 10.9, 10.4], "baseline": REHEARSAL["baseline"]},
     "does not hold"),
    ("rehearsal_opposes", {"rehearsal": [7.0], "baseline": [10.0]}, "not comparable"),
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


def test_both_versions_are_claimed_and_every_claim_has_one_named_rule():
    claims = load_paper_claims()
    assert [c["version"] for c in claims] == sorted((c["version"] for c in claims),
                                                    key=VERSIONS.index)  # first, then revised
    assert {c["id"] for c in claims if c["version"] == "revised"} == {
        "matched_null_every_trajectory", "vocabulary_readout", "alignment_harm_correlation",
        "block_baseline_push", "rehearsal_opposes"}
    assert sum(c["version"] == "first" for c in claims) == 9
    assert set(RULES) == {c["id"] for c in claims}
    assert len(set(RULES.values())) == len(RULES)  # no two claims share a rule
    by_id = {c["id"]: c for c in claims}
    assert by_id["alignment_harm_correlation"]["mean"] == 0.958
    assert by_id["rehearsal_opposes"]["mean"] == 30
    entries = {e["id"]: e for e in evaluate_claims({}, "tiny")}
    for c in claims:
        assert c["plain"] and c["unit"], c["id"]
        assert entries[c["id"]]["version"] == c["version"]


def test_each_rule_is_the_one_written_down_before_the_numbers():
    for cid, inputs, _ in CASES:
        if isinstance(inputs, Missing):
            continue
        rule = _entry(cid, inputs)["rule"]
        assert rule.startswith(RULES[cid].split("{")[0]), cid


# ---------------------------------------------------------------- one sign rule (issue 22, 9)


def test_a_sign_needs_its_interval_to_exclude_zero_not_only_its_point_estimate():
    wide = [-0.60, 0.30, -0.10]  # mean -0.133, interval holds 0
    # blocked alignment: negative mean and blocked - baseline well below 0, but the blocked
    # cosine's own interval holds 0: the paper's negative sign is not established
    blocked = _entry("final_alignment_blocked",
                     {"blocked": wide, "unblocked": [-0.08, 0.81, 0.39]})
    assert blocked["measured"]["mean"] < 0 and blocked["measured"]["difference"]["ci_high"] < 0
    assert blocked["verdict"] == "does not hold"
    assert _entry("alignment_step1", [0.60, -0.30, 0.10])["verdict"] == "does not hold"
    rises = _entry("alignment_rises", {"early": [0.4, 0.4, 0.4], "late": [1.0, 0.1, 0.5]})
    assert rises["measured"]["mean"] > 0 and rises["verdict"] == "does not hold"
    harm = _entry("harmfulness_blocked", {"blocked": [5.0, 30.0, 10.0], "unblocked": [20, 20, 20]})
    assert harm["measured"]["difference"]["mean"] < 0 and harm["verdict"] == "does not hold"
    cut = _entry("rehearsal_opposes", {"rehearsal": [5.0, 12.0, 8.0], "baseline": [10, 10, 10]})
    assert cut["measured"]["difference"]["mean"] < 0 and cut["verdict"] == "does not hold"
    rho = _entry("alignment_harm_correlation", {**CORRELATION, "rho": [0.9, -0.5, 0.4]})
    assert rho["measured"]["mean"] > 0 and rho["verdict"] == "does not hold"


# ---------------------------------------------------------------- the revised claims' rules


def test_block_baseline_push_skips_a_measure_at_its_ceiling_and_says_so():
    at_ceiling = {**ORDERED, **{f"{a}:non_refusal": [100.0] * 3
                                for a in ("block", "unblocked", "push")}}
    e = _entry("block_baseline_push", at_ceiling)
    nr = e["measured"]["measures"]["non_refusal"]
    assert nr["at_bound"] is True and nr["ordered"] is False
    assert e["verdict"] == "holds"  # judged on alignment and the area under non-refusal
    assert (e["measured"]["n_judged"], e["measured"]["n_ordered"]) == (2, 2)
    # every harm measure at the ceiling: the harm ordering cannot be judged at all
    only = {k: v for k, v in at_ceiling.items() if "area" not in k}
    e = _entry("block_baseline_push", only)
    assert e["verdict"] == "not comparable"
    assert "non_refusal sit at a floor or ceiling" in e["rule"]


def test_block_baseline_push_pools_over_history_means():
    runs = _order([-0.2, -0.3, -0.2, -0.3], [0.6, 0.5, 0.6, 0.7], [0.8, 0.9, 0.7, 0.9])
    labels = ["h0", "h0", "h1", "h1"]
    (e,) = [x for x in evaluate_claims({"block_baseline_push": runs}, "tiny",
                                       groups={"block_baseline_push": labels})
            if x["id"] == "block_baseline_push"]
    lower = e["measured"]["measures"]["alignment"]["baseline_minus_block"]
    assert (lower["n"], lower["n_runs"], lower["df"]) == (2, 4, 1)
    assert lower["mean"] == pytest.approx(((0.8 + 0.8) / 2 + (0.8 + 1.0) / 2) / 2)
    assert e["measured"]["n"] == 2


def test_rehearsal_cut_is_the_size_and_a_baseline_without_reversion_is_not_comparable():
    e = _entry("rehearsal_opposes", REHEARSAL)
    m = e["measured"]
    assert m["mean"] == pytest.approx(100 * (1 - sum(REHEARSAL["rehearsal"]) / 3
                                             / (sum(REHEARSAL["baseline"]) / 3)), abs=0.2)
    assert m["ci_low"] <= 30 <= m["ci_high"] and e["size_verdict"] == "holds"
    none = _entry("rehearsal_opposes", {"rehearsal": [0.0, 0.0, 0.0], "baseline": [0.0] * 3})
    assert none["verdict"] == "not comparable" and "no cumulative reversion" in none["rule"]


def test_correlation_flags_a_bound_and_an_undefined_rho_is_not_comparable():
    e = _entry("alignment_harm_correlation",
               {**CORRELATION, "at_bound_non_refusal": [True, False, True]})
    assert e["verdict"] == "holds" and e["measured"]["n_at_bound"] == 2
    assert e["measured"]["harmful_compliance"]["mean"] == pytest.approx(0.8)
    assert e["size_verdict"] == "holds"  # 0.958 inside the interval over histories
    flat = _entry("alignment_harm_correlation", {**CORRELATION, "rho": [0.9, None, 0.8]})
    assert flat["verdict"] == "not comparable" and "undefined" in flat["rule"]


def test_one_history_is_judged_on_its_step_wise_p():
    one = {k: v[:1] for k, v in CORRELATION.items()}
    e = _entry("alignment_harm_correlation", one)
    assert e["verdict"] == "holds" and e["measured"]["p"] == 0.001
    assert e["measured"]["harmful_compliance"] == {"rho": 0.8, "p": 0.02}
    assert e["size_verdict"] == "not comparable"  # one rho, no interval
    assert _entry("alignment_harm_correlation", {**one, "p": [0.2]})["verdict"] == (
        "does not hold")
    assert _entry("alignment_harm_correlation", {**one, "rho": [-0.9]})["verdict"] == (
        "does not hold")
    assert "descriptive" in RULES["alignment_harm_correlation"]


def test_an_area_at_the_floor_is_at_a_bound_and_not_judged():
    floor = {**ORDERED, "block:area_non_refusal": [0.0] * 3, "block:non_refusal": [0.0] * 3}
    e = _entry("block_baseline_push", floor)
    measures = e["measured"]["measures"]
    assert measures["area_non_refusal"]["at_bound"] is True
    assert measures["non_refusal"]["at_bound"] is True
    assert e["verdict"] == "not comparable"  # only alignment left, no harm measure judged
    # the area is tested as its mean level: 100 x span is a ceiling, not a large area
    ceiling = {**ORDERED, **{f"{a}:area_non_refusal": [100.0 * ORDERED["span"]] * 3
                             for a in ("block", "unblocked", "push")}}
    assert _entry("block_baseline_push", ceiling)["measured"]["measures"][
        "area_non_refusal"]["at_bound"] is True


def test_readout_needs_both_scores_above_the_null_in_every_history():
    assert _entry("vocabulary_readout", {**READOUT, "lens_percentile": [99.0, 95.0]})[
        "verdict"] == "does not hold"  # 95.0 is not above the 95th percentile
    e = _entry("vocabulary_readout", READOUT)
    assert e["measured"]["n_above"] == 2 and e["measured"]["lens_percentile"] == 97.0


def test_a_missing_input_is_not_comparable_with_its_reason_never_an_exception():
    reason = "blocking.json has no 'push' arm (stage blocking did not run it in preset 'hf')."
    e = _entry("block_baseline_push", Missing(reason))
    assert e["verdict"] == "not comparable" and e["measured"] is None
    assert e["rule"].endswith(reason)
    inputs, groups = pool({"h0": {"block_baseline_push": ORDERED},
                           "h1": {"block_baseline_push": Missing(reason)}})
    assert inputs["block_baseline_push"] == Missing(f"h1: {reason}")
    assert "block_baseline_push" not in groups


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
    assert (m["k"], m["n"], m["fraction"]) == (20, 24, pytest.approx(20 / 24))
    assert not any("wilson" in k for k in m)  # run-step pairs are not independent trials
    assert e["paper"] == {"count": 24, "of": 24, "unit": "run-step pairs"}
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
    assert inputs["null_exceedance"] == {"k": 7, "n": 8, "k_per_history": [3, 4],
                                         "n_per_history": [4, 4]}
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
    assert grouped["measured"]["df"] == 1 and "history means" in grouped["rule"]
    assert "No pretest" in grouped["rule"]


def test_grouped_interval_is_over_history_means_even_when_the_histories_agree():
    # The histories agree within their runs' noise: still histories - 1 df, never runs - 1.
    values = [0.1, 0.5, 0.9, 0.12, 0.5, 0.88]
    labels = ["h0"] * 3 + ["h1"] * 3
    (e,) = [x for x in evaluate_claims({"alignment_step1": values}, "tiny",
                                       groups={"alignment_step1": labels})
            if x["id"] == "alignment_step1"]
    assert (e["measured"]["df"], e["measured"]["n_groups"]) == (1, 2)


def test_counts_are_counts_and_their_spread_is_over_history_shares():
    inputs, groups = pool({"h0": {"null_exceedance": {"k": 3, "n": 4}},
                           "h1": {"null_exceedance": {"k": 4, "n": 4}}})
    e = evaluate_claims(inputs, "tiny", groups=groups)
    (m,) = [x["measured"] for x in e if x["id"] == "null_exceedance"]
    assert (m["k"], m["n"]) == (7, 8)
    assert m["history_shares"]["mean"] == pytest.approx(0.875)
    assert (m["history_shares"]["n"], m["history_shares"]["df"]) == (2, 1)
    null = {**NULL, "all_exceed": [True, False, True, True]}
    null = {k: v + v[:1] if k != "all_exceed" else v for k, v in null.items()}
    (t,) = [x for x in evaluate_claims({"matched_null_every_trajectory": null}, "tiny",
                                       groups={"matched_null_every_trajectory":
                                               ["h0", "h0", "h1", "h1"]})
            if x["id"] == "matched_null_every_trajectory"]
    shares = t["measured"]["history_shares"]
    assert shares["mean"] == pytest.approx(0.75) and shares["n"] == 2
    assert "wilson" not in json.dumps(t)


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


def test_a_failure_at_a_ceiling_is_unresolved_in_the_headline_not_a_finding():
    e = _entry("harmfulness_unblocked", {"finetuned": [100.0, 100.0, 100.0], "safe": 100.0})
    assert e["verdict"] == "does not hold" and e["measured"]["at_bound"] is True
    e["per_history"] = {"h0": {"verdict": "does not hold"}, "h1": {"verdict": "does not hold"}}
    assert standing(e) == "unresolved"
    text = headline([e], {"harmfulness_unblocked": "fine-tuning raises harm"}, "a version")
    assert "1 is unresolved: fine-tuning raises harm (does not hold only at a floor or ceiling, "\
        "100.0% non-refusal, where no change can show)" in text
    moved = _entry("harmfulness_unblocked", {"finetuned": [1.0, 3.0, 2.5], "safe": 2.0})
    moved["per_history"] = e["per_history"]
    assert moved["measured"]["at_bound"] is False and standing(moved) == "does not hold"
