"""``edgeres doctor [--target T]``: what this machine has and what it lacks, each with the fix.

Without a target: Python, edgeres' own dependencies, the optional PyTorch, and every backend.
With a target: its backend's own checks (:meth:`edgeres.backends.base.Backend.doctor_checks`; for
TensorRT: Jetson board, TensorRT version against the target's range, trtexec, CUDA runtime, GPU and
compute capability, DLA cores). ``root`` is the filesystem root to inspect (tests pass a fake
``/proc/device-tree``; the CLI reads ``EDGERES_DOCTOR_ROOT``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeres import __version__

ROOT_ENV = "EDGERES_DOCTOR_ROOT"


@dataclass
class DoctorReport:
    target: str | None
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """Every required check passed."""
        return all(c["ok"] or not c["required"] for c in self.checks)

    @property
    def missing(self) -> list[str]:
        return [c["name"] for c in self.checks if c["required"] and not c["ok"]]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "ready": self.ready, "missing": self.missing, "checks": self.checks}


def _check(name: str, ok: bool, found: str, fix: str = "", required: bool = True) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "found": found, "fix": "" if ok else fix, "required": required}


def _dist(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def base_checks() -> list[dict[str, Any]]:
    """Python and edgeres' own dependencies (the device side needs no torch)."""
    checks = [_check("Python", sys.version_info[:2] >= (3, 10), f"{platform.python_version()} ({sys.executable})",
                     "edgeres needs Python >= 3.10 (JetPack 6's system Python is 3.10)"),
              _check("edgeres", True, f"{__version__} on {platform.machine()}")]
    for dist, module in (("numpy", "numpy"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime")):
        v = _dist(dist)
        checks.append(_check(dist, v is not None and importlib.util.find_spec(module) is not None, v or "not installed",
                             f"pip install {dist} (a dependency of edgeres: reinstall it with pip install edgeres)"))
    torch = _dist("torch")
    checks.append(_check("torch (train/export only)", torch is not None, torch or "not installed",
                         "only train, export from a checkpoint and the model zoo need it: "
                         "pip install 'edgeres[train]'", required=False))
    return checks


def diagnose(target: str | None = None, *, root: str | os.PathLike | None = None,
             targets_dirs: tuple[str, ...] = ()) -> DoctorReport:
    """Checks for this machine (and ``target``); see the module doc."""
    from edgeres.backends import NAMES, get_backend

    root = Path(root if root is not None else os.environ.get(ROOT_ENV) or "/")
    report = DoctorReport(None, base_checks())
    if target is None:
        for name in NAMES:
            backend = get_backend(name, require=False)
            reason = backend.unavailable_reason()
            report.checks.append(_check(f"{name} backend", not reason, backend.version() or reason,
                                        backend.install_hint(), required=False))
        return report
    from edgeres.targets import get_target

    tgt = get_target(target, targets_dirs)
    report.target = tgt.name
    report.checks += get_backend(tgt.backend, require=False).doctor_checks(tgt, root)
    return report


__all__ = ["DoctorReport", "base_checks", "diagnose"]
