#!/usr/bin/env python
"""Do ``edgeres profile``'s per-stage times add up to ``edgeres bench``'s median? Both, in one run.

    python bench/profile_coverage.py bundles/r50                 # this machine
    python bench/profile_coverage.py bundles/r50-pi5 --device lab-pi5

Each pass measures the bundle's artifact as ``edgeres bench`` does (the local runner's median
over ``--repeats`` calls; on a board, TVM's time_evaluator there) and then profiles it as
``edgeres profile`` does; it prints the sum of the stages, the bench median and their ratio per
pass, and the median ratio. Passes alternate so that a shared machine's drift hits both.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--device", default=None, help="HOST:PORT or a devices.toml name (edgeres serve-device)")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=50, help="bench runs per pass")
    ap.add_argument("--profile-repeats", type=int, default=10)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    from edgeres.backends import get_backend
    from edgeres.latency import cpu_name, latency_stats, measure_latency
    from edgeres.bundle import load_bundle
    from edgeres.devices import resolve_device

    b = load_bundle(a.bundle)
    art = b.artifact()
    backend = get_backend(b.backend)
    spec = resolve_device(a.device)
    rows = []
    board = backend.open_device(spec) if spec else None
    where = f"{spec.label}" if spec else f"this machine ({cpu_name()}, {platform.machine()})"
    try:
        for i in range(a.passes):
            if board is None:
                bench = measure_latency(a.bundle, ["artifact"], repeats=a.repeats)["artifact"]
                prof = backend.profile(art, repeats=a.profile_repeats)
            else:
                bench = latency_stats(board.latency(art, repeats=a.repeats))["median_ms"]
                prof = board.profile(art, repeats=a.profile_repeats)
            stages = sum(s["ms"] for s in prof["stages"])
            rows.append({"pass": i + 1, "bench_median_ms": bench, "stages_ms": stages, "ratio": stages / bench,
                         "profile_end_to_end_ms": prof["end_to_end_ms"]["median"],
                         "stages": {s["stage"]: s["ms"] for s in prof["stages"]}})
            print(f"pass {i + 1}: stages {stages:.2f} ms, bench median {bench:.2f} ms, ratio {stages / bench:.3f} "
                  f"(profile's own end-to-end {prof['end_to_end_ms']['median']:.2f} ms)", flush=True)
    finally:
        if board is not None:
            board.close()
    ratio = statistics.median(r["ratio"] for r in rows)
    print(f"{b.manifest['model']['name']} {b.precision} on {where}: sum of stages / bench median = {ratio:.3f} "
          f"(median of {len(rows)} passes)")
    if a.json:
        Path(a.json).write_text(json.dumps({"where": where, "bundle": a.bundle, "passes": rows,
                                            "median_ratio": ratio}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
