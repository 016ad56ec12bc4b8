"""Stage 3, simplify: onnxsim folds constants and removes what the exporter left over."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import onnxsim

from edgeffnet.core.verify import StageFailed


def simplify(src: Path, dst: Path) -> dict:
    model = onnx.load(str(src))
    before = len(model.graph.node)
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise StageFailed("simplify: onnxsim could not validate the simplified graph")
    onnx.save(simplified, str(dst))
    ops = Counter(n.op_type for n in simplified.graph.node)
    return {
        "tool": f"onnxsim {onnxsim.__version__}",
        "nodes_before": before,
        "nodes_after": len(simplified.graph.node),
        "ops": dict(sorted(ops.items())),
    }
