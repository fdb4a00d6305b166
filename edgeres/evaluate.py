"""Accuracy of a compiled artifact against the FP32 reference, as data.

:class:`AccuracyReport` holds FP32 and artifact top-1/top-5 (fractions in [0, 1]),
the top-1 drop in percentage points, top-1 agreement, mean logit cosine and the
pass/fail verdict against ``max_drop``; it is written as JSON for CI gates.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from edgeres.errors import InputError
from edgeres.fileio import write_json

Runner = Callable[[np.ndarray], np.ndarray]
EVAL_BATCH = 64  # images per batch when a model is evaluated
CONFUSION_MAX_CLASSES = 100  # confusion matrices are stored up to this many classes (100 x 100 counts)


@dataclass(frozen=True)
class TopK:
    top1: float
    top5: float


@dataclass(frozen=True)
class AccuracyReport:
    reference: TopK
    artifact: TopK
    drop_top1: float  # percentage points, reference - artifact (positive = worse)
    drop_top5: float
    agreement_top1: float  # fraction of images where both predict the same class
    mean_cosine: float
    num_images: int
    max_drop: float | None
    passed: bool
    seconds: float
    context: dict[str, Any] = field(default_factory=dict)  # model, target, precision, backend, data
    # per class: "count" (images), "reference_top1" / "artifact_top1" (correct top-1 predictions)
    per_class: dict[str, list[int]] | None = None
    # "reference" / "artifact": [true class][predicted class] counts (up to CONFUSION_MAX_CLASSES classes)
    confusion: dict[str, list[list[int]]] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("drop_top1", "drop_top5"):
            d[k] = round(d[k], 4)
        return d

    def write(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AccuracyReport":
        return cls(
            reference=TopK(**d["reference"]), artifact=TopK(**d["artifact"]),
            drop_top1=d["drop_top1"], drop_top5=d["drop_top5"], agreement_top1=d["agreement_top1"],
            mean_cosine=d["mean_cosine"], num_images=d["num_images"], max_drop=d.get("max_drop"),
            passed=d["passed"], seconds=d.get("seconds", 0.0), context=d.get("context", {}),
            per_class=d.get("per_class"), confusion=d.get("confusion"),
        )


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean per image: is the label among the ``k`` highest logits (k capped at the class count)?"""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)


def compare(
    reference: Runner,
    artifact: Runner,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    max_drop: float | None = None,
    context: dict[str, Any] | None = None,
) -> AccuracyReport:
    """Run both runners on the same labelled batches and build the report."""
    t0 = time.perf_counter()
    n = 0
    ref1 = ref5 = art1 = art5 = agree = 0
    cos_sum = 0.0
    classes = _ClassCounts()
    for x, y in batches:
        y = np.asarray(y, dtype=np.int64)
        if (y < 0).any():
            raise InputError("validation data has unlabelled images; use an ImageFolder tree DIR/<class>/*.png")
        lr = np.asarray(reference(x), dtype=np.float32)
        la = np.asarray(artifact(x), dtype=np.float32)
        if lr.shape != la.shape:
            raise InputError(f"reference and artifact output shapes differ: {lr.shape} vs {la.shape}")
        if y.max(initial=0) >= lr.shape[1]:
            raise InputError(f"a label ({int(y.max())}) is outside the model's {lr.shape[1]} classes; "
                             "is this the data the model was trained on?")
        if not (np.isfinite(lr).all() and np.isfinite(la).all()):
            raise InputError("non-finite logits (NaN/Inf); check the input data and the model")
        ref1 += int(topk_hits(lr, y, 1).sum())
        ref5 += int(topk_hits(lr, y, 5).sum())
        art1 += int(topk_hits(la, y, 1).sum())
        art5 += int(topk_hits(la, y, 5).sum())
        agree += int((lr.argmax(1) == la.argmax(1)).sum())
        cos_sum += float(_cosine(lr, la).sum())
        classes.update(y, lr.argmax(1), la.argmax(1), lr.shape[1])
        n += len(y)
    if n == 0:
        raise InputError("no validation images; pass --data DIR with DIR/<class>/*.png (or DIR/val/<class>/...)")
    ref = TopK(ref1 / n, ref5 / n)
    art = TopK(art1 / n, art5 / n)
    drop1 = 100.0 * (ref.top1 - art.top1)
    drop5 = 100.0 * (ref.top5 - art.top5)
    passed = True if max_drop is None else drop1 <= max_drop + 1e-9
    return AccuracyReport(
        reference=ref, artifact=art, drop_top1=drop1, drop_top5=drop5, agreement_top1=agree / n,
        mean_cosine=cos_sum / n, num_images=n, max_drop=max_drop, passed=passed,
        seconds=time.perf_counter() - t0, context=dict(context or {}),
        per_class=classes.per_class(), confusion=classes.confusion(),
    )


class _ClassCounts:
    """Per-class image and correct counts, and the confusion matrices for up to CONFUSION_MAX_CLASSES classes."""

    def __init__(self) -> None:
        self.k = 0
        self.count = self.ref = self.art = np.zeros(0, np.int64)
        self.conf_ref = self.conf_art = np.zeros((0, 0), np.int64)

    def update(self, y: np.ndarray, pred_ref: np.ndarray, pred_art: np.ndarray, k: int) -> None:
        if self.k == 0:
            self.k = k
            self.count, self.ref, self.art = (np.zeros(k, np.int64) for _ in range(3))
            if k <= CONFUSION_MAX_CLASSES:
                self.conf_ref, self.conf_art = np.zeros((k, k), np.int64), np.zeros((k, k), np.int64)
        np.add.at(self.count, y, 1)
        np.add.at(self.ref, y[pred_ref == y], 1)
        np.add.at(self.art, y[pred_art == y], 1)
        if self.conf_ref.size:
            np.add.at(self.conf_ref, (y, pred_ref), 1)
            np.add.at(self.conf_art, (y, pred_art), 1)

    def per_class(self) -> dict[str, list[int]] | None:
        if not self.k:
            return None
        return {"count": self.count.tolist(), "reference_top1": self.ref.tolist(), "artifact_top1": self.art.tolist()}

    def confusion(self) -> dict[str, list[list[int]]] | None:
        if not self.conf_ref.size:
            return None
        return {"reference": self.conf_ref.tolist(), "artifact": self.conf_art.tolist()}
