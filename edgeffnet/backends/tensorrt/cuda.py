"""Device memory, copies and streams for the TensorRT runner: pycuda, or cuda-python where pycuda is absent.

TensorRT itself allocates nothing for the caller's I/O; one of these two bindings does. Both drive the
device's primary context, the one TensorRT's runtime API calls use, so buffers and engine agree.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


class _PyCuda:
    def __init__(self):
        import pycuda
        import pycuda.driver as drv

        drv.init()
        self.drv, self.dev = drv, drv.Device(0)
        self.ctx = self.dev.retain_primary_context()
        self.ctx.push()  # current for the process's lifetime; the runner's buffers live in it
        self.name = f"pycuda {pycuda.VERSION_TEXT}"

    def device(self) -> dict:
        major, minor = self.dev.compute_capability()
        return {"name": self.dev.name(), "compute_capability": f"{major}.{minor}"}

    def alloc(self, nbytes: int):
        return self.drv.mem_alloc(max(nbytes, 1))

    def ptr(self, buf) -> int:
        return int(buf)

    def stream(self):
        return self.drv.Stream()

    def handle(self, stream) -> int:
        return stream.handle

    def htod(self, buf, host: np.ndarray, stream) -> None:
        self.drv.memcpy_htod_async(buf, host, stream)

    def dtoh(self, host: np.ndarray, buf, stream) -> None:
        self.drv.memcpy_dtoh_async(host, buf, stream)

    def sync(self, stream) -> None:
        stream.synchronize()


class _CudaPython:
    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart
        self.rt = cudart
        self._check(cudart.cudaSetDevice(0))
        from importlib import metadata

        try:
            self.name = f"cuda-python {metadata.version('cuda-python')}"
        except metadata.PackageNotFoundError:
            self.name = "cuda-python"

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA error {err}")
        return rest[0] if len(rest) == 1 else rest

    def device(self) -> dict:
        props = self._check(self.rt.cudaGetDeviceProperties(0))
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return {"name": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}

    def alloc(self, nbytes: int):
        return self._check(self.rt.cudaMalloc(max(nbytes, 1)))

    def ptr(self, buf) -> int:
        return int(buf)

    def stream(self):
        return self._check(self.rt.cudaStreamCreate())

    def handle(self, stream) -> int:
        return int(stream)

    def htod(self, buf, host: np.ndarray, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(buf, host.ctypes.data, host.nbytes, kind, stream))

    def dtoh(self, host: np.ndarray, buf, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(host.ctypes.data, buf, host.nbytes, kind, stream))

    def sync(self, stream) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream))


@lru_cache(maxsize=1)
def cuda():
    """The first binding that imports and finds a GPU; ImportError naming both when neither does."""
    errors = []
    for binding in (_PyCuda, _CudaPython):
        try:
            return binding()
        except Exception as e:  # noqa: BLE001 - an import error or a driver without a GPU: try the next
            errors.append(f"{binding.__name__.strip('_').lower()}: {type(e).__name__}: {e}")
    raise ImportError("no CUDA binding works here (" + "; ".join(errors) + ")")
