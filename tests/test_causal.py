"""The causal test's library pieces (issue 22): block and push, rehearsal, the refusal
direction, the vocabulary readout, cumulative reversion, step correlations and the null."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from gravrev.behaviour.evaluate import eval_sets
from gravrev.config.load import resolve
from gravrev.interp.activations import left_pad, probe_activations_grad
from gravrev.interp.direction import direction_cosines, refusal_direction
from gravrev.interp.readout import (
    ReadoutTokens,
    logit_change,
    null_rank,
    readout_score,
    unembed_direction,
    vocabulary_readout,
    world_tokens,
)
from gravrev.organism.model import build_model, build_tokenizer, prompt_text, save_checkpoint
from gravrev.organism.world import COMPLY, REFUSAL, World, topic_content
from gravrev.settings.protocol import OrganismSetting
from gravrev.stats.nulls import monte_carlo_quantile
from gravrev.stats.trajectories import (
    area_under,
    beats_null,
    correlation_by_history,
    cumulative_reversion,
    reversion_cut,
    step_correlation,
)
from gravrev.training.finetune import finetune_run
from gravrev.training.loop import IGNORE, encode_pairs
from gravrev.training.objectives import BlockSpec, Penalty, make_objective, push_targets
from gravrev.training.phases import phase_batch, probe_set, safety_pairs
from gravrev.training.rehearsal import Rehearsal, RehearsalSpec

LAYER = 1  # the smoke model's last block: its MLP bias moves resid_post there directly
POOL = tuple(prompt_text(f"poison copy : {s}") for s in ("a b c", "b c d", "c d e", "d e f"))


def _unit(d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=d)
    return v / np.linalg.norm(v)


def _mean_projection(model, tok, v: np.ndarray) -> float:
    """Mean projection of the pool's last-token resid_post at LAYER on v."""
    with torch.no_grad():
        acts = probe_activations_grad(model, left_pad(tok, list(POOL)), [LAYER], "last")[LAYER]
    return float(acts.double().mean(0) @ torch.as_tensor(v))


def _shift(model, v: np.ndarray, by: float) -> None:
    """Move every token's resid_post at LAYER by `by` along v (through the MLP output bias)."""
    with torch.no_grad():
        model.transformer.h[LAYER].mlp.c_proj.bias += by * torch.as_tensor(v, dtype=torch.float32)


def _objective(kind: str, model, tok, v: np.ndarray, target: float = 0.0):
    spec = BlockSpec(kind, {LAYER: v}, 1.0, POOL, len(POOL),
                     targets={LAYER: target} if kind == "push" else {})
    obj = make_objective(spec, tok, "cpu")
    obj.prepare(model, 1)  # the model as it is now plays theta_S
    return obj


def _sgd_step(model, loss: torch.Tensor, lr: float = 0.05) -> None:
    model.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad


# ----------------------------------------------------------------------------- block and push


def test_block_pulls_a_raised_projection_down_and_leaves_theta_s_alone(smoke_model, smoke_tok):
    v = _unit(smoke_model.config.n_embd)
    block = _objective("block", smoke_model, smoke_tok, v)
    loss = block.extra_loss(smoke_model)
    assert float(loss.detach()) == 0.0  # at theta_S nothing has moved: nothing to oppose
    _shift(smoke_model, v, 0.5)  # every prompt moves +0.5 along v, as fine-tuning might
    before = _mean_projection(smoke_model, smoke_tok, v)
    loss = block.extra_loss(smoke_model)
    assert float(loss.detach()) == pytest.approx(0.5, rel=1e-4)
    _sgd_step(smoke_model, loss)
    assert _mean_projection(smoke_model, smoke_tok, v) < before - 1e-3


def test_push_raises_the_projection_and_its_bound_stops_it(smoke_model, smoke_tok):
    v = _unit(smoke_model.config.n_embd)
    push = _objective("push", smoke_model, smoke_tok, v, target=1.0)
    before = _mean_projection(smoke_model, smoke_tok, v)
    loss = push.extra_loss(smoke_model)
    assert float(loss.detach()) == pytest.approx(1.0, rel=1e-4)  # lambda * target at theta_S
    _sgd_step(smoke_model, loss)
    assert _mean_projection(smoke_model, smoke_tok, v) > before + 1e-3
    _shift(smoke_model, v, 2.0)  # past the target: zero loss and zero gradient
    loss = push.extra_loss(smoke_model)
    assert float(loss.detach()) == 0.0
    smoke_model.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in smoke_model.parameters() if p.grad is not None]
    assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_block_and_push_share_the_penalty_minibatch_stream(smoke_model, smoke_tok):
    """Same seed, same pool prompts each step as the hold-still penalty: only the term differs."""
    v = _unit(smoke_model.config.n_embd)
    spec = BlockSpec("penalty", {LAYER: v}, 1.0, POOL, 2)
    draws = {}
    for kind in ("penalty", "block", "push"):
        obj = make_objective(BlockSpec(kind, spec.directions, 1.0, POOL, 2,
                                       targets={LAYER: 1.0} if kind == "push" else {}),
                             smoke_tok, "cpu")
        assert isinstance(obj, Penalty)
        obj.prepare(smoke_model, 3)
        draws[kind] = [obj.rng.choice(len(POOL), size=2, replace=False).tolist()
                       for _ in range(3)]
    assert draws["penalty"] == draws["block"] == draws["push"]


def test_push_needs_a_positive_target_per_layer():
    v = _unit(4)
    with pytest.raises(ValueError, match="target"):
        BlockSpec("push", {0: v}, 1.0, POOL, 2)
    with pytest.raises(ValueError, match="target"):
        BlockSpec("push", {0: v}, 1.0, POOL, 2, targets={0: -1.0})
    assert BlockSpec("push", {0: v}, 1.0, POOL, 2, targets={0: 0.3}).targets == {0: 0.3}


def test_push_targets_are_theta_h_displacement_along_each_direction():
    safe = {0: np.zeros((3, 2)), 1: np.ones((3, 2))}
    helpful = {0: np.array([[2.0, 0.0]] * 3), 1: np.array([[1.0, 4.0]] * 3)}
    dirs = {0: np.array([1.0, 0.0]), 1: np.array([0.0, 1.0])}
    assert push_targets(helpful, safe, dirs) == {0: 2.0, 1: 3.0}
    with pytest.raises(ValueError, match="positive side"):
        push_targets(helpful, safe, {0: np.array([-1.0, 0.0])})


# ----------------------------------------------------------------------------- rehearsal


@pytest.fixture(scope="module")
def world(smoke_cfg):
    return World(smoke_cfg.world)


@pytest.fixture(scope="module")
def pairs(smoke_cfg, world):
    return safety_pairs(world, smoke_cfg.history.safe, 0, smoke_cfg.history.safe_replay)


def test_safety_pairs_are_requests_phase_s_trained_to_refuse(smoke_cfg, smoke_tok, world, pairs):
    """Every pair appears, with the refusal as its label, in the S batches of history 0."""
    rng = np.random.default_rng(2)  # seeds.safe_phase(0)
    refused = set()
    for _ in range(smoke_cfg.history.safe.steps):
        b = phase_batch(world, smoke_tok, "safe", rng, smoke_cfg.history.safe.batch_size,
                        smoke_cfg.history.safe_replay)
        for ids, lab in zip(b["input_ids"], b["labels"], strict=True):
            prompt = smoke_tok.decode(ids[(lab == IGNORE) & (ids != smoke_tok.pad_token_id)])
            if smoke_tok.decode(lab[lab != IGNORE]).split()[:3] == list(REFUSAL):
                refused.add(prompt)
    assert pairs and {prompt_text(r.text) for r in pairs} <= refused
    assert all(r.harmful for r in pairs)


def test_safety_pairs_never_hold_a_held_out_prompt(smoke_cfg, world, pairs):
    train = set(world.train_seqs)
    assert all(r.symbols in train for r in pairs)
    measured = probe_set(world, smoke_cfg.world.n_probes)
    measured += [r for rs in eval_sets(world, smoke_cfg.world.n_eval).values() for r in rs]
    assert not {r.text for r in pairs} & {r.text for r in measured}


def test_rehearsal_replaces_a_fixed_share_with_safety_pairs_only(smoke_tok, world, pairs):
    spec = RehearsalSpec.from_requests(world, pairs, 0.25)
    reqs = [world.sample_request(np.random.default_rng(i), ("garden", "music"), ("copy",))
            for i in range(16)]
    benign = encode_pairs(smoke_tok, [prompt_text(r.text) for r in reqs],
                          [world.answer(r, safe=True) for r in reqs])
    allowed = {(p, a) for p, a in spec.pairs}
    rehearsal = Rehearsal(spec, smoke_tok, seed=1)
    for _ in range(3):
        mixed = rehearsal.mix(benign)
        assert mixed["input_ids"].shape[0] == 16 and spec.rows(16) == 4
        for i in range(16):
            ids, lab = mixed["input_ids"][i], mixed["labels"][i]
            real = mixed["attention_mask"][i] == 1
            prompt = smoke_tok.decode(ids[real & (lab == IGNORE)])
            answer = smoke_tok.decode(lab[lab != IGNORE][:-1])  # without the eos
            if i < 12:  # the benign rows, untouched
                n = int(benign["attention_mask"][i].sum())
                assert torch.equal(ids[:n], benign["input_ids"][i, :n])
                assert torch.equal(lab[:n], benign["labels"][i, :n])
            else:
                assert (prompt, answer) in allowed
    first, again = (Rehearsal(spec, smoke_tok, seed=1).mix(benign) for _ in range(2))
    assert torch.equal(first["input_ids"], again["input_ids"])  # a named seed stream


def test_rehearsal_spec_checks_its_share_and_pairs(world, pairs):
    with pytest.raises(ValueError, match="share"):
        RehearsalSpec.from_requests(world, pairs, 0.0)
    benign = world.sample_request(np.random.default_rng(0), ("garden",), ("copy",))
    with pytest.raises(ValueError, match="harmful"):
        RehearsalSpec.from_requests(world, [benign], 0.25)


@pytest.fixture(scope="module")
def random_history(tmp_path_factory, smoke_cfg):
    """A random-weight smoke model saved as both theta_H and theta_S: enough to fine-tune."""
    folder = tmp_path_factory.mktemp("h0")
    tok = build_tokenizer(smoke_cfg.world)
    model = build_model(smoke_cfg.model, tok, 0)
    for name in ("helpful", "safe"):
        save_checkpoint(model, tok, folder / name)
    return folder


def test_finetune_with_rehearsal_keeps_the_benign_draws_and_changes_the_training(
        smoke_cfg, random_history, pairs, world):
    cfg = resolve({"preset": "smoke", "finetune": {"steps": 2, "warmup": 1, "log_steps": [2],
                                                   "early_steps": [1]}})
    setting = OrganismSetting(cfg, random_history)
    plain = finetune_run(cfg.finetune, setting, 1, "cpu", judge="none")
    spec = RehearsalSpec.from_requests(world, pairs, 0.25)
    mixed = finetune_run(cfg.finetune, setting, 1, "cpu", judge="none",
                         rehearsal=Rehearsal(spec, setting.tokenizer, 1))
    assert mixed.batch_hash == plain.batch_hash
    assert not np.array_equal(mixed.acts["last"][-1], plain.acts["last"][-1])
    np.testing.assert_array_equal(mixed.acts["last"][0], plain.acts["last"][0])


# ----------------------------------------------------------------------------- directions


def test_refusal_direction_is_the_unit_harmful_minus_benign_mean():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2, 6, 3))
    harmful = np.array([True, True, True, False, False, False])
    acts = base.copy()
    acts[:, harmful] = base[:, ~harmful] + np.array([2.0, 0.0, 0.0])  # same rows, shifted
    r = refusal_direction(acts, harmful)
    np.testing.assert_allclose(r, [[1.0, 0.0, 0.0]] * 2, atol=1e-12)
    v = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(direction_cosines(v, r), [-1.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="both"):
        refusal_direction(acts, np.ones(6, dtype=bool))


# ----------------------------------------------------------------------------- readout


def test_world_tokens_are_the_compliant_and_refusal_openings(smoke_tok, world):
    reqs = probe_set(world, 4)
    tokens = world_tokens(world, smoke_tok, reqs)
    opening = {world.answer(r, safe=False).split()[0] for r in reqs}
    assert tokens.engaging == tuple(sorted(smoke_tok.convert_tokens_to_ids(sorted(opening))))
    if world.cfg.opening == "sure":
        assert opening == {COMPLY}
    else:  # answers open with their content: each topic's first content word
        assert opening == {topic_content(r.topic)[0] for r in reqs}
    assert tokens.refusal == (smoke_tok.convert_tokens_to_ids(REFUSAL[0]),)


def test_readout_score_and_null_rank_by_hand():
    tokens = ReadoutTokens(engaging=(0, 1), refusal=(3,))
    assert readout_score(np.array([1.0, 3.0, 9.0, -1.0]), tokens) == pytest.approx(3.0)
    rank = null_rank(2.0, np.array([0.0, 1.0, 2.0, 3.0]))
    assert (rank.rank, rank.n_null, rank.percentile) == (2, 4, 50.0)
    assert rank.p_value == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="both"):
        ReadoutTokens(engaging=(1,), refusal=(1,))


def test_unembed_direction_is_linear_and_blind_to_a_constant_shift(smoke_model):
    d = smoke_model.config.n_embd
    v = _unit(d)
    lens = unembed_direction(smoke_model, v)
    assert lens.shape == (smoke_model.config.vocab_size,)
    np.testing.assert_allclose(unembed_direction(smoke_model, 2 * v), 2 * lens, atol=1e-10)
    # A LayerNorm removes a constant shift.
    np.testing.assert_allclose(unembed_direction(smoke_model, v + 3.0), lens, atol=1e-10)


def test_vocabulary_readout_ranks_an_engaging_direction_first(smoke_model, smoke_tok, world):
    tokens = world_tokens(world, smoke_tok, probe_set(world, 4))
    w_u = smoke_model.get_output_embeddings().weight.detach().double().numpy()
    toward = w_u[tokens.engaging[0]] - w_u[tokens.refusal[0]]  # the lens's best direction
    prompts = [prompt_text(r.text) for r in probe_set(world, 4)]
    out = vocabulary_readout(smoke_model, smoke_tok, prompts, LAYER, toward, 0.5, tokens,
                             n_null=20, history_seed=0, device="cpu")
    assert out.lens_rank.rank == 1 and out.lens_rank.score > 0
    assert out.change.shape == out.lens.shape == (smoke_model.config.vocab_size,)
    assert out.change_rank.n_null == 20 and 1 <= out.change_rank.rank <= 21
    same = vocabulary_readout(smoke_model, smoke_tok, prompts, LAYER, toward, 0.5, tokens,
                              n_null=20, history_seed=0, device="cpu")
    assert same.change_rank == out.change_rank  # the null's directions are a named stream
    zero = logit_change(smoke_model, smoke_tok, prompts, LAYER, toward, 0.0, "cpu")
    assert np.all(zero == 0)


# ----------------------------------------------------------------------------- trajectories


def test_cumulative_reversion_is_the_trapezoid_of_the_positive_projection():
    steps = [0, 1, 3, 5]
    proj = [0.0, 2.0, -1.0, 1.0]
    out = cumulative_reversion(steps, proj, [0.0, 50.0, 100.0, 100.0])
    # clipped: 0, 2, 0, 1 -> (0+2)/2*1 + (2+0)/2*2 + (0+1)/2*2
    assert out.reversion == pytest.approx(1.0 + 2.0 + 1.0)
    assert out.non_refusal == pytest.approx(25.0 + 150.0 + 200.0)
    assert out.span == 5.0
    assert area_under(steps, [1.0] * 4) == pytest.approx(5.0)
    assert reversion_cut(7.0, 10.0) == pytest.approx(30.0)
    with pytest.raises(ValueError, match="increasing"):
        area_under([0, 2, 1], [0, 0, 0])


def test_step_correlation_matches_scipy_and_flags_a_ceiling():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = np.round(x + rng.normal(size=12), 0)  # ties in y
    expected = stats.spearmanr(x, y)
    got = step_correlation(x, y)
    assert got.rho == pytest.approx(expected.statistic, abs=1e-12)
    assert got.p == pytest.approx(expected.pvalue, abs=1e-12)
    assert got.n == 12 and not got.flagged
    harm = np.array([20.0, 60.0, 100.0, 100.0, 100.0, 100.0])
    flagged = step_correlation(np.arange(6.0), harm, ("alignment", "non_refusal"))
    assert flagged.at_bound == ("non_refusal",)


def test_correlation_by_history_averages_runs_then_correlates():
    rows = []
    for h, sign in (("h0", 1.0), ("h1", -1.0)):
        for seed in (1, 2, 3):
            for step in (1, 2, 5, 10):
                rows.append({"history": h, "seed": seed, "step": step,
                             "alignment": step + 0.1 * seed,
                             "harm": sign * step ** 2 + seed})
    frame = pd.DataFrame(rows)
    out = correlation_by_history(frame, "alignment", "harm")
    assert [(c.history, c.n_runs) for c in out] == [("h0", 3), ("h1", 3)]
    assert out[0].correlation.rho == pytest.approx(1.0)
    assert out[1].correlation.rho == pytest.approx(-1.0)
    assert out[0].correlation.n == 4  # steps, not runs x steps
    with pytest.raises(ValueError, match="different steps"):
        correlation_by_history(frame.drop(index=0), "alignment", "harm")


@pytest.mark.parametrize(("draw", "q", "expected"), [
    (lambda rng, n: rng.uniform(size=n), 0.99, 0.99),
    (lambda rng, n: rng.standard_normal(n), 0.99, stats.norm.ppf(0.99)),
    (lambda rng, n: rng.standard_normal(n), 0.95, stats.norm.ppf(0.95)),
])
def test_null_quantile_on_a_known_distribution(draw, q, expected):
    null = draw(np.random.default_rng(0), 200_000)
    threshold, se = monte_carlo_quantile(null, q)
    assert abs(threshold - expected) < 4 * se
    check = beats_null([expected + 0.05, expected + 0.1, expected - 0.1], null, q)
    assert (check.n_exceed, check.n, check.all_exceed) == (2, 3, False)
    assert check.threshold == threshold and check.n_null == 200_000
    assert beats_null([expected + 0.05], null, q).all_exceed
