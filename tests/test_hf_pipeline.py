"""The `hf` code path on the exported organism reproduces the organism path's science.

Same checkpoints, same probes: v_rev must match to float precision. The fine-tuning data
differ in order (the hf path samples JSONL rows, the organism samples its world), so the
alignment trajectories are compared within a stated tolerance, ALIGNMENT_TOLERANCE.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from gravrev.analysis import alignment_table, chosen, directions

from gravrev.config import Paths, resolve
from gravrev.finetune import run_finetune
from gravrev.hf import HFSetting, describe_checkpoints, export_organism
from gravrev.phases import build_history
from gravrev.setting import OrganismSetting

ALIGNMENT_TOLERANCE = 0.25  # |mean alignment difference| per logged step, organism vs hf

FAST = {
    "model": {"n_embd": 64, "n_layer": 2, "n_head": 2},
    "world": {"n_probes": 16, "n_eval": 16},
    "history": {
        "pretrain": {"steps": 120},
        "helpful": {"steps": 120},
        "safe": {"steps": 30},
        "safe_snapshots": 2,
        "control": False,
    },
    "finetune": {"seeds": [1, 2], "steps": 10, "log_steps": [1, 5, 10], "mixed_control": False},
}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    org_root = tmp_path_factory.mktemp("organism")
    org_cfg = resolve({"preset": "smoke", **FAST})
    org_paths = Paths(org_root)
    build_history(org_cfg, org_paths, "cpu")
    run_finetune(org_cfg, org_paths, OrganismSetting(org_cfg, org_paths), "cpu")

    files = export_organism(org_paths.history, tmp_path_factory.mktemp("export"), org_cfg)
    hf_cfg = resolve(
        {
            "preset": "hf",
            **{k: v for k, v in FAST.items() if k != "model"},
            "hf": {k: str(v) for k, v in files.items()},
        }
    )
    hf_cfg = dataclasses.replace(hf_cfg, finetune=org_cfg.finetune, analysis=org_cfg.analysis)
    hf_paths = Paths(tmp_path_factory.mktemp("hf"))
    describe_checkpoints(hf_cfg, hf_paths, "cpu")
    run_finetune(hf_cfg, hf_paths, HFSetting(hf_cfg, hf_paths), "cpu")
    return (org_cfg, org_paths), (hf_cfg, hf_paths)


def test_v_rev_is_the_same_on_both_paths(both):
    (org_cfg, org_paths), (hf_cfg, hf_paths) = both
    org = directions(org_cfg, org_paths)["checkpoint_diff"]
    hf = directions(hf_cfg, hf_paths)["checkpoint_diff"]
    for pos in ("last", "mean"):
        np.testing.assert_allclose(hf[pos], org[pos], atol=1e-5)


def test_alignment_trajectory_agrees_within_tolerance(both):
    means = []
    for cfg, paths in both:
        v = directions(cfg, paths)["checkpoint_diff"]
        table = chosen(alignment_table(cfg, paths, v, ["unblocked"]), cfg)
        means.append(table.groupby("step")["alignment"].mean())
    org, hf = means
    assert list(org.index) == list(hf.index)
    assert np.all(np.abs(org.to_numpy() - hf.to_numpy()) <= ALIGNMENT_TOLERANCE), (org, hf)
