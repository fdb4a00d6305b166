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


def peer_runner(b: Bundle, peer: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """A runner for ``peer`` on the bundle's model, or None when that peer does not apply."""
    from edgeres.backends.onnxruntime import make_runner

    if peer == "artifact":
        from edgeres.runtime import load

        return load(b).predict if b.artifact() is not None else None
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
                    repeats: int = 50) -> dict[str, float]:
    """Median latency in ms per peer (peers that do not apply are left out)."""
    b = load_bundle(bundle_path)
    h, w = b.preprocessing.input_size
    x = np.random.default_rng(0).standard_normal((batch_size, 3, h, w)).astype(np.float32)
    out: dict[str, float] = {}
    for peer in peers:
        fn = peer_runner(b, peer)
        if fn is not None:
            out[peer] = statistics.median(time_runner(fn, x, repeats=repeats))
    return out


def latency_stats(times_ms: list[float], batch: int = 1) -> dict[str, float]:
    """Median, p90, p99 (nearest rank), mean in ms, and throughput in images/s, of ``times_ms``."""
    if not times_ms:
        raise UsageError("no latency samples")
    s = sorted(times_ms)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, int(np.ceil(q * len(s))) - 1))]

    med = statistics.median(s)
    return {"median_ms": med, "p90_ms": rank(0.90), "p99_ms": rank(0.99), "mean_ms": statistics.fmean(s),
            "samples": len(s), "batch": batch, "images_per_s": 1000.0 * batch / med if med > 0 else float("inf")}


def measure_on_device(bundle_path: str | Path, device, *, repeats: int = 50,  # noqa: ANN001 - a DeviceSpec
                      onnxruntime: bool = True, max_seconds: float = 60.0) -> dict:
    """Latency of the bundle's artifact on a remote board, and of ONNX Runtime there when it has it.

    Returns ``{"device", "board", "emulated", "runners": {name: stats}, "notes": [...]}``; every
    time is measured on the board (``board["emulated"]``: under qemu, which says nothing of speed).
    """
    from edgeres.backends import get_backend
    from edgeres.errors import InputError

    b = load_bundle(bundle_path)
    art = b.artifact()
    if art is None:
        raise InputError(f"bundle {b.root} holds no compiled artifact to run on {device.label}")
    backend = get_backend(b.backend)
    batch = int(art.input_shape[0])
    out: dict = {"device": device.label, "bundle": str(b.root), "runners": {}, "notes": []}
    with backend.open_device(device) as board:
        out["board"] = board.describe()
        out["emulated"] = bool(out["board"].get("emulated"))
        out["runners"]["artifact"] = latency_stats(board.latency(art, repeats=repeats, max_seconds=max_seconds),
                                                   batch)
        if onnxruntime:
            for name, key in (("onnxruntime-fp32", "fp32"), ("onnxruntime-int8", "int8")):
                onnx = b.file(key)
                if onnx is None:
                    continue
                res = board.onnx_latency(onnx, tuple(int(d) for d in art.input_shape), repeats=repeats)
                if isinstance(res, str):
                    out["notes"].append(f"ONNX Runtime {res}")
                    break
                out["runners"][name] = latency_stats(res, batch)
    return out
