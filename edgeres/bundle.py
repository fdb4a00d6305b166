"""Deployment bundles: a directory with the artifact, the ONNX models, the
calibration cache, ``manifest.json`` and the last validation report.

Bundles are built in a temporary directory beside the destination and renamed
into place only when complete (see :func:`edgeres.fileio.atomic_dir`): an
interrupted compile never leaves a directory that looks finished. The manifest
records the sha256 of every file so :func:`load_bundle` can verify it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeres import __version__
from edgeres.errors import InputError
from edgeres.fileio import sha256_file, write_json
from edgeres.preprocessing import Preprocessing

FORMAT = "edgeres.bundle/1"
MANIFEST = "manifest.json"
FP32_ONNX = "model.fp32.onnx"
INT8_ONNX = "model.int8.onnx"
CALIB_CACHE = "calibration.json"
REPORT = "report.json"
LABELS = "labels.txt"
ARTIFACT_DIR = "artifact"


def tool_versions() -> dict[str, str | None]:
    """Versions of the tools that shaped a bundle (None when not installed)."""
    out: dict[str, str | None] = {"edgeres": __version__, "python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxruntime", "apache-tvm", "apache-tvm-ffi", "tensorrt", "tensorrt-rtx-cu13", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the manifest, keyed by POSIX relative path."""
    hashes = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            hashes[p.relative_to(root).as_posix()] = sha256_file(p)
    return hashes


def write_manifest(root: Path, record: dict[str, Any]) -> Path:
    """Add format, time, versions and file hashes to ``record`` and write manifest.json."""
    manifest = {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": tool_versions(),
        "host": {"machine": platform.machine(), "system": platform.system()},
        **record,
        "files": hash_tree(root),
    }
    return write_json(root / MANIFEST, manifest)


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.manifest["preprocessing"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.preprocessing.class_names

    @property
    def task(self):  # -> edgeres.task.Task
        """What the model computes: a classifier (bundles without a record) or a feature extractor."""
        from edgeres.task import Task

        return Task.from_dict(self.manifest.get("task"))

    @property
    def random_weights(self) -> bool:
        """Compiled from ``--weights random``: its outputs mean nothing (latency tests only)."""
        return bool(self.manifest.get("model", {}).get("random_weights", False))

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def target_name(self) -> str:
        return self.manifest["target"]["name"]

    @property
    def backend(self) -> str:
        return self.manifest["target"]["backend"]

    def file(self, key: str) -> Path | None:
        """Path of a named ONNX model (``fp32``/``int8``) or None."""
        rel = self.manifest.get("onnx", {}).get(key)
        return self.root / rel if rel else None

    @property
    def deploy_onnx(self) -> Path:
        """The ONNX model the artifact was compiled from (INT8 if quantized)."""
        return self.file("int8") or self.file("fp32")  # type: ignore[return-value]

    def artifact(self):
        """The compiled Artifact, or None when the bundle holds only a recipe (e.g. a Jetson engine
        to be built on the device)."""
        from edgeres.backends.base import Artifact

        rec = self.manifest.get("artifact")
        if not rec:
            return None
        return Artifact.from_dict(rec, self.root / ARTIFACT_DIR)


def load_bundle(path: str | os.PathLike, *, verify: bool = True) -> Bundle:
    """Open a bundle directory; with ``verify`` check every file's sha256 against the manifest."""
    root = Path(path)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise InputError(f"bundle {root} does not exist; create one with `edgeres compile ... --out {root}`")
    if not mpath.is_file():
        raise InputError(f"{root} is not an edgeres bundle (no {MANIFEST}); create one with `edgeres compile`")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{mpath} is corrupt ({e}); rebuild the bundle with `edgeres compile`") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{mpath} is not an {FORMAT} manifest; rebuild the bundle with this edgeres version")
    if verify:
        recorded = manifest.get("files", {})
        for rel, digest in recorded.items():
            p = root / rel
            if not p.is_file():
                raise InputError(f"bundle {root} is incomplete: {rel} is missing; rebuild it with `edgeres compile`")
            if sha256_file(p) != digest:
                raise InputError(f"bundle {root} is modified: {rel} does not match its sha256 in the manifest; "
                                 "rebuild it with `edgeres compile` (a bundle runs only the files it was built with)")
    return Bundle(root, manifest)
