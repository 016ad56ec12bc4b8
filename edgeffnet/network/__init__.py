"""The PyTorch side: the network of a spec, its weights, the reference outputs, photos, the ONNX export."""
