"""`edgeffnet sweep`: build (through the stage cache) and bench specs x precisions on a target, then report.

Resumable by construction: a bundle appears whole or not at all and a bench record is written whole, so
the files under the output directory are the sweep's state. Running the same command again skips every
item whose bundle and records exist for the same measurement settings and goes on from the first that
does not; an interrupted measurement is saved marked as such and is measured again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .. import bundle, logs, targets
from ..pipeline import build, require_build_side
from ..errors import UserError
from ..scaling import BASELINES, PRESETS, parse_spec
from ..scaling import preset_name as _preset
from . import bench, console, records

DEFAULT_MODELS = "b0-b3,lite0"
VARIANTS = ("width", "depth", "resolution")


def parse_models(text: str) -> list[str]:
    """'b0-b3,lite0-lite2,b5' -> ['b0', 'b1', 'b2', 'b3', 'lite0', 'lite1', 'lite2', 'b5']."""
    names: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            raise UserError(f"bad --models '{text}': empty item; write presets or ranges like b0-b3,lite0-lite2")
        if _preset(item) and not item.endswith("-"):  # "b0-" is an unfinished range, not b0
            names.append(_preset(item))
            continue
        ends = [(_preset(item[:i]), _preset(item[i + 1:])) for i, c in enumerate(item) if c == "-"]
        ends = [(a, b) for a, b in ends if a and b]
        if not ends:
            raise UserError(f"bad --models '{text}': '{item}' is neither a preset (b0..b7, lite0..lite4) "
                            f"nor a range like b0-b3")
        a, b = ends[0]
        family = PRESETS[a]
        order = list(family.presets)
        if PRESETS[b] is not family or order.index(a) > order.index(b):
            raise UserError(f"bad --models '{text}': a range runs upwards within one family, like b0-b3 "
                            f"or lite0-lite2, not '{item}'")
        names += order[order.index(a):order.index(b) + 1]
    return list(dict.fromkeys(names))


def scaling_specs(text: str) -> list[str]:
    """'[BASE:]PHI,...' -> the baseline, then per phi the compound model and the same FLOPS budget spent on
    width, depth or resolution alone (the paper's Table 3 / Figure 8, measured in milliseconds)."""
    base, sep, phis = text.partition(":")
    if not sep:
        base, phis = "b0", text
    base = _preset(base) or base
    if base not in BASELINES.values():
        raise UserError(f"bad --scaling '{text}': the base must be a family baseline "
                        f"({', '.join(BASELINES.values())}), not '{base}'")
    specs = [base]
    for phi in (p.strip() for p in phis.split(",")):
        try:
            value = float(phi)
        except ValueError:
            raise UserError(f"bad --scaling '{text}': '{phi}' is not a number; write e.g. --scaling b0:1,2,3") from None
        specs.append(f"{base},phi={value:g}")
        specs += [f"{base},phi={value:g},only={v}" for v in VARIANTS]
    return [parse_spec(s).name for s in specs]


@dataclass(frozen=True)
class Item:
    spec: str
    precision: str

    def bundle_dir(self, out: Path, target: str) -> Path:
        from ..pipeline import default_output

        return Path(out) / "bundles" / default_output(self.spec, target, self.precision).name


def plan(models: str | None, specs: tuple[str, ...], scaling: str | None, precisions: list[str]) -> list[Item]:
    names = parse_models(models) if models else []
    names += [parse_spec(s).name for s in specs]
    names += scaling_specs(scaling) if scaling else []
    if not names:
        names = parse_models(DEFAULT_MODELS)
    return list(dict.fromkeys(Item(n, p) for n in names for p in precisions))


def _same(record: records.Record | None, manifest: dict, s: bench.Settings) -> bool:
    """A record counts as done when it is complete, of this build, and measured with these settings."""
    if not record or record.interrupted or record.bundle_created != manifest.get("created"):
        return False
    want = asdict(s)
    want.pop("batch")
    return all(record.settings.get(k) == v for k, v in want.items())


def done(bundle_dir: Path, settings: bench.Settings, baselines: list[str]) -> bool:
    if not bundle.is_bundle(bundle_dir):
        return False
    try:
        manifest = bundle.read_manifest(bundle_dir)
    except UserError:
        return False
    return all(_same(records.load(records.record_path(bundle_dir, rt, settings.mode)), manifest, settings)
               for rt in bench.runtimes(manifest["target"]["backend"], baselines))


def settings_per_mode(settings: bench.Settings, modes: list[str]) -> list[bench.Settings]:
    """One checked bench Settings per mode asked (what both the local and the farm sweep measure)."""
    for m in modes or [""]:
        if m not in bench.MODES:
            raise UserError(f"--mode takes {', '.join(bench.MODES)} (comma-separated), not '{m}'")
    runs = [replace(settings, mode=m) for m in modes]
    for s in runs:
        s.check()
    return runs


def run(items: list[Item], target: str, out: Path, modes: list[str], baselines: list[str], settings: bench.Settings,
        progress=None) -> dict:
    """Build and bench each item; a failing item is reported and skipped. Returns what happened."""
    say = logs.logger().info
    if not all(bundle.is_bundle(i.bundle_dir(out, targets.load(target).name)) for i in items):
        require_build_side("edgeffnet sweep")
    profile = targets.load(target)
    for p in dict.fromkeys(i.precision for i in items):
        profile.check_precision(p)
    runs = settings_per_mode(settings, modes)
    bench.runtimes(profile.backend, baselines)  # an unknown baseline fails before any work
    say(f"sweep: {len(items)} items on {profile.name}, {', '.join(modes)}"
         + (f" with baselines {', '.join(baselines)}" if baselines else "") + f" -> {out}")
    result = {"done": [], "skipped": [], "failed": [], "interrupted": None}
    for n, item in enumerate(items, 1):
        label = f"[{n}/{len(items)}] {item.spec} {item.precision}"
        dest = item.bundle_dir(out, profile.name)
        if all(done(dest, s, baselines) for s in runs):
            say(f"{label}: measured before, skipped")
            result["skipped"].append(item)
            continue
        say(f"{label}")
        try:
            if not bundle.is_bundle(dest):
                build(item.spec, target=target, precision=item.precision, output=dest)
            for s in runs:
                if done(dest, s, baselines):
                    continue
                recs, interrupted = bench.run(dest, s, baselines, progress=progress)
                for r in recs:
                    say(f"  {r.runtime:12s} {s.mode:10s} " + console.summary(r))
                if interrupted:
                    raise KeyboardInterrupt
        except UserError as e:
            say(f"  failed: {e}")
            result["failed"].append((item, str(e)))
            continue
        except KeyboardInterrupt:
            result["interrupted"] = item
            return result
        result["done"].append(item)
    return result
