"""The build pipeline: graph -> export -> simplify -> precision -> compile.

Each stage is a function from one artifact to the next; each is verified against the PyTorch reference
(max abs error, cosine and top-1 of the logits on real-photo views) and recorded in the manifest; each
is cached under a key of everything that determines it, so a rebuild reuses finished stages.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__, bundle, cache, host, targets
from . import weights as _weights
from .backends import get as backend
from .backends import onnxruntime as ort_backend
from .errors import UserError
from .export import DEFAULT_OPSET, export_onnx
from .graph import check_weights, make_model, recipe_for
from .model import count_params
from .photos import to_input, verification_views
from .preprocess import Preprocess
from .scaling import parse_spec, with_resolution
from .simplify import simplify
from .verify import compare, check, run_batched

DEFAULT_VIEWS = 8


@dataclass
class BuildRequest:
    spec: str
    target: str = "cpu"
    precision: str | None = None
    weights: str | None = None
    num_classes: int | None = None
    resolution: int | None = None
    batch: int = 1
    dynamic_batch: bool = False
    opset: int = DEFAULT_OPSET
    output: str | None = None
    seed: int = 0
    views: int = DEFAULT_VIEWS
    cache: bool = True
    extra: dict = field(default_factory=dict)  # stage options added by later stages (calibration, engine)


def default_output(spec_name: str, target: str, precision: str) -> Path:
    slug = spec_name.replace(",", "-").replace("=", "").replace(".", "p")
    return Path("build") / f"{slug}-{target}-{precision}"


class Log:
    """Lines go to the console (through `echo`) and to the bundle's build.log."""

    def __init__(self, echo):
        self.echo, self.lines, self.t0 = echo, [], time.perf_counter()

    def __call__(self, msg: str) -> None:
        self.lines.append(f"[{time.perf_counter() - self.t0:8.2f}s] {msg}")
        self.echo(msg)

    def write(self, path: Path) -> None:
        path.write_text("\n".join(self.lines) + "\n")


class Build:
    """The state of one build while its bundle is being written."""

    def __init__(self, req: BuildRequest, echo=print):
        self.req, self.log = req, Log(echo)
        spec = parse_spec(req.spec)
        if req.resolution is not None:
            spec = with_resolution(spec, req.resolution)
        self.spec = spec
        self.target = targets.load(req.target)
        self.precision = self.target.check_precision(req.precision)
        if req.batch < 1:
            raise UserError(f"--batch must be at least 1, got {req.batch}")
        if req.dynamic_batch and self.target.options.get("static_shapes"):
            raise UserError(f"target '{self.target.name}' runs static shapes only; drop --dynamic-batch")
        if req.views < 1:
            raise UserError(f"--views must be at least 1, got {req.views}")
        self.output = Path(req.output) if req.output else default_output(spec.name, self.target.name, self.precision)
        bundle.check_destination(self.output)
        self.weights = _weights.resolve(req.weights, spec)
        if self.weights is not None:
            check_weights(spec, self.weights)
        self.cache = cache.StageCache(req.cache)
        self._model = None
        self.dir: Path | None = None
        self.key = ""
        self.stages: dict[str, dict] = {}
        self.graph_file = "model.sim.onnx"  # what the compile stage converts; the precision stage may change it

    # -- the reference -------------------------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = make_model(self.spec, self.weights, self.req.num_classes, self.req.seed)
        return self._model

    @property
    def preprocess(self) -> Preprocess:
        return recipe_for(self.spec, self.weights)

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        data = np.load(self.dir / "reference.npz")
        return to_input(data["views"], self.preprocess), data["logits"]

    @property
    def fixed_batch(self) -> int | None:
        return None if self.req.dynamic_batch else self.req.batch

    # -- stage machinery -----------------------------------------------------------------------------
    def stage(self, name: str, parts: dict, fn) -> dict:
        k = cache.key(self.key, name, parts, host.tools(), cache.code_digest())
        record = self.cache.fetch(name, k, self.dir)
        if record is not None:
            record["cached"] = True
            self.log(f"{name:9s} reused from cache ({record.get('summary', '')})")
        else:
            t = time.perf_counter()
            record = fn()
            record["seconds"] = round(time.perf_counter() - t, 3)
            record["cached"] = False
            self.cache.store(name, k, self.dir, record)
            self.log(f"{name:9s} {record['seconds']:7.2f}s  {record.get('summary', '')}")
        record["key"] = k
        self.stages[name] = record
        self.key = k
        return record

    def verify(self, stage: str, run, precision: str) -> dict:
        x, ref = self.reference()
        parity = compare(ref, run_batched(run, x, self.fixed_batch))
        check(stage, parity, precision, trained=self.weights is not None)
        return parity.as_dict()

    # -- stages --------------------------------------------------------------------------------------
    def stage_graph(self) -> dict:
        w = self.weights
        parts = {"spec": self.spec.name, "resolution": self.spec.resolution, "num_classes": self.req.num_classes,
                 "weights": w.sha256 if w else f"random:{self.req.seed}", "views": self.req.views,
                 "edgeffnet": __version__}

        def run() -> dict:
            views = verification_views(self.req.views, self.preprocess)
            with torch.no_grad():
                logits = self.model(torch.from_numpy(to_input(views, self.preprocess))).numpy()
            np.savez_compressed(self.dir / "reference.npz", views=views, logits=logits)
            return {"files": ["reference.npz"], "reference": f"PyTorch {torch.__version__} eval, FP32",
                    "views": int(len(views)), "num_classes": int(logits.shape[1]),
                    "params": count_params(self.model), "summary": f"{len(views)} reference views"}

        return self.stage("graph", parts, run)

    def stage_export(self) -> dict:
        parts = {"batch": self.req.batch, "dynamic": self.req.dynamic_batch, "opset": self.req.opset}

        def run() -> dict:
            info = export_onnx(self.model, self.dir / "model.onnx", self.spec.resolution, self.req.batch,
                               self.req.dynamic_batch, self.req.opset,
                               {"edgeffnet_spec": self.spec.name, "preprocess": asdict(self.preprocess)})
            parity = self.verify("export", ort_backend.Runner(self.dir / "model.onnx", exact=True).run, "fp32")
            return {"files": ["model.onnx"], **info, "parity": parity, "verified_with": "onnxruntime CPU (no layout optimisations)",
                    "summary": f"{info['nodes']} nodes, opset {info['opset']}, max|d| {parity['max_abs']:.1e}"}

        return self.stage("export", parts, run)

    def stage_simplify(self) -> dict:
        def run() -> dict:
            info = simplify(self.dir / "model.onnx", self.dir / "model.sim.onnx")
            parity = self.verify("simplify", ort_backend.Runner(self.dir / "model.sim.onnx", exact=True).run, "fp32")
            return {"files": ["model.sim.onnx"], **info, "parity": parity, "verified_with": "onnxruntime CPU (no layout optimisations)",
                    "summary": f"nodes {info['nodes_before']} -> {info['nodes_after']}, max|d| {parity['max_abs']:.1e}"}

        return self.stage("simplify", {}, run)

    def stage_precision(self) -> dict | None:
        """fp32 compiles the simplified graph as it is; reduced precisions get their own graph."""
        if self.precision == "fp32":
            return None
        from . import precision

        return precision.stage(self)

    def stage_compile(self) -> dict:
        t = self.target
        parts = {"backend": t.backend, "device": t.device, "options": t.options, "precision": self.precision,
                 "graph": self.graph_file}

        def run() -> dict:
            be = backend(t.backend)
            if t.backend == "openvino" and self.precision == "int8":
                from .precision.openvino import compile_int8

                info = compile_int8(self)
            else:
                info = be.compile(self.dir / self.graph_file, self.dir, t, self.precision)
            if info.get("pending"):  # cross-building for a device whose compiler is not on this host
                return info
            runner = be.load(self.dir, t, self.precision, fallback=True)
            parity = self.verify("compile", runner.run, self.precision)
            record = {**info, "parity": parity, "verified_on": runner.describe(),
                      "summary": f"{t.backend} on {runner.device}, max|d| {parity['max_abs']:.1e}, "
                                 f"cosine min {parity['cosine_min']:.6f}"}
            if self.precision != "fp32":
                record["fidelity"] = self.fidelity_row(runner, f"{t.backend} {runner.device} artifact")
            return record

        record = self.stage("compile", parts, run)
        # --require-engine (TensorRT): checked on the record, cached or fresh, so a cached pending stage fails too.
        if record.get("pending") and self.req.extra.get("require_engine"):
            raise UserError(f"--require-engine: the {t.name} engine was not built: {record.get('pending_reason')}; "
                            f"build on the device, or drop --require-engine to get a bundle with the engine pending")
        return record

    def fidelity_row(self, runner, label: str) -> dict:
        from .precision import fidelity, fidelity_data

        x, ref = fidelity_data(self)
        return fidelity.report(ref, run_batched(runner.run, x, self.fixed_batch), label)

    def fidelity(self) -> dict | None:
        """Rows for the precision graph and the compiled artifact; INT8 of trained weights is gated."""
        if self.precision == "fp32":
            return None
        from .precision import fidelity, options

        rows = [r for r in (self.stages.get("precision", {}).get("fidelity"), self.stages["compile"].get("fidelity")) if r]
        if rows:  # printed before the gate: a build it stops shows every row, not just the worst
            self.log(f"fidelity against FP32 on verification photos ({self.precision}):")
            for line in fidelity.table(rows):
                self.log("  " + line)
        o = options(self)
        verdict = (fidelity.gate(rows, self.weights is not None, o["min_agreement"], o["allow_drop"])
                   if self.precision == "int8" and rows else {"gated": False})
        return {"rows": rows, **verdict}

    # -- the whole pipeline --------------------------------------------------------------------------
    def run(self) -> Path:
        self.log(f"building {self.spec.name} for {self.target.name} ({self.target.description}) at {self.precision}, "
                 f"input {'N' if self.req.dynamic_batch else self.req.batch}x3x{self.spec.resolution}x{self.spec.resolution}")
        t0 = time.perf_counter()
        with bundle.staging(self.output) as tmp:
            self.dir = tmp
            self.stage_graph()
            self.stage_export()
            self.stage_simplify()
            self.stage_precision()
            self.stage_compile()
            fid = self.fidelity()
            manifest = self.manifest(time.perf_counter() - t0)
            manifest["fidelity"] = fid
            bundle.write_manifest(tmp, manifest)
            self.log(f"bundle complete: {self.output}")
            self.log.write(tmp / "build.log")
        return self.output

    def manifest(self, seconds: float) -> dict:
        w, s, t = self.weights, self.spec, self.target
        from .info import describe

        d = describe(s, self.stages["graph"]["num_classes"])
        files = sorted(p.name for p in self.dir.iterdir() if not p.name.startswith("."))
        return {
            "bundle_format": bundle.FORMAT,
            "edgeffnet": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "spec": {k: d[k] for k in ("spec", "family", "phi", "only", "alpha", "beta", "gamma", "depth", "width",
                                       "resolution_multiplier", "resolution", "dropout", "activation",
                                       "squeeze_excitation")} | {"stages": d["stages"]},
            "params": d["params"], "macs": d["macs"], "flops": d["flops"], "num_classes": d["num_classes"],
            "scaling_check": d["scaling_check"],
            "target": {"name": t.name, "backend": t.backend, "device": t.device, "description": t.description,
                       "profile": t.path, "peak": t.peak, "memory": t.memory, "options": t.options},
            "precision": self.precision,
            "input": {"name": "input", "batch": None if self.req.dynamic_batch else self.req.batch,
                      "dynamic_batch": self.req.dynamic_batch, "shape": [self.req.batch, 3, s.resolution, s.resolution],
                      "layout": "NCHW", "dtype": "float32"},
            "weights": ({"source": w.source, "sha256": w.sha256, "layout": w.layout, "numerics": asdict(w.numerics),
                         "random_init": False} if w else
                        {"source": "random", "random_init": True, "seed": self.req.seed,
                         "note": "seeded random weights (BatchNorm statistics from the calibration photos); "
                                 "for latency studies, not for predictions"}),
            "preprocess": asdict(self.preprocess),
            "options": {"batch": self.req.batch, "dynamic_batch": self.req.dynamic_batch, "opset": self.req.opset,
                        "views": self.req.views, **self.req.extra},
            "graph": self.graph_file,
            "stages": self.stages,
            "files": files + ["build.log", bundle.MANIFEST],
            "build_seconds": round(seconds, 3),
            "tools": host.tools(),
            "host": host.describe(),
        }


def build(req: BuildRequest, echo=print) -> Path:
    return Build(req, echo).run()
