"""What is built and where, as data: model specs (the scaling family and its grammar), the layers a spec
counts to, the bundle's layer table, and device profiles. No torch, no ONNX."""
