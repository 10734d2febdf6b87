"""The defenses: each objective on tiny hand-made cases, and the harm-blind matched-cost choice."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from gravrev.config.fields import ConfigError
from gravrev.config.load import resolve
from gravrev.stages.defenses.metrics import (
    UNMET,
    DefensesMetrics,
    choose_strengths,
    defenses_metrics,
)
from gravrev.training.defenses import (
    DefenseSpec,
    answer_positions,
    beta_schedule,
    constrained_token_loss,
    make_defense,
    outside_span,
    proximal_term,
)
from gravrev.training.loop import IGNORE

# ----------------------------------------------------------------------------- constrained_sft


def _loss(p: float, q: float, beta: float) -> float:
    logp = torch.tensor([math.log(p)])
    return float(constrained_token_loss(logp, torch.tensor([math.log(q)]),
                                        torch.tensor([beta])))


@pytest.mark.parametrize("q", [0.05, 0.3, 0.8])
def test_constrained_loss_is_minimised_from_theta_s_probability_on(q):
    """With a tight beta, p = p_S already sits within (2/beta) log 2 of the loss's infimum (0),
    and every p below p_S costs about 2 log(p_S / p) more: no gain past theta_S's probability."""
    beta = 200.0
    slack = 2 / beta * math.log(2)
    grid = np.linspace(0.001, 0.999, 500)
    losses = np.array([_loss(p, q, beta) for p in grid])
    assert _loss(q, q, beta) == pytest.approx(slack, rel=1e-6)
    assert losses.min() >= 0 and _loss(q, q, beta) - losses.min() <= slack
    below = grid < q * 0.9
    assert (losses[below] >= 2 * np.log(q / grid[below]) - slack).all()
    assert (losses[below] > _loss(q, q, beta) + 0.1).all()


def test_constrained_gradient_is_the_cross_entropys_at_theta_s_and_vanishes_above():
    logp = torch.tensor([math.log(0.3), math.log(0.9)], requires_grad=True)
    ref = torch.tensor([math.log(0.3), math.log(0.1)])
    constrained_token_loss(logp, ref, torch.tensor([2.0, 2.0])).backward()
    # d/dlogp of the mean: -2 sigmoid(-beta z) / n; at z = 0 the cross-entropy's -1 / n
    assert logp.grad[0].item() == pytest.approx(-0.5)
    exact = -1 / (1 + math.exp(2 * math.log(9)))  # -2 sigmoid(-2 log 9) / 2: p = 9 p_S
    assert logp.grad[1].item() == pytest.approx(exact) and exact > -0.02
    small = torch.tensor([math.log(0.9)], requires_grad=True)
    constrained_token_loss(small, ref[1:], torch.tensor([1e-4])).backward()
    assert small.grad.item() == pytest.approx(-1.0, abs=1e-3)  # beta -> 0: plain SFT


def test_beta_schedule_over_answer_positions():
    labels = torch.tensor([[IGNORE, IGNORE, 5, 6, 7, 8], [IGNORE, 5, 6, IGNORE, IGNORE, IGNORE]])
    pos = answer_positions(labels)
    assert pos.tolist() == [[0, 0, 1, 2, 3, 4], [0, 1, 2, 0, 0, 0]]
    beta = beta_schedule(pos, 2.0, prefix=2)
    assert beta[0, 2:].tolist() == pytest.approx([1.0, 4.0, 0.2, 0.2])


# ----------------------------------------------------------------------------- proximal


def test_proximal_term_is_zero_with_zero_gradient_at_w_s():
    anchor = [torch.randn(3, 4), torch.randn(5)]
    params = [a.clone().requires_grad_(True) for a in anchor]
    term = proximal_term(params, anchor, rho=3.0)
    term.backward()
    assert term.item() == 0.0
    assert all((p.grad == 0).all() for p in params)
    moved = [(a + 0.5).requires_grad_(True) for a in anchor]
    assert proximal_term(moved, anchor, 2.0).item() == pytest.approx(0.25 * 17)


def test_proximal_objective_is_zero_at_theta_s():
    model = torch.nn.Linear(3, 2)
    obj = make_defense(DefenseSpec("proximal", 1.0))
    obj.prepare(model, 0)
    assert obj.extra_loss(model).item() == 0.0


# ----------------------------------------------------------------------------- weight_direction


def test_outside_span_is_zero_inside_the_direction_and_whole_without_one():
    d = torch.randn(4, 3)
    assert outside_span(2.5 * d, d).abs().max().item() < 1e-6
    u = torch.randn(4, 3)
    out = outside_span(u, d)
    assert abs(float(out @ d.flatten())) < 1e-5 and out.norm() > 0
    assert torch.equal(outside_span(u, torch.zeros(4, 3)), u.flatten())


def test_weight_direction_penalty_is_zero_for_an_update_inside_the_span():
    torch.manual_seed(0)
    safe, helpful = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    obj = make_defense(DefenseSpec("weight_direction", 4.0), helpful)
    obj.prepare(safe, 0)
    with torch.no_grad():  # move every tensor along its own W_S - W_H
        for p, h in zip(safe.parameters(), helpful.parameters(), strict=True):
            p.add_(0.7 * (p - h))
    assert obj.extra_loss(safe).item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        safe.weight[0, 0] += 1.0
    assert obj.extra_loss(safe).item() > 0


def test_weight_direction_moves_theta_h_to_the_trained_models_device():
    """θ_H loaded on another device than θ_S (here the CPU against meta, as CPU against CUDA):
    the penalty's tensors sit on the trained parameters' device."""
    safe, helpful = torch.nn.Linear(3, 2, device="meta"), torch.nn.Linear(3, 2)
    obj = make_defense(DefenseSpec("weight_direction", 4.0), helpful)
    obj.prepare(safe, 0)
    assert len(obj.directions) == len(obj.params) == 2
    for p, a, d in zip(obj.params, obj.anchor, obj.directions, strict=True):
        assert p.device == a.device == d.device == torch.device("meta")


# ----------------------------------------------------------------------------- matched cost


def fixture() -> pd.DataFrame:
    """Two histories x one seed: the baseline, arm A (strength 3 costs too much new task) and
    arm B (every strength costs too much benign accuracy)."""
    rows = []

    def add(arm, g, new, benign, harm):
        for h, shift in (("h0", 1.0), ("h1", -1.0)):
            rows.append({"arm": arm, "strength": g, "history": h, "seed": 1,
                         "new_task_accuracy": new + shift, "benign_accuracy": benign,
                         "non_refusal": harm + shift, "harmful_compliance": harm - 5,
                         "alignment": 0.5 - harm / 200})

    add("baseline", 0.0, 80.0, 90.0, 60.0)
    for g, new, harm in ((1.0, 79.0, 50.0), (2.0, 76.0, 40.0), (3.0, 60.0, 10.0)):
        add("A", g, new, 90.0, harm)
    for g, benign, harm in ((0.1, 80.0, 30.0), (1.0, 70.0, 20.0)):
        add("B", g, 80.0, benign, harm)
    add("block", 1.0, 78.0, 89.0, 20.0)
    return pd.DataFrame(rows)


def test_choice_is_the_strongest_strength_within_the_cost_tolerance():
    chosen = choose_strengths(fixture(), tolerance=5.0)
    assert (chosen["A"].strength, chosen["A"].met) == (2.0, True)
    assert chosen["A"].new_task_cost == pytest.approx(4.0)
    assert (chosen["B"].strength, chosen["B"].met) == (0.1, False)  # none met: the weakest
    assert chosen["block"].met


def test_choice_never_reads_harm():
    final = fixture()
    rng = np.random.default_rng(0)
    for col in ("non_refusal", "harmful_compliance", "alignment"):
        final[col] = rng.permutation(final[col].to_numpy())
    assert choose_strengths(final, 5.0) == choose_strengths(fixture(), 5.0)


def test_a_setting_without_the_new_task_is_matched_on_benign_accuracy():
    final = fixture().assign(new_task_accuracy=math.nan)
    chosen = choose_strengths(final, 5.0)
    assert chosen["A"].strength == 3.0 and chosen["A"].met
    assert math.isnan(chosen["A"].new_task_cost)


def test_metrics_verdicts_and_their_json_round_trip():
    cfg = resolve({"preset": "smoke"})
    metrics = defenses_metrics(cfg, fixture(), {"histories": ["h0", "h1"], "seeds": [1]})
    a = metrics.arms["A"]
    assert a.harm_reduction["non_refusal"].mean == pytest.approx(20.0)  # 60 - 40
    assert a.block_minus_arm["non_refusal"].mean == pytest.approx(-20.0)
    assert metrics.arms["B"].flag == UNMET and metrics.arms["block"].block_minus_arm == {}
    back = DefensesMetrics.from_json(json.loads(json.dumps(metrics.to_json())))
    assert back.to_json() == metrics.to_json()
    assert back.arms["A"].verdicts == a.verdicts


@pytest.mark.parametrize("override,field", [
    ({"arms": ["proximal"]}, "defenses.arms"),
    ({"arms": ["block", "prayer"]}, "defenses.arms"),
    ({"proximal_grid": [1.0, 0.1]}, "defenses.proximal_grid"),
    ({"rehearsal_grid": [0.5, 1.5]}, "defenses.rehearsal_grid"),
    ({"n_histories": -1}, "defenses.n_histories"),
    ({"n_histories": 9}, "defenses.n_histories"),  # tiny has 8 histories
    ({"n_seeds": 2}, "defenses.n_seeds"),  # and one fine-tuning seed
])
def test_bad_defenses_config_names_its_field(override, field):
    with pytest.raises(ConfigError, match=field):
        resolve({"preset": "tiny", "defenses": override})


def test_the_chapter_words_table_and_frontier_from_the_fixture():
    from gravrev.stages.defenses import report
    from gravrev.stages.defenses.metrics import DefensesResult, frontier

    cfg = resolve({"preset": "smoke"})
    final = fixture()
    metrics = defenses_metrics(cfg, final, {"histories": ["h0", "h1"], "seeds": [1]})
    r = DefensesResult(final, frontier(final), metrics)
    table = report.matched_table(r)
    assert list(table.columns[:3]) == ["arm", "block vs it: non-refusal",
                                       "block vs it: harmful compliance"]
    words = " ".join(report.findings(cfg, r))
    assert "No strength met the cost rule for B" in words
    assert "2 of 2 histories" in words
    fig = report.frontier(r.frontier, {a: v.choice.strength for a, v in metrics.arms.items()},
                          "rotate")
    assert len(fig.axes) == 2
