"""'Did you mean' for a near-miss name (a spec's base, a target, a weights keyword, a precision)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.5) -> str:
    """ " (did you mean 'x'?)" for the closest of `choices` to `word`, or "" when none is close.

    0.5: names here are short ("b9" shares half its letters with "b7"), and a wrong guess costs a glance."""
    close = difflib.get_close_matches(str(word).strip().lower(), sorted(set(choices)), n=1, cutoff=cutoff)
    return f" (did you mean '{close[0]}'?)" if close else ""
