"""Device bundles: a checkpoint -> a self-contained folder + tarball for a target (graphs, native sources, scripts,
golden outputs, AOT kernels, manifest; `hla-deploy bundle`); check.py ships inside it and imports no hla_deploy."""
