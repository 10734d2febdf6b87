"""Command line: validate, run a stage's computation, render its chapter, build the book."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from gravrev.config import ConfigError, Paths
from gravrev.io import atomic_path, write_json
from gravrev.numerics import apply_pins

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
}
NOTEBOOKS = (*STAGES.values(), "09_provenance", "10_budget")


def run_stage(name: str, root: Path, params: Path) -> float:
    """The stage's computation (gravrev.stages.<name>.run); its wall time goes to data/timings."""
    from gravrev.validation import validated_config

    cfg = validated_config(params)
    apply_pins(cfg.numeric_pins)  # before the stage's first torch operation
    module = importlib.import_module(f"gravrev.stages.{name}")
    start = time.perf_counter()
    module.run(cfg, Paths(root))
    seconds = time.perf_counter() - start
    write_json(Paths(root).timings / f"{name}.json", {"stage": name, "seconds": seconds})
    return seconds


def run_notebook(name: str, root: Path, params: Path) -> float:
    """Execute notebooks/NAME.ipynb into book/executed/NAME.ipynb, whole or not at all."""
    import papermill

    from gravrev.publish import tidy_executed
    from gravrev.validation import validated_config

    apply_pins(validated_config(params).numeric_pins)  # the kernel inherits the choice

    src = root / "notebooks" / f"{name}.ipynb"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such notebook; notebooks are {NOTEBOOKS}")
    dest = root / "book" / "executed" / f"{name}.ipynb"
    start = time.perf_counter()
    with atomic_path(dest) as tmp:
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

    from gravrev.io import atomic_dir

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
    from gravrev.validation import validated_config

    cfg = validated_config(params)
    text = json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
    if not write:
        print(text)
        return
    paths = Paths(root)
    with atomic_path(paths.resolved_config) as tmp:
        tmp.write_text(text + "\n")
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
