"""One history and benign fine-tuning on the smoke organism: determinism, pairing, real blocks."""

import hashlib

import numpy as np
import pytest
import torch

from gravrev.config.load import resolve
from gravrev.interp.hooks import blocks
from gravrev.organism.model import (
    build_model,
    build_tokenizer,
    load_checkpoint,
    prompt_text,
    save_checkpoint,
)
from gravrev.settings.protocol import OrganismSetting
from gravrev.store.atomic import read_npz
from gravrev.training.finetune import finetune_run, flat_params, weight_cosine
from gravrev.training.loop import encode_pairs, lm_loss, token_ids
from gravrev.training.objectives import (
    Baseline,
    BlockSpec,
    Freeze,
    GradProject,
    Penalty,
    frozen_modules,
    make_objective,
)
from gravrev.training.phases import evenly
from gravrev.training.tasks import FinetuneTask, HistoryTask, finetune_task, history_run

CFG = resolve({
    "preset": "smoke",
    "world": {"n_probes": 8, "n_eval": 8},
    "history": {"seeds": [0], "helpful": {"steps": 6}, "safe": {"steps": 4},
                "safe_snapshots": 3},
    "finetune": {"seeds": [1], "steps": 3, "warmup": 1, "log_steps": [1, 3],
                 "early_steps": [1, 2]},
    "defenses": {"n_histories": 0},  # smoke's 2 would exceed the one history
})
N_HARMFUL = CFG.world.n_probes  # probe_set: n harmful, then n benign


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _history(root, name: str = "h0"):
    """theta_P (random init, saved once per root) and one H -> S history under root/name."""
    tok = build_tokenizer(CFG.world)
    if not (root / "pretrained").is_dir():
        save_checkpoint(build_model(CFG.model, tok, 0), tok, root / "pretrained")
    task = HistoryTask(CFG, name, 0, CFG.history.helpful, CFG.history.safe,
                       root / "pretrained", root / name)
    return history_run(task)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("histories")
    _history(root)
    return root


@pytest.fixture(scope="module")
def folder(root):
    return root / "h0"


def _unit(d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=d)
    return v / np.linalg.norm(v)


# ----------------------------------------------------------------------------- history


def test_history_run_writes_both_checkpoints_their_activations_and_the_trajectory(folder):
    for name in ("helpful", "safe"):
        assert (folder / name / "model.safetensors").is_file(), name
        acts = read_npz(folder / f"acts_{name}.npz")
        shape = (CFG.model.n_layer, 2 * N_HARMFUL, CFG.model.n_embd)
        assert acts["last"].shape == acts["mean"].shape == shape
    traj = read_npz(folder / "safe_trajectory.npz")
    assert list(traj["steps"]) == evenly(CFG.history.safe.steps, CFG.history.safe_snapshots)
    assert traj["last"].shape[0] == len(traj["steps"])
    # The S trajectory starts at theta_H and ends at theta_S.
    for pos in ("last", "mean"):
        start, end = read_npz(folder / "acts_helpful.npz"), read_npz(folder / "acts_safe.npz")
        np.testing.assert_allclose(traj[pos][0], start[pos], atol=1e-6)
        np.testing.assert_allclose(traj[pos][-1], end[pos], atol=1e-6)
    assert not np.allclose(traj["last"][0], traj["last"][-1])  # S moved the model


def test_history_run_is_deterministic_and_leaves_theta_p_alone(root):
    before = _sha(root / "pretrained" / "model.safetensors")
    again = _history(root, "h0_again")
    assert _sha(root / "pretrained" / "model.safetensors") == before
    for name in ("helpful", "safe"):
        a = _sha(root / "h0" / name / "model.safetensors")
        assert a == _sha(root / "h0_again" / name / "model.safetensors"), name
    assert list(again.behaviour["checkpoint"]) == ["helpful", "safe"]
    assert set(again.behaviour["history"]) == {"h0_again"}
    assert {"refusal_rate", "harmful_compliance", "benign_accuracy"} <= set(again.behaviour)
    assert set(again.curves["phase"]) == {"helpful", "safe"}
    assert (again.curves["phase"] == "safe").sum() == CFG.history.safe.steps


# ----------------------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def plain(folder):
    """The unblocked run of seed 1, judged at both ends, shared by the pairing tests."""
    return finetune_run(CFG.finetune, OrganismSetting(CFG, folder), 1, "cpu", judge="ends")


def test_same_seed_gives_identical_runs(plain, folder):
    again = finetune_run(CFG.finetune, OrganismSetting(CFG, folder), 1, "cpu", judge="ends")
    assert again.batch_hash == plain.batch_hash
    assert again.log.equals(plain.log)
    assert list(plain.steps) == [0, 1, 3]
    for k in ("last", "mean"):
        shape = (3, CFG.model.n_layer, 2 * N_HARMFUL, CFG.model.n_embd)
        assert plain.acts[k].shape == shape
        np.testing.assert_array_equal(again.acts[k], plain.acts[k])
    assert not np.array_equal(plain.acts["last"][0], plain.acts["last"][-1])  # it trained


def test_fine_tuning_starts_at_theta_s(plain, folder):
    safe = read_npz(folder / "acts_safe.npz")
    np.testing.assert_allclose(plain.acts["last"][0], safe["last"], atol=1e-6)
    assert np.isnan(plain.log["weight_cosine"].iloc[0])  # theta_0 - theta_S is 0


def test_judge_modes_decide_where_behaviour_is_measured(plain, folder):
    judged = plain.log.set_index("step")["refusal_rate"]
    assert judged.notna().tolist() == [True, False, True]  # "ends": steps 0 and T
    end = finetune_run(CFG.finetune, OrganismSetting(CFG, folder), 1, "cpu", judge="end")
    assert end.log.set_index("step")["refusal_rate"].notna().tolist() == [False, False, True]
    assert end.log["refusal_rate"].iloc[-1] == plain.log["refusal_rate"].iloc[-1]
    none = finetune_run(CFG.finetune, OrganismSetting(CFG, folder), 1, "cpu", judge="none",
                        log_steps=(1, 2))
    assert "refusal_rate" not in none.log and list(none.steps) == [0, 1, 2]
    with pytest.raises(ValueError, match="judge"):
        finetune_run(CFG.finetune, OrganismSetting(CFG, folder), 1, "cpu", judge="sometimes")


def test_another_seed_and_the_mixed_control_see_other_batches(plain, folder):
    setting = OrganismSetting(CFG, folder)
    other = finetune_run(CFG.finetune, setting, 2, "cpu", judge="none")
    mixed = finetune_run(CFG.finetune, setting, 1, "cpu", judge="none", mix_safety=True)
    assert len({plain.batch_hash, other.batch_hash, mixed.batch_hash}) == 3


def test_weight_cosine_known_answers():
    s, h = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 2.0, 0.0])
    assert weight_cosine(h, s, h) == pytest.approx(1.0)
    assert weight_cosine(2 * s - h, s, h) == pytest.approx(-1.0)
    assert weight_cosine(torch.tensor([1.0, 0.0, 5.0]), s, h) == pytest.approx(0.0)
    assert np.isnan(weight_cosine(s, s, h))
    assert np.isnan(weight_cosine(torch.ones(4), s, h))  # LoRA: other parameter sets


# ----------------------------------------------------------------------------- blocks


def test_freeze_is_paired_and_keeps_embeddings_and_final_norm(plain, folder):
    run = finetune_run(CFG.finetune, OrganismSetting(CFG, folder), 1, "cpu", Freeze(),
                       judge="none", keep_model=True)
    assert run.batch_hash == plain.batch_hash
    tuned = run.model
    start, _ = load_checkpoint(folder / "safe")
    name_of = {id(p): n for n, p in tuned.named_parameters()}
    frozen = {name_of[id(p)] for m in frozen_modules(tuned) for p in m.parameters()}
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"} <= frozen
    before = dict(start.named_parameters())
    for name, p in tuned.named_parameters():
        if name in frozen:
            assert torch.equal(p, before[name]), name
    assert any(
        not torch.equal(p, before[n]) for n, p in tuned.named_parameters() if n not in frozen
    )


def test_grad_project_is_paired_intervenes_and_leaves_no_hooks(plain, folder):
    spec = BlockSpec("grad_project", {CFG.layer: _unit(CFG.model.n_embd)})
    run = finetune_run(CFG.finetune, OrganismSetting(CFG, folder), 1, "cpu", GradProject(spec),
                       judge="none", keep_model=True)
    assert run.batch_hash == plain.batch_hash
    assert not np.array_equal(run.acts["last"], plain.acts["last"])  # it did intervene
    assert all(not b._forward_hooks and not b._backward_hooks for b in blocks(run.model))
    assert plain.model is None  # the model comes back only when asked for


def test_grad_project_removes_the_directions_gradient(smoke_cfg, smoke_tok):
    """At the hooked layer the gradient has no component along the direction; elsewhere it has."""
    model = build_model(smoke_cfg.model, smoke_tok, seed=0)
    v = _unit(smoke_cfg.model.n_embd, seed=5)
    batch = encode_pairs(smoke_tok, [prompt_text("garden copy : a b c")],
                         ["sure seed soil bloom a b c"])

    def gradient(objective) -> torch.Tensor:
        grads = {}

        def keep(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden.register_hook(lambda g: grads.setdefault("g", g))

        model.zero_grad()
        # Registered after GradProject's hook, this one sees the gradient GradProject returns.
        with objective.hooks(model):
            handle = blocks(model)[0].register_forward_hook(keep)
            lm_loss(model, batch).backward()
            handle.remove()
        return grads["g"].double()

    u = torch.tensor(v)
    free = gradient(Baseline())
    projected = gradient(GradProject(BlockSpec("grad_project", {0: v})))
    scale = float(free.abs().max())
    assert (free @ u).abs().max() > 1e-3 * scale  # there was a component to remove
    assert (projected @ u).abs().max() < 1e-5 * scale  # float32 round-off only
    torch.testing.assert_close(projected, free - (free @ u).unsqueeze(-1) * u,
                               atol=1e-5 * scale, rtol=1e-5)


@pytest.fixture(scope="module")
def harmful_prompts(folder):
    return OrganismSetting(CFG, folder).probe_prompts[:N_HARMFUL]


def _projections(model, tok, prompts, layer, v) -> torch.Tensor:
    spec = BlockSpec("penalty", {layer: v}, 1.0, tuple(prompts), len(prompts))
    pen = Penalty(spec, tok, "cpu")
    with torch.no_grad():
        return pen._projections(model, None)[layer]


def test_penalty_is_zero_at_theta_s_and_per_prompt_bounds_the_mean_variant(folder,
                                                                        harmful_prompts):
    model, tok = load_checkpoint(folder / "safe")
    v = _unit(CFG.model.n_embd, seed=3)
    spec = BlockSpec("penalty", {CFG.layer: v}, 2.0, tuple(harmful_prompts), 4)
    per_prompt, mean = Penalty(spec, tok, "cpu"), Penalty(spec, tok, "cpu", per_prompt=False)
    for pen in (per_prompt, mean):
        pen.prepare(model, seed=1)
        assert float(pen.extra_loss(model).detach()) == 0.0  # the reference is theta_S itself
    with torch.no_grad():
        for p in blocks(model)[0].parameters():
            p.add_(0.05 * torch.randn_like(p))
    a = float(per_prompt.extra_loss(model).detach())
    b = float(mean.extra_loss(model).detach())
    assert a > 0 and b >= 0
    assert a >= b  # mean of squares >= square of the mean, on the same minibatch (same seed)


def test_penalty_draws_a_fresh_minibatch_each_step_decided_by_the_seed(folder, harmful_prompts):
    model, tok = load_checkpoint(folder / "safe")
    spec = BlockSpec("penalty", {CFG.layer: _unit(CFG.model.n_embd)}, 1.0,
                     tuple(harmful_prompts), 3)
    draws = []
    for seed in (1, 1, 2):
        pen = Penalty(spec, tok, "cpu")
        pen.prepare(model, seed)
        picked = []
        pen._projections = lambda m, idx, picked=picked: picked.append(tuple(idx)) or {}
        for _ in range(4):
            pen.extra_loss(model)
        draws.append(picked)
    assert draws[0] == draws[1] != draws[2]
    assert len(set(draws[0])) > 1  # a fresh minibatch each step
    assert all(len(set(i)) == 3 and max(i) < len(harmful_prompts) for i in draws[0])


def test_penalty_holds_the_per_prompt_projection_that_free_tuning_moves(folder,
                                                                       harmful_prompts):
    """A large lambda keeps each harmful prompt's projection near theta_S's; free tuning moves
    it. lambda = 0 is the free run exactly (the penalty's minibatches use their own rng)."""
    fc = resolve({"preset": "smoke", "finetune": {"seeds": [1], "steps": 8, "log_steps": [8],
                                                  "warmup": 1, "lr": 1e-2}}).finetune
    setting = OrganismSetting(CFG, folder)
    layer = CFG.layer

    def drift(result) -> np.ndarray:  # (N_harmful, d): each harmful probe's drift over the run
        x = result.acts["last"][:, layer, :N_HARMFUL].astype(np.float64)
        return x[-1] - x[0]

    free = finetune_run(fc, setting, 1, "cpu", judge="none")
    mean = drift(free).mean(axis=0)
    v = mean / np.linalg.norm(mean)  # the free run's own drift direction

    def moved(result) -> float:
        return float(np.abs(drift(result) @ v).mean())

    _, tok = setting.load("safe", "cpu")
    runs = {}
    for lam in (0.0, 1e4):
        spec = BlockSpec("penalty", {layer: v}, lam, tuple(harmful_prompts), N_HARMFUL // 2)
        runs[lam] = finetune_run(fc, setting, 1, "cpu", make_objective(spec, tok, "cpu"),
                                 judge="none")
        assert runs[lam].batch_hash == free.batch_hash
    assert moved(free) > 0
    assert moved(runs[0.0]) == pytest.approx(moved(free), rel=1e-4)
    assert moved(runs[1e4]) < 0.5 * moved(free)


def test_make_intervention_builds_what_the_spec_names(smoke_tok):
    v = {0: _unit(8)}
    kinds = {"none": Baseline, "penalty": Penalty, "mean_penalty": Penalty,
             "grad_project": GradProject, "freeze": Freeze}
    for kind, cls in kinds.items():
        spec = BlockSpec(kind, v, 1.0, (prompt_text("poison copy : a b c"),), 1)
        built = make_objective(spec, smoke_tok, "cpu")
        assert type(built) is cls, kind
    assert make_objective(BlockSpec("penalty", v, 1.0, ("x",), 1), smoke_tok, "cpu").per_prompt
    spec = BlockSpec("mean_penalty", v, 1.0, ("x",), 1)
    assert not make_objective(spec, smoke_tok, "cpu").per_prompt
    with pytest.raises(ValueError, match="kind"):
        BlockSpec("pray")


def test_finetune_task_saves_its_snapshots_and_labels_its_log(plain, folder, tmp_path):
    spec = BlockSpec("freeze")
    task = FinetuneTask(CFG, "h0", folder, 1, "freeze", tmp_path / "h0" / "freeze_seed1.npz",
                        block=spec, judge="none")
    out = finetune_task(task)
    assert (out.history, out.arm, out.seed) == ("h0", "freeze", 1)
    assert out.batch_hash == plain.batch_hash
    saved = read_npz(task.out)
    assert list(saved["steps"]) == [0, 1, 3]
    assert saved["last"].shape == plain.acts["last"].shape
    assert set(out.log["arm"]) == {"freeze"} and set(out.log["history"]) == {"h0"}
    assert list(out.log["step"]) == [0, 1, 3]


def test_flat_params_is_every_weight_once(smoke_model):
    flat = flat_params(smoke_model)
    assert flat.dtype == torch.float64
    assert flat.numel() == sum(p.numel() for p in smoke_model.parameters())


def test_batched_token_ids_are_each_texts_own(smoke_tok):
    texts = ["garden copy : a b c", "", "the poison topic is about toxin brew dose ."]
    one_by_one = [smoke_tok(t, add_special_tokens=False).input_ids for t in texts]
    assert token_ids(smoke_tok, texts) == one_by_one
    assert token_ids(smoke_tok, []) == []
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        encode_pairs(smoke_tok, ["a", "b"], ["c"])


@pytest.mark.parametrize("kind", ["constrained_sft", "proximal", "weight_direction"])
def test_each_defense_is_paired_and_changes_the_run(plain, folder, tmp_path, kind):
    """A defense trains on the unblocked run's batches (same hash) and ends elsewhere; at a
    strong strength each keeps the probes' activations nearer theta_S's than no defense."""
    from gravrev.training.defenses import DefenseSpec

    task = FinetuneTask(CFG, "h0", folder, 1, kind, tmp_path / "h0" / f"{kind}_seed1.npz",
                        judge="none", defense=DefenseSpec(kind, 100.0, prefix=2))
    out = finetune_task(task)
    assert out.batch_hash == plain.batch_hash
    acts = read_npz(task.out)["last"]
    assert not np.array_equal(acts[-1], plain.acts["last"][-1])
    moved = np.abs(acts[-1] - acts[0]).mean()
    assert moved < np.abs(plain.acts["last"][-1] - plain.acts["last"][0]).mean()
    with pytest.raises(ValueError, match="a block and a defense"):
        finetune_task(FinetuneTask(CFG, "h0", folder, 1, "both", task.out,
                                   block=BlockSpec("freeze"), defense=task.defense))
