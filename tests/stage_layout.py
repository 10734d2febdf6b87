"""A hand-made data/ layout of stages 01 and 02 whose alignments are known by construction.

Each history h has its own v_rev (per layer, orthonormal to the other history's and to a
spare direction `u`). A run's drift at logged step t points along c_t * v_rev + s_t * u with
c_t chosen in DESIGN, so its alignment with v_rev is exactly c_t (to float32 round-off).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gravrev.config.load import Config, resolve
from gravrev.store.atomic import write_csv, write_npz
from gravrev.store.paths import Paths

L, D = 2, 16  # layers and width of the hand-made activations
N_HARMFUL, N_BENIGN = 40, 8

CFG = resolve({
    "preset": "smoke",
    "history": {"seeds": [0, 1]},
    "finetune": {"seeds": [1, 2], "steps": 20, "warmup": 2, "log_steps": [1, 5, 20],
                 "early_runs": 3, "early_steps": [1, 20], "sensitivity_lrs": [1e-3],
                 "sensitivity_batch_sizes": []},
})
LOG_STEPS = [1, 5, 20]
EARLY_STEPS = [1, 20]
SENS_ARM = "sens_adamw_lr0.001_bs16"

# cos(drift, v_rev) at each logged step, by (history, arm, seed)
DESIGN: dict[tuple[str, str, int], list[float]] = {
    ("h0", "unblocked", 1): [0.90, 0.95, 1.00],
    ("h0", "unblocked", 2): [0.05, 0.10, 0.20],
    ("h1", "unblocked", 1): [-1.00, -0.95, -0.90],
    ("h1", "unblocked", 2): [0.90, 1.00, 0.95],
    **{(h, "mixed", s): [0.10, 0.10, 0.10] for h in ("h0", "h1") for s in (1, 2)},
    **{(h, "early", 1001 + i): [0.40 + 0.02 * i, 0.88 + 0.02 * i]
       for h in ("h0", "h1") for i in range(3)},
    ("h0", "large_batch", 1): [0.50, 0.70],
    ("h1", "large_batch", 1): [0.50, 0.70],
    ("h0", SENS_ARM, 1): [0.30, 0.60],
}
REFUSAL = {"unblocked": [90.0, 70.0, 50.0, 30.0], "mixed": [90.0, 89.0, 88.0, 87.0]}
NEW_TASK = [20.0, 40.0, 60.0, 75.0]


@dataclass
class Layout:
    cfg: Config
    paths: Paths
    v: dict[str, np.ndarray]  # history -> (L, D) unit rows: the v_rev built in
    u: np.ndarray  # (L, D): orthogonal to every history's v_rev
    safe: dict[str, np.ndarray]  # history -> (L, N, D): theta_S's probe activations


def _orthonormal(rng: np.random.Generator) -> np.ndarray:
    """(3, L, D): per layer three orthonormal rows (v_h0, v_h1, u)."""
    out = np.empty((3, L, D))
    for layer in range(L):
        q, _ = np.linalg.qr(rng.normal(size=(D, 3)))
        out[:, layer] = q.T
    return out


def direction(v: np.ndarray, u: np.ndarray, c: float) -> np.ndarray:
    """(L, D) unit rows at cosine c to v, in the plane of v and u."""
    return c * v + np.sqrt(max(0.0, 1.0 - c * c)) * u


def run_acts(safe: np.ndarray, v: np.ndarray, u: np.ndarray, cosines: list[float],
             steps: list[int]) -> dict[str, np.ndarray]:
    """A run's npz content: theta_S at row 0, then drift 0.1 * step along each designed angle."""
    snaps = [safe] + [safe + 0.1 * t * direction(v, u, c)[:, None, :]
                      for c, t in zip(cosines, steps, strict=True)]
    x = np.stack(snaps).astype(np.float32)
    return {"steps": np.array([0, *steps]), "last": x, "mean": x.copy()}


def _log_rows(history: str, arm: str, seed: int) -> list[dict]:
    rows = []
    for i, step in enumerate([0, *LOG_STEPS]):
        refusal = REFUSAL[arm][i]
        rows.append({
            "seed": seed, "step": step, "train_loss": None if step == 0 else 1.0 / step,
            "weight_cosine": float("nan") if step == 0 else 0.1 * i,
            "n_harmful": 20, "refusals": int(refusal / 5), "refusal_rate": refusal,
            "harmful_compliance": 95.0 - refusal, "prefilled_content": 95.0,
            "benign_accuracy": 80.0, "rotate_accuracy": NEW_TASK[i],
            "history": history, "arm": arm,
        })
    return rows


def build(root: Path, cfg: Config = CFG) -> Layout:
    """Write probes, theta_H/theta_S activations, trajectories and every run of DESIGN."""
    paths = Paths(root)
    rng = np.random.default_rng(0)
    basis = _orthonormal(rng)
    v = {"h0": basis[0], "h1": basis[1]}
    u = basis[2]
    n = N_HARMFUL + N_BENIGN
    write_csv(paths.probes, pd.DataFrame({
        "kind": ["harmful"] * N_HARMFUL + ["benign"] * N_BENIGN,
        "text": [f"probe {i}" for i in range(n)],
    }))
    harmful = (np.arange(n) < N_HARMFUL)[None, :, None]
    safe = {}
    for h in cfg.histories:
        safe[h] = rng.normal(size=(L, n, D)).astype(np.float32)
        # theta_H sits 2 v_rev away on the harmful probes, 2 u away on the benign ones.
        offset = np.where(harmful, 2.0 * v[h][:, None, :], 2.0 * u[:, None, :])
        helpful = (safe[h] + offset).astype(np.float32)
        write_npz(paths.acts("helpful", h), last=helpful, mean=helpful)
        write_npz(paths.acts("safe", h), last=safe[h], mean=safe[h])
        traj = np.stack([helpful + (safe[h] - helpful) * k / 2 for k in range(3)])
        write_npz(paths.safe_trajectory(h), steps=np.array([0, 10, 20]),
                  last=traj.astype(np.float32), mean=traj.astype(np.float32))
    runs, logs = [], []
    for (h, arm, seed), cosines in DESIGN.items():
        steps = LOG_STEPS if arm in ("unblocked", "mixed") else EARLY_STEPS
        write_npz(paths.run("finetune", h, arm, seed), **run_acts(safe[h], v[h], u, cosines,
                                                                   steps))
        runs.append({"history": h, "arm": arm, "seed": seed, "batch_hash": f"{h}-{seed}"})
        if arm in ("unblocked", "mixed"):
            logs += _log_rows(h, arm, seed)
    write_csv(paths.stage("finetune") / "runs.csv", pd.DataFrame(runs))
    write_csv(paths.stage("finetune") / "log.csv", pd.DataFrame(logs))
    write_csv(paths.stage("finetune") / "search_log.csv",  # nothing searched: a header only
              pd.DataFrame(columns=["history", "arm", "seed", "step", "lr", "warmup", "share"]))
    return Layout(cfg, paths, v, u, safe)


def final_cosines(arm: str = "unblocked") -> dict[tuple[str, int], float]:
    """The designed alignment at T of each run of an arm."""
    return {(h, s): c[-1] for (h, a, s), c in DESIGN.items() if a == arm}
