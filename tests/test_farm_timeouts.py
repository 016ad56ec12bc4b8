"""Every wait for a Ray head is bounded and ends in one line. No Ray cluster is started here:
stand-in servers on 127.0.0.1 accept and stay silent, hang up, answer in another protocol, or greet like a
gRPC server (an HTTP/2 SETTINGS frame), and are stopped at the end of each test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import assert_refused as refused

from edgeffnet.farm import cluster

REPO = Path(__file__).resolve().parents[1]
H2_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


class StandIn:
    """A TCP server on 127.0.0.1 that treats each connection as `behaviour` says; counts what it accepted."""

    def __init__(self, behaviour: str):
        self.behaviour, self.accepted, self.held = behaviour, 0, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            if self.behaviour == "hang-up":
                conn.close()
                continue
            if self.behaviour == "http1":
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                conn.close()
                continue
            if self.behaviour == "grpc":
                conn.sendall(H2_SETTINGS)
            self.held.append(conn)  # "silent" (and "grpc" after its greeting): never another byte

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def server(request):
    s = StandIn(request.param)
    yield s
    s.close()


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


def _commands(address: str, out: Path) -> list[tuple[str, ...]]:
    return [
        ("farm", "status", address),
        ("farm", "join", address, "--target", "cpu"),
        ("sweep", "--cluster", address, "--target", "cpu", "--spec", "b0,res=64", "-o", str(out)),
    ]


@pytest.mark.parametrize("server", ["silent"], indirect=True)
@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_head_that_accepts_and_never_answers_is_one_line_within_the_timeout(cli, server, tmp_path, which):
    args = _commands(server.address, tmp_path / "sweep")[which]
    started = time.monotonic()
    line = refused(cli(*args, "--connect-timeout", "1.5"), f"no Ray cluster answered at {server.address} within 1.5 s")
    assert time.monotonic() - started < 1.5 + 8  # the bound, plus imports on a busy machine
    assert server.accepted >= 1 and "--connect-timeout" in line
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("server", ["hang-up", "http1"], indirect=True)
def test_something_else_on_the_port_is_not_taken_for_a_ray_head(cli, server, tmp_path):
    for args in _commands(server.address, tmp_path / "sweep"):
        started = time.monotonic()
        refused(cli(*args, "--connect-timeout", "20"), "is not a Ray head")
        assert time.monotonic() - started < 10  # it said so at once, not at the timeout
    assert not (tmp_path / "sweep").exists()


def test_nothing_listening_is_one_line(cli, tmp_path):
    address = _closed_port()
    for args in _commands(address, tmp_path / "sweep"):
        refused(cli(*args), f"no Ray head answers at {address}")


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "1e9"])
def test_a_bad_connect_timeout_is_one_line(cli, tmp_path, bad):
    for args in _commands("127.0.0.1:9", tmp_path / "sweep"):
        refused(cli(*args, "--connect-timeout", bad), "--connect-timeout")


def test_connect_timeout_without_cluster_is_refused_not_ignored(cli, tmp_path):
    refused(
        cli("sweep", "--spec", "b0,res=64", "--connect-timeout", "3", "-o", tmp_path / "s"),
        "--connect-timeout applies only with --cluster",
    )
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("server", ["grpc"], indirect=True)
def test_join_applies_the_loopback_setting_connect_applies(cli, server, monkeypatch):
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    seen = {}

    def ray_start(cmd):
        seen["cmd"], seen["env"] = cmd, os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
        return 0

    monkeypatch.setattr(cluster.subprocess, "call", ray_start)
    done = cli("farm", "join", server.address, "--target", "cpu", "--connect-timeout", "5")
    assert done.returncode == 0, done.stderr
    assert seen["env"] == "0" and f"--address={server.address}" in seen["cmd"]


@pytest.mark.parametrize("server", ["silent"], indirect=True)
@pytest.mark.parametrize("args", [("farm", "status"), ("farm", "join", "--target", "cpu")])
def test_sigterm_while_waiting_is_one_line_and_a_nonzero_exit(server, args):
    cmd = [sys.executable, "-m", "edgeffnet.cli", *args[:2], server.address, *args[2:], "--connect-timeout", "300"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        deadline = time.monotonic() + 120  # imports on a busy machine
        while server.accepted == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.accepted >= 1, "the command never reached the server"
        time.sleep(0.5)  # well inside the wait for an answer
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert time.monotonic() - sent < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 143 and "Traceback" not in err and out == "", (proc.returncode, err)
    assert len(lines) == 1 and lines[0].startswith("edgeffnet: terminated"), err
