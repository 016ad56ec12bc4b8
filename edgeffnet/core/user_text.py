"""Printing text that came from users and files (paths, specs, record names, a command's output) as text.

rich reads `[link=...]` and `[/bold]` as markup and `:cat:` as an emoji, and passes ANSI escape
sequences through to the terminal, where they can recolour, retitle or hide what follows. The
consoles of the CLI are made here: no markup, no emoji, and every control character made visible
(`\\x1b` printed as those four characters) in whatever string they render, table cells included.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

_KEPT = {"\n", "\t"}  # layout the CLI itself prints (tables, multi-line notes)


def visible(text: str, newlines: bool = True) -> str:
    """`text` with control characters spelled out as Python escapes (a line stays one line if not `newlines`)."""
    if text.isprintable():
        return text
    kept = _KEPT if newlines else {"\t"}
    return "".join(c if c.isprintable() or c in kept else repr(c)[1:-1] for c in text)


class TextConsole(Console):
    """A rich Console that renders every string as plain text with control characters visible."""

    def __init__(self, **kwargs):
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def render_str(self, text: str, **kwargs) -> Text:
        return super().render_str(visible(text), **kwargs)


def one_line(text: str) -> Text:
    """A message as exactly one line of plain text (an error naming a file with a newline in its name)."""
    return Text(visible(text, newlines=False))
