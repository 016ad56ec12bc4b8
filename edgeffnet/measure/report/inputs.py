"""Finding and reading the bench records a report is made of: the newest per host, bundle, runtime and mode."""

from __future__ import annotations

from pathlib import Path

from edgeffnet.core.errors import UserError
from edgeffnet.core.untrusted import UntrustedFileError
from edgeffnet.measure import records
from edgeffnet.measure.report.devices import measured_by
from edgeffnet.measure.report.row import rows
from edgeffnet.measure.report.tables import machines


def _search(folder: Path) -> list[Path]:
    """Every JSON file below `folder`, except in hidden directories (a bundle being written is hidden)."""
    return [
        p
        for p in sorted(folder.rglob("*.json"))
        if not any(part.startswith(".") for part in p.relative_to(folder).parts) and not p.is_dir()
    ]


def _renders(rec: dict, where: str) -> dict:
    """`rec` if a report can be made of it: a record whose fields pass their checks can still hold a
    value no row or machine line can be made of (a node that is a list); it is found here, alone."""
    try:
        rows([rec])
        machines([rec])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, OverflowError) as e:
        raise UserError(
            f"{where} is a damaged bench record ({type(e).__name__}: {str(e)[:60]}); measure again with edgeffnet bench"
        ) from None
    return rec


def _named(p: Path) -> dict:
    """A record file named on purpose: what is wrong with it is said, rather than skipped."""
    try:
        rec = records.read(p)
    except UntrustedFileError as e:
        if "not valid JSON" in str(e):
            raise UserError(f"'{p}' is not an edgeffnet bench record (not readable JSON)") from None
        raise
    if rec is None:
        raise UserError(f"'{p}' is not an edgeffnet bench record")
    return _renders(rec.to_dict(), f"'{p}'")


def _found(folder: Path, skipped: list[str]) -> list[tuple[Path, dict]]:
    """The records below `folder`; a damaged or unreadable one (a `*.json` link to /dev/zero, a FIFO, a
    field of the wrong type) is skipped and counted in `skipped`, so one bad file does not lose the rest."""
    out = []
    for f in _search(folder):
        try:
            rec = records.read(f)
            if rec is not None:
                out.append((f, _renders(rec.to_dict(), f"'{f}'")))
        except UserError as e:
            skipped.append(str(e))
    return out


def collect(paths: list[str | Path], skipped: list[str] | None = None, baselines=()) -> list[dict]:
    """Records from record files, bundles (their bench/) and directories (searched); the newest per
    host, bundle, runtime and mode wins, so a re-measured bundle is reported once. What was found in a
    directory but could not be read is skipped, and why is appended to `skipped`.

    Baseline records (PyTorch, ONNX Runtime on the CPU) only where asked for: `baselines` names the
    runtimes to keep, or is True for all. A `bench --baseline` run on a sweep's bundle would otherwise
    join the sweep's next report, and its ~100 ms PyTorch point set the plot's scale."""
    if not paths:
        raise UserError("nothing to report: pass bundles, directories or bench record files")
    skipped = [] if skipped is None else skipped
    found: dict[tuple, dict] = {}
    skipped_baselines: set[str] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"'{p}' does not exist; pass bundles, directories or bench record files")
        candidates = _found(p, skipped) if p.is_dir() else [(p, _named(p))]
        for f, rec in candidates:
            if rec.get("baseline") and baselines is not True and rec["runtime"] not in baselines:
                skipped_baselines.add(rec["runtime"])
                continue
            rec.setdefault("source", str(f))
            key = (measured_by(rec), rec["bundle"], rec["runtime"], rec["mode"])
            if key not in found or rec["created"] > found[key]["created"]:
                found[key] = rec
    if not found:
        bad = f" ({len(skipped)} damaged record(s) skipped: {skipped[0][:200]})" if skipped else ""
        only = (
            f" (only baseline records, {', '.join(sorted(skipped_baselines))}: add --baselines to report them)"
            if skipped_baselines
            else ""
        )
        raise UserError(
            f"nothing to report in {', '.join(map(str, paths))}: no bench records{only}{bad}; "
            f"run edgeffnet bench BUNDLE or edgeffnet sweep first"
        )
    return list(found.values())
