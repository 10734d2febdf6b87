"""The own-model page's table of `hf` fields says what the code does: every field, its default."""

import dataclasses
import re
from pathlib import Path

import yaml

from gravrev.config.experiment import HFConfig
from gravrev.config.load import resolve

PAGE = Path(__file__).resolve().parents[1] / "book" / "own_model.md"
ROW = re.compile(r"^\| `(\w+)` \| `([^`]*)` \| (.+) \|$")


def hf_table(markdown: str) -> dict[str, str]:
    """field -> default as written, from the rows of the page's `hf` field table."""
    return {m[1]: m[2] for line in markdown.splitlines() if (m := ROW.match(line))}


def test_the_table_parser_reads_rows():
    assert hf_table("| `lora_rank` | `8` | The rank. |\n| field | default | meaning |") == {
        "lora_rank": "8"
    }


def test_every_hf_field_is_on_the_page_with_the_hf_presets_default():
    table = hf_table(PAGE.read_text())
    assert set(table) == {f.name for f in dataclasses.fields(HFConfig)}
    defaults = resolve({"preset": "hf"}).hf
    for name, written in table.items():
        assert yaml.safe_load(written) == getattr(defaults, name), name
