#!/usr/bin/env python
"""Batch-1 latency of edgeres artifacts beside ONNX Runtime and PyTorch, in one run.

    python bench/latency.py                                  # quickstart-size ResNet-20 + ResNet-50
    python bench/latency.py --model resnet18 --size 224 --checkpoint runs/r18.pt
    python bench/latency.py --target x86-64-host --tuning-db tuning/   # tuned TVM (issue 4)

For each model: PyTorch eager, ONNX Runtime FP32 and INT8 (Q/DQ, cpu form), and the
TVM artifact FP32 and INT8 for the target. Prints medians (ms) and ratios against
ONNX Runtime FP32 measured in the same run. Random weights are fine for latency; a
checkpoint can be given. Threads: ONNX Runtime and TVM use all cores by default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def median_ms(fn, x, repeats: int, max_seconds: float) -> float:
    from edgeres.bench import time_runner

    return statistics.median(time_runner(fn, x, repeats=repeats, max_seconds=max_seconds))


def bench_model(name: str, size: int | None, checkpoint: str | None, target: str, repeats: int, max_seconds: float,
                precisions: list[str], tuning_db: str | None, work: Path) -> list[dict]:
    import torch

    from edgeres.backends import get_backend
    from edgeres.backends.onnxruntime import make_runner
    from edgeres.checkpoint import load_checkpoint
    from edgeres.export import export_onnx, resolve_source
    from edgeres.quantize import quantize
    from edgeres.targets import get_target

    loaded = load_checkpoint(checkpoint) if checkpoint else resolve_source(name, "random")
    if size:
        from dataclasses import replace

        loaded.preprocessing = replace(loaded.preprocessing, input_size=(size, size))
    h, w = loaded.preprocessing.input_size
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    fp32 = work / f"{name}.fp32.onnx"
    export_onnx(loaded, fp32)
    rows = []

    def add(runner: str, ms: float, extra: dict | None = None):
        rows.append({"model": name, "input": f"{h}x{w}", "runner": runner, "median_ms": ms, **(extra or {})})
        print(f"  {name:10s} {runner:24s} {ms:10.3f} ms", file=sys.stderr, flush=True)

    model = loaded.model.eval()

    def torch_run(a):
        with torch.inference_mode():
            return model(torch.from_numpy(a)).numpy()

    add("torch eager fp32", median_ms(torch_run, x, repeats, max_seconds))
    add("onnxruntime fp32", median_ms(make_runner(fp32), x, repeats, max_seconds))
    int8 = None
    if "int8" in precisions:
        rng = np.random.default_rng(1)
        int8 = work / f"{name}.int8.onnx"
        quantize(fp32, int8, lambda: (rng.standard_normal((8, 3, h, w)).astype(np.float32) for _ in range(4)),
                 data_fingerprint="bench-random", method="minmax", form="cpu", cache_path=None)
        add("onnxruntime int8 (qdq)", median_ms(make_runner(int8), x, repeats, max_seconds))
    tgt = get_target(target)
    backend = get_backend(tgt.backend)
    options = {"tuning_db": tuning_db} if tuning_db else None
    for prec in precisions:
        src = fp32 if prec == "fp32" else int8
        t = time.perf_counter()
        art = backend.compile(src, tgt, work / f"{name}-{prec}", precision=prec, options=options)
        compile_s = time.perf_counter() - t
        run = backend.load(art)
        add(f"{tgt.backend} {prec} ({target})", median_ms(run, x, repeats, max_seconds),
            {"compile_s": round(compile_s, 1)})
    base = next(r["median_ms"] for r in rows if r["runner"] == "onnxruntime fp32")
    for r in rows:
        r["vs_onnxruntime_fp32"] = r["median_ms"] / base
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="zoo name (repeatable); default resnet20 and resnet50")
    ap.add_argument("--size", type=int, default=None, help="input size override (square)")
    ap.add_argument("--checkpoint", default=None, help="edgeres checkpoint instead of random weights (one model)")
    ap.add_argument("--target", default="x86-64-host")
    ap.add_argument("--precision", action="append", choices=["fp32", "int8"], help="default: fp32 and int8")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--max-seconds", type=float, default=20.0, help="time cap per runner")
    ap.add_argument("--tuning-db", default=None)
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    models = args.model or ["resnet20", "resnet50"]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for m in models:
            rows += bench_model(m, args.size, args.checkpoint, args.target, args.repeats, args.max_seconds,
                                args.precision or ["fp32", "int8"], args.tuning_db, Path(d))
    print(f"\n{'model':10s} {'input':8s} {'runner':34s} {'median ms':>10s} {'x ORT fp32':>10s} {'compile s':>9s}")
    for r in rows:
        print(f"{r['model']:10s} {r['input']:8s} {r['runner']:34s} {r['median_ms']:10.3f} "
              f"{r['vs_onnxruntime_fp32']:10.2f} {r.get('compile_s', ''):>9}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
