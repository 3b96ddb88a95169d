"""Loading the HLARecurrentStep TensorRT plugin into a plugin registry (runtime side; the engine
builder in hla_deploy.exporters.tensorrt.engine uses it too). Imports neither TensorRT nor torch.

    load_plugin_library(registry, "libhla_trt_plugin.so") -> handle   (registry: builder's or runtime's)
    TensorRTUnavailableError    TensorRT (or a CUDA buffer provider) is missing
    PluginLoadError             the library does not load or registers no HLARecurrentStep creator
"""
from __future__ import annotations

import os
from typing import Union

from hla_deploy.extras import MissingDependencyError

#: The creator the ONNX parser looks up for an hla_deploy::HLARecurrentStep node.
PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE = "HLARecurrentStep", "1", ""


class TensorRTUnavailableError(RuntimeError, MissingDependencyError):
    """TensorRT (or, for TrtHLASession, a CUDA buffer provider) is not available; raised by
    TrtHLASession and hla_deploy.exporters.tensorrt.engine.build_engine. Also a
    MissingDependencyError: exit status 3 in the CLI."""


class PluginLoadError(RuntimeError):
    """The TensorRT plugin library could not be loaded or registers no HLARecurrentStep creator."""


def load_plugin_library(registry, plugin_path: Union[str, os.PathLike]):
    """Load libhla_trt_plugin.so into a TensorRT plugin registry (builder.get_plugin_registry() or
    runtime.get_plugin_registry()) and check that its creator is registered; returns the handle."""
    handle = registry.load_library(str(plugin_path))
    if handle is None:
        raise PluginLoadError(f"TensorRT could not load the plugin library {plugin_path} (built for "
                              f"another TensorRT / CUDA version, or a dependency missing? see the log)")
    if registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) is None:
        raise PluginLoadError(f"{plugin_path} loaded but no plugin creator {PLUGIN_NAME} version "
                              f"{PLUGIN_VERSION} is registered")
    return handle
