"""Every random stream of the project, named once: each seed is a function of a run's seed.

The values are the ones that made the reference metrics; a change here changes every byte
downstream of the stream it names. Two streams below share a value ([seed, 7]) for that reason:
they are distinct streams, drawn in distinct processes, and are kept as they were.
"""

from __future__ import annotations

import zlib

PHASE_STRIDE = 1000  # history seed h trains H with h*1000+1 and S with h*1000+2
EARLY_SEED0 = 1000  # early fine-tuning runs use seeds 1001, 1002, ...: never a main run's seed
PENALTY_POOL = 12345  # the organism's pool of harmful training prompts a penalty looks at


def helpful_phase(history_seed: int) -> int:
    """Phase H (helpful-only tuning) of one history."""
    return history_seed * PHASE_STRIDE + 1


def safe_phase(history_seed: int) -> int:
    """Phase S (safety alignment) of one history."""
    return history_seed * PHASE_STRIDE + 2


def early_run(index: int) -> int:
    """The index-th (0-based) early fine-tuning run of a history."""
    return EARLY_SEED0 + 1 + index


def penalty_batches(run_seed: int) -> list[int]:
    """Each step's minibatch, drawn from the penalty pool, of a blocking objective's run."""
    return [run_seed, 7]


def control_directions(history_seed: int) -> list[int]:
    """The blocking stage's random and covariance-shaped control directions of one history."""
    return [history_seed, 7]


def world_split(offset: int, kind: str) -> list[int]:
    """The synthetic world's draws of one kind of example at one offset."""
    return [offset, zlib.crc32(kind.encode())]


def rehearsal_batches(run_seed: int) -> list[int]:
    """Each step's safety pairs mixed into a rehearsal run's batches (never the benign draws)."""
    return [run_seed, zlib.crc32(b"rehearsal")]


def readout_directions(history_seed: int) -> list[int]:
    """The random unit directions of the vocabulary readout's null, one history's."""
    return [history_seed, zlib.crc32(b"readout")]


def mediation_controls(history_seed: int) -> list[int]:
    """The mediation stage's random, covariance-shaped control directions of one history."""
    return [history_seed, zlib.crc32(b"mediation controls")]


def power_simulation(claim: str) -> list[int]:
    """The power analysis's simulated histories of one claim (e.g. 'alignment_step20')."""
    return [zlib.crc32(b"power"), zlib.crc32(claim.encode())]
