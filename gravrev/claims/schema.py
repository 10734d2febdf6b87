"""The claims list and the schema of data/metrics/claims.json: verdict words, entry keys, checks."""

import math
from importlib import resources

import yaml

VERDICTS = ("holds", "does not hold", "not comparable")
HOLDS, FAILS, NOT_COMPARABLE = VERDICTS
VERSIONS = ("first", "revised")  # the paper's arXiv abstract as first posted; its revision
ENTRY_KEYS = (
    "id",
    "version",
    "quantity",
    "paper",
    "measured",
    "preset",
    "verdict",
    "rule",
    "within_paper_2sd",
    "size_verdict",
    "size_rule",
)


def _paper_file() -> dict:
    text = (resources.files("gravrev.claims") / "paper_claims.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def load_paper_claims() -> list[dict]:
    """The claims list of the packaged paper_claims.yaml, both versions, first then revised."""
    return _paper_file()["claims"]


def load_versions() -> dict[str, dict]:
    """Each version of the paper: its title and where its claims are stated."""
    return _paper_file()["versions"]


def _check_numbers(x: object, path: str, comparable: bool) -> None:
    if isinstance(x, dict):
        for k, v in x.items():
            _check_numbers(v, f"{path}.{k}", comparable)
        return
    if x is None or (isinstance(x, float) and math.isnan(x)):
        if comparable:
            raise ValueError(f"{path} is missing but the claim was compared")
        return
    if isinstance(x, bool):
        return
    if not isinstance(x, int | float) or not math.isfinite(x):
        raise ValueError(f"{path} must be a finite number, got {x!r}")


def validate_report(report: dict, paper_claims: list[dict] | None = None) -> None:
    """Raise ValueError naming the claim and field where report breaks the claims.json schema."""
    for key in ("preset", "n_runs", "claims"):
        if key not in report:
            raise ValueError(f"report is missing {key!r}")
    claims = load_paper_claims() if paper_claims is None else paper_claims
    expected = {c["id"]: c for c in claims}
    seen: set[str] = set()
    for entry in report["claims"]:
        cid = entry.get("id") if isinstance(entry, dict) else None
        if cid not in expected:
            raise ValueError(f"claim {cid!r} is not a paper claim")
        if cid in seen:
            raise ValueError(f"claim {cid!r} appears more than once")
        seen.add(cid)
        for key in ENTRY_KEYS:
            if key not in entry:
                raise ValueError(f"claim {cid!r} is missing {key!r}")
        if entry["version"] not in VERSIONS or entry["version"] != expected[cid]["version"]:
            raise ValueError(f"claim {cid!r}: version {entry['version']!r} is not its paper's")
        if entry["verdict"] not in VERDICTS:
            raise ValueError(f"claim {cid!r}: verdict {entry['verdict']!r} not in {VERDICTS}")
        if entry["preset"] != report["preset"]:
            raise ValueError(f"claim {cid!r}: preset {entry['preset']!r} differs from report's")
        if not isinstance(entry["rule"], str) or not entry["rule"]:
            raise ValueError(f"claim {cid!r}: rule must be a non-empty sentence")
        comparable = entry["verdict"] != NOT_COMPARABLE
        if entry["measured"] is None:
            if comparable:
                raise ValueError(f"claim {cid!r}: measured is missing but the claim was compared")
        elif isinstance(entry["measured"], dict):
            _check_numbers(entry["measured"], f"claim {cid!r}: measured", comparable)
        else:
            raise ValueError(f"claim {cid!r}: measured must be a dict or None")
        within = entry["within_paper_2sd"]
        if within is not None and not isinstance(within, bool):
            raise ValueError(f"claim {cid!r}: within_paper_2sd must be a bool or None")
        paper = expected[cid]
        if comparable and "mean" in paper and "sd" in paper and within is None:
            raise ValueError(f"claim {cid!r}: within_paper_2sd must be a bool for a mean/sd claim")
    missing = [cid for cid in expected if cid not in seen]
    if missing:
        raise ValueError(f"claims missing from report: {', '.join(missing)}")
