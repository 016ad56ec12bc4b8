"""A bounded check that a Ray head answers at an address, before Ray itself is given the address.

Ray's own connection (ray.init, `ray start --address`) retries for minutes against a port that accepts
connections but never answers, inside C++ calls where no Python signal handler runs. So first: a TCP
connection with a timeout; then the head's GCS, a gRPC server, must answer the HTTP/2 greeting every
gRPC client opens with (the server's SETTINGS frame) before the deadline. The wait is cut in short
slices, so Ctrl-C and SIGTERM are handled while it is pending. (Ray's Python side has no gRPC module
to make a real call with; with RAY_USE_TLS the greeting is under TLS, and only the connection is checked.)
"""

from __future__ import annotations

import os
import socket
import time

from edgeffnet.core.errors import UserError

CONNECT_TIMEOUT_S = 15.0  # a GCS answers in milliseconds on a lab network; seconds under load or over Wi-Fi
SLICE_S = 0.2  # how often a pending wait returns to Python (signal handlers)
# The HTTP/2 client connection preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5).
GREETING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SETTINGS = 4  # the frame type a server must send first


def _tls() -> bool:
    return os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")


def wait_for_head(address: str, host: str, port: int, seconds: float = CONNECT_TIMEOUT_S) -> None:
    """Return once what listens at HOST:PORT has greeted like a gRPC server; one line within about
    `seconds` otherwise."""
    if not seconds > 0:
        raise UserError(f"--connect-timeout is in seconds and must be positive, got {seconds:g}")
    deadline = time.monotonic() + seconds
    try:
        sock = socket.create_connection((host, port), timeout=seconds)
    except OSError as e:
        raise UserError(
            f"no Ray head answers at {address} ({e.strerror or e}); start one on the workstation with "
            f"`ray start --head --node-ip-address LAN_IP --port {port}` (see docs/farm.md)"
        ) from None
    silent = (
        f"no Ray cluster answered at {address} within {seconds:g} s: something accepts connections there but "
        "no Ray head replied; check the address and port (the head's --port), or raise --connect-timeout"
    )
    alien = f"what listens at {address} is not a Ray head (it does not answer as Ray's gRPC server); check the port"
    try:
        if _tls():
            return
        sock.settimeout(SLICE_S)
        try:
            sock.sendall(GREETING)
        except OSError:
            raise UserError(alien) from None
        header = b""
        while len(header) < 9:
            if time.monotonic() > deadline:
                raise UserError(silent)
            try:
                block = sock.recv(9 - len(header))
            except TimeoutError:
                continue  # back in Python: a pending SIGTERM or Ctrl-C is handled here
            except OSError:
                raise UserError(alien) from None
            if not block:
                raise UserError(alien)
            header += block
        if header[3] != SETTINGS:
            raise UserError(alien)
    finally:
        sock.close()
