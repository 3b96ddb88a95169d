"""TensorRT engines: an exported graph -> a strongly typed .plan with decode and prefill profiles
(engine.build_engine, the trtexec equivalent, `hla-deploy build-engine`); TensorRT imported only when building."""
