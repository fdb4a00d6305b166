"""Load a bundle and classify images (small dependency set: numpy, Pillow, and the
bundle's backend runtime — no torch).

    >>> import edgeres.runtime
    >>> p = edgeres.runtime.load("bundles/r20")
    >>> logits = p.predict(batch)            # NCHW float32 -> (N, classes)
    >>> p.classify(["cat.png"], top_k=5)     # [[("cat", 0.91), ...]]
    >>> f = edgeres.runtime.load("bundles/r50-backbone")   # compiled with --task features
    >>> f.features(batch)                    # {"c2": (N, 256, H/4, W/4), ..., "c5": (N, 2048, H/32, W/32)}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgeres.bundle import Bundle, load_bundle
from edgeres.errors import InputError, UsageError
from edgeres.preprocessing import Preprocessing


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Predictor:
    """Maps NCHW float32 batches to logits with a bundle's artifact."""

    bundle: Bundle
    runner: Any
    backend: str

    @property
    def variant(self) -> str | None:
        """The compiled variant that runs (a portable TVM bundle's ISA level), or None."""
        from edgeres.backends.base import runner_variant

        return runner_variant(self.runner)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.bundle.preprocessing

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.bundle.class_names

    def _checked(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        h, w = self.preprocessing.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, h, w):
            raise InputError(f"input batch has shape {tuple(batch.shape)}; this model takes (N, 3, {h}, {w}) "
                             "float32 (use Predictor.preprocess for images)")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.runner(self._checked(batch)), dtype=np.float32)

    def features(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """A feature extractor's outputs by name (``c2``..``c5``) for an NCHW float32 batch."""
        task = self.bundle.task
        if not task.is_features:
            raise UsageError(f"bundle {self.bundle.root} is a classifier; use predict()/classify(), or compile "
                             "the backbone with --task features")
        outs = self.runner.run_all(self._checked(batch))
        return dict(zip(task.output_names, outs))

    def preprocess(self, images: Sequence[str | os.PathLike | Any]) -> np.ndarray:
        """Decode and preprocess image paths (or PIL images / HWC uint8 arrays) into a batch."""
        from edgeres.data.transforms import load_image, preprocess

        arrays = []
        for img in images:
            if isinstance(img, (str, os.PathLike)):
                img = load_image(img)
            arrays.append(preprocess(img, self.preprocessing))
        if not arrays:
            raise UsageError("no images given")
        return np.stack(arrays)

    def classify(self, images: Sequence[Any], top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (class name, probability) per image."""
        if self.bundle.task.is_features:
            raise UsageError(f"bundle {self.bundle.root} is a feature extractor "
                             f"({', '.join(self.bundle.task.output_names)}), not a classifier; use features()")
        probs = softmax(self.predict(self.preprocess(images)))
        names = self.class_names or tuple(str(i) for i in range(probs.shape[1]))
        k = min(top_k, probs.shape[1])
        out = []
        for row in probs:
            idx = np.argsort(-row)[:k]
            out.append([(names[i] if i < len(names) else str(i), float(row[i])) for i in idx])
        return out


def load(bundle: str | os.PathLike | Bundle, *, backend: str | None = None, verify: bool = True,
         variant: str | None = None) -> Predictor:
    """Load a bundle's artifact. ``backend="onnxruntime"`` runs the bundle's deployed ONNX model
    (INT8 Q/DQ if quantized) on ONNX Runtime instead of the compiled artifact. ``variant`` forces
    one compiled variant of a portable bundle (default: the best this CPU runs)."""
    from edgeres.backends import get_backend

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=verify)
    if backend == "onnxruntime" or (backend is None and b.backend == "onnxruntime" and b.artifact() is None):
        from edgeres.backends.onnxruntime import make_runner

        if variant:
            raise UsageError("--variant selects a compiled variant of the artifact; it does not apply to ONNX Runtime")
        return Predictor(b, make_runner(b.deploy_onnx), "onnxruntime")
    art = b.artifact()
    if backend not in (None, b.backend):
        raise UsageError(f"bundle {b.root} was compiled for {b.backend}; use backend={b.backend!r} or 'onnxruntime'")
    if art is None:
        raise InputError(
            f"bundle {b.root} holds no compiled artifact yet (target {b.target_name}); build it on the device "
            f"with `edgeres build-engine {b.root}`, or run its ONNX with backend='onnxruntime'"
        )
    return Predictor(b, get_backend(b.backend).load(art, variant=variant), b.backend)


__all__ = ["Predictor", "load", "softmax"]
