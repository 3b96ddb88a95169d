"""The torch.onnx seam: an nn.Module with HLA calls -> a checked ONNX graph with one HLARecurrentStep node
per call (export_onnx, the translation table, dynamic shapes, graph checks, verification, `hla-deploy export`)."""
