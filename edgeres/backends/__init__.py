"""Backends: one module per compiler/runtime behind one small interface.

Each backend module exposes::

    NAME: str
    available() -> bool                   # importable (and hardware present, where needed)
    version() -> str | None
    compile(onnx_path, target, out_dir, *, precision, options=None) -> Artifact
    load(artifact: Artifact | Path, target=None) -> Runner

A Runner is a callable mapping an NCHW float32 numpy batch (any batch size) to
float32 logits ``(N, num_classes)``. Backends are imported lazily here; a missing
one raises :class:`BackendUnavailable` naming the extra to install. Version shims
of a backend stay inside its own module.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgeres.backends.base import Artifact, Runner  # noqa: F401
from edgeres.errors import BackendUnavailable, UsageError

_MODULES = {
    "onnxruntime": "edgeres.backends.onnxruntime",
    "tvm": "edgeres.backends.tvm",
    "tensorrt": "edgeres.backends.tensorrt",
}
_EXTRAS = {"onnxruntime": "edgeres", "tvm": "edgeres[tvm]", "tensorrt": "edgeres[tensorrt]"}


def list_backends() -> list[str]:
    return list(_MODULES)


def get_backend(name: str, *, require: bool = True) -> ModuleType:
    """Import backend ``name``; raise BackendUnavailable (with the pip extra) if it cannot run here."""
    if name not in _MODULES:
        raise UsageError(f"unknown backend {name!r}; choose one of {list(_MODULES)}")
    mod = importlib.import_module(_MODULES[name])
    if require and not mod.available():
        raise BackendUnavailable(
            f"the {name} backend is not available here ({mod.unavailable_reason()}); "
            f"install it with: pip install '{_EXTRAS[name]}'"
        )
    return mod
