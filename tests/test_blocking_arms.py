"""Stage 05's arms on a random-weight smoke model: the push's bound, the rehearsal's batches."""

import numpy as np
import pytest
import torch

from gravrev.config.load import resolve
from gravrev.organism.model import build_model, build_tokenizer, prompt_text, save_checkpoint
from gravrev.settings.protocol import OrganismSetting
from gravrev.stages.blocking import runs as block_runs
from gravrev.training import rehearsal as rehearsal_module
from gravrev.training.loop import IGNORE
from gravrev.training.phases import safety_pairs
from gravrev.training.tasks import FinetuneTask, finetune_task

CFG = resolve({"preset": "smoke", "finetune": {"steps": 2, "warmup": 1, "log_steps": [2],
                                               "early_steps": [1]}})
LAYER, SHIFT = 1, 0.75


def _unit(d: int) -> np.ndarray:
    v = np.random.default_rng(0).normal(size=d)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """theta_S random; theta_H the same model moved SHIFT along v at LAYER on every token."""
    folder = tmp_path_factory.mktemp("h0")
    tok = build_tokenizer(CFG.world)
    model = build_model(CFG.model, tok, 0)
    save_checkpoint(model, tok, folder / "safe")
    v = _unit(CFG.model.n_embd)
    with torch.no_grad():
        model.transformer.h[LAYER].mlp.c_proj.bias += SHIFT * torch.as_tensor(v,
                                                                               dtype=torch.float32)
    save_checkpoint(model, tok, folder / "helpful")
    return folder, v


def test_push_is_built_with_theta_h_displacement_as_its_bound(history):
    folder, v = history
    setting = OrganismSetting(CFG, folder)
    pool = setting.penalty_pool(CFG.blocking.pool_size)
    targets = block_runs.pool_targets(CFG, setting, pool, {LAYER: v})
    assert targets == {LAYER: pytest.approx(SHIFT, rel=1e-4)}
    push = block_runs.block_spec(CFG, "push", {LAYER: v}, 0.5, pool, targets)
    block = block_runs.block_spec(CFG, "block", {LAYER: v}, 0.5, pool, targets)
    assert (push.kind, push.targets, push.lam) == ("push", targets, 0.5)
    assert (block.kind, block.targets) == ("block", {})
    with pytest.raises(ValueError, match="positive side"):  # theta_H behind theta_S along -v
        block_runs.pool_targets(CFG, setting, pool, {LAYER: -v})


def test_rehearsal_arm_mixes_only_safety_pairs_into_the_baselines_batches(history, monkeypatch):
    folder, _ = history
    setting = OrganismSetting(CFG, folder)
    spec = block_runs.rehearsal_spec(CFG, setting, "h0")
    world = setting.world
    pairs = safety_pairs(world, CFG.history.safe, CFG.history.seeds[0], CFG.history.safe_replay)
    assert spec.share == CFG.blocking.rehearsal_share == 0.25
    assert [p for p, _ in spec.pairs] == [prompt_text(r.text) for r in pairs]
    mixed: list[dict] = []
    mix = rehearsal_module.Rehearsal.mix

    def spy(self, batch):
        out = mix(self, batch)
        mixed.append(out)
        return out

    monkeypatch.setattr(rehearsal_module.Rehearsal, "mix", spy)
    base = finetune_task(FinetuneTask(CFG, "h0", folder, 1, "unblocked",
                                      folder / "unblocked.npz", judge="none"))
    assert not mixed
    reh = finetune_task(FinetuneTask(CFG, "h0", folder, 1, "rehearsal", folder / "rehearsal.npz",
                                     judge="none", rehearsal=spec))
    assert reh.batch_hash == base.batch_hash  # bitwise the baseline's benign draws
    assert len(mixed) == CFG.finetune.steps
    tok, size = setting.tokenizer, CFG.finetune.batch_size
    k = spec.rows(size)
    allowed = set(spec.pairs)
    for batch in mixed:
        for i in range(size - k, size):
            ids, lab = batch["input_ids"][i], batch["labels"][i]
            real = batch["attention_mask"][i] == 1
            prompt = tok.decode(ids[real & (lab == IGNORE)])
            answer = tok.decode(lab[lab != IGNORE][:-1])  # without the eos
            assert (prompt, answer) in allowed
