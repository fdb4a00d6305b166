"""Latency of a bundle's artifact beside its peers (ONNX Runtime FP32/INT8, PyTorch eager).

Medians over repeated single-batch runs after warm-up; a benchmark, not a test.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from edgeres.bundle import Bundle, load_bundle
from edgeres.errors import UsageError

PEERS = ("artifact", "onnxruntime-fp32", "onnxruntime-int8", "torch")
LATENCY_FORMAT = "edgeres.latency/1"


def cpu_name() -> str:
    """This machine's CPU model (``/proc/cpuinfo``'s model name), else the platform's processor string."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def write_latency(path: str | Path, medians_ms: dict[str, float], *, bundle: str | Path, batch_size: int,
                  repeats: int) -> Path:
    """Write ``edgeres bench`` results as JSON (read by ``edgeres report``)."""
    import datetime as _dt
    import os

    from edgeres.fileio import write_json

    return write_json(path, {
        "format": LATENCY_FORMAT, "bundle": str(bundle), "batch_size": batch_size, "repeats": repeats,
        "median_ms": {k: round(v, 4) for k, v in medians_ms.items()}, "cpu": cpu_name(), "threads": os.cpu_count(),
        "measured": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })


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

    every = b.task.is_features  # a feature extractor: time every output (asking for one would prune the graph)
    if peer == "artifact":
        from edgeres.runtime import load

        if b.artifact() is None:
            return None
        pred = load(b, variant=variant)
        return pred.features if every else pred.predict
    if peer in ("onnxruntime-fp32", "onnxruntime-int8"):
        path = b.file(peer.rsplit("-", 1)[1])
        if path is None:
            return None
        r = make_runner(path)
        return r.run_all if every else r
    if peer == "torch":
        if every:
            return None  # the checkpoint is the classifier, not the exported backbone
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
                    repeats: int = 50, variant: str | None = None, info: dict[str, Any] | None = None
                    ) -> dict[str, float]:
    """Median latency in ms per peer (peers that do not apply are left out). ``variant``: the ISA
    level of a portable bundle to time; ``info`` (a dict), when given, receives ``variant``, the one
    that ran (None for single-library artifacts)."""
    b = load_bundle(bundle_path)
    h, w = b.preprocessing.input_size
    x = np.random.default_rng(0).standard_normal((batch_size, 3, h, w)).astype(np.float32)
    out: dict[str, float] = {}
    for peer in peers:
        fn = peer_runner(b, peer, variant)
        if fn is None:
            continue
        if peer == "artifact" and info is not None:
            info["variant"] = getattr(getattr(fn, "__self__", None), "variant", None)
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
