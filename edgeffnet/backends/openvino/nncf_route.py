"""NNCF's own INT8 route for OpenVINO: post-training quantization of the FP32 IR with its defaults."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import numpy as np


def quantize(fp32_graph: Path, samples: list[np.ndarray], out_xml: Path) -> None:
    """Write an INT8 IR at out_xml: the FP32 ONNX graph converted and quantized by NNCF on `samples`
    (calibration batches of the graph's input shape)."""
    import nncf
    import openvino as ov

    from edgeffnet.core.logs import quiet_third_party

    quiet_third_party()
    fp32 = ov.convert_model(io.BytesIO(Path(fp32_graph).read_bytes()))  # from bytes: paths may hold commas
    # NNCF draws its progress bars on stdout, where `edgeffnet build` prints the bundle path and --json
    # goes: they belong with the build's log lines, on stderr.
    with contextlib.redirect_stdout(sys.stderr):
        quantized = nncf.quantize(fp32, nncf.Dataset(samples), subset_size=len(samples))
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
