"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.influx2_standin import TOKEN


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A token file holding the stand-in's token."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    return path
