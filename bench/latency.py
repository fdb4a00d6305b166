#!/usr/bin/env python
"""Batch-1 latency of edgeres artifacts beside ONNX Runtime and PyTorch, in one run.

    python bench/latency.py                                  # quickstart-size ResNet-20 + ResNet-50
    python bench/latency.py --model resnet18 --size 224 --checkpoint runs/r18.pt
    python bench/latency.py --target x86-64-host --tuning-db tuning/   # tuned TVM (issue 4)

For each model: PyTorch eager, ONNX Runtime FP32 and INT8 (Q/DQ, cpu form), and the
TVM artifact FP32 and INT8 for the target. All runners are built first, then measured
one after another in ``--passes`` passes (default 3); each row reports the median over
passes of its per-pass median, and its ratio to ONNX Runtime FP32 is the median of the
per-pass ratios, so slow drifts of a shared machine cancel out of the ratios. Random
weights are fine for latency; a checkpoint can be given. Threads: ONNX Runtime and TVM
use all cores by default.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def median_ms(fn, x, repeats: int, max_seconds: float) -> float:
    from edgeres.latency import time_runner

    return statistics.median(time_runner(fn, x, repeats=repeats, max_seconds=max_seconds))


def build_runners(name: str, size: int | None, checkpoint: str | None, target: str, precisions: list[str],
                  tuning_db: str | None, work: Path) -> tuple[list[tuple[dict, object]], np.ndarray]:
    """``([(row, runner), ...], input)`` for one model: torch, ORT FP32/INT8, the target's artifacts."""
    import torch

    from edgeres.backends import get_backend
    from edgeres.backends.onnxruntime import make_runner
    from edgeres.checkpoint import load_checkpoint
    from edgeres.export import export_onnx, resolve_source
    from edgeres.quantize import QuantOptions, quantize
    from edgeres.targets import get_target

    loaded = load_checkpoint(checkpoint) if checkpoint else resolve_source(name, "random")
    if size:
        from dataclasses import replace

        loaded.preprocessing = replace(loaded.preprocessing, input_size=(size, size))
    h, w = loaded.preprocessing.input_size
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    fp32 = work / f"{name}.fp32.onnx"
    export_onnx(loaded, fp32)
    model = loaded.model.eval()

    def torch_run(a):
        with torch.inference_mode():
            return model(torch.from_numpy(a)).numpy()

    def row(runner: str, **extra) -> dict:
        return {"model": name, "input": f"{h}x{w}", "runner": runner, **extra}

    out = [(row("torch eager fp32"), torch_run), (row("onnxruntime fp32"), make_runner(fp32))]
    tgt = get_target(target)
    int8 = None
    if "int8" in precisions:
        rng = np.random.default_rng(1)
        int8 = work / f"{name}.int8.onnx"
        quantize(fp32, int8, lambda: (rng.standard_normal((8, 3, h, w)).astype(np.float32) for _ in range(4)),
                 data_fingerprint="bench-random", cache_path=None,  # the target's form and weight width
                 options=QuantOptions.for_target(tgt, method="minmax", bias_correction="off"))
        out.append((row("onnxruntime int8 (qdq)"), make_runner(int8)))
    backend = get_backend(tgt.backend)
    options = {"tuning_db": tuning_db} if tuning_db else None
    for prec in precisions:
        t = time.perf_counter()
        art = backend.compile(fp32 if prec == "fp32" else int8, tgt, work / f"{name}-{prec}", precision=prec,
                              options=options)
        out.append((row(f"{tgt.backend} {prec} ({target})", compile_s=round(time.perf_counter() - t, 1)),
                    backend.load(art)))
    return out, x


def measure(runners: list[tuple[dict, object]], x: np.ndarray, passes: int, repeats: int,
            max_seconds: float) -> list[dict]:
    """Median-of-pass-medians per runner, and the median per-pass ratio to ONNX Runtime FP32."""
    per_pass: list[list[float]] = [[] for _ in runners]
    for p in range(passes):
        for i, (row, fn) in enumerate(runners):
            per_pass[i].append(median_ms(fn, x, repeats, max_seconds))
            print(f"  pass {p + 1}: {row['model']:10s} {row['runner']:28s} {per_pass[i][-1]:10.3f} ms",
                  file=sys.stderr, flush=True)
    base = next(i for i, (row, _) in enumerate(runners) if row["runner"] == "onnxruntime fp32")
    rows = []
    for i, (row, _) in enumerate(runners):
        ratios = [a / b for a, b in zip(per_pass[i], per_pass[base])]
        rows.append({**row, "median_ms": statistics.median(per_pass[i]), "pass_medians_ms": per_pass[i],
                     "vs_onnxruntime_fp32": statistics.median(ratios)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="zoo name (repeatable); default resnet20 and resnet50")
    ap.add_argument("--size", type=int, default=None, help="input size override (square)")
    ap.add_argument("--checkpoint", default=None, help="edgeres checkpoint instead of random weights (one model)")
    ap.add_argument("--target", default="x86-64-host")
    ap.add_argument("--precision", action="append", choices=["fp32", "int8"], help="default: fp32 and int8")
    ap.add_argument("--repeats", type=int, default=30, help="runs per runner and pass")
    ap.add_argument("--max-seconds", type=float, default=10.0, help="time cap per runner and pass")
    ap.add_argument("--passes", type=int, default=3, help="passes over all runners")
    ap.add_argument("--tuning-db", default=None)
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    ap.add_argument("--force", action="store_true", help="replace a --json file edgeres did not write")
    args = ap.parse_args()
    if args.json:
        from edgeres.outputs import check_file_output

        check_file_output(args.json, "--json", force=args.force)  # before minutes of measuring
    models = args.model or ["resnet20", "resnet50"]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for m in models:
            runners, x = build_runners(m, args.size, args.checkpoint, args.target, args.precision or ["fp32", "int8"],
                                       args.tuning_db, Path(d))
            rows += measure(runners, x, args.passes, args.repeats, args.max_seconds)
    print(f"\n{'model':10s} {'input':8s} {'runner':34s} {'median ms':>10s} {'x ORT fp32':>10s} {'compile s':>9s}")
    for r in rows:
        print(f"{r['model']:10s} {r['input']:8s} {r['runner']:34s} {r['median_ms']:10.3f} "
              f"{r['vs_onnxruntime_fp32']:10.2f} {r.get('compile_s', ''):>9}")
    if args.json:
        from edgeres.fileio import write_json

        write_json(args.json, {"format": "edgeres.bench-latency/1", "rows": rows})


if __name__ == "__main__":
    main()
