"""Labelled validation images and their FP32 logits, held once; Q/DQ variants scored against them.

Used by the sensitivity analysis, the accuracy-aware fallback, ``edgeres debug --bisect``
and the QAT fallback: every variant is run in ONNX Runtime on the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeres.errors import InputError
from edgeres.evaluate import AccuracyReport, TopK, topk_hits

EVAL_CHUNK = 64
LabelledBatches = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class Score:
    """One Q/DQ variant against the FP32 model on the validation images (top-1/top-5 as fractions)."""

    top1: float
    top5: float
    drop_top1: float  # percentage points, FP32 - variant
    drop_top5: float
    agreement: float  # fraction of images with the same top-1 class as FP32
    output_error: float  # ||logits - fp32 logits|| / ||fp32 logits|| over all images
    cosine_error: float  # 1 - mean per-image cosine of logits


class Evaluator:
    """Holds the validation images and the FP32 logits; scores Q/DQ variants against them."""

    def __init__(self, fp32_onnx: Path, val_batches_fn: LabelledBatches, *, max_images: int | None = None) -> None:
        xs, ys = [], []
        n = 0
        for index, (x, y) in enumerate(val_batches_fn()):
            if max_images is not None and n >= max_images:
                break
            x, y = np.asarray(x), np.asarray(y, dtype=np.int64)
            if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating) or y.shape != (x.shape[0],):
                raise InputError(f"validation batch {index} is not (NCHW float images, labels); check the data loader")
            if not np.isfinite(x).all():
                raise InputError(f"validation batch {index} has NaN/Inf values; check the validation images")
            if (y < 0).any():
                raise InputError("validation data has unlabelled images; use an ImageFolder tree DIR/<class>/*.png")
            keep = x.shape[0] if max_images is None else min(x.shape[0], max_images - n)
            xs.append(x[:keep].astype(np.float32, copy=False))
            ys.append(y[:keep])
            n += keep
        if n == 0:
            raise InputError("no validation images; pass labelled images (--val DIR with DIR/<class>/*.png)")
        self.inputs = np.concatenate(xs)
        self.labels = np.concatenate(ys)
        self.reference = self.logits(fp32_onnx)
        if self.labels.max() >= self.reference.shape[1]:
            raise InputError(f"a label ({int(self.labels.max())}) is outside the model's {self.reference.shape[1]} "
                             "classes; is this the data the model was trained on?")
        self.ref_top1 = float(topk_hits(self.reference, self.labels, 1).mean())
        self.ref_top5 = float(topk_hits(self.reference, self.labels, 5).mean())

    @property
    def num_images(self) -> int:
        return int(self.labels.shape[0])

    def logits(self, model: Any) -> np.ndarray:
        """Logits of ``model`` (ModelProto or path) on every validation image; non-finite ones raise."""
        from edgeres.backends.onnxruntime import make_runner

        runner = make_runner(model.SerializeToString() if hasattr(model, "SerializeToString") else Path(model))
        out = np.concatenate([runner(self.inputs[i: i + EVAL_CHUNK]) for i in range(0, len(self.inputs), EVAL_CHUNK)])
        if not np.isfinite(out).all():
            raise InputError("the model gives NaN/Inf logits on the validation images; check the data and the model")
        return out

    def score(self, model: Any) -> Score:
        lq, lf, y = self.logits(model), self.reference, self.labels
        if lq.shape != lf.shape:
            raise InputError(f"FP32 and INT8 output shapes differ: {lf.shape} vs {lq.shape}")
        top1, top5 = float(topk_hits(lq, y, 1).mean()), float(topk_hits(lq, y, 5).mean())
        cos = np.sum(lq * lf, 1) / np.maximum(np.linalg.norm(lq, axis=1) * np.linalg.norm(lf, axis=1), 1e-12)
        ref_norm = float(np.linalg.norm(lf))
        return Score(
            top1=top1, top5=top5, drop_top1=100.0 * (self.ref_top1 - top1), drop_top5=100.0 * (self.ref_top5 - top5),
            agreement=float((lq.argmax(1) == lf.argmax(1)).mean()),
            output_error=float(np.linalg.norm(lq - lf)) / max(ref_norm, 1e-12),
            cosine_error=float(1.0 - cos.mean()),
        )

    def report(self, s: Score, *, max_drop: float | None, seconds: float = 0.0,
               context: dict[str, Any] | None = None) -> AccuracyReport:
        """``s`` as an :class:`~edgeres.evaluate.AccuracyReport` (FP32 vs the variant)."""
        passed = True if max_drop is None else s.drop_top1 <= max_drop + 1e-9
        return AccuracyReport(
            reference=TopK(self.ref_top1, self.ref_top5), artifact=TopK(s.top1, s.top5), drop_top1=s.drop_top1,
            drop_top5=s.drop_top5, agreement_top1=s.agreement, mean_cosine=1.0 - s.cosine_error,
            num_images=self.num_images, max_drop=max_drop, passed=passed, seconds=seconds, context=dict(context or {}),
        )
