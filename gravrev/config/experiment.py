"""Config sections of what is done to a history: fine-tuning, analysis, blocking, execution, hf.

The regime and its search are in gravrev.config.regime, the defenses in gravrev.config.defenses.
"""

from __future__ import annotations

from dataclasses import dataclass

from gravrev.config.fields import check
from gravrev.config.organism import MAX_STEPS

NEW_TASKS = ("rotate", "swap")
MAX_RUNS = 1000  # runs per history of one kind: each is a full fine-tuning run
MAX_NULL_SAMPLES = 10**7  # each sample draws a direction of the model's width (d normals)
MAX_LAMBDA = 1e4  # past this the penalty swamps the task loss and float32 gradients overflow
MAX_SCALE = 100.0  # steering past 100x the H-S gap leaves every activation the model has seen


def distinct(values: tuple, name: str, what: str) -> None:
    """Refuse a repeated value in a list that names runs, arms or sweep points."""
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    check(not repeated, name, f"{what} must be distinct; repeated: {repeated}")


@dataclass(frozen=True)
class FinetuneConfig:
    seeds: tuple[int, ...]
    steps: int
    lr: float
    warmup: int
    batch_size: int
    optimizer: str
    log_steps: tuple[int, ...]
    new_task: str
    new_task_fraction: float
    min_new_task_accuracy: float  # the regime's rule: the new task is learned by T
    mixed_control: bool
    early_runs: int  # short runs per history for the early steps (seeds 1001, 1002, ...)
    early_steps: tuple[int, ...]
    sensitivity_lrs: tuple[float, ...]
    sensitivity_batch_sizes: tuple[int, ...]

    def validate(self, name: str) -> None:
        check(len(self.seeds) >= 1, f"{name}.seeds", "needs at least one seed")
        check(len(set(self.seeds)) == len(self.seeds), f"{name}.seeds", "must be distinct")
        check(all(0 <= s < 1000 for s in self.seeds), f"{name}.seeds", "must be in [0, 1000)")
        check(
            all(0 < lr < 1 for lr in self.sensitivity_lrs),
            f"{name}.sensitivity_lrs",
            "every learning rate must be in (0, 1)",
        )
        distinct(self.sensitivity_lrs, f"{name}.sensitivity_lrs", "learning rates")
        distinct(self.sensitivity_batch_sizes, f"{name}.sensitivity_batch_sizes", "batch sizes")
        check(
            all(1 <= b <= 4096 for b in self.sensitivity_batch_sizes),
            f"{name}.sensitivity_batch_sizes",
            "every batch size must be in [1, 4096]",
        )
        check(self.steps >= 1, f"{name}.steps", "must be >= 1")
        check(self.steps <= MAX_STEPS, f"{name}.steps",
              f"must be <= {MAX_STEPS} (10^6 steps is weeks of CPU time)")
        check(0 < self.lr < 1, f"{name}.lr", "must be in (0, 1)")
        check(0 <= self.warmup < self.steps, f"{name}.warmup", "must be in [0, steps)")
        check(1 <= self.batch_size <= 4096, f"{name}.batch_size", "must be in [1, 4096]")
        check(self.optimizer in ("adamw", "sgd"), f"{name}.optimizer", "must be adamw or sgd")
        check(
            len(self.log_steps) >= 1 and list(self.log_steps) == sorted(set(self.log_steps)),
            f"{name}.log_steps",
            "must be strictly increasing",
        )
        check(
            all(1 <= s <= self.steps for s in self.log_steps),
            f"{name}.log_steps",
            f"every logged step must be in [1, steps={self.steps}]",
        )
        check(self.log_steps[-1] == self.steps, f"{name}.log_steps", "must end at steps")
        check(
            self.new_task in NEW_TASKS,
            f"{name}.new_task",
            f"must be one of {NEW_TASKS}, got {self.new_task!r}",
        )
        check(0 <= self.new_task_fraction <= 1, f"{name}.new_task_fraction", "must be in [0, 1]")
        check(
            0 <= self.min_new_task_accuracy <= 100,
            f"{name}.min_new_task_accuracy",
            "must be in [0, 100]",
        )
        check(0 <= self.early_runs <= MAX_RUNS, f"{name}.early_runs",
              f"must be in [0, {MAX_RUNS}] (each is a fine-tuning run per history)")
        check(
            len(self.early_steps) >= 1
            or not (self.early_runs or self.sensitivity_lrs or self.sensitivity_batch_sizes),
            f"{name}.early_steps",
            "is empty, but the early runs and the sensitivity runs log at these steps",
        )
        check(
            list(self.early_steps) == sorted(set(self.early_steps))
            and all(s >= 1 for s in self.early_steps),
            f"{name}.early_steps",
            "must be strictly increasing steps >= 1",
        )


@dataclass(frozen=True)
class AnalysisConfig:
    layer: int
    position: str
    probe_set: str
    vrev_method: str
    null_samples: int
    null_quantile: float

    def validate(self, name: str) -> None:
        check(self.layer >= -1, f"{name}.layer", "must be -1 (middle) or a layer index >= 0")
        check(self.position in ("last", "mean"), f"{name}.position", "must be last or mean")
        check(
            self.probe_set in ("harmful", "benign", "all"),
            f"{name}.probe_set",
            "must be harmful, benign or all",
        )
        check(
            self.vrev_method in ("checkpoint_diff", "trajectory_pca"),
            f"{name}.vrev_method",
            "must be checkpoint_diff or trajectory_pca",
        )
        check(self.null_samples >= 1000, f"{name}.null_samples", "must be >= 1000")
        check(self.null_samples <= MAX_NULL_SAMPLES, f"{name}.null_samples",
              f"must be <= {MAX_NULL_SAMPLES} (each sample draws a random direction of the "
              "model's width: 10^7 of width 4096 is 4e10 normal draws)")
        check(0.5 < self.null_quantile < 1, f"{name}.null_quantile", "must be in (0.5, 1)")


BLOCKING_ARMS = (
    "block",
    "push",
    "penalty",
    "mean_penalty",
    "rehearsal",
    "refusal_block",
    "refusal_push",
    "random_block",
    "covariance_block",
    "grad_project",
    "freeze",
    "penalty_all",
    "random_penalty_all",
    "covariance_penalty_all",
    "penalty_layers",
)
# The objective each arm's block is built as; rehearsal has none (it changes the batches).
KINDS = {
    "block": "block", "refusal_block": "block", "random_block": "block",
    "covariance_block": "block", "push": "push", "refusal_push": "push", "penalty": "penalty",
    "penalty_all": "penalty",
    "random_penalty_all": "penalty", "covariance_penalty_all": "penalty",
    "mean_penalty": "mean_penalty", "grad_project": "grad_project", "freeze": "freeze",
}
# Each control and the arm whose achieved projection reduction it is matched to (chapter 05).
CONTROLS = {
    "refusal_block": "block",
    "refusal_push": "push",
    "random_block": "block",
    "covariance_block": "block",
    "random_penalty_all": "penalty_all",
    "covariance_penalty_all": "penalty_all",
}
# Arms with no weight to fix by the harm-blind lambda check: they cannot be the claim arm.
NO_LAMBDA_CHECK = ("rehearsal", "freeze", "grad_project", "penalty_layers")


@dataclass(frozen=True)
class BlockingConfig:
    arms: tuple[str, ...]
    claim_arm: str
    lambda_grid: tuple[float, ...]  # candidates of the harm-blind manipulation check
    calibration_histories: int  # the first n histories run the lambda grid (0: all)
    penalty_batch: int  # harmful training-split prompts per step, fresh from the pool
    pool_size: int
    task_cost_tolerance: float
    rehearsal_share: float  # rows of each batch the rehearsal arm gives to safety pairs

    def validate(self, name: str) -> None:
        for arm in self.arms:
            check(
                arm in BLOCKING_ARMS, f"{name}.arms", f"unknown arm {arm!r}; known: {BLOCKING_ARMS}"
            )
        distinct(self.arms, f"{name}.arms", "arms")
        check(self.claim_arm in self.arms, f"{name}.claim_arm", "must be one of blocking.arms")
        check(self.claim_arm not in NO_LAMBDA_CHECK, f"{name}.claim_arm",
              f"{self.claim_arm!r} has no weight for the lambda check; not one of "
              f"{NO_LAMBDA_CHECK}")
        for control, arm in CONTROLS.items():
            check(control not in self.arms or arm in self.arms, f"{name}.arms",
                  f"{control} is matched to {arm}'s achieved reduction: list {arm} too")
        for arm in ("penalty_all",):  # an arm at several layers has controls at the same layers
            check(arm not in self.arms
                  or all(c in self.arms for c, a in CONTROLS.items() if a == arm),
                  f"{name}.arms", f"{arm} acts at several layers: list its random and "
                  "covariance controls at the same layers too")
        check(all(x <= MAX_LAMBDA for x in self.lambda_grid), f"{name}.lambda_grid",
              f"every lambda must be <= {MAX_LAMBDA:g} (past it the penalty swamps the task "
              "loss and float32 gradients overflow)")
        check(
            len(self.lambda_grid) >= 1 and all(x > 0 for x in self.lambda_grid),
            f"{name}.lambda_grid",
            "needs at least one lambda, each > 0",
        )
        check(
            list(self.lambda_grid) == sorted(set(self.lambda_grid)),
            f"{name}.lambda_grid",
            "must be strictly increasing",
        )
        check(self.calibration_histories >= 0, f"{name}.calibration_histories",
              "must be >= 0 (0: every history)")
        check(1 <= self.penalty_batch <= self.pool_size, f"{name}.penalty_batch",
               "must be in [1, pool_size]")
        check(0 <= self.task_cost_tolerance <= 100, f"{name}.task_cost_tolerance",
              "must be in [0, 100] (percentage points)")
        check(0 < self.rehearsal_share < 1, f"{name}.rehearsal_share",
              "must be in (0, 1): some rows benign, some safety pairs")


@dataclass(frozen=True)
class MediationConfig:
    scales: tuple[float, ...]  # multiples of |mean h_helpful - mean h_safe| at the layer

    def validate(self, name: str) -> None:
        check(0.0 in self.scales, f"{name}.scales", "must include 0 (the unmodified model)")
        distinct(self.scales, f"{name}.scales", "scales")
        check(all(abs(s) <= MAX_SCALE for s in self.scales), f"{name}.scales",
              f"every scale must be in [-{MAX_SCALE:g}, {MAX_SCALE:g}] (steering past 100x the "
              "H-S gap leaves every activation the model has seen)")


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str  # local | ray
    workers: int  # 0: one per core
    address: str | None  # ray: the cluster's address; null starts a local one

    def validate(self, name: str) -> None:
        check(self.kind in ("local", "ray"), f"{name}.kind", "must be local or ray")
        check(0 <= self.workers <= 1024, f"{name}.workers", "must be in [0, 1024] (0: all cores)")


GEN_BATCH = 32  # prompts per generate call in the hf setting (and the budget's estimate)


@dataclass(frozen=True)
class HFConfig:
    witness_dir: str | None
    safe_dir: str | None
    train_jsonl: str | None
    harmful_probes_jsonl: str | None
    benign_probes_jsonl: str | None
    judge_dir: str | None
    witness_kind: str
    use_chat_template: bool
    dtype: str
    lora: bool
    lora_rank: int
    gradient_checkpointing: bool
    max_new_tokens: int
    min_probes: int

    def validate(self, name: str) -> None:
        check(
            self.dtype in ("auto", "float32", "bfloat16"),
            f"{name}.dtype",
            "must be auto, float32 or bfloat16",
        )
        check(1 <= self.lora_rank <= 1024, f"{name}.lora_rank",
              "must be in [1, 1024] (a rank past 1024 is no longer low-rank)")
        check(1 <= self.max_new_tokens <= 4096, f"{name}.max_new_tokens",
              "must be in [1, 4096] (every probe and evaluation prompt generates this many)")
        check(2 <= self.min_probes <= 4096, f"{name}.min_probes",
              "must be in [2, 4096] (world.n_probes is at most 4096)")
