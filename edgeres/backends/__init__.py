"""Backends: one package (or module) per compiler/runtime, each behind :class:`~edgeres.backends.base.Backend`.

``get_backend(name)`` imports the backend lazily and returns its ``BACKEND`` instance; with
``require=True`` a backend that cannot run here raises :class:`BackendUnavailable` naming the
pip extra to install. Version shims of a backend stay inside its own package.

* :mod:`edgeres.backends.onnxruntime` — the reference runner everywhere, and a deploy backend;
* :mod:`edgeres.backends.tvm` — Apache TVM (Relax) for x86 and ARM CPUs;
* :mod:`edgeres.backends.tensorrt` — TensorRT for NVIDIA GPUs and Jetson.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from edgeres.backends.base import Artifact, Backend, Capabilities, Runner  # noqa: F401
from edgeres.errors import UsageError

_PACKAGES = {
    "onnxruntime": "edgeres.backends.onnxruntime",
    "tvm": "edgeres.backends.tvm",
    "tensorrt": "edgeres.backends.tensorrt",
}
NAMES = tuple(_PACKAGES)


def get_backend(name: str, *, require: bool = True) -> Backend:
    """Backend ``name``; BackendUnavailable (with the pip extra) if ``require`` and it cannot run here."""
    if name not in _PACKAGES:
        raise UsageError(f"unknown backend {name!r}; choose one of {list(_PACKAGES)}")
    backend: Backend = importlib.import_module(_PACKAGES[name]).BACKEND
    if require:
        backend.require()
    return backend


def reference_runner(onnx_path: str | os.PathLike | bytes, threads: int | None = None) -> Runner:
    """The reference every artifact is compared with: ONNX Runtime on an ONNX file."""
    from edgeres.backends.onnxruntime import make_runner

    return make_runner(onnx_path if isinstance(onnx_path, (bytes, bytearray)) else Path(onnx_path), threads)
