"""The one exception type for mistakes a user can fix.

The CLI catches it once and prints its message as a single line; anything else is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """Bad input: the message says what was wrong and what to do instead."""

    exit_code = 2


class FidelityTooLow(UserError):
    """A reduced-precision build of trained weights misses the fidelity gate (precision/fidelity.py)."""

    exit_code = 1
