"""Command line: validate params, run a stage's notebook (papermill) or its module directly."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gravrev.config import ConfigError, Paths, load_config
from gravrev.io import atomic_path, write_json

STAGES = (
    "01_history",
    "02_finetune",
    "03_vrev",
    "04_nulls",
    "05_blocking",
    "06_claims",
    "07_provenance",
)


def run_notebook(name: str, root: Path, params: Path) -> float:
    """Execute notebooks/NAME.ipynb into book/executed/NAME.ipynb, whole or not at all."""
    import papermill

    src = root / "notebooks" / f"{name}.ipynb"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such notebook; stages are {STAGES}")
    dest = root / "book" / "executed" / f"{name}.ipynb"
    start = time.perf_counter()
    with atomic_path(dest) as tmp:
        papermill.execute_notebook(
            str(src),
            str(tmp),
            parameters={"params_path": str(params)},
            cwd=str(root),
            kernel_name="python3",
            progress_bar=False,
            stderr_file=sys.stderr,  # the stages' own tqdm bars, live in the terminal
        )
    seconds = time.perf_counter() - start
    write_json(Paths(root).timings / f"{name}.json", {"stage": name, "seconds": seconds})
    return seconds


def build_book(root: Path) -> None:
    """jupyter-book build into a temporary folder, warnings as errors, then swap it in."""
    import shutil
    import subprocess
    import tempfile

    from gravrev.io import atomic_dir

    with tempfile.TemporaryDirectory(dir=root / "book") as tmp:
        subprocess.run(
            [
                str(Path(sys.executable).parent / "jupyter-book"),
                "build",
                str(root / "book"),
                "--path-output",
                tmp,
                "-W",
                "-n",
                "--keep-going",
                "-q",
            ],
            check=True,
        )
        with atomic_dir(root / "book" / "_build" / "html") as dest:
            shutil.copytree(Path(tmp) / "_build" / "html", dest, dirs_exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gravrev", description=__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="the params file (default: params.yaml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("validate", help="check params (and the hf inputs) and print the config")
    nb = sub.add_parser("notebook", help="run one stage's notebook with papermill")
    nb.add_argument("name", choices=STAGES)
    sub.add_parser("book", help="run the provenance notebook and build the book (offline)")
    sub.add_parser("history", help="stage 01 without papermill (e.g. on a GPU machine)")
    sub.add_parser("finetune", help="stage 02 without papermill")
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        cfg = load_config(args.params)  # every stage validates before any work
        if cfg.is_hf:
            from gravrev.hf import validate_inputs

            validate_inputs(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"gravrev: {e}", file=sys.stderr)
        return 2
    paths = Paths(root)
    if args.command == "validate":
        print(json.dumps(cfg.to_dict(), indent=2))
    elif args.command == "notebook":
        seconds = run_notebook(args.name, root, Path(args.params))
        print(f"{args.name}: {seconds:.1f} s -> book/executed/{args.name}.ipynb")
    elif args.command == "book":
        run_notebook("07_provenance", root, Path(args.params))
        build_book(root)
        print(f"The book is at {root / 'book' / '_build' / 'html' / 'index.html'}")
    elif args.command == "history":
        from gravrev.history import build_history
        from gravrev.train import pick_device

        build_history(cfg, paths, pick_device(cfg.device, cfg.cpu_threads))
    elif args.command == "finetune":
        from gravrev.finetune import run_finetune
        from gravrev.setting import make_setting
        from gravrev.train import pick_device

        run_finetune(cfg, paths, make_setting(cfg, paths), pick_device(cfg.device, cfg.cpu_threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
