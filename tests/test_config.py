"""Settings: every one read in ``cove.config``, described there and in the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cove.config import Settings

README = Path(__file__).parent.parent / "README.md"


def readme_settings() -> list[str]:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(COVE_[A-Z0-9_]+)` \|", section, flags=re.M)


def test_the_readme_lists_exactly_the_settings() -> None:
    listed = readme_settings()
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(f"COVE_{name.upper()}" for name in Settings.model_fields)


def test_every_setting_says_what_it_is() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


def test_apt_sources_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().apt_sources is None
    monkeypatch.setenv("COVE_APT_SOURCES", "/srv/mirror.sources")
    assert Settings().apt_sources == Path("/srv/mirror.sources")
