"""ONNX graph tools every graph pass shares: the node index and the simplify stage."""
