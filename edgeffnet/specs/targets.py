"""Device profiles are data: one TOML file per device in targets/; a user's own file works the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeffnet.core.errors import UserError
from edgeffnet.core.resources import data_dir, read_toml

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("openvino", "tensorrt")


@dataclass(frozen=True)
class Target:
    name: str
    backend: str  # which compile/run pair handles it
    device: str  # the backend's device string (OpenVINO "CPU", TensorRT "GPU")
    precisions: tuple[str, ...]
    default_precision: str
    description: str
    peak: dict  # precision -> peak GOP/s (or "host": measured from this machine) plus "source"
    memory: dict  # {"gb": ..., "source": ...}
    options: dict = field(default_factory=dict)  # backend-specific facts (TensorRT version, sm, DLA, ...)
    aliases: tuple[str, ...] = ()
    path: str = ""

    def check_precision(self, precision: str | None) -> str:
        precision = precision or self.default_precision
        if precision not in self.precisions:
            from edgeffnet.core.suggest import did_you_mean

            hint = did_you_mean(precision, PRECISIONS) if precision not in PRECISIONS else ""
            raise UserError(
                f"target '{self.name}' ({self.description}) supports {', '.join(self.precisions)}, "
                f"not {precision}{hint}; pass --precision {self.default_precision}"
            )
        return precision


def _from_file(path: Path) -> Target:
    try:
        d = read_toml(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read target profile '{path}': {e}") from None
    missing = [k for k in ("name", "backend", "device", "precisions") if k not in d]
    if missing:
        raise UserError(f"target profile '{path}' lacks {', '.join(missing)}; see targets/cpu.toml for the format")
    for key in ("name", "backend", "device"):
        if not isinstance(d[key], str) or not d[key]:
            raise UserError(f"target profile '{path}': {key} must be a non-empty string")
    if not isinstance(d["precisions"], list) or not d["precisions"]:
        raise UserError(f"target profile '{path}': precisions must list at least one of {', '.join(PRECISIONS)}")
    if d["backend"] not in BACKENDS:
        raise UserError(f"target profile '{path}': backend '{d['backend']}' is not one of {', '.join(BACKENDS)}")
    bad = [p for p in d["precisions"] if p not in PRECISIONS]
    if bad:
        raise UserError(f"target profile '{path}': precision {bad[0]} is not one of {', '.join(PRECISIONS)}")
    default = d["default_precision"] if "default_precision" in d else d["precisions"][0]
    if default not in d["precisions"]:
        raise UserError(
            f"target profile '{path}': default_precision {default!r} is not one of its precisions "
            f"({', '.join(d['precisions'])})"
        )
    for key in ("peak", "memory", "options"):
        if not isinstance(d.get(key, {}), dict):
            raise UserError(f"target profile '{path}': [{key}] must be a table")
    return Target(
        name=d["name"],
        backend=d["backend"],
        device=d["device"],
        precisions=tuple(d["precisions"]),
        default_precision=default,
        description=d.get("description", d["name"]),
        peak=d.get("peak", {}),
        memory=d.get("memory", {}),
        options=d.get("options", {}),
        aliases=tuple(d.get("aliases", ())),
        path=str(path),
    )


def known() -> dict[str, Target]:
    """Every shipped profile, by name."""
    return {t.name: t for t in (_from_file(p) for p in sorted(data_dir("targets").glob("*.toml")))}


def load(name_or_path: str | Path) -> Target:
    text = str(name_or_path)
    if text.endswith(".toml") or Path(text).is_file():
        path = Path(text).expanduser()
        if not path.is_file():
            raise UserError(f"target profile file '{path}' does not exist")
        return _from_file(path)
    profiles = known()
    for t in profiles.values():
        if text == t.name or text in t.aliases:
            return t
    from edgeffnet.core.suggest import did_you_mean

    names = sorted(profiles) + sorted(a for t in profiles.values() for a in t.aliases)
    raise UserError(
        f"unknown target '{text}'{did_you_mean(text, names)}; known targets: {', '.join(names)} "
        f"(or a path to a .toml profile)"
    )


def of_bundle(manifest: dict) -> Target:
    """The profile a bundle was built for, as its manifest recorded it (the profile file may have moved)."""
    t = manifest["target"]
    return Target(
        name=t["name"],
        backend=t["backend"],
        device=t["device"],
        precisions=(manifest["precision"],),
        default_precision=manifest["precision"],
        description=t["description"],
        peak=t["peak"],
        memory=t["memory"],
        options=t["options"],
        path=t.get("profile", ""),
    )
