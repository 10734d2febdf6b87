"""Write each dvc.yaml stage's gravrev/ deps as exactly its import closure (`make deps`).

Other deps (data, notebooks, book pages) are kept as written; comments are kept too.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from import_closure import reached, stage_source  # noqa: E402


def main() -> None:
    path = ROOT / "dvc.yaml"
    text = path.read_text()
    stages = yaml.safe_load(text)["stages"]
    out, name, in_deps = [], None, False
    for line in text.splitlines():
        stage = re.match(r"^  ([a-z_]+):$", line)
        if stage:
            name, in_deps = stage.group(1), False
        if re.match(r"^    deps:$", line):
            in_deps = True
            out.append(line)
            source = stage_source(stages[name]["cmd"])
            code = sorted(reached(source)) if source else []
            kept = [d for d in stages[name].get("deps", []) if not str(d).startswith("gravrev/")]
            out += [f"    - {d}" for d in kept] + [f"    - {d}" for d in code]
            continue
        if in_deps:
            if re.match(r"^    - ", line):
                continue
            in_deps = False
        out.append(line)
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
