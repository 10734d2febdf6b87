"""Helpers for the tests that run the smoke pipeline in a copy of the repository."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's dvc, gravrev, papermill and jupyter-book
GIT = ["git", "-c", "user.name=gravrev tests", "-c", "user.email=tests@gravrev.invalid"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    # The smoke models are tiny: one thread each keeps the run fast even when something
    # else (another test run, another repro) competes for the cores.
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(
    cwd: Path, *args: str, timeout: int = 1200, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """A command in `cwd` with the venv on PATH; `env` adds to (or overrides) the environment."""
    return subprocess.run(
        list(args), cwd=cwd, env={**_env(), **(env or {})}, capture_output=True, text=True,
        timeout=timeout,
    )


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run(cwd, str(BIN / "dvc"), *args)


def tail(proc: subprocess.CompletedProcess, n: int = 6000) -> str:
    return (proc.stdout + proc.stderr)[-n:]


def ran(proc: subprocess.CompletedProcess) -> set[str]:
    """The stages a `dvc repro` actually ran."""
    return set(re.findall(r"Running stage '([\w-]+)'", proc.stdout + proc.stderr))


def copy_as_smoke_repo(root: Path) -> Path:
    """A committed copy of the working tree (tracked and untracked-not-ignored), preset smoke."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():  # a tracked file may be deleted in the working tree
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    params = root / "params.yaml"
    text, n = re.subn(r"(?m)^preset:.*$", "preset: smoke", params.read_text())
    assert n == 1, "params.yaml has no top-level preset line"
    params.write_text(text)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "smoke copy"]):
        proc = run(root, *GIT, *args)
        assert proc.returncode == 0, tail(proc)
    return root


def digest_tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder (hidden temporaries included), by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
