"""Residual-stream interventions: ablation removes the direction, addition shifts by s*v."""

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from gravrev.behaviour.evaluate import generate
from gravrev.interp.activations import capture, left_pad
from gravrev.interp.direction import v_rev_checkpoint_diff
from gravrev.interp.hooks import blocks
from gravrev.interp.labels import EVERY_LAYER
from gravrev.interp.steering import (
    ablate_direction,
    add_direction,
    intervention,
    judged_rates,
    mediation_sweep,
    reversion_norms,
    run_mediation,
)
from gravrev.organism.model import build_model, prompt_text
from gravrev.organism.world import World
from gravrev.stages.mediation.figures import plot_mediation

PROMPTS = [
    prompt_text(t)
    for t in ("poison reverse : a b c", "garden copy : d e f g h", "fraud shift : a b c d e")
]


def _model(smoke_cfg, smoke_tok, arch: str, seed: int = 0):
    return build_model(dataclasses.replace(smoke_cfg.model, arch=arch), smoke_tok, seed).eval()


def _directions(model, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(model.config.num_hidden_layers, model.config.hidden_size))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _run(model, tok, layers):
    """Logits, resid_post of `layers`, and the input of block 0 (the embedding output)."""
    seen = {}

    def record(_module, args):
        seen["embed"] = args[0]

    handle = blocks(model)[0].register_forward_pre_hook(record)
    try:
        with torch.no_grad(), capture(model, layers) as resid:
            logits = model(**left_pad(tok, PROMPTS)).logits
    finally:
        handle.remove()
    return logits, resid, seen["embed"]


def _hooks(model) -> int:
    return sum(len(b._forward_hooks) + len(b._forward_pre_hooks) for b in blocks(model))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("form", ["one", "per_layer"])
def test_ablation_removes_the_direction_everywhere_and_leaves_no_trace(
    smoke_cfg, smoke_tok, arch, form
):
    model = _model(smoke_cfg, smoke_tok, arch)
    n = model.config.num_hidden_layers
    v = _directions(model)
    directions = v[0] * 3.0 if form == "one" else v  # a non-unit input is normalised
    per_layer = [v[0]] * n if form == "one" else list(v)
    before, plain, plain_embed = _run(model, smoke_tok, range(n))
    with ablate_direction(model, directions):
        inside, resid, embed = _run(model, smoke_tok, range(n))
    for layer in range(n):
        u = torch.tensor(per_layer[layer], dtype=torch.float32)
        assert (resid[layer] @ u).abs().max() < 1e-5
        assert (plain[layer] @ u).abs().max() > 1e-2  # there was something to remove
    assert (embed @ torch.tensor(per_layer[0], dtype=torch.float32)).abs().max() < 1e-5
    assert not torch.allclose(inside, before)
    assert _hooks(model) == 0
    after, _, _ = _run(model, smoke_tok, [])
    assert torch.equal(after, before)


def test_ablation_of_listed_layers_only(smoke_model, smoke_tok):
    v = _directions(smoke_model)
    _, plain, plain_embed = _run(smoke_model, smoke_tok, [0, 1])
    with ablate_direction(smoke_model, {1: v[1]}):
        _, resid, embed = _run(smoke_model, smoke_tok, [0, 1])
    assert torch.equal(resid[0], plain[0]) and torch.equal(embed, plain_embed)
    assert (resid[1] @ torch.tensor(v[1], dtype=torch.float32)).abs().max() < 1e-5


def test_hooks_are_removed_when_the_body_raises(smoke_model):
    v = _directions(smoke_model)
    with pytest.raises(RuntimeError, match="boom"):
        with ablate_direction(smoke_model, v), add_direction(smoke_model, 0, v[0], 1.0):
            assert _hooks(smoke_model) > 0
            raise RuntimeError("boom")
    assert _hooks(smoke_model) == 0


def test_zero_direction_is_refused(smoke_model):
    with pytest.raises(ValueError, match="zero"):
        with ablate_direction(smoke_model, np.zeros(smoke_model.config.hidden_size)):
            pass


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_addition_shifts_exactly_that_layer(smoke_cfg, smoke_tok, arch):
    model = _model(smoke_cfg, smoke_tok, arch)
    direction = _directions(model)[1] * 0.7
    before, plain, _ = _run(model, smoke_tok, [0, 1])
    with add_direction(model, 1, direction, 0.0):
        same, _, _ = _run(model, smoke_tok, [])
    assert torch.equal(same, before)
    with add_direction(model, 1, direction, -2.5):
        _, resid, _ = _run(model, smoke_tok, [0, 1])
    assert torch.equal(resid[0], plain[0])
    expected = torch.tensor(-2.5 * direction, dtype=torch.float32).expand_as(resid[1])
    torch.testing.assert_close(resid[1] - plain[1], expected, atol=1e-5, rtol=0)


def test_add_mode_steps_by_scale_times_norm_along_v_rev(smoke_model, smoke_tok):
    """+scale moves the projection on v_rev[layer] up by scale * norms[layer]; the sign holds."""
    v, norms = _directions(smoke_model), np.array([0.5, 4.0])
    _, plain, _ = _run(smoke_model, smoke_tok, [1])
    u = torch.tensor(v[1], dtype=torch.float32)
    for scale in (-1.0, 2.0):
        with intervention(smoke_model, "add", v, 1, scale, norms):
            _, resid, _ = _run(smoke_model, smoke_tok, [1])
        moved = (resid[1] @ u - plain[1] @ u).mean()
        assert float(moved) == pytest.approx(scale * 4.0, abs=1e-4)
    with pytest.raises(ValueError, match="norms"):
        intervention(smoke_model, "add", v, 1, 1.0)
    with pytest.raises(ValueError, match="mode"):
        intervention(smoke_model, "steer", v, 1, 1.0, norms)


def test_reversion_norms_is_the_mean_difference_norm():
    rng = np.random.default_rng(0)
    safe = rng.normal(size=(3, 10, 5))
    offset = np.array([[3.0, 4.0, 0, 0, 0], [0, 0, 1.0, 0, 0], [1.0, 1.0, 1.0, 1.0, 0]])
    helpful = safe + offset[:, None, :]
    mask = np.ones(10, dtype=bool)
    norms = reversion_norms(helpful, safe, mask)
    np.testing.assert_allclose(norms, [5.0, 1.0, 2.0])
    np.testing.assert_allclose(v_rev_checkpoint_diff(helpful, safe, mask) * norms[:, None], offset)


def test_interventions_act_during_generation(smoke_model, smoke_tok):
    v, norms = _directions(smoke_model), np.array([1.0, 1.0])
    plain = generate(smoke_model, smoke_tok, PROMPTS, "cpu", max_new_tokens=4)
    with intervention(smoke_model, "add", v, 1, 0.0, norms):
        assert generate(smoke_model, smoke_tok, PROMPTS, "cpu", max_new_tokens=4) == plain
    with intervention(smoke_model, "add", v, 1, 200.0, norms):
        assert generate(smoke_model, smoke_tok, PROMPTS, "cpu", max_new_tokens=4) != plain


@pytest.fixture
def requests(smoke_cfg):
    return World(smoke_cfg.world).probe_requests("harmful", 6, offset=1)


def test_mediation_sweep_rows(smoke_cfg, smoke_model, smoke_tok, requests):
    world = World(smoke_cfg.world)
    v, norms = _directions(smoke_model), np.array([1.0, 2.0])
    base = judged_rates(smoke_model, smoke_tok, requests, "cpu", world)
    add = mediation_sweep(
        smoke_model,
        smoke_tok,
        requests,
        v,
        [0, 1],
        (-1, 0, 1),
        "cpu",
        "add",
        world=world,
        norms=norms,
    )
    assert list(add.columns) == [
        "mode",
        "layer",
        "scale",
        "refusal_rate",
        "harmful_compliance",
        "n",
    ]
    assert len(add) == 6 and (add["n"] == len(requests)).all()
    zero = add[add["scale"] == 0]
    assert (zero["refusal_rate"] == base.refusal_rate).all()
    assert (zero["harmful_compliance"] == base.harmful_compliance).all()
    ablate = mediation_sweep(
        smoke_model, smoke_tok, requests, v, [1], (), "cpu", "ablate", world=world
    )
    assert ablate["layer"].tolist() == [1, EVERY_LAYER] and ablate["scale"].isna().all()
    with pytest.raises(ValueError, match="mode"):
        mediation_sweep(smoke_model, smoke_tok, requests, v, [1], (0,), "cpu", "x", world=world)


def test_run_mediation_and_its_plot(smoke_cfg, smoke_tok, requests):
    world = World(smoke_cfg.world)
    helpful, safe = (_model(smoke_cfg, smoke_tok, "gpt2", seed) for seed in (0, 1))
    v = _directions(helpful)
    result = run_mediation(
        helpful,
        safe,
        smoke_tok,
        requests,
        v,
        np.ones(2),
        (-1, 0, 1),
        "cpu",
        world=world,
        layers=[1],
    )
    assert result.baseline["checkpoint"].tolist() == ["θ_H", "θ_S"]
    assert len(result.add_helpful) == len(result.add_safe) == 3
    assert len(result.ablate_safe) == 2
    combined = result.combined()
    assert len(combined) == 8 and set(combined["checkpoint"]) == {"θ_H", "θ_S"}
    fig = plot_mediation(combined)
    assert fig._suptitle.get_text() and all(ax.get_xlabel() for ax in fig.axes)
    plt.close(fig)
