"""How close a feature extractor's artifact is to its FP32 reference, output by output, as data.

A feature bundle (``--task features``) has no labels to count hits with: :func:`compare_features`
runs both runners on the same images and measures, per output (``c2``..``c5``), the cosine
similarity of each image's flattened feature map (mean and worst over images) and the relative
error ``||artifact - fp32|| / ||fp32||`` over all images. :class:`FeatureReport` is written as the
bundle's ``report.json`` (``"task": "features"``); it passes when every output's mean cosine is at
least ``min_cosine``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from edgeres.errors import InputError
from edgeres.fileio import write_json

DEFAULT_MIN_COSINE = 0.98  # per-output mean cosine an INT8 backbone is expected to keep


@dataclass(frozen=True)
class OutputSimilarity:
    name: str
    shape: tuple[int, ...]  # one image's output, e.g. (64, 56, 56)
    mean_cosine: float
    min_cosine: float  # the worst image
    rel_error: float  # ||artifact - reference|| / ||reference|| over every image
    max_abs_error: float


@dataclass(frozen=True)
class FeatureReport:
    outputs: tuple[OutputSimilarity, ...]
    num_images: int
    min_cosine: float | None  # the gate; None: not gated
    passed: bool
    seconds: float
    context: dict[str, Any] = field(default_factory=dict)  # model, target, precision, backend, data
    task: str = "features"

    @property
    def worst(self) -> OutputSimilarity:
        """The output with the lowest mean cosine."""
        return min(self.outputs, key=lambda o: o.mean_cosine)

    def failing(self) -> list[OutputSimilarity]:
        if self.min_cosine is None:
            return []
        return [o for o in self.outputs if o.mean_cosine < self.min_cosine - 1e-12]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outputs"] = [{**asdict(o), "shape": list(o.shape)} for o in self.outputs]
        return d

    def write(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureReport":
        outs = tuple(OutputSimilarity(o["name"], tuple(o["shape"]), o["mean_cosine"], o["min_cosine"],
                                      o["rel_error"], o["max_abs_error"]) for o in d["outputs"])
        return cls(outs, d["num_images"], d.get("min_cosine"), d["passed"], d.get("seconds", 0.0),
                   d.get("context", {}))


class _Acc:
    """Running sums for one output."""

    def __init__(self) -> None:
        self.cos_sum = 0.0
        self.cos_min = float("inf")
        self.sq_err = 0.0
        self.sq_ref = 0.0
        self.max_abs = 0.0
        self.shape: tuple[int, ...] = ()

    def update(self, name: str, r: np.ndarray, a: np.ndarray) -> None:
        if r.shape != a.shape:
            raise InputError(f"output {name}: reference shape {r.shape} but artifact shape {a.shape}")
        if not (np.isfinite(r).all() and np.isfinite(a).all()):
            raise InputError(f"output {name} has NaN/Inf values; check the input data and the model")
        self.shape = tuple(int(d) for d in r.shape[1:])
        rf = r.reshape(r.shape[0], -1).astype(np.float64)
        af = a.reshape(a.shape[0], -1).astype(np.float64)
        nr, na = np.linalg.norm(rf, axis=1), np.linalg.norm(af, axis=1)
        both_zero = (nr == 0) & (na == 0)
        cos = np.where(both_zero, 1.0, np.sum(rf * af, axis=1) / np.maximum(nr * na, 1e-30))
        self.cos_sum += float(cos.sum())
        self.cos_min = min(self.cos_min, float(cos.min()))
        d = af - rf
        self.sq_err += float(np.sum(d * d))
        self.sq_ref += float(np.sum(rf * rf))
        self.max_abs = max(self.max_abs, float(np.abs(d).max(initial=0.0)))

    def result(self, name: str, n: int) -> OutputSimilarity:
        rel = (self.sq_err / self.sq_ref) ** 0.5 if self.sq_ref > 0 else float(self.sq_err > 0)
        return OutputSimilarity(name, self.shape, self.cos_sum / n, self.cos_min, rel, self.max_abs)


def compare_features(
    reference: Any,
    artifact: Any,
    batches: Iterable[Any],
    names: Sequence[str],
    *,
    min_cosine: float | None = DEFAULT_MIN_COSINE,
    context: dict[str, Any] | None = None,
) -> FeatureReport:
    """Run both runners' ``run_all`` on the same batches (arrays, or ``(x, labels)`` pairs whose
    labels are ignored) and compare their outputs ``names`` (in the model's output order)."""
    t0 = time.perf_counter()
    accs = [_Acc() for _ in names]
    n = 0
    for batch in batches:
        x = batch[0] if isinstance(batch, tuple) else batch
        refs, arts = reference.run_all(x), artifact.run_all(x)
        if len(refs) != len(names) or len(arts) != len(names):
            raise InputError(f"the bundle records {len(names)} outputs ({', '.join(names)}) but the reference gave "
                             f"{len(refs)} and the artifact {len(arts)}; rebuild the bundle")
        for name, acc, r, a in zip(names, accs, refs, arts):
            acc.update(name, np.asarray(r), np.asarray(a))
        n += int(x.shape[0])
    if n == 0:
        raise InputError("no images to compare features on; pass --data DIR with images (labels not needed)")
    outs = tuple(acc.result(name, n) for name, acc in zip(names, accs))
    passed = min_cosine is None or all(o.mean_cosine >= min_cosine - 1e-12 for o in outs)
    return FeatureReport(outs, n, min_cosine, passed, time.perf_counter() - t0, dict(context or {}))


__all__ = ["DEFAULT_MIN_COSINE", "FeatureReport", "OutputSimilarity", "compare_features"]
