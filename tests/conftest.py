"""Shared test fixtures: paths to the parity fixtures, and the one CLI harness.

The CLI harness runs `edgeffnet ARGS...` as the console script does (`edgeffnet.cli.main`, so a refusal is
judged as a user sees it):
- `run_cli(*args, env=...)` / the `cli` fixture: in this process, under click's CliRunner isolation (an
  exception that escapes `main` fails the test with its own traceback);
- `run_cli_process(*args, env=..., timeout=...)`: in a fresh interpreter, where a test needs one (signals,
  what gets imported, a hard time limit);
- the `cache` fixture: an isolated, empty stage cache (`EDGEFFNET_CACHE`) for the test;
- `assert_refused(result, *fragments)`: a non-zero exit, one line on stderr, no traceback.
Both runners return `returncode`, `stdout` and `stderr`, the names of subprocess.CompletedProcess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import edgeffnet
from edgeffnet import cli as edgeffnet_cli
from edgeffnet.core import logs

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


@dataclass(frozen=True)
class Ran:
    """One in-process run of the CLI."""

    returncode: int
    stdout: str
    stderr: str


def _stderr_runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2 mixes stderr into stdout unless told not to
    except TypeError:
        return CliRunner()  # click >= 8.2 keeps them apart


def run_cli(*args: str, env: Mapping[str, str | None] | None = None) -> Ran:
    """`edgeffnet ARGS...` in this process; `env` overrides os.environ for the run (None unsets)."""
    log = logs.logger()
    handlers, propagate = list(log.handlers), log.propagate
    sigterm = signal.getsignal(signal.SIGTERM)
    argv = sys.argv
    with _stderr_runner().isolation(env=dict(env) if env else None) as streams:
        sys.argv = ["edgeffnet", *map(str, args)]
        try:
            edgeffnet_cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = argv
            log.handlers[:] = handlers  # main() adds a console handler per call
            log.propagate = propagate
            signal.signal(signal.SIGTERM, sigterm)
        out, err = streams[0], streams[1]
        return Ran(code, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace"))


def run_cli_process(
    *args: str,
    env: Mapping[str, str] | None = None,
    cache: Path | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    prelude: str = "",
) -> subprocess.CompletedProcess:
    """`edgeffnet ARGS...` in a fresh interpreter that imports this checkout's edgeffnet. `env` replaces
    os.environ, `cache` sets EDGEFFNET_CACHE, `prelude` is Python run before `main` (a patch the test needs
    inside the child)."""
    env = dict(os.environ if env is None else env)
    if cache is not None:
        env["EDGEFFNET_CACHE"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if prelude:
        code = f"import sys; {prelude}from edgeffnet.cli import main; sys.argv = ['edgeffnet'] + sys.argv[1:]; main()"
        command = [sys.executable, "-c", code, *map(str, args)]
    else:
        command = [sys.executable, "-m", "edgeffnet.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture
def cache(tmp_path_factory, monkeypatch) -> Path:
    """An empty stage cache of this test's own, for in-process runs and the processes they start."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("EDGEFFNET_CACHE", str(path))
    return path


def build_tiny(spec: str, root: Path) -> Path:
    """A real bundle of a small `spec` at root/tiny for a module's tests to bench, built through a stage
    cache of its own (root/cache), with two fidelity views to keep the build cheap."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEFFNET_CACHE", str(root / "cache"))
        return edgeffnet.build(spec, output=root / "tiny", views=2).path


@pytest.fixture
def cli(cache):
    """`cli("build", ...)`: the in-process runner with the test's isolated cache."""
    return run_cli


def assert_refused(result: Ran | subprocess.CompletedProcess, *fragments: str, stdout_ok: bool = False) -> str:
    """A refusal as a user must see it: a non-zero exit, nothing on stdout, no traceback, and one line on
    stderr (`edgeffnet: error: ...`, click's usage errors included) naming each fragment. A progress label
    (such as `openvino: loading`) may stand before it. Returns the line."""
    assert result.returncode not in (0, None), result
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result
    if not stdout_ok:  # a command whose result was shown before a later step failed (eval's table, then the save)
        assert result.stdout == "", result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, result
    last = lines[-1]
    assert last.startswith("edgeffnet: error: "), result.stderr
    assert sum("error" in line.lower() for line in lines) == 1, result.stderr
    assert len(last) < 500, last
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    return last
