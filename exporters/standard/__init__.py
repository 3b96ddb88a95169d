"""The standard-op rewrite: every HLARecurrentStep node -> stock ONNX ops (lower_custom_nodes, standard_hla_graph),
with its numpy twin (chunk_math) and the small graph builder it uses; no native library needed to run the result."""
