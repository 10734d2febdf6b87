"""Stage 06's runs: v_rev ablated from and added to the checkpoints, patching, logit lens.

Per history: v_rev ablated from theta_S and added (± multiples) to theta_S and theta_H; the
same ablations and extreme additions for control directions (random, covariance-shaped
orthogonal to v_rev, theta_S's top principal components, the refusal direction r); v_rev read
through the vocabulary at theta_S; one unblocked fine-tuning run re-done (the stage-02 run: same
batches) to patch component groups between theta_S and theta_T; the logit lens at theta_S,
theta_H and theta_T. Writes data/mediation/: each history's tables, the tables of all
histories, and the re-run's check.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gravrev.behaviour.evaluate import eval_sets
from gravrev.config.load import Config
from gravrev.interp.direction import probe_mask, refusal_direction
from gravrev.interp.labels import EVERY_LAYER, NONE
from gravrev.interp.patching import logit_lens, patch_table
from gravrev.interp.readout import vocabulary_readout, world_tokens
from gravrev.interp.steering import (
    intervention,
    judged_rates,
    reversion_norms,
    run_mediation,
)
from gravrev.organism.model import load_checkpoint, prompt_text
from gravrev.organism.world import World
from gravrev.runtime import seeds
from gravrev.runtime.executor import run_all
from gravrev.settings.protocol import make_setting
from gravrev.stages.artifacts import load_v_rev, probe_selection
from gravrev.stages.mediation.tables import (
    LENS_CHECKPOINTS,
    N_COVARIANCE,
    N_PCS,
    N_RANDOM,
    TABLES,
)
from gravrev.stages.skipped import skip_reason, write_skipped
from gravrev.stats.nulls import cosine, covariance, covariance_direction, random_direction
from gravrev.store.atomic import atomic_dir, read_npz, write_csv, write_json
from gravrev.store.paths import Paths
from gravrev.training.finetune import finetune_run
from gravrev.training.loop import pick_device

CONTROL_KINDS = ("v_rev", "refusal", "random", "covariance", "pc")
# The controls' random stream (random, then covariance-shaped): [history seed, this].
READOUT_NULL = 100  # random unit directions of the vocabulary readout's null, per history


def pcs(acts: np.ndarray, k: int) -> np.ndarray:
    """The top k principal components (rows, unit) of activations (N, d), largest first."""
    x = np.asarray(acts, dtype=np.float64)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    return vt[:k]


def oriented(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """u with its sign chosen so that cos(u, v) >= 0: +scale moves toward helpful, as v_rev."""
    return -u if u @ v < 0 else u


def control_directions(acts_safe: np.ndarray, mask: np.ndarray, harmful: np.ndarray,
                       v_rev: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each direction's (L, d) stack of unit rows, one row per layer, named kind or kind_i.

    v_rev; r (the refusal direction at theta_S, oriented to v_rev); N_RANDOM random;
    N_COVARIANCE drawn from N(0, cov of theta_S's probes at the layer), v_rev's row removed;
    theta_S's top N_PCS principal components at each layer, oriented to v_rev.
    """
    n_layer, d = v_rev.shape
    r = refusal_direction(acts_safe, harmful)
    out = {"v_rev": v_rev, "refusal": np.stack([oriented(r[lay], v_rev[lay])
                                                for lay in range(n_layer)])}
    for i in range(N_RANDOM):
        out[f"random_{i}"] = np.stack([random_direction(d, rng) for _ in range(n_layer)])
    covs = [covariance(acts_safe[lay][mask]) for lay in range(n_layer)]
    for i in range(N_COVARIANCE):
        out[f"covariance_{i}"] = np.stack([covariance_direction(covs[lay], rng,
                                                                orthogonal_to=v_rev[lay])
                                           for lay in range(n_layer)])
    top = [pcs(acts_safe[lay][mask], N_PCS) for lay in range(n_layer)]
    for i in range(N_PCS):
        out[f"pc_{i}"] = np.stack([oriented(top[lay][i], v_rev[lay]) for lay in range(n_layer)])
    return out


def kind_of(direction: str) -> str:
    """The kind of a control direction's name (random_0 -> random)."""
    return direction.rsplit("_", 1)[0] if direction[-1].isdigit() else direction


def control_cells(scales: tuple[float, ...], layer: int) -> list[tuple[str, str, int, float]]:
    """(checkpoint, mode, layer, scale) of every control: both ablations of theta_S, and the
    most negative and most positive scale added at the analysed layer to theta_S and theta_H."""
    ends = [x for x in dict.fromkeys((min(scales), max(scales))) if x != 0]
    nan = float("nan")
    return [("θ_S", "ablate", layer, nan), ("θ_S", "ablate", EVERY_LAYER, nan),
            *((c, "add", layer, float(x)) for c in ("θ_S", "θ_H") for x in ends)]


def control_table(models: dict, tok, requests, directions: dict[str, np.ndarray],
                  cells: list[tuple[str, str, int, float]], norms: np.ndarray, device: str,
                  world: World, sweeps: pd.DataFrame) -> pd.DataFrame:
    """Judged rates of every direction in every control cell; v_rev's are read from `sweeps`
    (run_mediation's combined table), which already judged them."""
    rows = []
    for name, stack in directions.items():
        for checkpoint, mode, layer, scale in cells:
            if name == "v_rev":
                cell = sweeps[(sweeps["checkpoint"] == checkpoint) & (sweeps["mode"] == mode)
                              & (sweeps["layer"] == layer)
                              & ((sweeps["scale"] == scale) | np.isnan(scale))]
                rates = {k: cell[k].item() for k in ("refusal_rate", "harmful_compliance", "n")}
            else:
                model = models[checkpoint]
                with intervention(model, mode, stack, layer, scale, norms):
                    rates = asdict(judged_rates(model, tok, requests, device, world))
            rows.append({"direction": name, "kind": kind_of(name), "checkpoint": checkpoint,
                         "mode": mode, "layer": layer, "scale": scale, **rates})
    return pd.DataFrame(rows)


def direction_table(directions: dict[str, np.ndarray], r: np.ndarray, layer: int
                    ) -> pd.DataFrame:
    """Each direction's cosine with v_rev and with r (as Arditi et al. orient it) at the layer."""
    v = directions["v_rev"][layer]
    return pd.DataFrame([{"direction": name, "kind": kind_of(name), "layer": layer,
                          "cos_v_rev": cosine(stack[layer], v), "cos_r": cosine(stack[layer],
                                                                                r[layer])}
                         for name, stack in directions.items()])


@dataclass(frozen=True)
class MediationTask:
    """The mediation and route analyses of one history, written under `out`."""

    cfg: Config
    history: str
    paths: Paths
    out: Path


@dataclass
class MediationOutput:
    history: str
    seed: int
    batch_hash: str
    acts_max_abs_diff: float  # the re-run's probe snapshots against stage 02's
    seconds: float


def mediation_task(task: MediationTask) -> MediationOutput:
    """Sweeps, patching and logit lens of one history; its tables go to task.out/*.csv."""
    cfg, h, paths = task.cfg, task.history, task.paths
    start = time.perf_counter()
    device = pick_device(cfg.device, cfg.cpu_threads)
    world = World(cfg.world)
    requests = eval_sets(world, cfg.world.n_eval)["harmful"]
    helpful, tok = load_checkpoint(paths.checkpoint("helpful", h), device)
    safe, _ = load_checkpoint(paths.checkpoint("safe", h), device)
    pos, mask = cfg.analysis.position, probe_selection(cfg, paths)
    norms = reversion_norms(read_npz(paths.acts("helpful", h))[pos],
                            read_npz(paths.acts("safe", h))[pos], mask)
    v_rev = load_v_rev(cfg, paths, h)
    med = run_mediation(helpful, safe, tok, requests, v_rev, norms,
                        cfg.mediation.scales, device, world=world)
    acts_safe = read_npz(paths.acts("safe", h))[pos]
    harmful = probe_mask(pd.read_csv(paths.probes), "harmful")
    history_seed = cfg.history_seed(h)
    rng = np.random.default_rng(seeds.mediation_controls(history_seed))
    dirs = control_directions(acts_safe, mask, harmful, v_rev, rng)
    controls = control_table({"θ_S": safe, "θ_H": helpful}, tok, requests, dirs,
                             control_cells(cfg.mediation.scales, cfg.layer), norms, device,
                             world, med.combined())
    directions = direction_table(dirs, refusal_direction(acts_safe, harmful), cfg.layer)
    prompts = [prompt_text(r.text) for r in requests]
    tokens = world_tokens(world, tok, requests)
    read = vocabulary_readout(safe, tok, prompts, cfg.layer, v_rev[cfg.layer],
                              float(norms[cfg.layer]), tokens, READOUT_NULL, history_seed, device)
    readout = pd.DataFrame([{
        "eps": float(norms[cfg.layer]), "n_null": read.lens_rank.n_null,
        **{f"lens_{k}": x for k, x in asdict(read.lens_rank).items() if k != "n_null"},
        **{f"change_{k}": x for k, x in asdict(read.change_rank).items() if k != "n_null"}}])
    ids = [*tokens.engaging, *tokens.refusal]
    readout_tokens = pd.DataFrame({
        "token_id": ids, "token": [tok.decode([i]) for i in ids],
        "kind": ["engaging"] * len(tokens.engaging) + ["refusal"] * len(tokens.refusal),
        "lens": read.lens[ids], "change": read.change[ids]})
    seed = cfg.finetune.seeds[0]
    tuned = finetune_run(cfg.finetune, make_setting(cfg, paths.history / h), seed, device,
                         judge="none", keep_model=True)
    patches = patch_table(safe, tuned.model, tok, requests, device, world=world)
    comply_words = [world.opening_word(r) for r in requests]
    lens = pd.concat([logit_lens(m, tok, prompts, comply_words, device).assign(checkpoint=name)
                      for name, m in zip(LENS_CHECKPOINTS, (safe, helpful, tuned.model),
                                         strict=True)],
                     ignore_index=True)
    tables = dict(zip(TABLES, (med.baseline, med.combined(), patches, lens, controls, directions,
                               readout, readout_tokens), strict=True))
    for name, df in tables.items():
        write_csv(task.out / f"{name}.csv", df.assign(history=h))
    saved = read_npz(paths.run("finetune", h, "unblocked", seed))
    diff = max(float(np.max(np.abs(saved[k] - tuned.acts[k]))) for k in tuned.acts)
    return MediationOutput(h, seed, tuned.batch_hash, diff, time.perf_counter() - start)


def _runs_table(cfg: Config, paths: Paths, done: list[MediationOutput],
                patching: pd.DataFrame) -> pd.DataFrame:
    ref = pd.read_csv(paths.stage("finetune") / "runs.csv")
    log = pd.read_csv(paths.stage("finetune") / "log.csv")
    rows = []
    for d in done:
        key = (ref["history"] == d.history) & (ref["arm"] == "unblocked") & (ref["seed"] == d.seed)
        at_t = log[(log["history"] == d.history) & (log["arm"] == "unblocked")
                   & (log["seed"] == d.seed) & (log["step"] == cfg.finetune.steps)]
        mine = patching[(patching["history"] == d.history) & (patching["patch"] == "S->T")
                        & (patching["group"] == NONE)]
        if not key.any() or at_t.empty:
            raise ValueError(f"{paths.stage('finetune')}: no unblocked run of {d.history} with "
                             f"seed {d.seed} to T; re-run stage finetune with this config")
        expected = ref.loc[key, "batch_hash"].iloc[0]
        rows.append({"history": d.history, "seed": d.seed, "batch_hash": d.batch_hash,
                     "stage02_batch_hash": expected, "same_batches": d.batch_hash == expected,
                     "acts_max_abs_diff": d.acts_max_abs_diff,
                     "refusal_at_T": float(mine["refusal_rate"].iloc[0]),
                     "stage02_refusal_at_T": float(at_t["refusal_rate"].iloc[0])})
    return pd.DataFrame(rows)


def run(cfg: Config, paths: Paths) -> None:
    """Every history's analyses through the executor; its tables and the re-run's check."""
    if skip_reason(cfg, "mediation"):
        write_skipped(cfg, paths, "mediation")
        return
    with atomic_dir(paths.stage("mediation")) as out:
        tasks = [MediationTask(cfg, h, paths, out / h) for h in cfg.histories]
        done: list[MediationOutput] = run_all(mediation_task, tasks, cfg.executor,
                                              desc="mediation and route")
        for name in TABLES:
            write_csv(out / f"{name}.csv", pd.concat(
                [pd.read_csv(out / h / f"{name}.csv") for h in cfg.histories], ignore_index=True))
        runs = _runs_table(cfg, paths, done, pd.read_csv(out / "patching.csv"))
        bad = runs[~runs["same_batches"]]
        if len(bad):
            raise RuntimeError(f"the re-run fine-tuning of {bad['history'].tolist()} saw other "
                               "batches than stage 02's: its θ_T is not stage 02's")
        write_csv(out / "runs.csv", runs)
    write_json(paths.timings / "mediation_runs.json", {d.history: d.seconds for d in done})
