"""What an `--evaluate` command, and the files a search or fit leaves, can do to edgeffnet.

An evaluator is someone else's program: its output is capped in memory and in evaluate.log (head and
tail kept, the drop said), its error line is bounded, it has a time limit that kills its whole process
group, and what it writes at {output} is read carefully (a directory or a link there is one line, and
does not break the next run). State files of the wrong type and NaN figures are one line, never ranked
and never written into search.json. Searches here run on a pretend device (no build, no timing).
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
from conftest import assert_refused as refused
from pretend_device import QUICK, QUICK_OPTIONS, PretendDevice

from edgeffnet.core.errors import UserError
from edgeffnet.core.untrusted import LOG_CAP
from edgeffnet.search import evaluators, fit
from edgeffnet.search.grid import PAPER, Candidate
from edgeffnet.specs.scaling import parse_spec

PY = sys.executable
DIRECTORY = "is a directory|not a regular file"  # untrusted.read_bytes's words for a folder where a file should be


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _evaluator(script: Path, timeout: float = 60.0) -> evaluators.CommandEvaluator:
    return evaluators.CommandEvaluator(f"{PY} {script} {{spec}} {{output}}", timeout)


GOOD = """
import json, sys
json.dump({"accuracy": 0.5}, open(sys.argv[2], "w"))
"""


# -- output and error lines ------------------------------------------------------------------------------


def test_a_flood_of_output_is_capped_in_memory_and_in_the_log(tmp_path):
    script = _script(
        tmp_path,
        "flood.py",
        """
        import json, sys
        block = b"x" * 65536 + b"\\n"
        sys.stdout.buffer.write(b"FIRST-LINE\\n")
        for _ in range(300):  # ~20 MB on each stream, stderr's first: the two streams' pumps are
            sys.stderr.buffer.write(block)  # threads, so only one stream's own order is defined
        sys.stderr.flush()
        for _ in range(300):
            sys.stdout.buffer.write(block)
        sys.stdout.buffer.write(b"LAST-LINE\\n")
        sys.stdout.flush()
        json.dump({"accuracy": 0.25}, open(sys.argv[2], "w"))
    """,
    )
    tracemalloc.start()
    try:
        assert _evaluator(script)("b0,phi=1", tmp_path / "w") == 0.25
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    log = (tmp_path / "w" / "evaluate.log").read_bytes()
    assert len(log) <= LOG_CAP + 200 and peak < 4 * LOG_CAP, (len(log), peak)
    # the last line is in the kept tail (stderr's pump may still add its last blocks after it)
    assert log.startswith(b"FIRST-LINE") and b"LAST-LINE" in log[-(LOG_CAP // 2) :]
    assert b"bytes of output dropped here" in log


def test_a_huge_last_error_line_becomes_a_bounded_one_line_error(tmp_path):
    script = _script(
        tmp_path,
        "shout.py",
        """
        import sys
        sys.stderr.write("first line\\n" + "E\\x1b[31m" * 1_500_000)
        sys.exit(4)
    """,
    )
    with pytest.raises(UserError) as e:
        _evaluator(script)("b0,phi=1", tmp_path / "w")
    message = str(e.value)
    assert "exited 4" in message and len(message) < 600 and "\n" not in message and "\x1b" not in message


# -- the time limit --------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state  # a zombie has ended; only its parent's wait is missing


def test_a_command_over_its_time_is_killed_with_its_children(tmp_path):
    pids = tmp_path / "pids"
    script = _script(
        tmp_path,
        "hang.py",
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(120)
    """,
    )
    started = time.monotonic()
    with pytest.raises(UserError, match=r"ran over 1.5 s .*--evaluate-timeout"):
        _evaluator(script, timeout=1.5)("b0,phi=1", tmp_path / "w")
    assert time.monotonic() - started < 15
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), pid


@pytest.mark.parametrize("bad", ["0", "-3", "nan", "inf"])
def test_cli_refuses_a_bad_timeout(cli, tmp_path, bad):
    refused(
        cli("search", "--evaluate", "x {spec} {output}", "--evaluate-timeout", bad, "-o", tmp_path / "s"),
        "--evaluate-timeout",
    )
    assert not (tmp_path / "s").exists()


# -- what the command leaves at {output} -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body,needle",
    [
        ("import os, sys; os.makedirs(sys.argv[2] + '/inner')", DIRECTORY),
        ("import os, sys; os.symlink('/etc/hostname', sys.argv[2])", "symbolic link"),
        ("import sys; open(sys.argv[2], 'w').write('{\"accuracy\": NaN}')", "NaN"),
        ("import sys; open(sys.argv[2], 'w').write('{\"accuracy\": Infinity}')", "Infinity"),
        ("import sys; open(sys.argv[2], 'w').write('{\"accuracy\": \"0.9\"}')", "fraction"),
        ("import sys; open(sys.argv[2], 'w').write('[0.9]')", "list"),
        ("import sys; open(sys.argv[2], 'w').write('[' * 5000 + ']' * 5000)", "nests deeper"),
        ("import sys; f = open(sys.argv[2], 'w'); f.seek(3 << 20); f.write('1')", "limit"),
    ],
)
def test_a_bad_output_is_one_line_and_the_next_run_is_clean(tmp_path, body, needle):
    bad = _script(tmp_path, "bad.py", body)
    with pytest.raises(UserError) as e:
        _evaluator(bad)("b0,phi=1", tmp_path / "w")
    assert re.search(needle, str(e.value)) and "\n" not in str(e.value)
    good = _script(tmp_path, "good.py", GOOD)
    assert _evaluator(good)("b0,phi=1", tmp_path / "w") == 0.5  # what the bad one left is cleared first


@pytest.mark.parametrize(
    "args,needle",
    [
        (("--evaluate", ""), "--evaluate needs a command"),
        (("--evaluate", "   "), "--evaluate needs a command"),
        (("--evaluate-timeout", "30"), "--evaluate-timeout applies only with --evaluate"),
        (("--epochs", "3"), "--epochs applies only with --data"),
        (("--lr", "0.01"), "--lr applies only with --data"),
        (("--init", "pretrained"), "--init applies only with --data"),
        (("--weight", "-0.1"), "--weight applies only with --evaluate or --data"),
        (("--latency-target", "5"), "--latency-target applies only with --evaluate or --data"),
        (("--evaluate", "", "--data", "d", "--val", "v"), "one of them"),
    ],
)
def test_cli_refuses_an_empty_or_ignored_evaluator_option(cli, tmp_path, args, needle):
    refused(cli("search", *args, "-o", tmp_path / "s"), needle)
    assert not (tmp_path / "s").exists()


# -- searches on a pretend device ------------------------------------------------------------------------


def _latency(spec: str) -> float:
    s = parse_spec(spec)
    return 1.0 + 2.0 * s.depth + 1.5 * s.width**2 + s.r**2


@pytest.fixture
def pretend(monkeypatch):
    return PretendDevice(_latency).install(monkeypatch)


SEARCH = ("search", "--step", "0.25", "--tol", "0.2", "--confirm-rounds", "1", *QUICK_OPTIONS)


def test_an_evaluator_that_makes_output_a_directory_does_not_break_later_searches(cli, pretend, tmp_path):
    out = tmp_path / "s"
    maker = _script(tmp_path, "mkdir.py", "import os, sys; os.makedirs(sys.argv[2])")
    assert re.search(DIRECTORY, refused(cli(*SEARCH, "--evaluate", f"{PY} {maker} {{spec}} {{output}}", "-o", out)))
    assert not (out / "search.json").exists()
    good = _script(tmp_path, "good.py", GOOD)
    done = cli(*SEARCH, "--evaluate", f"{PY} {good} {{spec}} {{output}}", "-o", out)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "search.json").read_text())
    assert summary["accuracy_measured"] and summary["chosen"]["accuracy"] == 0.5


def _paper_file(out: Path) -> Path:
    return out / "candidates" / f"{Candidate(*PAPER).slug}.json"


@pytest.mark.parametrize(
    "damage,needle",
    [
        (lambda row: [row], "list"),
        (lambda row: row | {"p50_ms": float("nan")}, "NaN"),
        (lambda row: row | {"paper_p90_ms": float("inf")}, "Infinity"),
        (lambda row: row | {"p50_ms": "fast"}, "'p50_ms' is str"),
        (lambda row: row | {"p50_ms": -1.0}, "not a positive number"),
        (lambda row: row | {"macs": 3.5}, "'macs' is float"),
        (lambda row: row | {"accuracy": 7}, "fraction"),
        (lambda row: row | {"alpha": 1.9}, "another candidate"),
        (lambda row: row | {"spec": None}, "'spec' is NoneType"),
    ],
)
def test_a_damaged_candidate_file_is_one_line_and_never_ranked(cli, pretend, tmp_path, damage, needle):
    out = tmp_path / "s"
    assert cli(*SEARCH, "-o", out).returncode == 0
    before = (out / "search.json").read_bytes()
    path = _paper_file(out)
    path.write_text(json.dumps(damage(json.loads(path.read_text()))))  # json writes bare NaN / Infinity
    line = refused(cli(*SEARCH, "-o", out), needle)
    assert path.name in line and "delete it" in line
    assert (out / "search.json").read_bytes() == before  # the last good summary stays, whole
    assert b"NaN" not in before and b"Infinity" not in before


@pytest.mark.parametrize(
    "damage,needle",
    [
        (lambda p: (p.unlink(), p.mkdir()), DIRECTORY),
        (lambda p: p.write_text("[" * 500 + "]" * 500), "nests deeper"),
        (lambda p: p.write_text('{"p50_ms": 1'), "not valid JSON"),
        (lambda p: p.write_bytes(b"\xff\xfe{}"), "UTF-8"),
        (lambda p: (p.unlink(), os.mkfifo(p)), "not a regular file"),
    ],
)
def test_a_candidate_file_that_is_not_a_json_file_is_one_line(cli, pretend, tmp_path, damage, needle):
    out = tmp_path / "s"
    assert cli(*SEARCH, "-o", out).returncode == 0
    damage(_paper_file(out))
    started = time.monotonic()
    assert re.search(needle, refused(cli(*SEARCH, "-o", out)))
    assert time.monotonic() - started < 30


def test_search_json_never_holds_nan(cli, pretend, tmp_path):
    out = tmp_path / "s"
    assert cli(*SEARCH, "-o", out).returncode == 0
    text = (out / "search.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in search.json"))
    for p in (out / "candidates").glob("*.json"):
        json.loads(p.read_text(), parse_constant=lambda name, p=p: pytest.fail(f"{name} in {p}"))


# -- fit: its state and its --spec -----------------------------------------------------------------------

FIT = ("fit", "--latency-ms", "5", "--phi-step", "1", "--phi-min", "-6", "--phi-max", "-4", *QUICK_OPTIONS)


@pytest.mark.parametrize(
    "content,needle",
    [
        ("[1, 2]", "list"),
        ('{"fingerprint": FP, "p50_ms": NaN}', "NaN"),
        (
            '{"fingerprint": FP, "spec": "b0", "network": "n", "bundle": "b", "macs": 1, "params": 1, "resolution": 32, '
            '"p50_ms": "1", "p90_ms": 1, "p99_ms": 1}',
            "'p50_ms' is str",
        ),
        (
            '{"fingerprint": FP, "spec": "b0", "network": "n", "bundle": "b", "macs": 1, "params": 1, "resolution": 32, '
            '"p50_ms": 1, "p90_ms": 1, "p99_ms": 1, "history": {"a": 1}}',
            "'history' is dict",
        ),
    ],
)
def test_a_damaged_fit_measurement_is_one_line(cli, pretend, tmp_path, content, needle):
    out = tmp_path / "fit"
    plan = fit.FitPlan(
        out=out,
        step=1.0,
        phi_min=-6,
        phi_max=-4,
        settings=QUICK,
    )
    plan.check()
    meas = fit.Measurements(plan)
    first = fit.anchors(plan)[0]
    path = meas._path(meas.network(first)[1])
    path.parent.mkdir(parents=True)
    path.write_text(content.replace("FP", json.dumps(meas.fingerprint)))
    line = refused(cli(*FIT, "-o", out), needle)
    assert path.name in line
    assert not (out / "fit.json").exists()


@pytest.mark.parametrize(
    "spec,dropped",
    [
        ("lite0,res=64", "res"),
        ("b0,phi=1,alpha=1.3,w=1.1", "w"),
        ("b0,phi=1,dropout=0.3,r=1.2", "dropout, r"),
        ("lite0,resolution=96", "res"),
    ],
)
def test_fit_spec_refuses_what_it_would_drop(cli, tmp_path, spec, dropped):
    refused(cli("fit", "--spec", spec, "--latency-ms", "5", "-o", tmp_path / "fit"), f"drop {dropped}")
    assert not (tmp_path / "fit").exists()


def test_fit_spec_keeps_a_searched_spec():
    plan = fit.plan_from_options(None, "lite0,alpha=1.25,beta=1.05,gamma=1.2,phi=1", None)
    assert plan.base == "lite0" and plan.coefficients == (1.25, 1.05, 1.2)
