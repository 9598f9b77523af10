"""The README's settings table is the one generated from the Settings fields."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings, settings_table_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_table() -> str:
    text = README.read_text()
    match = re.search(
        r"<!-- settings-table:start[^>]*-->\n(.*?)<!-- settings-table:end -->", text, re.S
    )
    assert match, "README.md has no settings-table markers"
    return match.group(1)


def test_readme_table_matches_settings() -> None:
    assert _readme_table() == settings_table_markdown(), (
        "README.md's settings table is stale: run `make settings-table`"
    )


def test_table_has_a_row_per_field_with_a_description() -> None:
    rows = [r for r in settings_table_markdown().splitlines()[2:] if r.startswith("| `--")]
    assert len(rows) == len(Settings.model_fields)
    for row, (name, field) in zip(rows, Settings.model_fields.items(), strict=True):
        assert row.startswith(f"| `--{name.replace('_', '-')}` | `CRIA_{name.upper()}` |")
        assert field.description
