"""MetaSchedule plumbing for :mod:`edgeres.backends.tvm.tuning`: a fast builder, the runner, callbacks.

What made a trial slow here (2 shared cores), and what this module does instead:

* ``LocalBuilder`` starts a fresh pool of Python worker processes for every batch of
  candidates; each worker imports TVM, and the default build function also imports
  ``tvm.s_tir.tensor_intrin`` (tens of seconds here). :func:`in_process_builder` builds
  in the tuning process itself: no process start, no imports, FP32 needs no tensor
  intrinsics.
* MetaSchedule's ``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, which registers the
  tensor intrinsics of every backend (CUDA alone took minutes here under load);
  :func:`light_tensor_intrin` registers only the CPU family being tuned (x86: ~5 s).
* ``LocalRunner``'s default evaluator repeats each candidate for at least 100 ms;
  :func:`local_runner` measures for ``min_repeat_ms`` (default 20 ms), which ranks
  candidates as well on kernels that take micro- to milliseconds.

Everything imports TVM lazily (inside functions).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Callable

# Measured candidates per search iteration: smaller batches give a finer-grained time
# budget and progress bar; MetaSchedule's default is 64.
TRIALS_PER_ITER = 16
BUDGET_MSG = "time budget reached: not built"


def light_tensor_intrin(arch: str = "x86_64") -> None:
    """Make ``import tvm.s_tir.tensor_intrin`` register only the intrinsics of ``arch``.

    Loads the package without running its ``__init__`` (which imports the CUDA, ROCm,
    Hexagon, ARM and x86 intrinsics), then imports ``x86`` or ``arm_cpu`` alone. No-op
    when the package is already imported. Other intrinsics are not registered in this
    process afterwards, which CPU tuning and compiling do not need.
    """
    import importlib
    import importlib.util
    import sys

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    import tvm.s_tir

    pkg_dir = os.path.join(os.path.dirname(tvm.s_tir.__file__), "tensor_intrin")
    spec = importlib.util.spec_from_file_location(name, os.path.join(pkg_dir, "__init__.py"),
                                                  submodule_search_locations=[pkg_dir])
    if spec is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the package, its __init__ not executed
    importlib.import_module(name + (".arm_cpu" if arch in ("aarch64", "arm64") else ".x86"))


class BudgetReached(Exception):
    """Raised from the measure callback to end a tuning run at its time budget."""


def in_process_builder(deadline: float | None = None, *, shared: bool = False, fcompile: Any = None) -> Any:
    """A MetaSchedule builder that compiles candidates in this process (no worker pool).

    After ``deadline`` (``time.monotonic()``) it fails every candidate at once: MetaSchedule
    reports results (and so the time budget check) only after a pass over all tasks, and
    a pass over ResNet-18's 19 tasks takes many minutes here. ``shared``: write a shared
    library linked here by ``fcompile`` (the cross linker for a board; None: the host's), which
    an RPC server loads without a compiler of its own; else a tar that LocalRunner links.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder

    @derived_object
    class InProcessBuilder(PyBuilder):  # type: ignore[misc]
        """Build each candidate with ``tvm.build`` and pack it as a tar (what LocalRunner loads)."""

        def build(self, build_inputs: list[Any]) -> list[Any]:
            if deadline is not None and time.monotonic() > deadline:
                return [BuilderResult(None, BUDGET_MSG) for _ in build_inputs]
            return [_build_one(b, BuilderResult, shared, fcompile) for b in build_inputs]

    return InProcessBuilder()


def _build_one(build_input: Any, result_cls: Any, shared: bool = False, fcompile: Any = None) -> Any:
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support.tar import tar

    try:
        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(build_input.mod)
        rt_mod = tvm.tirx.build(mod, target=build_input.target)
        folder = tempfile.mkdtemp(prefix="edgeres-ms-")
        if shared:
            path = os.path.join(folder, "tvm_tmp_mod.so")
            rt_mod.export_library(path, fcompile=fcompile, workspace_dir=folder)
        else:
            path = os.path.join(folder, "tvm_tmp_mod." + tar.output_format)
            rt_mod.export_library(path, fcompile=tar)
        return result_cls(path, None)
    except Exception as e:  # noqa: BLE001 - a candidate that does not build is a failed trial
        return result_cls(None, f"in-process build failed: {type(e).__name__}: {str(e)[-500:]}")


def local_builder(timeout_s: float = 120.0) -> Any:
    """MetaSchedule's own LocalBuilder (fresh worker processes per batch), for comparison."""
    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(max_workers=1, timeout_sec=timeout_s)


def local_runner(*, number: int = 3, repeat: int = 1, min_repeat_ms: int = 20, timeout_s: float = 30.0) -> Any:
    """LocalRunner (one persistent worker process) measuring each candidate briefly."""
    from tvm.s_tir import meta_schedule as ms

    config = ms.runner.EvaluatorConfig(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms,
                                       enable_cpu_cache_flush=False)
    return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=config)


def rpc_runner(device: Any, *, workers: int = 1, number: int = 3, repeat: int = 1, min_repeat_ms: int = 20,
               timeout_s: float = 120.0) -> Any:
    """MetaSchedule's RPCRunner measuring on the board(s) ``device`` (a DeviceSpec) names: through its
    tracker (``workers`` boards in parallel: a farm), or one server directly."""
    from tvm.s_tir import meta_schedule as ms

    config = ms.runner.EvaluatorConfig(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms,
                                       enable_cpu_cache_flush=False)
    if device.via_tracker:
        rpc = ms.runner.RPCConfig(tracker_host=device.tracker_host, tracker_port=device.tracker_port,
                                  tracker_key=device.key, session_timeout_sec=int(timeout_s))
        return ms.runner.RPCRunner(rpc, config, max_workers=max(1, int(workers)))
    # One server, no tracker: the address rides in RPCConfig and direct_session connects to it.
    rpc = ms.runner.RPCConfig(tracker_host=device.host, tracker_port=device.port, tracker_key="direct",
                              session_timeout_sec=int(timeout_s))
    return ms.runner.RPCRunner(rpc, config, max_workers=1, f_create_session=direct_session)


def direct_session(rpc_config: Any) -> Any:
    """RPCRunner's session factory for one server without a tracker (runs in its worker processes)."""
    from tvm import rpc

    return rpc.connect(rpc_config.tracker_host, int(rpc_config.tracker_port),
                       session_timeout=rpc_config.session_timeout_sec)


def progress_callback(on_batch: Callable[[int, int, int], None], deadline: float | None) -> Any:
    """A measure callback: ``on_batch(task_id, trials, failed)`` after every measured batch.

    When ``time.monotonic()`` passes ``deadline`` it raises :class:`BudgetReached` (the
    records measured so far are in the database); the caller catches it.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class Progress(PyMeasureCallback):  # type: ignore[misc]
        """Reports measured batches; enforces the time budget."""

        def __init__(self) -> None:
            super().__init__()
            self.stopped = False

        def apply(self, task_scheduler: Any, task_id: int, measure_candidates: list[Any],
                  builder_results: list[Any], runner_results: list[Any]) -> None:
            skipped = sum(1 for b in builder_results if str(b.error_msg or "").startswith(BUDGET_MSG))
            failed = sum(1 for b, r in zip(builder_results, runner_results)
                         if b.error_msg is not None or r.error_msg is not None)
            on_batch(int(task_id), len(measure_candidates) - skipped, failed - skipped)
            if deadline is not None and time.monotonic() > deadline and not self.stopped:
                # Terminating tasks from here trips the scheduler's own termination check
                # ("!task->is_terminated"); stop the run instead. Earlier callbacks have
                # already added this batch's records to the database.
                self.stopped = True
                raise BudgetReached(BUDGET_MSG)

    return Progress()


def search_strategy(trials_per_task: int) -> Any:
    """Evolutionary search sized to the budget: MetaSchedule's population of 512 candidates
    per round costs seconds of search per batch on 2 cores; a few trials need far fewer."""
    from tvm.s_tir import meta_schedule as ms

    population = int(min(512, max(32, 8 * trials_per_task)))
    return ms.search_strategy.EvolutionarySearch(population_size=population,
                                                 init_min_unmeasured=min(50, population // 4))


def cost_model(trials_per_task: int) -> Any:
    """XGBoost, except for tiny budgets: with a handful of samples per task it predicts
    nothing and its training costs seconds per batch; the random model costs nothing."""
    return "xgb" if trials_per_task > 16 else "random"


def seed_builtin(tasks: list[Any], db: Any, target: Any, builder: Any, runner: Any) -> int:
    """Measure edgeres' builtin schedule (:mod:`edgeres.backends.tvm.schedule`) of each task
    and commit it as a record: the database then never picks a tuned schedule slower than
    the builtin one, and the evolutionary search starts from it. Returns records committed.
    """
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.runner import RunnerInput

    from edgeres.backends.tvm.schedule import schedule_func

    scheds = []
    for task in tasks:
        mod = task.dispatched[0]
        try:
            with target:
                sch = schedule_func(mod["main"], target)
        except Exception:  # noqa: BLE001 - best effort: no seed for this task
            sch = None
        if sch is not None:
            scheds.append((mod, sch))
    if not scheds:
        return 0
    built = builder.build([BuilderInput(sch.mod, target) for _, sch in scheds])
    ok = [(m, s, b) for (m, s), b in zip(scheds, built) if b.error_msg is None]
    inputs = [RunnerInput(b.artifact_path, "cpu", ms.arg_info.ArgInfo.from_entry_func(s.mod)) for _, s, b in ok]
    futures = runner.run(inputs)
    committed = 0
    for (mod, sch, b), fut in zip(ok, futures):
        res = fut.result()
        if res.error_msg is None and res.run_secs:
            db.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, db.commit_workload(mod), [float(v) for v in res.run_secs], target,
                ms.arg_info.ArgInfo.from_entry_func(mod)))
            committed += 1
        _remove_artifact(b.artifact_path)
    return committed


def _remove_artifact(path: str | None) -> None:
    import shutil

    if path:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
