"""A stage step's outputs: one writer at a time, no stale temporaries, the last good results kept.

`guarded(data, stage, step, outs)` holds data/.<stage>.lock (fcntl) for the step, brings back
the outputs a killed run had set aside, removes the stale temporaries of the stage and of the
step's outs, then sets the step's outs aside (folders moved, files such as its
data/metrics/<name>.json copied): on success they are dropped, on any failure (an exception,
Ctrl-C) the outs go back as they were. Other stages' files are never touched: the lock is per
stage, so another stage may write its own metrics meanwhile.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

MANIFEST = "manifest.json"


class StageBusy(RuntimeError):
    """Another process writes this stage's outputs now (an orphaned run, a second run)."""


def lock_path(data: Path, stage: str) -> Path:
    return Path(data) / f".{stage}.lock"


@contextmanager
def stage_lock(data: Path, stage: str) -> Iterator[None]:
    """Hold the stage's lock for the block, or raise StageBusy naming the holder."""
    path = lock_path(data, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise StageBusy(f"{path}: another process (pid {holder}) is writing stage {stage}'s "
                            "outputs; wait for it to end or stop it, then run again") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _backups(data: Path, stage: str) -> list[Path]:
    return sorted(p for p in data.glob(f".{stage}.*.backup") if (p / MANIFEST).is_file())


def restore(data: Path, backup: Path) -> None:
    """Put a backup's outs back in place, then remove the backup."""
    manifest = json.loads((backup / MANIFEST).read_text())
    for i, (rel, existed) in enumerate(manifest["outs"]):
        out, kept = data / rel, backup / "outs" / str(i)
        if kept.exists():
            _remove(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(kept, out)
        elif not existed:
            _remove(out)  # written by the failed run where nothing was before
    _discard(backup)


def _discard(backup: Path) -> None:
    """Rename first, so a kill during the removal never leaves a half backup to restore."""
    trash = backup.with_name(f"{backup.name[:-len('.backup')]}.trash.{os.getpid()}")
    os.replace(backup, trash)
    shutil.rmtree(trash)


def remove_stale(data: Path, stage: str, outs: Sequence[Path] = ()) -> list[Path]:
    """Leftovers of killed runs: data/.<stage>.* (but the lock) and, beside each of `outs`,
    its temporaries .<out name>.* (atomic_dir's, atomic_path's). Returns what was removed."""
    found = set(data.glob(f".{stage}.*"))
    for out in map(Path, outs):
        for prefix in {out.name, out.stem}:
            found.update(out.parent.glob(f".{prefix}.*"))
    found.discard(lock_path(data, stage))
    for p in sorted(found):
        _remove(p)
    return sorted(found)


def recover(data: Path, stage: str) -> None:
    """Outputs a killed run of this stage had set aside go back first (that run never ended)."""
    for backup in _backups(data, stage):
        restore(data, backup)


@contextmanager
def kept_on_failure(data: Path, stage: str, step: str, outs: list[Path]) -> Iterator[None]:
    """Set `outs` (folders or files under data/) aside; the block writes new ones; on failure
    the old ones come back, on success the set-aside ones are dropped.

    Folders are moved (their models are large); files are copied, so they stay readable."""
    data = Path(data)
    backup = data / f".{stage}.{step}.backup"
    staging = Path(tempfile.mkdtemp(prefix=f".{stage}.{step}.", suffix=".tmp", dir=data))
    rels = [Path(out).resolve().relative_to(data.resolve()) for out in outs]
    manifest = {"outs": [[str(rel), (data / rel).exists()] for rel in rels]}
    (staging / "outs").mkdir()
    copied = {i for i, rel in enumerate(rels) if (data / rel).is_file()}
    for i in copied:  # whole before the backup appears: `recover` never restores half a file
        shutil.copy2(data / rels[i], staging / "outs" / str(i))
    (staging / MANIFEST).write_text(json.dumps(manifest))
    os.replace(staging, backup)  # from here on, a killed run is undone by `recover`
    for i, rel in enumerate(rels):
        if i not in copied and (data / rel).exists():
            os.replace(data / rel, backup / "outs" / str(i))
    try:
        yield
    except BaseException:
        restore(data, backup)
        raise
    _discard(backup)


@contextmanager
def guarded(data: Path, stage: str, step: str, outs: list[Path]) -> Iterator[None]:
    """One writer, no stale leftovers, the last good outputs kept if the step fails."""
    data = Path(data)
    data.mkdir(parents=True, exist_ok=True)
    with stage_lock(data, stage):
        recover(data, stage)
        remove_stale(data, stage, outs)
        with kept_on_failure(data, stage, step, outs):
            yield
