"""What a device does with one bundle: unpack, finish a pending engine, verify, bench, send back.

This runs in a Ray worker on the device and imports only the bundle side of edgeffnet (no torch, onnxsim
or nncf): a board needs edgeffnet's device install, its runtime and Ray. The bundle arrives as a tar
archive (bytes, through Ray's object store) and is unpacked into a temporary directory that is removed
afterwards; the records and any file the device changed (a finished engine, the updated manifest) go
back to the workstation, which keeps the one copy of the bundle.
"""

from __future__ import annotations

import hashlib
import io
import socket
import sys
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

HEAVY = ("torch", "onnxsim", "nncf")  # what a device must not need


def archive(bundle_dir: Path, names: list[str]) -> bytes:
    """The files NAMES (relative to BUNDLE_DIR) as an uncompressed tar: the graphs and weights inside
    compress poorly, and the transfer runs on the lab network."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            tar.add(bundle_dir / name, arcname=name, recursive=False)
    return buf.getvalue()


def shipped_files(path: Path, manifest: dict) -> list[str]:
    """What a device needs: the compiled artifact and the reference outputs, or for a pending engine the
    precision graph it is built from; not the intermediate graphs, the old records or hidden files."""
    compile_stage = manifest["stages"]["compile"]
    graph = compile_stage.get("graph") if compile_stage.get("pending") else None
    return sorted(
        p.name
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and (not p.name.endswith(".onnx") or p.name == graph)
    )


# A bundle's files: a B7 INT8 bundle is a few hundred MB; ten times that is no bundle's.
MAX_ARCHIVE_FILES = 256
MAX_ARCHIVE_BYTES = 4 << 30


def unpack(data: bytes, dest: Path) -> None:
    """Unpack a bundle's archive into DEST: regular files and folders only, each inside DEST, at most
    MAX_ARCHIVE_FILES of them and MAX_ARCHIVE_BYTES in all (checked from the headers before any is written)."""
    from edgeffnet.core.errors import UserError
    from edgeffnet.core.untrusted import confined

    def refused(why: str) -> UserError:
        return UserError(f"the bundle archive sent to this device {why}; send the bundle again")

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            members = tar.getmembers()
            if len(members) > MAX_ARCHIVE_FILES:
                raise refused(f"holds {len(members)} entries, more than {MAX_ARCHIVE_FILES}")
            total = 0
            for m in members:
                if not (m.isreg() or m.isdir()):
                    raise refused(f"holds {m.name!r}, which is not a plain file (a link or device)")
                confined(dest, m.name)  # no absolute path, no '..' out of DEST
                total += m.size
            if total > MAX_ARCHIVE_BYTES:
                raise refused(f"unpacks to {total:,} bytes, more than {MAX_ARCHIVE_BYTES:,}")
            # The "data" filter checks the same again as each member is written.
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise refused(f"cannot be unpacked ({type(e).__name__})") from None


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def node_identity() -> dict:
    """The node that measures: Ray's node id and address where Ray runs this, and the hostname."""
    node = {"hostname": socket.gethostname()}
    try:
        import ray

        if ray.is_initialized():
            node.update(node_id=ray.get_runtime_context().get_node_id(), ip=ray.util.get_node_ip_address())
    except ImportError:
        pass
    return node


def verify(b) -> dict:
    """The bundle's artifact, run here by its runtime on its device, against the bundle's own reference
    outputs with the precision's tolerance (fp32 1e-4, fp16 cosine; int8 is reported, not judged here:
    its agreement was gated at build time)."""
    from edgeffnet.core.verify import verify as verify_outputs

    x, ref = b.reference()
    return verify_outputs(
        "device", b.runner().run, x, ref, b.manifest.input["batch"], b.precision, not b.random_weights
    )


def ready(path: Path):
    """(bundle, parity, compiled): the bundle unpacked at PATH made ready to run on this device: a pending
    engine built (verified on the way), any other artifact verified."""
    from edgeffnet.bundle import Bundle
    from edgeffnet.workflows.compile_on_device import compile_on_device

    b = Bundle.open(path)
    compiled = bool(b.manifest.stages["compile"].get("pending"))
    if compiled:  # TensorRT cross-built on the workstation: build the engine here, verified on the way
        b = compile_on_device(b)
        return b, b.manifest.stages["compile"]["parity"], compiled
    return b, verify(b), compiled


def measure(data: bytes, name: str, modes: list[str], settings: dict) -> dict:
    """The device task: returns {"node", "records" (dicts), "parity", "compiled", "files", "heavy_modules"}."""
    from edgeffnet.measure import bench

    with tempfile.TemporaryDirectory(prefix="edgeffnet-farm-") as tmp:
        path = Path(tmp) / name
        path.mkdir()
        unpack(data, path)
        before = _digests(path)
        b, parity, compiled = ready(path)
        records = []
        base = bench.Settings(**settings)
        for mode in modes:
            recs, _ = bench.run(b, replace(base, mode=mode), [], save_records=False)
            records += [r.to_dict() for r in recs]
        after = _digests(path)
        changed = {n: (path / n).read_bytes() for n, h in after.items() if before.get(n) != h}
    return {
        "node": node_identity(),
        "records": records,
        "parity": parity,
        "compiled": compiled,
        "files": changed,
        "heavy_modules": sorted(m for m in HEAVY if m in sys.modules),
    }
