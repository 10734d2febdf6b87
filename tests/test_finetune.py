"""Benign fine-tuning and blocking on a tiny trained history: determinism, pairing, real effects."""

import json

import numpy as np
import pytest
import torch

from gravrev.activations import blocks
from gravrev.blocking import Freeze, GradProject, Penalty, frozen_modules
from gravrev.config import Paths, resolve
from gravrev.finetune import finetune_run
from gravrev.organism import build_model, build_tokenizer, load_checkpoint, prompt_text
from gravrev.phases import build_history
from gravrev.setting import OrganismSetting
from gravrev.train import encode_pairs, lm_loss

FAST = {
    "preset": "smoke",
    "history": {
        "pretrain": {"steps": 5},
        "helpful": {"steps": 5},
        "safe": {"steps": 4},
        "safe_snapshots": 2,
        "control": False,
    },
    "finetune": {"seeds": [1], "steps": 3, "log_steps": [1, 3]},
    "world": {"n_probes": 8, "n_eval": 8},
}
CFG = resolve(FAST)


class RecordingSetting(OrganismSetting):
    """The organism setting, keeping every model it loads (finetune_run returns none)."""

    def load(self, name, device, branch="main"):
        model, tok = super().load(name, device, branch)
        self.loaded = {**getattr(self, "loaded", {}), name: model}
        return model, tok


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    paths = Paths(tmp_path_factory.mktemp("history_a"))
    build_history(CFG, paths, "cpu")
    return paths


@pytest.fixture
def setting(paths):
    return RecordingSetting(CFG, paths)


def _unit(d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=d)
    return v / np.linalg.norm(v)


def test_build_history_writes_checkpoints_and_metrics(paths):
    for name in ("pretrained", "helpful", "safe"):
        assert (paths.checkpoint(name) / "model.safetensors").is_file(), name
    metrics = json.loads((paths.metrics / "history.json").read_text())
    assert metrics["preset"] == "smoke"
    assert {row["checkpoint"] for row in metrics["checkpoints"]} == {
        "pretrained",
        "helpful",
        "safe",
    }
    assert not (paths.history / "control").exists()  # history.control is false


def test_control_branch_is_written_when_asked(tmp_path):
    other = Paths(tmp_path)
    build_history(resolve({**FAST, "history": {**FAST["history"], "control": True}}), other, "cpu")
    for name in ("helpful", "safe"):
        assert (other.checkpoint(name, "control") / "model.safetensors").is_file(), name
    assert not (other.checkpoint("pretrained", "control")).exists()  # both branches share theta_P
    metrics = json.loads((other.metrics / "history.json").read_text())
    assert {r["branch"] for r in metrics["checkpoints"]} == {"main", "control"}


def test_build_history_is_deterministic(paths, tmp_path):
    other = Paths(tmp_path)
    build_history(CFG, other, "cpu")
    assert (other.metrics / "history.json").read_text() == (
        paths.metrics / "history.json"
    ).read_text()
    a, _ = load_checkpoint(paths.checkpoint("safe"))
    b, _ = load_checkpoint(other.checkpoint("safe"))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


@pytest.fixture(scope="module")
def plain(paths):
    """The unblocked run of seed 1, shared by the tests that compare against it."""
    return finetune_run(CFG, OrganismSetting(CFG, paths), seed=1, device="cpu")


def test_same_seed_gives_identical_runs(plain, setting):
    again = finetune_run(CFG, setting, seed=1, device="cpu")
    assert again.batch_hash == plain.batch_hash
    assert again.log.equals(plain.log)
    assert list(plain.steps) == [0, 1, 3]
    for k in ("last", "mean"):
        shape = (3, CFG.model.n_layer, 2 * CFG.world.n_probes, CFG.model.n_embd)
        assert plain.acts[k].shape == shape
        np.testing.assert_array_equal(again.acts[k], plain.acts[k])
    assert not np.array_equal(plain.acts["last"][0], plain.acts["last"][-1])  # it trained


def test_another_seed_sees_other_batches(plain, setting):
    assert finetune_run(CFG, setting, seed=2, device="cpu").batch_hash != plain.batch_hash


def test_freeze_is_paired_and_keeps_embeddings_and_final_norm(plain, setting, paths):
    run = finetune_run(CFG, setting, seed=1, device="cpu", arm="freeze", intervention=Freeze())
    assert run.batch_hash == plain.batch_hash
    assert (run.log["arm"] == "freeze").all()
    tuned = setting.loaded["safe"]
    start, _ = load_checkpoint(paths.checkpoint("safe"))
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


def test_grad_project_is_paired_and_leaves_no_hooks(plain, setting):
    run = finetune_run(
        CFG,
        setting,
        seed=1,
        device="cpu",
        arm="grad_project",
        intervention=GradProject(CFG.layer, _unit(CFG.model.n_embd)),
    )
    assert run.batch_hash == plain.batch_hash
    assert not np.array_equal(run.acts["last"], plain.acts["last"])  # it did intervene
    tuned = setting.loaded["safe"]
    assert all(not b._forward_hooks for b in blocks(tuned))


def test_grad_project_removes_the_directions_gradient():
    """At the hooked layer the gradient has no component along the direction."""
    cfg = resolve({"preset": "smoke"})
    tok = build_tokenizer(cfg.world)
    model = build_model(cfg.model, tok, seed=0)
    v = _unit(cfg.model.n_embd, seed=5)
    grads = {}

    def keep(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden.register_hook(lambda g: grads.setdefault("g", g))

    block = blocks(model)[0]
    batch = encode_pairs(tok, [prompt_text("garden copy : a b c")], ["sure seed soil bloom a b c"])
    # Registered after GradProject's hook, this one sees the gradient GradProject returns.
    with GradProject(0, v).hooks(model):
        handle = block.register_forward_hook(keep)
        lm_loss(model, batch).backward()
        handle.remove()
    g = grads["g"].double()
    assert g.abs().max() > 0
    assert (g @ torch.tensor(v)).abs().max() < 1e-6


def test_penalty_holds_the_projection_that_free_tuning_moves(paths):
    """A large lambda keeps the probes' mean projection near theta_S's; free tuning moves it."""
    cfg = resolve({**FAST, "finetune": {"seeds": [1], "steps": 8, "log_steps": [8], "lr": 1e-2}})
    setting = OrganismSetting(cfg, paths)
    layer, prompts = cfg.layer, setting.probe_prompts

    def moved(result, v):
        mean = result.acts["last"][:, layer].astype(np.float64).mean(axis=1)  # (S, d)
        return abs((mean[-1] - mean[0]) @ v)

    free = finetune_run(cfg, setting, seed=1, device="cpu")
    mean = free.acts["last"][:, layer].astype(np.float64).mean(axis=1)
    v = (mean[-1] - mean[0]) / np.linalg.norm(mean[-1] - mean[0])  # the free run's own drift
    _, tok = setting.load("safe", "cpu")
    runs = {}
    for lam in (0.0, 1e4):
        penalty = Penalty("penalty", {layer: v}, lam, tok, prompts, "last", "cpu")
        runs[lam] = finetune_run(
            cfg, setting, seed=1, device="cpu", arm="penalty", intervention=penalty
        )
        assert runs[lam].batch_hash == free.batch_hash
    assert moved(runs[0.0], v) == pytest.approx(moved(free, v), rel=1e-4)
    assert moved(runs[1e4], v) < 0.5 * moved(free, v)
