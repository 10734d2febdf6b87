"""Config sections of what is done to a history: fine-tuning, analysis, blocking, execution, hf."""

from __future__ import annotations

from dataclasses import dataclass

from gravrev.config.fields import check

NEW_TASKS = ("rotate", "swap")


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
        check(
            all(1 <= b <= 4096 for b in self.sensitivity_batch_sizes),
            f"{name}.sensitivity_batch_sizes",
            "every batch size must be in [1, 4096]",
        )
        check(self.steps >= 1, f"{name}.steps", "must be >= 1")
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
        check(self.early_runs >= 0, f"{name}.early_runs", "must be >= 0")
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
        check(0.5 < self.null_quantile < 1, f"{name}.null_quantile", "must be in (0.5, 1)")


BLOCKING_ARMS = (
    "penalty",
    "penalty_all",
    "penalty_layers",
    "grad_project",
    "random_penalty",
    "covariance_penalty",
    "freeze",
    "mean_penalty",
)


@dataclass(frozen=True)
class BlockingConfig:
    arms: tuple[str, ...]
    claim_arm: str
    lambda_grid: tuple[float, ...]  # candidates of the harm-blind manipulation check
    penalty_batch: int  # harmful training-split prompts per step, fresh from the pool
    pool_size: int
    task_cost_tolerance: float

    def validate(self, name: str) -> None:
        for arm in self.arms:
            check(
                arm in BLOCKING_ARMS, f"{name}.arms", f"unknown arm {arm!r}; known: {BLOCKING_ARMS}"
            )
        check(self.claim_arm in self.arms, f"{name}.claim_arm", "must be one of blocking.arms")
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
        check(1 <= self.penalty_batch <= self.pool_size, f"{name}.penalty_batch",
               "must be in [1, pool_size]")
        check(self.task_cost_tolerance >= 0, f"{name}.task_cost_tolerance", "must be >= 0")


@dataclass(frozen=True)
class MediationConfig:
    scales: tuple[float, ...]  # multiples of |mean h_helpful - mean h_safe| at the layer

    def validate(self, name: str) -> None:
        check(0.0 in self.scales, f"{name}.scales", "must include 0 (the unmodified model)")


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str  # local | ray
    workers: int  # 0: one per core
    address: str | None  # ray: the cluster's address; null starts a local one

    def validate(self, name: str) -> None:
        check(self.kind in ("local", "ray"), f"{name}.kind", "must be local or ray")
        check(0 <= self.workers <= 1024, f"{name}.workers", "must be in [0, 1024] (0: all cores)")


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
        check(self.lora_rank >= 1, f"{name}.lora_rank", "must be >= 1")
        check(self.max_new_tokens >= 1, f"{name}.max_new_tokens", "must be >= 1")
        check(self.min_probes >= 2, f"{name}.min_probes", "must be >= 2")
