"""TensorRT backend: NVIDIA GPUs and Jetson.

Modules (none imports tensorrt at module level):

=================  ===========================================================================
``backend``        compile / load and the Backend (:class:`TensorRTBackend`)
``options``        the target's ``[tensorrt]`` table, version ranges
``builder``        building a serialized engine; every TensorRT version shim of the builder
``runner``         deserializing an engine and running it
``cuda``           GPU detection and CUDA buffers for the runner
``recipe``         the on-device build recipe (``trtexec`` lines) and whether this machine can build
``conformance``    TensorRT's explicit-quantization rules for a Q/DQ ONNX, checked without a GPU
``device_build``   ``edgeres build-engine``: build a bundle's engine on the device and validate it
=================  ===========================================================================
"""

from edgeres.backends.tensorrt.backend import (
    ENGINE, NAME, SIDECAR, TIMING_CACHE, TensorRTBackend, available, build_recipe, check_buildable_here, compile,
    convert_to_fp16, copy_cpp_template, cpp_template_files, load, read_sidecar, resolve_options,
    unavailable_reason, version,
)

BACKEND = TensorRTBackend()

__all__ = [
    "BACKEND", "ENGINE", "NAME", "SIDECAR", "TIMING_CACHE", "TensorRTBackend", "available", "build_recipe",
    "check_buildable_here", "compile", "convert_to_fp16", "copy_cpp_template", "cpp_template_files", "load",
    "read_sidecar", "resolve_options", "unavailable_reason", "version",
]
