"""Compiling a portable x86 artifact: one library per ISA level, in parallel processes.

The target's ``variants`` (:mod:`edgeres.backends.tvm.variants`) that pay for the precision are
compiled each into its own library by :func:`edgeres.backends.tvm.backend.build_library`; the
most portable one becomes ``model.so``. Levels are independent compiles of the same ONNX file, so
they run in ``jobs`` worker processes (default: one per CPU core; spawned, each imports TVM once
and compiles several levels), which roughly halves the wall time on two cores. ``jobs = 1``
compiles them one after another in this process.

The artifact's info is the baseline variant's, plus ``variants``: per level its name, file,
sha256, the ``/proc/cpuinfo`` flags it needs, its TVM target and compile seconds, best first.
``model.variants`` carries the same list for the C++ runner.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgeres.backends.tvm import options as tt
from edgeres.backends.tvm.variants import Variant, levels_for, variant_file, write_variants_file
from edgeres.errors import CompileError, EdgeresError, UsageError
from edgeres.fileio import sha256_file

VARIANTS_FILE = "model.variants"


def _job(src: Path, target: Any, level: str, opts: tt.TvmOptions, precision: str, so: Path) -> dict[str, Any]:
    """Compile one level (in a worker process or here); the library's info record."""
    from dataclasses import replace

    from edgeres.backends.tvm.library import build_library
    from edgeres.backends.tvm.variants import get_level

    t0 = time.perf_counter()
    target_dict = get_level(level).tvm_target()
    info = build_library(src, target, target_dict, replace(opts, target=target_dict, variants=()), precision, so)
    info["compile_seconds"] = round(time.perf_counter() - t0, 2)
    return info


class _PlainTarget:
    """What build_library reads of a Target: name, arch, batch size (passes to worker processes as JSON)."""

    def __init__(self, name: str, arch: str, batch_size: int) -> None:
        self.name, self.arch, self.batch_size = name, arch, batch_size

    @classmethod
    def of(cls, target: Any) -> "_PlainTarget":
        return cls(str(getattr(target, "name", "?")), str(getattr(target, "arch", "x86_64")),
                   int(getattr(target, "batch_size", 1) or 1))


def _spec(src: Path, target: _PlainTarget, level: str, opts: tt.TvmOptions, precision: str, so: Path) -> dict:
    o = asdict(opts)
    o["tuning_db"] = str(opts.tuning_db) if opts.tuning_db else None
    return {"src": str(src), "target": vars(target), "level": level, "opts": o, "precision": precision, "so": str(so)}


def _run_spec(spec: dict) -> dict[str, Any]:
    o = dict(spec["opts"])
    o["tuning_db"] = Path(o["tuning_db"]) if o["tuning_db"] else None
    o["variants"] = tuple(o["variants"])
    return _job(Path(spec["src"]), _PlainTarget(**spec["target"]), spec["level"], tt.TvmOptions(**o),
                spec["precision"], Path(spec["so"]))


def main(argv: list[str] | None = None) -> int:
    """Worker process: ``python -m edgeres.backends.tvm.portable JOBS.json RESULTS.json``."""
    import json
    import sys

    jobs_file, results_file = (argv if argv is not None else sys.argv[1:])[:2]
    results = []
    for spec in json.loads(Path(jobs_file).read_text()):
        try:
            results.append({"level": spec["level"], "info": _run_spec(spec)})
        except EdgeresError as e:
            results.append({"level": spec["level"], "error": f"{type(e).__name__}: {e}"})
        except Exception as e:  # noqa: BLE001 - reported by the parent as a CompileError
            lines = str(e).strip().splitlines()
            results.append({"level": spec["level"], "error": f"{type(e).__name__}: {lines[-1] if lines else ''}"})
    Path(results_file).write_text(json.dumps(results))
    return 0


def _start_worker(specs: list[dict], tmp: Path, i: int) -> tuple[Any, Path]:
    import json
    import subprocess
    import sys

    jobs, results = tmp / f"jobs-{i}.json", tmp / f"results-{i}.json"
    jobs.write_text(json.dumps(specs))
    proc = subprocess.Popen([sys.executable, "-m", "edgeres.backends.tvm.portable", str(jobs), str(results)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, results


def _collect(proc: Any, results: Path, src: Path) -> list[dict]:
    import json

    _, err = proc.communicate()
    if proc.returncode != 0 or not results.is_file():
        lines = [ln for ln in (err or "").strip().splitlines() if ln.strip()]
        raise CompileError(f"a variant compile process for {src.name} died (exit {proc.returncode}): "
                           f"{lines[-1] if lines else 'no output'}")
    return json.loads(results.read_text())


def _compile_all(specs: list[dict], workers: int, src: Path) -> dict[str, dict[str, Any]]:
    """Run ``specs``: this process takes the first share, ``workers - 1`` worker processes the rest."""
    import tempfile

    shares = [specs[i::workers] for i in range(workers)]
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="edgeres-variants-") as d:
        started = [_start_worker(share, Path(d), i) for i, share in enumerate(shares[1:]) if share]
        try:
            for spec in shares[0]:
                out[spec["level"]] = _run_spec(spec)
        except BaseException:
            for proc, _ in started:
                proc.kill()
                proc.wait()
            raise
        for proc, results in started:
            for r in _collect(proc, results, src):
                if "error" in r:
                    raise CompileError(f"compiling the {r['level']} variant of {src.name} failed: {r['error']}")
                out[r["level"]] = r["info"]
    return out


def compile_variants(src: Path, target: Any, out: Path, precision: str,
                     opts: tt.TvmOptions) -> tuple[dict[str, Any], list[str]]:
    """Compile every level of ``opts.variants`` that pays for ``precision`` into ``out``.

    Returns the artifact info (the baseline's, plus ``variants``) and the files written.
    """
    levels = levels_for(opts.variants, precision)
    if not levels:
        raise UsageError(f"target {getattr(target, 'name', '?')!r} has no ISA level that compiles {precision} "
                         f"(its variants: {list(opts.variants)})")
    plain = _PlainTarget.of(target)
    specs = [_spec(src.resolve(), plain, lv.name, opts, precision, (out / variant_file(lv.name, lv is levels[-1])).resolve())
             for lv in levels]
    workers = min(len(specs), opts.jobs or os.cpu_count() or 1)
    t0 = time.perf_counter()
    results = _compile_all(specs, workers, src)
    variants = []
    for lv in levels:
        info = results[lv.name]
        so = out / variant_file(lv.name, lv is levels[-1])
        variants.append({"name": lv.name, "description": lv.description, "file": so.name,
                         "sha256": sha256_file(so), "cpu_flags": info["cpu_flags"], "tvm_target": info["tvm_target"],
                         "conv_kernels": info["conv_kernels"], "compile_seconds": info["compile_seconds"],
                         **({"int8_note": info["int8_note"]} if "int8_note" in info else {})})
    write_variants_file(out / VARIANTS_FILE, [Variant.from_dict(v) for v in variants])
    info = dict(results[levels[-1].name])
    info.pop("compile_seconds", None)
    info["variants"] = variants
    info["variants_compile_seconds"] = round(time.perf_counter() - t0, 2)
    info["compile_jobs"] = workers
    return info, [v["file"] for v in variants] + [VARIANTS_FILE]


if __name__ == "__main__":
    raise SystemExit(main())
