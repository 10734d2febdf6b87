"""Command line: validate, run a stage's computation, render its chapter, build the book."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from gravrev.config.fields import ConfigError
from gravrev.report.glue import rendering
from gravrev.runtime.numerics import apply_pins
from gravrev.store.atomic import atomic_path, write_json
from gravrev.store.paths import Paths

# stage -> its chapter (notebook); the order is the pipeline's
STAGES = {
    "history": "01_history",
    "finetune": "02_finetune",
    "vrev": "03_vrev",
    "nulls": "04_nulls",
    "blocking": "05_blocking",
    "mediation": "06_mediation",
    "claims": "07_claims",
    "sweep": "08_sweep",
    "defenses": "11_defenses",
}
# Every chapter in number order: the stages' and the two of no stage (the run's record, the
# 7B arithmetic), which come after the paper's stages and before what goes beyond them.
NOTEBOOKS = tuple(sorted((*STAGES.values(), "09_provenance", "10_budget")))


def step_module(name: str, step: str) -> str:
    """The module of a stage's step: `run` is runs.run (training) or compute.run; `metrics`."""
    if step == "metrics":
        return f"gravrev.stages.{name}.metrics"
    package = Path(__file__).parent / "stages" / name
    return f"gravrev.stages.{name}." + ("runs" if (package / "runs.py").is_file() else "compute")


def has_metrics_step(name: str) -> bool:
    """Training stages keep their cheap measurements in a step of their own."""
    return (Path(__file__).parent / "stages" / name / "metrics.py").is_file()


# stage -> the name of its data/metrics/<name>.json, where it is not the stage's own
METRICS_FILE = {"vrev": "alignment"}


def step_outs(name: str, root: Path, step: str) -> list[Path]:
    """What a step writes: data/<name> (run) or data/measures/<name> (metrics), and the
    stage's data/metrics/<file>.json if this step measures it (its metrics step, or its run)."""
    paths = Paths(root)
    outs = [paths.data / "measures" / name if step == "metrics" else paths.stage(name)]
    if step == "metrics" or not has_metrics_step(name):
        outs.append(paths.metrics_file(METRICS_FILE.get(name, name)))
    return outs


def run_stage(name: str, root: Path, params: Path, step: str = "run") -> float:
    """One step of a stage (`run` or `metrics`); its wall time goes to data/timings.

    The step holds the stage's lock and, if it fails, leaves its outs (step_outs) as they
    were (gravrev.store.guard)."""
    from gravrev.config.validate import validated_config
    from gravrev.store.guard import guarded

    cfg = validated_config(params)
    apply_pins(cfg.numeric_pins)  # before the stage's first torch operation
    module = importlib.import_module(step_module(name, step))
    start = time.perf_counter()
    with guarded(Paths(root).data, name, step, step_outs(name, root, step)):
        (module.measure if step == "metrics" else module.run)(cfg, Paths(root))
    seconds = time.perf_counter() - start
    label = name if step == "run" else f"{name}_{step}"
    record = {"stage": label, "seconds": seconds}
    if step == "run":  # the seconds inside the executor's runs, summed over its workers
        from gravrev.runtime.executor import task_seconds

        record["run_seconds"] = task_seconds()
    write_json(Paths(root).timings / f"{label}.json", record)
    return seconds


def run_notebook(name: str, root: Path, params: Path) -> float:
    """Execute notebooks/NAME.ipynb into book/executed/NAME.ipynb, whole or not at all (a
    chapter whose stage this setting skips: its introduction and why, nothing executed)."""
    import papermill

    from gravrev.config.validate import validated_config
    from gravrev.report.publish import skipped_chapter, tidy_executed
    from gravrev.stages.skipped import skip_reason

    cfg = validated_config(params)
    apply_pins(cfg.numeric_pins)  # the kernel inherits the choice

    src = root / "notebooks" / f"{name}.ipynb"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such notebook; notebooks are {NOTEBOOKS}")
    dest = root / "book" / "executed" / f"{name}.ipynb"
    start = time.perf_counter()
    stage = {chapter: s for s, chapter in STAGES.items()}.get(name)
    if stage and (reason := skip_reason(cfg, stage)):  # nothing to show but why
        skipped_chapter(src, dest, reason)
    else:
        with atomic_path(dest) as tmp, rendering():
            papermill.execute_notebook(
                str(src), str(tmp), parameters={"params_path": str(params)}, cwd=str(root),
                kernel_name="python3", progress_bar=False, stderr_file=sys.stderr,
            )
            tidy_executed(tmp)
    seconds = time.perf_counter() - start
    write_json(Paths(root).timings / f"render_{name}.json", {"stage": name, "seconds": seconds})
    return seconds


def build_book(root: Path) -> None:
    """jupyter-book build into a temporary folder, warnings as errors, then swap it in."""
    import shutil
    import subprocess
    import tempfile

    from gravrev.store.atomic import atomic_dir

    with tempfile.TemporaryDirectory(dir=root / "book") as tmp:
        subprocess.run(
            [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root / "book"),
             "--path-output", tmp, "-W", "-n", "--keep-going", "-q"],
            check=True,
        )
        with atomic_dir(root / "book" / "_build" / "html") as dest:
            shutil.copytree(Path(tmp) / "_build" / "html", dest, dirs_exist_ok=True)


def validate(params: Path, root: Path, write: bool) -> None:
    """Check params and every input; with `write`, save the resolved config (data/config.json)."""
    from gravrev.config.validate import validated_config

    cfg = validated_config(params, deep=True)
    text = cfg.resolved_text()
    if not write:
        print(text, end="")
        return
    paths = Paths(root)
    with atomic_path(paths.resolved_config) as tmp:
        tmp.write_text(text)
    with atomic_path(paths.data / "config.ok") as tmp:
        tmp.write_text("valid\n")  # the stamp every stage depends on: it never changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gravrev", description=__doc__)
    parser.add_argument("--params", default="params.yaml",
                        help="the params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    val = sub.add_parser("validate", help="check params and every input; print the config")
    val.add_argument("--write", action="store_true", help="write data/config.json instead")
    run = sub.add_parser("run", help="run one stage's computation (no papermill; GPU-friendly)")
    run.add_argument("stage", choices=tuple(STAGES))
    met = sub.add_parser("metrics", help="a training stage's measurements from its saved runs")
    met.add_argument("stage", choices=[s for s in STAGES if has_metrics_step(s)] or None)
    nb = sub.add_parser("notebook", help="render one chapter's notebook with papermill")
    nb.add_argument("name", choices=NOTEBOOKS)
    sub.add_parser("book", help="render the provenance page and build the book (offline)")
    args = parser.parse_args(argv)
    root, params = Path.cwd(), Path(args.params)
    try:
        if args.command == "validate":
            validate(params, root, args.write)
        elif args.command == "run":
            seconds = run_stage(args.stage, root, params)
            print(f"{args.stage}: {seconds:.1f} s")
        elif args.command == "metrics":
            seconds = run_stage(args.stage, root, params, "metrics")
            print(f"{args.stage} metrics: {seconds:.1f} s")
        elif args.command == "notebook":
            seconds = run_notebook(args.name, root, params)
            print(f"{args.name}: {seconds:.1f} s -> book/executed/{args.name}.ipynb")
        elif args.command == "book":
            run_notebook("09_provenance", root, params)
            build_book(root)
            print(f"The book is at {root / 'book' / '_build' / 'html' / 'index.html'}")
    except (ConfigError, FileNotFoundError) as e:
        print(f"gravrev: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # e.g. a missed shape check: said plainly, no traceback
        print(f"gravrev: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
