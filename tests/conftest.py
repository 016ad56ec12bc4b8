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


def fixture(name: str) -> dict:
    path = FIXTURES / name
    assert path.is_file(), f"parity fixture {path} is missing (set EDGEFFNET_FIXTURES to the fixtures folder)"
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="session")
def lite0_photos() -> dict:
    return fixture("reference_lite0_photos.pt")
