"""Which pip extra installs each optional module. A device-side install carries only the runtimes it needs;
a command that reaches one it lacks says, in one line, which extra to add (pyproject.toml declares them)."""

from __future__ import annotations

from edgeffnet.core.errors import UserError

# The top-level module name -> the extra that installs it.
EXTRA_OF = {
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "tensorrt": "tensorrt",
    "pycuda": "tensorrt",
    "cuda": "tensorrt",
    "matplotlib": "report",
    "ray": "farm",
    "torch": "build",
    "onnx": "build",
    "onnxsim": "build",
    "nncf": "build",
    "skimage": "build",
    "sklearn": "build",
}


def install_line(extra: str) -> str:
    # PyTorch's CPU build, from its own index (README, set-up): PyPI's default pulls CUDA libraries.
    return (
        "pip install --extra-index-url https://download.pytorch.org/whl/cpu torch==2.13.0 'edgeffnet[build]'"
        if extra == "build"
        else f"pip install 'edgeffnet[{extra}]'"
    )


def missing(error: ImportError, what: str, extra: str | None = None) -> UserError | None:
    """The one-line error for `what` failing on a missing optional module, or None when the missing
    module is not an optional runtime (a bug, which keeps its traceback). `extra` overrides the lookup
    where the caller knows better (onnx is in both the build and the tensorrt extra)."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    top = error.name.split(".")[0]
    extra = extra if top in EXTRA_OF and extra else EXTRA_OF.get(top)
    if extra is None:
        return None
    return UserError(f"{what} needs {top}, which this install lacks: {install_line(extra)}")
