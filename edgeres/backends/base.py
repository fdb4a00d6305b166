"""What every backend returns: an Artifact record and a Runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Artifact:
    """A compiled model on disk.

    ``path`` is the main file (e.g. ``model.so`` or ``model.engine``); ``files`` lists
    every file the backend wrote, relative to ``path.parent``. ``info`` is a small
    JSON-able record (compile time, TVM target, TensorRT version, ...) that goes into
    the bundle manifest.
    """

    backend: str
    path: Path
    precision: str
    input_name: str
    input_shape: tuple[int, ...]  # as compiled; batch dimension may be the fixed batch size
    files: tuple[str, ...] = ()
    compile_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "file": self.path.name,
            "precision": self.precision,
            "input_name": self.input_name,
            "input_shape": list(self.input_shape),
            "files": list(self.files),
            "compile_seconds": round(self.compile_seconds, 3),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], root: Path) -> "Artifact":
        return cls(
            backend=d["backend"],
            path=Path(root) / d["file"],
            precision=d["precision"],
            input_name=d["input_name"],
            input_shape=tuple(d["input_shape"]),
            files=tuple(d.get("files", ())),
            compile_seconds=float(d.get("compile_seconds", 0.0)),
            info=dict(d.get("info", {})),
        )


class Runner(Protocol):
    def __call__(self, batch: np.ndarray) -> np.ndarray:  # NCHW float32 -> (N, classes) float32
        ...


def run_in_chunks(fn, batch: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """Run ``fn`` over ``batch`` in chunks of ``fixed_batch``, padding the last chunk.

    For artifacts compiled with a static batch dimension.
    """
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if not fixed_batch or batch.shape[0] == fixed_batch:
        return fn(batch)
    outs = []
    for start in range(0, batch.shape[0], fixed_batch):
        chunk = batch[start : start + fixed_batch]
        n = chunk.shape[0]
        if n < fixed_batch:
            pad = np.zeros((fixed_batch - n, *chunk.shape[1:]), dtype=np.float32)
            chunk = np.concatenate([chunk, pad])
        outs.append(fn(chunk)[:n])
    return np.concatenate(outs) if outs else np.zeros((0,), dtype=np.float32)
