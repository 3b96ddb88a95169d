"""The HLARecurrentStep ONNX node itself: its OpSchema (register_hla_schema) and the attribute and state-size
rules, shared by the torch.onnx seam (onnx/) and the standard-op lowering (standard/)."""
