"""Shared test fixtures: paths to the parity fixtures and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _find_fixtures() -> Path:
    """EDGEFFNET_FIXTURES, else the nearest `shared/fixtures` beside the checkout or above it."""
    if os.environ.get("EDGEFFNET_FIXTURES"):
        return Path(os.environ["EDGEFFNET_FIXTURES"])
    for parent in REPO.parents:
        if (parent / "shared" / "fixtures" / "README.md").is_file():
            return parent / "shared" / "fixtures"
    return REPO.parent / "shared" / "fixtures"


FIXTURES = _find_fixtures()


def fixture_path(name: str) -> Path:
    """The parity fixture's path; the test skips, saying why, where the fixtures are absent."""
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"parity fixture {path} is missing (set EDGEFFNET_FIXTURES to the fixtures folder)")
    return path


def fixture(name: str) -> dict:
    return torch.load(fixture_path(name), weights_only=True)


@pytest.fixture(scope="session")
def lite0_photos() -> dict:
    return fixture("reference_lite0_photos.pt")
