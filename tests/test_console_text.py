"""User text (paths, specs, names) is printed as text. No rich markup (`[link=...]`, `[/bold]`),
no emoji (`:cat:`), and control characters (ANSI escapes, BEL, newlines in a file name) are shown, not
sent to the terminal; an error is still exactly one line."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import assert_refused as refused
from PIL import Image
from rich.table import Table

import edgeffnet
from edgeffnet.core.user_text import TextConsole, one_line, visible

HOSTILE = [
    "[link=http://example.com/x]click[/link]",
    "[/bold]",
    ":cat: :thumbs_up:",
    "\x1b[31mred\x1b[0m",
    "\x1b]8;;http://example.com\x07hyper\x1b]8;;\x07",
    "bell\x07",
    "back\x08space",
    "\x9b2J",
]
NAMES = [t.replace("/", "|") for t in HOSTILE]  # as file names: no folder separators
RAW = ("\x1b", "\x07", "\x08", "\x9b", "\U0001f431", "\U0001f44d")


def _plain(text: str) -> None:
    for c in RAW:
        assert c not in text, (c, text)


@pytest.mark.parametrize("text", HOSTILE)
def test_the_console_prints_strings_and_table_cells_as_text(text):
    buffer = io.StringIO()
    console = TextConsole(file=buffer, width=300)
    console.print(f"path {text}")
    table = Table(title=f"title {text}")
    table.add_column("name")
    table.add_row(text)
    console.print(table)
    printed = buffer.getvalue()
    _plain(printed)
    assert visible(text) in printed.splitlines()[0]
    if text.isprintable():  # markup and emoji codes stay as they were typed
        assert text in printed.splitlines()[0]


def test_one_line_stays_one_line():
    buffer = io.StringIO()
    TextConsole(file=buffer, width=300).print(one_line("edgeffnet: error: 'a\nb\r\x1b[2K' is missing"))
    assert buffer.getvalue() == "edgeffnet: error: 'a\\nb\\r\\x1b[2K' is missing\n"


@pytest.mark.parametrize("name", NAMES + ["new\nline"])
def test_an_error_naming_a_hostile_path_is_one_visible_line(cli, tmp_path, name):
    missing = tmp_path / f"bundle {name}"
    line = refused(cli("predict", missing, tmp_path / "photo.png"))
    _plain(line)
    assert visible(name, newlines=False) in line


@pytest.mark.parametrize("target", ["[bold]t:cat:", "x\x1b[2J.toml", "[/red]"])
def test_a_hostile_target_name_is_one_visible_line(cli, tmp_path, target):
    line = refused(cli("build", "b0,res=64", "--target", target, "-o", tmp_path / "b"))
    _plain(line)
    assert visible(target, newlines=False) in line
    assert not (tmp_path / "b").exists()


def test_a_hostile_spec_is_one_visible_line(cli):
    line = refused(cli("info", "b0,[/bold]=1,:cat:=\x1b[31m"))
    _plain(line)
    assert "[/bold]" in line


def test_markup_in_a_saved_result_path_is_printed_after_saving(cli, tmp_path):
    """`[/bold]` in -o raised MarkupError after the result was written: now the line is printed as text."""
    weights = tmp_path / "w.pt"
    edgeffnet.save_weights(edgeffnet.create_model("lite0,res=64"), weights)
    photo = tmp_path / "p.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photo)
    out = tmp_path / "maps [/bold] :cat: [link=http://example.com]x"
    done = cli("cam", "lite0,res=64", "-w", weights, photo, "--top", "1", "-o", out)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "cam.json").read_text())["images"]
    assert str(out) in done.stderr and "Traceback" not in done.stderr
    _plain(done.stderr)


def test_log_lines_show_control_characters():
    import logging

    from edgeffnet.core import logs

    buffer = io.StringIO()
    handler = logs.console_handler(buffer)
    handler.emit(logging.LogRecord("edgeffnet", logging.INFO, __file__, 1, "joining %s", ("\x1b]0;owned\x07",), None))
    assert buffer.getvalue() == "joining \\x1b]0;owned\\x07\n"
