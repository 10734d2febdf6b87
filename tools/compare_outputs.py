"""Compare two runs' outputs: metrics JSON byte for byte, executed chapters by their outputs.

    python tools/compare_outputs.py RUN_A RUN_B

A refactor that changes a chapter's code but not what it shows keeps every output (text,
tables, figures, glued values) identical; code cells may differ. Exit 1 on any difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def outputs(path: Path) -> list:
    """Every output of every code cell, in order (execution counts dropped)."""
    nb = json.loads(path.read_text())
    out = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            o = {k: v for k, v in o.items() if k != "execution_count"}
            out.append(o)
    return out


def main(a: Path, b: Path) -> int:
    bad = 0
    for rel in sorted({p.relative_to(a) for p in (a / "data" / "metrics").glob("*.json")}
                      | {p.relative_to(b) for p in (b / "data" / "metrics").glob("*.json")}):
        pa, pb = a / rel, b / rel
        same = pa.is_file() and pb.is_file() and pa.read_bytes() == pb.read_bytes()
        print(f"{'same' if same else 'DIFFERS'}  {rel}")
        bad += not same
    for pa in sorted((a / "book" / "executed").glob("*.ipynb")):
        pb = b / "book" / "executed" / pa.name
        if pa.stem.startswith("09_provenance"):
            continue  # records the run itself (time, machine, revision)
        same = pb.is_file() and outputs(pa) == outputs(pb)
        print(f"{'same' if same else 'DIFFERS'}  outputs of book/executed/{pa.name}")
        bad += not same
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
