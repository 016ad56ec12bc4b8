"""A bundle's file names, declared once: every layer that writes or reads a bundle names its files here."""

MANIFEST = "manifest.json"  # what the bundle holds, from what, verified how (bundle.Manifest)
BENCH = "bench"  # folder of the bench records written after the build (measure/records.py)
EVAL = "eval"  # folder of the eval results written after the build (measure/eval_result.py)
LAYER_TABLE = "layers.json"  # every layer with its cost and ONNX nodes (specs/layer_table.py), written at build time
REFERENCE = "reference.npz"  # the verification views and PyTorch's outputs on them
EXPORTED = "model.onnx"  # the export stage's graph
SIMPLIFIED = "model.sim.onnx"  # the simplify stage's graph (and the precision stage's at fp32)
