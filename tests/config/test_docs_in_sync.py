"""docs/configuration.md is generated from the config schema and must not drift from it."""

from __future__ import annotations

from pathlib import Path

from homeserver.config import configuration_reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_reference_is_up_to_date() -> None:
    expected = configuration_reference_markdown()
    actual = DOC.read_text(encoding="utf-8") if DOC.exists() else None
    assert actual == expected, (
        f"{DOC} is out of date with homeserver/config.py (SCHEMA / ACCEPTED_SYNAPSE_KEYS). "
        "Regenerate it with: .venv/bin/python -m homeserver.config docs/configuration.md"
    )
