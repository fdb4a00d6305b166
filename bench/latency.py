#!/usr/bin/env python
"""Latency and throughput of edgeres TVM artifacts beside ONNX Runtime, PyTorch and OpenVINO, in one run.

    python bench/latency.py                                        # ResNet-20 + ResNet-50, portable x86-64
    python bench/latency.py --model resnet18 --model resnet50 --vs openvino
    python bench/latency.py --target x86-64-host --precision int8 --batch 8 --threads 2
    python bench/latency.py --threads 1 --clock cpu                # a shared machine: CPU time of one thread

It prints the CPU (model name, LLVM's name for it, the ISA flags edgeres' kernels use) first.
For each model: PyTorch eager, ONNX Runtime FP32 and INT8 (Q/DQ, cpu form, quantized as
``edgeres compile`` quantizes for the target), OpenVINO FP32 (``INFERENCE_PRECISION_HINT=f32``:
strict FP32) and INT8 (the same Q/DQ file) with ``--vs openvino``, and the TVM artifact for each
precision. For a portable target (``x86-64``) the artifact is compiled once and *every variant
this CPU can run* is measured (``--variant`` forces one at run time; the same machinery).

Runners are built first, then measured in ``--passes`` passes; within a pass each runner is
warmed up and then timed ``--repeats`` calls in a row (not call by call in turns: TVM's and ONNX
Runtime's worker threads spin after a call, and interleaved runtimes on few cores starve each
other: 100x slowdowns on 2 cores), so a shared machine's slow drifts cancel out of the per-pass ratios. Each row
reports the median over passes of its per-pass median, the median per-pass ratio to ONNX
Runtime *of the same precision* (FP32 rows to ORT FP32, INT8 rows to ORT INT8, BF16 rows to
ORT FP32) and the throughput in images/s (batch / latency). ``--clock cpu`` times CPU seconds
instead of wall seconds (only with ``--threads 1``: immune to other processes taking the core).
Random weights are fine for latency. Threads: every runtime gets ``--threads`` (default: all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ISA_FLAGS = ("sse4_2", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_report() -> list[str]:
    """The CPU's model name, LLVM's name for it and the ISA flags that matter to the kernels."""
    model, flags = "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        from tvm.target import codegen

        llvm = str(codegen.llvm_get_system_cpu())
    except Exception:  # noqa: BLE001 - TVM absent
        llvm = "?"
    have = [f for f in ISA_FLAGS if f in flags]
    lacks = [f for f in ISA_FLAGS if f not in flags]
    return [f"CPU: {model} (LLVM: {llvm}), {os.cpu_count()} logical cores",
            f"ISA: {' '.join(have) or '?'}" + (f"   (not: {' '.join(lacks)})" if lacks else "")]


def openvino_runner(path: Path, shape: tuple[int, ...], threads: int, precision: str):
    """OpenVINO on an ONNX file, latency hint, ``precision`` ("f32", "bf16") for what is not INT8."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape(list(shape))
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                                                 "INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return request.get_output_tensor(0).data

    return run


def _quantize(fp32: Path, out: Path, hw: tuple[int, int], reduce_range: bool) -> Path:
    from edgeres.quantize import QuantOptions, quantize

    rng = np.random.default_rng(1)
    opts = QuantOptions(method="minmax", form="cpu", reduce_range=reduce_range, bias_correction="off")
    quantize(fp32, out, lambda: (rng.standard_normal((8, 3, *hw)).astype(np.float32) for _ in range(4)),
             data_fingerprint="bench-random", cache_path=None, options=opts)  # the target's form and weight width
    return out


def tvm_runners(fp32: Path, int8: Path | None, target, precisions: list[str], work: Path, name: str,
                tuning_db: str | None, threads: int) -> list[tuple[dict, object]]:
    """One row per precision and per variant this CPU runs (portable targets), compiled once per precision."""
    from edgeres.backends import get_backend
    from edgeres.backends.tvm import variants as tv
    from edgeres.errors import EdgeresError

    backend = get_backend(target.backend)
    options = {"threads": threads, **({"tuning_db": tuning_db} if tuning_db else {})}
    rows = []
    for prec in precisions:
        t = time.perf_counter()
        try:
            art = backend.compile(int8 if prec == "int8" else fp32, target, work / f"{name}-{prec}",
                                  precision=prec, options=options)
        except EdgeresError as e:
            print(f"  {name} {prec}: not compiled ({e})", file=sys.stderr)
            continue
        seconds = round(time.perf_counter() - t, 1)
        listed = [tv.Variant.from_dict(v) for v in art.info.get("variants", [])]
        runnable = [v.name for v in listed if not tv.missing_flags(v, tv.cpu_flags() or ())] or [None]
        skipped = [v.name for v in listed if v.name not in runnable]
        if skipped:
            print(f"  {name} {prec}: variants this CPU cannot run, not measured: {', '.join(skipped)}",
                  file=sys.stderr)
        for variant in runnable:
            label = f"{target.backend} {prec} ({variant or target.name})"
            rows.append(({"runner": label, "precision": prec, "compile_s": seconds},
                         backend.load(art, variant=variant)))
    return rows


def build_runners(name: str, args, target, work: Path) -> tuple[list[tuple[dict, object]], np.ndarray]:
    """``([(row, runner), ...], input)`` for one model."""
    from edgeres.backends.onnxruntime import make_runner
    from edgeres.checkpoint import load_checkpoint
    from edgeres.export import export_onnx, resolve_source

    loaded = load_checkpoint(args.checkpoint) if args.checkpoint else resolve_source(name, "random")
    if args.size:
        loaded.preprocessing = replace(loaded.preprocessing, input_size=(args.size, args.size))
    h, w = loaded.preprocessing.input_size
    x = np.random.default_rng(0).standard_normal((args.batch, 3, h, w)).astype(np.float32)
    fp32 = work / f"{name}.fp32.onnx"
    export_onnx(loaded, fp32)
    precisions = args.precision or ["fp32", "int8"]
    int8 = _quantize(fp32, work / f"{name}.int8.onnx", (h, w), target.reduce_range) if "int8" in precisions else None
    out: list[tuple[dict, object]] = []
    if not args.no_torch:
        import torch

        torch.set_num_threads(args.threads)
        model = loaded.model.eval()

        def torch_run(a):
            with torch.inference_mode():
                return model(torch.from_numpy(a)).numpy()

        out.append(({"runner": "torch eager fp32", "precision": "fp32"}, torch_run))
    out.append(({"runner": "onnxruntime fp32", "precision": "fp32"}, make_runner(fp32, threads=args.threads)))
    if int8 is not None:
        out.append(({"runner": "onnxruntime int8 (qdq)", "precision": "int8"}, make_runner(int8, threads=args.threads)))
    if "openvino" in (args.vs or []):
        out.append(({"runner": "openvino fp32 (f32 hint)", "precision": "fp32"},
                    openvino_runner(fp32, x.shape, args.threads, "f32")))
        if int8 is not None:
            out.append(({"runner": "openvino int8 (qdq)", "precision": "int8"},
                        openvino_runner(int8, x.shape, args.threads, "f32")))
        if "bf16" in precisions:
            out.append(({"runner": "openvino bf16 (bf16 hint)", "precision": "bf16"},
                        openvino_runner(fp32, x.shape, args.threads, "bf16")))
    out += tvm_runners(fp32, int8, replace(target, batch_size=args.batch), precisions, work, name, args.tuning_db,
                       args.threads)
    return [({"model": name, "input": f"{h}x{w}", "batch": args.batch, **row}, fn) for row, fn in out], x


def measure(runners: list[tuple[dict, object]], x: np.ndarray, passes: int, repeats: int, clock: str) -> list[dict]:
    """Per pass: each runner warmed up, then ``repeats`` calls in a row; per row the median of per-pass
    medians and the median per-pass ratio to ONNX Runtime of the same precision."""
    tick = time.process_time if clock == "cpu" else time.perf_counter
    per_pass: list[list[float]] = [[] for _ in runners]
    for p in range(passes):
        samples: list[list[float]] = [[] for _ in runners]
        for i, (_, fn) in enumerate(runners):
            fn(x)  # warm-up: this runtime's threads awake, its caches filled
            fn(x)
            for _ in range(repeats):
                t = tick()
                fn(x)
                samples[i].append((tick() - t) * 1000.0)
        for i, (row, _) in enumerate(runners):
            per_pass[i].append(statistics.median(samples[i]))
            print(f"  pass {p + 1}: {row['model']:9s} {row['runner']:40s} {per_pass[i][-1]:10.3f} ms",
                  file=sys.stderr, flush=True)
    base = {}
    for i, (row, _) in enumerate(runners):
        if row["runner"].startswith("onnxruntime"):
            base[row["precision"]] = i
    base.setdefault("bf16", base.get("fp32"))
    rows = []
    for i, (row, _) in enumerate(runners):
        ref = base.get(row["precision"])
        ratio = statistics.median(a / b for a, b in zip(per_pass[i], per_pass[ref])) if ref is not None else None
        ms = statistics.median(per_pass[i])
        rows.append({**row, "median_ms": ms, "images_per_s": row["batch"] * 1000.0 / ms,
                     "pass_medians_ms": per_pass[i], "vs_onnxruntime_same_precision": ratio})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="zoo name (repeatable); default resnet20 and resnet50")
    ap.add_argument("--size", type=int, default=None, help="input size override (square)")
    ap.add_argument("--checkpoint", default=None, help="edgeres checkpoint instead of random weights (one model)")
    ap.add_argument("--target", default="x86-64", help="default x86-64: the portable bundle, every variant")
    ap.add_argument("--precision", action="append", choices=["fp32", "int8", "bf16"], help="default: fp32 and int8")
    ap.add_argument("--vs", action="append", choices=["openvino"], help="also measure OpenVINO (pip install openvino)")
    ap.add_argument("--batch", type=int, default=1, help="batch size of every runner (artifacts compiled for it)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of every runtime")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: CPU time (needs --threads 1)")
    ap.add_argument("--repeats", type=int, default=20, help="calls per runner and pass")
    ap.add_argument("--passes", type=int, default=3, help="passes over all runners")
    ap.add_argument("--no-torch", action="store_true", help="leave PyTorch eager out")
    ap.add_argument("--tuning-db", default=None)
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        ap.error("--clock cpu measures one thread's CPU time: use it with --threads 1")
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    from edgeres.targets import get_target

    target = get_target(args.target)
    report = cpu_report()
    print("\n".join(report), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for m in args.model or ["resnet20", "resnet50"]:
            runners, x = build_runners(m, args, target, Path(d))
            rows += measure(runners, x, args.passes, args.repeats, args.clock)
    print("\n" + "\n".join(report))
    print(f"batch {args.batch}, {args.threads} thread(s), {args.clock} clock, median of {args.passes} pass medians")
    print(f"{'model':9s} {'input':8s} {'runner':42s} {'median ms':>10s} {'img/s':>8s} {'x ORT':>6s} {'compile s':>9s}")
    for r in rows:
        ratio = f"{r['vs_onnxruntime_same_precision']:6.2f}" if r["vs_onnxruntime_same_precision"] else "     -"
        print(f"{r['model']:9s} {r['input']:8s} {r['runner']:42s} {r['median_ms']:10.3f} {r['images_per_s']:8.1f} "
              f"{ratio} {r.get('compile_s', ''):>9}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": report, "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
