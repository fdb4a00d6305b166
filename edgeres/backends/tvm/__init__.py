"""Apache TVM (Relax) backend: ONNX -> a shared library for x86 and ARM CPUs.

Modules (none imports tvm at module level):

==================  ==========================================================================
``backend``         compile (one library, or a portable set of variants) and the Backend
``library``         one library: import, lowering, schedules, ``tvm.compile``, export
``portable``        a portable x86 artifact: one library per ISA level, in worker processes
``variants``        the x86 ISA levels, this CPU's flags, which variant runs (no tvm import)
``importer``        ONNX -> Relax with a static input shape
``options``         the target's ``[tvm]`` table, the TVM target dict, host CPU features
``lower``           layout conversion, INT8 rewrite, legalization, schedules applied
``primitives``      schedule primitives shared by the kernels and the default schedule
``tiles``           register tiles of the packed kernels per vector register file (AVX-512, AVX2, ...)
``conv``            the packed-weight NHWC float convolution (compute + schedule)
``int8``            integer convolutions from Q/DQ models (dot-product intrinsics)
``qdq``             activation Q/DQ pairs as elementwise ops
``schedule``        the default CPU schedule for what a tuning database does not cover
``tuning``          MetaSchedule tuning into a reusable database (``edgeres tune``)
``metaschedule``    MetaSchedule builder/runner/search pieces used by ``tuning``
``cross``           cross-compilation (aarch64) and architecture helpers
``runner``          loading a compiled library: sidecar, thread pool, Relax VM runner
``cpp_runner``      the bundle's C++ example: write, build, run (natively or under qemu)
==================  ==========================================================================
"""

from edgeres.backends.tvm.backend import NAME, PRECISIONS, TvmBackend, compile, tuning_module
from edgeres.backends.tvm.importer import ImportedModel, import_onnx
from edgeres.backends.tvm.lower import apply_schedules, conv_kernels, lower
from edgeres.backends.tvm.runner import (
    MODEL_FILE, SIDECAR_FORMAT, SIDECAR_SUFFIX, TvmRunner, available, load, read_artifact, require, set_threads,
    sidecar_path, unavailable_reason, version,
)

BACKEND = TvmBackend()

__all__ = [
    "BACKEND", "MODEL_FILE", "NAME", "PRECISIONS", "SIDECAR_FORMAT", "SIDECAR_SUFFIX", "ImportedModel", "TvmBackend",
    "TvmRunner", "apply_schedules", "available", "compile", "conv_kernels", "import_onnx", "load", "lower",
    "read_artifact", "require", "set_threads", "sidecar_path", "tuning_module", "unavailable_reason", "version",
]
