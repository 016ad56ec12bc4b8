"""Reading back what a search or fit left on disk (one JSON per candidate or network) before reusing it.

These files are edgeffnet's own, written whole (atomically); one that is not a JSON object, holds NaN,
or has a field of the wrong type was edited or damaged, and reusing it would rank a made-up figure.
Such a file is refused in one line that names it and says to delete it (that candidate is then
measured again); a file with other settings is simply not reused, as before.
"""

from __future__ import annotations

import math
from pathlib import Path

from edgeffnet.core.untrusted import UntrustedFileError, field, read_json

STATE_CAP = 4 << 20  # a candidate's row is about 2 KB; a fit measurement with its history a little more


def read_state(path: Path, what: str) -> dict | None:
    """The JSON object at `path`, None where there is none; one line for anything else."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        return read_json(path, STATE_CAP, what)
    except UntrustedFileError as e:
        raise UntrustedFileError(f"{e}; delete it and run again to measure that one anew") from None


def check_fields(
    row: dict,
    path: Path,
    *,
    positive: tuple[str, ...] = (),
    whole: tuple[str, ...] = (),
    text: tuple[str, ...] = (),
    fraction_or_none: tuple[str, ...] = (),
) -> dict:
    """`row` after its fields are checked: finite positive numbers, whole numbers, strings, fractions."""
    source = f"{path} (delete it and run again to measure that one anew)"
    for key in positive:
        value = field(row, key, float, source)
        if not value > 0:
            raise UntrustedFileError(f"{source}: '{key}' is {value}, not a positive number")
    for key in whole:
        field(row, key, int, source)
    for key in text:
        field(row, key, str, source)
    for key in fraction_or_none:
        value = row.get(key)
        if value is not None and not (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1
        ):
            raise UntrustedFileError(f"{source}: '{key}' is {value!r:.40}, not a fraction between 0 and 1")
    return row
