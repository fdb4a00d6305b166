#!/usr/bin/env python
"""Tune a ResNet with MetaSchedule, then compare TVM untuned / builtin / tuned with ORT and torch.

    python bench/tvm_tuning.py --model resnet18 --trials 200 --time-budget 10m --db tuning/x86-64-host-r18
    python bench/tvm_tuning.py --model resnet50 --trials 2000 --time-budget 2h --db DIR

Random weights (latency does not depend on them), batch 1. Rows: PyTorch eager, ONNX
Runtime FP32, TVM with the default Relax pipeline only (``schedule="none"``), TVM with
edgeres' builtin schedule, TVM with the tuning database (builtin schedule for the
functions the database does not cover). Medians in ms and ratios to ONNX Runtime, from one
run; the tuning time and the load average are printed too (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def median_ms(fn, x, repeats: int, max_seconds: float) -> float:
    from edgeres.latency import time_runner

    return statistics.median(time_runner(fn, x, repeats=repeats, max_seconds=max_seconds))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--target", default="x86-64-host")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--trials-per-task", type=int, default=None)
    ap.add_argument("--time-budget", default="10m")
    ap.add_argument("--db", default=None, help="database directory (default: a temporary one)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--max-seconds", type=float, default=20.0, help="per row")
    ap.add_argument("--skip-untuned", action="store_true", help="skip the slow schedule='none' row")
    args = ap.parse_args(argv)

    import torch

    from edgeres.backends import tvm as tb
    from edgeres.backends.onnxruntime import make_runner
    from edgeres.export import export_onnx, resolve_source
    from edgeres.targets import get_target
    from edgeres.backends.tvm.tuning import parse_duration, tune

    target = get_target(args.target)
    work = Path(tempfile.mkdtemp(prefix="edgeres-bench-tune-"))
    loaded = resolve_source(args.model, "random")
    if args.size:
        from dataclasses import replace

        loaded.preprocessing = replace(loaded.preprocessing, input_size=(args.size, args.size))
    onnx_path = export_onnx(loaded, work / "model.onnx").path
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    db = Path(args.db) if args.db else work / "db"
    load0 = os.getloadavg()

    res = tune(onnx_path, target, db, trials=args.trials, trials_per_task=args.trials_per_task,
               time_budget_s=parse_duration(args.time_budget) if args.time_budget else None, progress=False,
               log=lambda s: print(f"  {s}", flush=True))
    print(f"tuning: {res.tasks_found} tasks ({res.tasks_skipped} already in the DB), {res.trials} trials "
          f"({res.failed_trials} failed) in {res.seconds:.0f} s, stopped by {res.stopped_by}", flush=True)

    rows: list[tuple[str, float, str]] = []
    torch.set_num_threads(os.cpu_count() or 1)
    model = loaded.model.eval()
    with torch.no_grad():
        rows.append(("torch eager", median_ms(lambda a: model(torch.from_numpy(a)).numpy(), x, args.repeats,
                                              args.max_seconds), ""))
    ort = make_runner(onnx_path)
    ref = ort(x)
    rows.append(("onnxruntime fp32", median_ms(ort, x, args.repeats, args.max_seconds), ""))
    variants = [("tvm builtin schedule", {}), ("tvm tuned (+builtin)", {"tuning_db": str(db)})]
    if not args.skip_untuned:
        variants.insert(0, ("tvm untuned (default pipeline)", {"schedule": "none"}))
    for label, opts in variants:
        t0 = time.perf_counter()
        art = tb.compile(onnx_path, target, work / label.split()[1], precision="fp32", options=opts)
        run = tb.load(art)
        err = float(np.abs(run(x) - ref).max() / max(np.abs(ref).max(), 1e-6))
        note = f"compile {time.perf_counter() - t0:.0f} s, rel err {err:.1e}"
        if "tuning_db" in opts:
            note += f", {art.info.get('tuned_functions')} fns from DB"
        rows.append((label, median_ms(run, x, max(3, args.repeats // (10 if "none" in str(opts) else 1)),
                                      args.max_seconds), note))
    ort_ms = rows[1][1]
    print(f"\n{args.model} b1 {args.size}px on {target.name} ({tb.tt.host_cpu()}, {os.cpu_count()} cpus); "
          f"load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}")
    print(f"{'':32s} {'median ms':>10s} {'x ORT':>7s}")
    for label, ms_, note in rows:
        print(f"{label:32s} {ms_:10.2f} {ms_ / ort_ms:7.2f}  {note}")
    print(f"tuning time {res.seconds:.0f} s for {res.trials} trials; database {db}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
