"""CI's check that the browser test ran: a junit report with tests/test_browser.py's cases,
none skipped. Usage: python tools/ci_browser_ran.py JUNIT_XML (exit 1 with the reason)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

MODULE = "test_browser"


def problem(junit: Path) -> str | None:
    """Why the report does not show the browser test run, or None."""
    if not junit.is_file():
        return f"{junit}: no junit report"
    cases = [c for c in ET.parse(junit).iter("testcase")
             if MODULE in c.get("classname", "").split(".")]
    if not cases:
        return f"{junit}: no case of tests/{MODULE}.py ran"
    skipped = [c for c in cases if c.find("skipped") is not None]
    if skipped:
        reason = skipped[0].find("skipped").get("message", "")
        return f"{len(skipped)} of {len(cases)} browser test cases skipped in CI ({reason})"
    return None


if __name__ == "__main__":
    why = problem(Path(sys.argv[1]))
    if why:
        print(f"ci: {why}", file=sys.stderr)
        sys.exit(1)
    print("ci: the browser test ran")
