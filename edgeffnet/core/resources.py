"""Where the repo's data folders (targets/, calibration/) are: in a wheel they sit inside the package."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_PACKAGE = Path(__file__).resolve().parent.parent  # edgeffnet/, above core/


def data_dir(name: str) -> Path:
    installed = _PACKAGE / "data" / name  # a wheel maps targets/ -> edgeffnet/data/targets/
    return installed if installed.is_dir() else _PACKAGE.parent / name


def read_toml(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def package_file(name: str) -> Path:
    return _PACKAGE / "data" / name
