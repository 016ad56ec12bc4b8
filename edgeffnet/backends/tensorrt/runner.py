"""The TensorRT runner: one deserialized engine, device buffers and a stream; the OpenVINO runner's interface.

Two I/O APIs: the name-based tensor API (num_io_tensors, set_input_shape, set_tensor_address,
execute_async_v3; 8.5 and later, the only one from 10.0) and the binding-index API (get_binding_*,
set_binding_shape, execute_async_v2; what 8.2 on JetPack 4.6 has).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeffnet.backends.tensorrt.cuda import cuda
from edgeffnet.core.errors import UserError


class Runner:
    def __init__(self, engine: Path, dla_core: int | None = None):
        import tensorrt as trt

        self.trt, self.cuda, self.path = trt, cuda(), Path(engine)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if dla_core is not None:
            self.runtime.DLA_core = dla_core
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise UserError(
                f"TensorRT {trt.__version__} could not deserialize {self.path}; "
                f"rebuild it here with `edgeffnet compile BUNDLE`"
            )
        self.context = self.engine.create_execution_context()
        self.named = hasattr(self.engine, "num_io_tensors")
        self.inp, self.out = self._io()
        self.in_dtype = np.dtype(trt.nptype(self._dtype(self.inp)))
        self.out_dtype = np.dtype(trt.nptype(self._dtype(self.out)))
        self.input_shape = tuple(int(d) for d in self._engine_shape(self.inp))
        self.max_batch = self._profile_max_batch()
        self.stream = self.cuda.stream()
        self.buffers: dict = {}  # tensor name (binding index on 8.2) -> (device buffer, capacity in bytes)
        self.dla_core = dla_core
        self.device = f"DLA{dla_core}+GPU" if dla_core is not None else "GPU"
        self.gpu = self.cuda.device()

    # -- the two I/O APIs ------------------------------------------------------------------------------
    def _io(self):
        if self.named:
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            mode = self.trt.TensorIOMode.INPUT
            ins = [n for n in names if self.engine.get_tensor_mode(n) == mode]
            outs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        else:
            idx = range(self.engine.num_bindings)
            ins = [i for i in idx if self.engine.binding_is_input(i)]
            outs = [i for i in idx if not self.engine.binding_is_input(i)]
        if len(ins) != 1 or len(outs) != 1:
            raise UserError(
                f"{self.path.name} has {len(ins)} inputs and {len(outs)} outputs; edgeffnet engines have one each"
            )
        return ins[0], outs[0]

    def _dtype(self, t):
        return self.engine.get_tensor_dtype(t) if self.named else self.engine.get_binding_dtype(t)

    def _engine_shape(self, t):
        return self.engine.get_tensor_shape(t) if self.named else self.engine.get_binding_shape(t)

    def _profile_max_batch(self) -> int | None:
        """The largest batch a dynamic-batch engine's optimisation profile takes; None for a static engine."""
        if self.input_shape[0] != -1:
            return None
        if self.named and hasattr(self.engine, "get_tensor_profile_shape"):
            shapes = self.engine.get_tensor_profile_shape(self.inp, 0)
        else:  # 8.x: by profile and binding (8.5/8.6 also take the tensor's name here)
            shapes = self.engine.get_profile_shape(0, self.inp)
        return int(shapes[2][0])

    def _set_input_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Set the input shape (a no-op for static engines) and return the output shape it implies."""
        if self.named:
            self.context.set_input_shape(self.inp, shape)
            return tuple(self.context.get_tensor_shape(self.out))
        self.context.set_binding_shape(self.inp, shape)
        return tuple(self.context.get_binding_shape(self.out))

    def _buffer(self, tensor, nbytes: int):
        buf, capacity = self.buffers.get(tensor, (None, 0))
        if capacity < nbytes:
            buf = self.cuda.alloc(nbytes)
            self.buffers[tensor] = (buf, nbytes)
        return buf

    def _enqueue(self) -> None:
        d_in, d_out = self.buffers[self.inp][0], self.buffers[self.out][0]
        handle = self.cuda.handle(self.stream)
        if self.named:
            self.context.set_tensor_address(self.inp, self.cuda.ptr(d_in))
            self.context.set_tensor_address(self.out, self.cuda.ptr(d_out))
            ok = self.context.execute_async_v3(handle)
        else:
            bindings = [0] * self.engine.num_bindings
            bindings[self.inp], bindings[self.out] = self.cuda.ptr(d_in), self.cuda.ptr(d_out)
            ok = self.context.execute_async_v2(bindings, handle)
        if not ok:
            raise UserError(f"TensorRT could not enqueue {self.path.name} (input shape outside the engine's profile?)")

    def _prepare(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=self.in_dtype)
        out = np.empty(self._set_input_shape(x.shape), dtype=self.out_dtype)
        self._buffer(self.inp, x.nbytes)
        self._buffer(self.out, out.nbytes)
        return x, out

    # -- the runner interface ----------------------------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        if self.max_batch and len(x) > self.max_batch:  # more views than the profile takes: in chunks
            return np.concatenate([self.run(x[i : i + self.max_batch]) for i in range(0, len(x), self.max_batch)])
        x, out = self._prepare(x)
        self.cuda.htod(self.buffers[self.inp][0], x, self.stream)
        self._enqueue()
        self.cuda.dtoh(out, self.buffers[self.out][0], self.stream)
        self.cuda.sync(self.stream)
        return out.astype(np.float32, copy=False)

    def bound(self, x: np.ndarray):
        """One inference with the input already on the device: enqueue and wait (trtexec's GPU compute time)."""
        x, _ = self._prepare(x)
        self.cuda.htod(self.buffers[self.inp][0], x, self.stream)
        self.cuda.sync(self.stream)
        enqueue, sync, stream = self._enqueue, self.cuda.sync, self.stream

        def infer():
            enqueue()
            sync(stream)

        return infer

    def queue(self, x: np.ndarray) -> None:
        return None  # one stream, one context: throughput mode times the synchronous loop

    def _formats(self) -> dict[str, dict]:
        """Each engine layer's type and datatype from the engine inspector (names only unless the engine was
        built with detailed profiling verbosity; then the precision comes out empty)."""
        from edgeffnet.backends.tensorrt.profile import layer_formats

        try:
            inspector = self.engine.create_engine_inspector()
            text = inspector.get_engine_information(self.trt.LayerInformationFormat.JSON)
        except (AttributeError, RuntimeError):  # 8.2 has no inspector
            return {}
        from edgeffnet.core.untrusted import UntrustedFileError, parse_json

        try:
            info = parse_json(text, "TensorRT engine inspector")
        except UntrustedFileError:
            return {}
        return layer_formats(info) if isinstance(info, dict) else {}

    def profile(self, x: np.ndarray, iterations: int, warmup: int = 3):
        """`iterations` inferences with an IProfiler on a second execution context (the timed context never
        carries one: TensorRT synchronises after every layer while it does)."""
        from edgeffnet.backends import Profiled
        from edgeffnet.backends.tensorrt.profile import layer_times, rows

        context, self.context = self.context, self.engine.create_execution_context()
        profiler = layer_times(self.trt)
        try:
            self.context.profiler = profiler
            infer = self.bound(x)
            for _ in range(warmup):
                infer()
            profiler.times.clear()
            formats, out = self._formats(), Profiled([], [])
            for _ in range(iterations):
                t = time.perf_counter_ns()
                infer()
                out.wall_ms.append((time.perf_counter_ns() - t) / 1e6)
                out.runs.append(rows(profiler.times, formats))
                profiler.times.clear()
        finally:
            self.context = context
        return out

    def describe(self) -> dict:
        return {
            "runtime": "tensorrt",
            "version": self.trt.__version__,
            "device": self.device,
            "device_name": self.gpu["name"],
            "compute_capability": self.gpu["compute_capability"],
            "settings": {
                "io_api": "named tensors" if self.named else "bindings",
                "cuda": self.cuda.name,
                "dla_core": self.dla_core,
                "bound": "enqueue + stream sync, input already on the device, output left there",
            },
            "artifact": self.path.name,
        }
