"""A bundle's file names, declared once: every layer that writes or reads a bundle names its files here."""

MANIFEST = "manifest.json"  # what the bundle holds, from what, verified how (bundle.Manifest)
BENCH = "bench"  # folder of the bench records written after the build (measure/records.py)
EVAL = "eval"  # folder of the eval results written after the build (measure/eval_result.py)
LAYER_TABLE = "layers.json"  # every layer with its cost and ONNX nodes (specs/layer_table.py), written at build time
REFERENCE = "reference.npz"  # the verification views and PyTorch's outputs on them
EXPORTED = "model.onnx"  # the export stage's graph
SIMPLIFIED = "model.sim.onnx"  # the simplify stage's graph (and the precision stage's at fp32)
FP16_GRAPH = "model.fp16.onnx"  # the precision stage's graph at fp16
INT8_GRAPH = "model.int8.onnx"  # the precision stage's Q/DQ graph at int8
IR = "model.xml"  # OpenVINO's compiled model: its graph ...
IR_WEIGHTS = "model.bin"  # ... and its weights
ENGINE = "model.engine"  # TensorRT's compiled model
ENGINE_FACTS = "model.engine.json"  # what the engine was built with (TensorRT version, GPU), beside it
TIMING_CACHE = "timing.cache"  # trtexec's timing cache
ENGINE_README = "README.md"  # how the device builds the engine: the exact trtexec line
BUILD_LOG = "build.log"  # the build's stage lines (and a compile on the device's)
