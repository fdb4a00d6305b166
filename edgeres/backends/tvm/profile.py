"""Per-operator latency of a compiled TVM library, grouped per ResNet stage (``edgeres profile``).

TVM 0.27's Relax VM has no profiler (``VirtualMachine(..., profile=True)`` / ``vm.profile`` are
gone), so this is built from what it does have, and runs where the library runs (this machine,
or the board, inside ``edgeres serve-device``; see :mod:`edgeres.backends.tvm.device_server`):

1. **trace**: one inference with ``VirtualMachine.set_instrument``: every call the VM makes
   (kernel or ``vm.builtin.*``), with its arguments;
2. **time**: each kernel alone with TVM's ``time_evaluator`` on the arguments it got in the
   trace, with ``cache_flush_cpu_non_first_arg`` before every run (weights and output cold,
   input warm — as when the kernel runs inside the model), one run per sample, median of
   ``repeats``; the end-to-end latency is timed the same way (``invoke_stateful``);
3. **group**: kernels into ``stem``, ``layer1..N`` and ``head`` from the data flow of the trace
   (:func:`group_stages`), with no names or layer table needed.

Imports only numpy and the TVM runtime (it runs on boards with a runtime-only TVM).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Sequence

import numpy as np

PROFILE_FORMAT = "edgeres-profile/1"
FLUSH = "cache_flush_cpu_non_first_arg"


def _median_ms(seconds: Sequence[float]) -> float:
    return 1000.0 * float(statistics.median(seconds))


class _Recorder:
    """The VM instrument: records every call and keeps its arguments alive (so object
    addresses stay unique for the trace and the kernels can be timed on them afterwards)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, func: Any, name: Any, before: bool, ret: Any, *args: Any) -> int:
        if before:
            self.calls.append({"name": str(name), "args": list(args), "ret": None})
        elif self.calls:
            self.calls[-1]["ret"] = ret
        return 0  # VMInstrumentReturnKind.NO_OP


def _handle(obj: Any) -> int | None:
    return int(obj.__chandle__()) if hasattr(obj, "shape") and hasattr(obj, "__chandle__") else None


def trace_calls(vm: Any, x: Any, kernels: Any) -> list[dict[str, Any]]:
    """One instrumented inference: per kernel call its name, tensor argument handles, output
    shape; builtins that return a view (``vm.builtin.reshape``) alias their input."""
    rec = _Recorder()
    vm.set_instrument(rec)
    try:
        vm["main"](x)
    finally:
        vm.set_instrument(None)
    alias: dict[int, int] = {}
    out: list[dict[str, Any]] = []
    for call in rec.calls:
        handles = [_handle(a) for a in call["args"]]
        if kernels.implements_function(call["name"]):
            tensors = [h for h in handles if h is not None]
            out_arg = call["args"][-1]
            out.append({"name": call["name"], "inputs": [alias.get(h, h) for h in tensors[:-1]],
                        "output": alias.get(tensors[-1], tensors[-1]) if tensors else None,
                        "shape": [int(d) for d in getattr(out_arg, "shape", ())],
                        "dtype": str(getattr(out_arg, "dtype", "")), "args": call["args"]})
        elif _handle(call["ret"]) is not None:  # a view of an input (reshape): the same activation
            src = next((h for h in handles if h is not None), None)
            if src is not None:
                alias[_handle(call["ret"])] = alias.get(src, src)
    return out


def time_kernels(kernels: Any, dev: Any, calls: list[dict[str, Any]], repeats: int,
                 flush: bool = True) -> dict[str, float]:
    """Median milliseconds of each distinct kernel of the trace, timed alone on its traced arguments
    (``flush``: weights and outputs flushed from the CPU caches before every run)."""
    times: dict[str, float] = {}
    for call in calls:
        if call["name"] in times:
            continue
        timer = kernels.time_evaluator(call["name"], dev, number=1, repeat=repeats, min_repeat_ms=0,
                                       f_preproc=FLUSH if flush else "")
        times[call["name"]] = _median_ms(timer(*call["args"]).results)
    return times


def _live_after(calls: list[dict[str, Any]], input_handle: int | None) -> list[int]:
    """How many activations are alive after each kernel call (written before, read after)."""
    produced = {input_handle: -1} if input_handle is not None else {}
    last_use: dict[int, int] = {}
    for i, c in enumerate(calls):
        for h in c["inputs"]:
            if h in produced:
                last_use[h] = i
        if c["output"] is not None:
            produced.setdefault(c["output"], i)
    return [sum(1 for h, p in produced.items() if p <= i and last_use.get(h, -1) > i) for i in range(len(calls))]


def group_stages(calls: list[dict[str, Any]], input_handle: int | None, layout: str = "NHWC") -> list[str]:
    """The ResNet stage of every kernel call: ``stem``, ``layer1``..``layerN`` or ``head``.

    A residual block is a run of kernels inside which two activations are alive (its input,
    kept for the shortcut, and the main path); between blocks only one is. The stem is what
    comes before the first block, the head what comes after the last; consecutive blocks
    with the same output shape form one stage. Nets without shortcuts (``plain*``) are split
    where the convolutions' output resolution changes.
    """
    if not calls:
        return []
    live = _live_after(calls, input_handle)
    segments: list[list[int]] = [[]]
    for i, n in enumerate(live):
        segments[-1].append(i)
        if n <= 1 and i + 1 < len(calls):
            segments.append([])
    blocks = [s for s in segments if len(s) > 1 and any(live[i] >= 2 for i in s[:-1])]
    if not blocks:
        return _group_plain(calls, layout)
    first, last = segments.index(blocks[0]), segments.index(blocks[-1])
    stage_of: dict[int, str] = {}
    stage, shape = 0, None
    for k, seg in enumerate(segments):
        if k < first:
            name = "stem"
        elif k > last:
            name = "head"
        else:
            if seg in blocks and calls[seg[-1]]["shape"] != shape:
                stage, shape = stage + 1, calls[seg[-1]]["shape"]
            name = f"layer{stage}"
        for i in seg:
            stage_of[i] = name
    return [stage_of[i] for i in range(len(calls))]


def _group_plain(calls: list[dict[str, Any]], layout: str) -> list[str]:
    """Stages of a net without shortcuts: stem = up to the first convolution (and what follows
    it before the next one), then one stage per output resolution, head from global pooling on."""
    def resolution(c: dict[str, Any]) -> tuple[int, int] | None:
        s = c["shape"]
        if len(s) != 4:
            return None
        hw = (s[1], s[2]) if layout.upper() == "NHWC" else (s[2], s[3])
        return hw if hw[0] * hw[1] > 1 else None

    convs = [i for i, c in enumerate(calls) if "conv" in c["name"]]
    stem_end = (convs[1] - 1) if len(convs) > 1 else (convs[0] if convs else -1)
    head_start = next((i for i in range(stem_end + 1, len(calls)) if resolution(calls[i]) is None), len(calls))
    names, stage, res = [], 0, None
    for i, c in enumerate(calls):
        if i <= stem_end:
            names.append("stem")
        elif i >= head_start:
            names.append("head")
        else:
            r = resolution(c)
            if r is not None and r != res:
                stage, res = stage + 1, r
            names.append(f"layer{max(stage, 1)}")
    return names


def summarize(calls: list[dict[str, Any]], stages: list[str], kernel_ms: dict[str, float],
              e2e_ms: list[float]) -> dict[str, Any]:
    """The JSON-able profile: per call, per stage, the end-to-end latency and what is left over."""
    ops = [{"index": i, "name": c["name"], "stage": s, "ms": round(kernel_ms[c["name"]], 6),
            "shape": c["shape"], "dtype": c["dtype"]} for i, (c, s) in enumerate(zip(calls, stages))]
    order: list[str] = []
    for s in stages:
        if s not in order:
            order.append(s)
    per_stage = [{"stage": s, "ms": round(sum(o["ms"] for o in ops if o["stage"] == s), 6),
                  "kernels": sum(1 for o in ops if o["stage"] == s)} for s in order]
    total = sum(o["ms"] for o in ops)
    median = float(statistics.median(e2e_ms)) if e2e_ms else None
    return {"format": PROFILE_FORMAT, "stages": per_stage, "operators": ops, "kernels_ms": round(total, 6),
            "end_to_end_ms": {"median": median, "samples": [round(v, 6) for v in e2e_ms]},
            "coverage": round(total / median, 4) if median else None}


def profile_library(so_path: str, input_shape: Sequence[int], *, repeats: int = 10, layout: str = "NHWC",
                    threads: int | None = None, flush: bool = True) -> dict[str, Any]:
    """Profile ``so_path`` (a Relax VM library for this machine) on a random input of ``input_shape``."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    if threads:  # the pool reads TVM_NUM_THREADS when first used; it cannot grow past that afterwards
        os.environ.setdefault("TVM_NUM_THREADS", str(int(threads)))
        tvm.get_global_func("runtime.config_threadpool")(1, int(threads))
    dev = tvm.cpu()
    lib = tvm.runtime.load_module(str(so_path))
    kernels = lib.imports[0] if lib.imports else lib
    vm = VirtualMachine(lib, dev)
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(tuple(input_shape)).astype(np.float32), dev)
    t0 = time.perf_counter()
    vm.set_input("main", x)
    timer = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=max(3, repeats))
    e2e = [1000.0 * v for v in timer("main").results]
    calls = trace_calls(vm, x, kernels)
    kernel_ms = time_kernels(kernels, dev, calls, max(3, repeats), flush)
    stages = group_stages(calls, _handle(x), layout)
    for c in calls:
        c.pop("args")
    result = summarize(calls, stages, kernel_ms, e2e)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    result["threads"] = int(tvm.get_global_func("runtime.NumThreads")())
    return result
