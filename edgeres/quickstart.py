"""``edgeres quickstart``: train a CIFAR ResNet-20 on the built-in data, compile it
INT8 with TVM for this CPU, validate it against FP32, and time it against ONNX Runtime."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgeres.evaluate import AccuracyReport

QUICKSTART_MODEL = "resnet20"
QUICKSTART_DATA = "builtin"


@dataclass
class QuickstartResult:
    checkpoint: Path
    bundle: Path
    report: AccuracyReport
    timings: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)


def run_quickstart(
    workdir: str | Path = "edgeres-quickstart",
    *,
    epochs: int | None = None,
    target: str = "x86-64-host",
    precision: str = "int8",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> QuickstartResult:
    from edgeres.latency import measure_latency
    from edgeres.pipeline import compile_bundle
    from edgeres.training import train

    workdir = Path(workdir)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    ckpt = workdir / f"{QUICKSTART_MODEL}.pt"
    log(f"[1/3] training {QUICKSTART_MODEL} on the built-in data set -> {ckpt}")
    train(QUICKSTART_MODEL, QUICKSTART_DATA, ckpt, recipe="quick", epochs=epochs, progress=progress)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    bundle = workdir / f"bundle-{QUICKSTART_MODEL}-{target}-{precision}"
    log(f"[2/3] compiling {precision.upper()} for {target} -> {bundle}")
    res = compile_bundle(
        str(ckpt), target, bundle, precision=precision, calib=QUICKSTART_DATA, val=QUICKSTART_DATA,
        log=lambda s: log(f"      {s}"),
    )
    timings.update({f"compile.{k}": v for k, v in res.timings.items()})
    timings["compile"] = time.perf_counter() - t

    t = time.perf_counter()
    log("[3/3] measuring batch-1 latency (median) against ONNX Runtime")
    latency = measure_latency(bundle, ("artifact", "onnxruntime-fp32", "onnxruntime-int8"), repeats=30)
    timings["bench"] = time.perf_counter() - t
    assert res.report is not None  # val was given
    return QuickstartResult(ckpt, bundle, res.report, timings, latency)
