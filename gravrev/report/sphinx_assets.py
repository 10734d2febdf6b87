"""A Sphinx extension for the book: each inline script once per page.

Sphinx 7.4 registers an inline script added after the builder starts twice (once with the
file name None, once with ""), so sphinx-thebe's `const THEBE_JS_URL` is declared twice on
every page and the browser reports a SyntaxError. This drops the repeats before rendering.
"""

from __future__ import annotations

from typing import Any


def script_key(script: Any) -> tuple:
    """What makes two scripts the same: file (None and "" alike), priority and attributes."""
    attributes = getattr(script, "attributes", {})
    return (
        getattr(script, "filename", script) or "",
        getattr(script, "priority", None),
        tuple(sorted(attributes.items())),
    )


def unique_scripts(scripts: list) -> list:
    """The scripts in order, each only at its first occurrence."""
    seen: set[tuple] = set()
    out = []
    for script in scripts:
        key = script_key(script)
        if key not in seen:
            seen.add(key)
            out.append(script)
    return out


def _dedupe_page_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if isinstance(scripts, list):
        scripts[:] = unique_scripts(scripts)


def setup(app) -> dict[str, Any]:
    """Sphinx's entry point (`sphinx: extra_extensions` in book/_config.yml)."""
    app.connect("html-page-context", _dedupe_page_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
