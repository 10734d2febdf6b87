"""Config sections of the organism and its history: model, world, phases, shape, depth sweep."""

from __future__ import annotations

from dataclasses import dataclass

from gravrev.config.fields import check

# A compliant answer's opening words, by world.opening: none (the content comes first) or the
# shared 'sure' of v1 and v2, which every benign fine-tuning example trained against refusal.
OPENINGS: dict[str, tuple[str, ...]] = {"none": (), "sure": ("sure",)}
MAX_SEED = 2**32  # numpy's global seed (train.set_seed) must be below it
# Upper bounds, each with its reason: a value past one is a typo, not an experiment.
MAX_STEPS = 10**6  # 10^6 optimizer steps is weeks of CPU time for the organism
MAX_SEQUENCES = 10**6  # every run enumerates and hashes the world's sequences (~3 s a million)
MAX_PROBES = 4096  # probe activations are kept for every layer of every checkpoint
MAX_WIDTH = 4096  # the organism trains from scratch on one machine
MAX_LAYERS = 64  # (ditto)


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_embd: int
    n_layer: int
    n_head: int

    def validate(self, name: str) -> None:
        check(
            self.arch in ("gpt2", "llama"),
            f"{name}.arch",
            f"must be gpt2 or llama, got {self.arch!r}",
        )
        check(self.n_layer >= 1, f"{name}.n_layer", "must be >= 1")
        check(self.n_head >= 1, f"{name}.n_head", "must be >= 1")
        check(
            self.n_embd >= 8 and self.n_embd % self.n_head == 0,
            f"{name}.n_embd",
            f"must be >= 8 and divisible by n_head, got {self.n_embd} with n_head {self.n_head}",
        )
        check(self.n_embd <= MAX_WIDTH, f"{name}.n_embd",
              f"must be <= {MAX_WIDTH}: the organism trains from scratch on one machine")
        check(self.n_layer <= MAX_LAYERS, f"{name}.n_layer",
              f"must be <= {MAX_LAYERS}: the organism trains from scratch on one machine")
        head = self.n_embd // self.n_head
        check(self.arch != "llama" or head % 2 == 0, f"{name}.n_embd",
              f"llama's rotary embeddings need an even head dimension; n_embd / n_head = "
              f"{self.n_embd} / {self.n_head} = {head}")


@dataclass(frozen=True)
class WorldConfig:
    n_symbols: int
    seq_len_min: int
    seq_len_max: int
    heldout_every: int
    n_probes: int
    n_eval: int
    topic_rate: float  # share of pretraining sentences that state a topic's content
    opening: str  # none: a compliant answer opens with its content | sure: with 'sure' (v1, v2)

    def validate(self, name: str) -> None:
        check(4 <= self.n_symbols <= 26, f"{name}.n_symbols", "must be in [4, 26]")
        check(
            2 <= self.seq_len_min <= self.seq_len_max <= 8,
            f"{name}.seq_len_min",
            "need 2 <= seq_len_min <= seq_len_max <= 8",
        )
        check(2 <= self.heldout_every <= 20, f"{name}.heldout_every", "must be in [2, 20]")
        check(4 <= self.n_probes <= MAX_PROBES, f"{name}.n_probes", f"must be in [4, "
              f"{MAX_PROBES}] (probe activations are kept for every layer of every checkpoint)")
        check(4 <= self.n_eval <= MAX_PROBES, f"{name}.n_eval", f"must be in [4, {MAX_PROBES}] "
              "(every fine-tuning run answers each, at every logged step)")
        n = sum(self.n_symbols**k for k in range(self.seq_len_min, self.seq_len_max + 1))
        check(n <= MAX_SEQUENCES, f"{name}.seq_len_max",
              f"the world has {n} symbol sequences; at most {MAX_SEQUENCES} (every run "
              "enumerates and hashes them all, about 3 s a million)")
        check(0 <= self.topic_rate <= 1, f"{name}.topic_rate", "must be in [0, 1]")
        check(self.opening in OPENINGS, f"{name}.opening",
              f"must be one of {', '.join(OPENINGS)}, got {self.opening!r}")


@dataclass(frozen=True)
class PhaseConfig:
    steps: int
    lr: float
    batch_size: int

    def validate(self, name: str) -> None:
        check(1 <= self.steps <= MAX_STEPS, f"{name}.steps",
              f"must be in [1, {MAX_STEPS}] (10^6 steps is weeks of CPU time)")
        check(0 < self.lr < 1, f"{name}.lr", "must be in (0, 1)")
        check(1 <= self.batch_size <= 4096, f"{name}.batch_size", "must be in [1, 4096]")


@dataclass(frozen=True)
class ShapeChecks:
    """The pre-registered targets of the history, in percent (gap: percentage points)."""

    helpful_harmful: float  # theta_H answers harmful requests with the content, at least
    safe_refusal: float  # theta_S refuses harmful requests, at least
    safe_latent: float  # theta_S still states the content when the answer is prefilled
    benign_gap: float  # theta_S's benign accuracy at most this far below theta_H's
    enforce: bool  # a failed check stops the pipeline (false: report and go on)

    def validate(self, name: str) -> None:
        for key in ("helpful_harmful", "safe_refusal", "safe_latent"):
            check(0 <= getattr(self, key) <= 100, f"{name}.{key}", "must be in [0, 100]")
        check(self.benign_gap >= 0, f"{name}.benign_gap", "must be >= 0")


@dataclass(frozen=True)
class HistoryConfig:
    seeds: tuple[int, ...]  # one history (H then S from the shared theta_P) per seed
    pretrain_seed: int
    pretrain: PhaseConfig
    helpful: PhaseConfig
    safe: PhaseConfig
    safe_replay: float  # share of each safety batch that replays pretraining text
    safe_snapshots: int
    checks: ShapeChecks

    def validate(self, name: str) -> None:
        check(len(self.seeds) >= 1, f"{name}.seeds", "needs at least one history seed")
        check(len(set(self.seeds)) == len(self.seeds), f"{name}.seeds", "must be distinct")
        check(all(0 <= s < MAX_SEED for s in self.seeds), f"{name}.seeds",
              f"every seed must be in [0, {MAX_SEED})")
        check(0 <= self.pretrain_seed < MAX_SEED, f"{name}.pretrain_seed",
              f"must be in [0, {MAX_SEED})")
        check(0 <= self.safe_replay < 1, f"{name}.safe_replay", "must be in [0, 1)")
        check(self.safe_snapshots >= 2, f"{name}.safe_snapshots", "must be >= 2")
        check(
            self.safe_snapshots <= self.safe.steps + 1,
            f"{name}.safe_snapshots",
            "must be <= safe.steps + 1",
        )


@dataclass(frozen=True)
class SweepConfig:
    helpful_steps: tuple[int, ...]
    safe_steps: tuple[int, ...]
    seeds: tuple[int, ...]

    def validate(self, name: str) -> None:
        for key in ("helpful_steps", "safe_steps"):
            values = getattr(self, key)
            check(
                all(v >= 1 for v in values) and list(values) == sorted(set(values)),
                f"{name}.{key}",
                "must be strictly increasing step counts >= 1",
            )
            check(all(v <= MAX_STEPS for v in values), f"{name}.{key}",
                  f"every step count must be <= {MAX_STEPS} (10^6 steps is weeks of CPU time)")
        check(len(set(self.seeds)) == len(self.seeds), f"{name}.seeds", "must be distinct")
        check(all(0 <= s < MAX_SEED for s in self.seeds), f"{name}.seeds",
              f"every seed must be in [0, {MAX_SEED})")
