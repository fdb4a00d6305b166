"""Latency of a bundle's artifact beside its peers (ONNX Runtime FP32/INT8, PyTorch eager).

Medians over repeated single-batch runs after warm-up; a benchmark, not a test.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgeres.bundle import Bundle, load_bundle
from edgeres.errors import UsageError

PEERS = ("artifact", "onnxruntime-fp32", "onnxruntime-int8", "torch")


def time_runner(fn: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, *, repeats: int = 50,
                warmup: int = 3, max_seconds: float = 30.0) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` calls (fewer if ``max_seconds`` runs out)."""
    for _ in range(warmup):
        fn(batch)
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        fn(batch)
        times.append((time.perf_counter() - t) * 1000.0)
        if time.perf_counter() - start > max_seconds and len(times) >= 3:
            break
    return times


def peer_runner(b: Bundle, peer: str, variant: str | None = None) -> Callable[[np.ndarray], np.ndarray] | None:
    """A runner for ``peer`` on the bundle's model, or None when that peer does not apply."""
    from edgeres.backends.onnxruntime import make_runner

    if peer == "artifact":
        from edgeres.runtime import load

        return load(b, variant=variant).predict if b.artifact() is not None else None
    if peer == "onnxruntime-fp32":
        return make_runner(b.file("fp32"))
    if peer == "onnxruntime-int8":
        return make_runner(b.file("int8")) if b.file("int8") else None
    if peer == "torch":
        src = b.manifest["model"].get("source")
        if not src or not Path(src).is_file() or not str(src).endswith((".pt", ".pth")):
            return None
        import torch

        from edgeres.checkpoint import load_checkpoint

        model = load_checkpoint(src).model

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        return run
    raise UsageError(f"unknown peer {peer!r}; choose from {list(PEERS)}")


def measure_latency(bundle_path: str | Path, peers: Iterable[str] = PEERS, *, batch_size: int = 1,
                    repeats: int = 50, variant: str | None = None) -> dict[str, float]:
    """Median latency in ms per peer (peers that do not apply are left out). The artifact's row is
    named ``artifact (<variant>)`` when a portable bundle's variant runs."""
    b = load_bundle(bundle_path)
    h, w = b.preprocessing.input_size
    x = np.random.default_rng(0).standard_normal((batch_size, 3, h, w)).astype(np.float32)
    out: dict[str, float] = {}
    for peer in peers:
        name, fn = peer, peer_runner(b, peer, variant)
        if peer == "artifact" and fn is not None:
            from edgeres.runtime import Predictor

            predictor: Predictor = fn.__self__  # type: ignore[attr-defined] - load(...).predict
            name = f"artifact ({predictor.variant})" if predictor.variant else peer
        if fn is not None:
            out[name] = statistics.median(time_runner(fn, x, repeats=repeats))
    return out
