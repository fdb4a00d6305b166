"""TensorRT backend: NVIDIA GPUs and Jetson.

Modules (none imports tensorrt at module level):

=================  ===========================================================================
``backend``        compile / load and the Backend (:class:`TensorRTBackend`)
``options``        the target's ``[tensorrt]`` table, version ranges
``builder``        building a serialized engine; every TensorRT version shim of the builder
``runner``         deserializing an engine and running it
``cuda``           GPU detection and CUDA buffers for the runner (ctypes on libcudart; no CUDA wheel)
``cuda_python``    CUDA buffers through cuda-python, when installed and of the driver's major
``jetson``         which Jetson this is, from the device tree / nv_tegra_release / sysfs; JetPack facts
``recipe``         the on-device build recipe (``trtexec`` lines) and whether this machine can build
``trtexec``        build and run engines with JetPack's trtexec when the Python bindings are missing
``placement``      where the layers run (DLA/GPU) and the engine inspector's layer list
``conformance``    TensorRT's explicit-quantization rules for a Q/DQ ONNX, checked without a GPU
``device_build``   ``edgeres build-engine``: build on the device, self-test, record for reproducibility
``diagnose``       ``edgeres doctor --target``: what this machine has and lacks for a TensorRT target
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
