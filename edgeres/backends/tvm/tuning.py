"""MetaSchedule tuning with a reusable JSON database (``edgeres tune``).

:func:`tune` extracts the model's tuning tasks from the Relax module exactly as the TVM
backend lowers it (:func:`edgeres.backends.tvm.tuning_module`), skips the tasks the
database already holds (same workload structural hash, same target), and tunes the
rest with MetaSchedule under a trial and/or time budget. The database is MetaSchedule's
``JSONDatabase`` (``database_workload.json`` + ``database_tuning_record.json`` in
``db_dir``), plus ``edgeres_tuning.json`` (the target it was tuned for and the tasks
whose tuning finished). Records are appended as they are measured, so an interrupted
run keeps them, and the next run continues with the tasks that did not finish.

Because workloads are keyed by structure, one tuned ResNet-50 serves every ResNet-50
checkpoint (weights are not part of a workload) and shares most tasks with
ResNet-101/152. ``compile`` applies a database with the TVM option ``tuning_db``
(``backend_options={"tuning_db": db_dir}``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from edgeres.errors import UsageError

STATE_FILE = "edgeres_tuning.json"
STATE_FORMAT = "edgeres-tuning/1"
# Target keys that decide whether a schedule carries over (num-cores is added for tuning).
_TARGET_KEYS = ("kind", "mtriple", "mcpu", "mattr")


@dataclass(frozen=True)
class TuneResult:
    """What one :func:`tune` call did."""

    db_dir: Path
    target: str  # the edgeres target name
    tasks_found: int
    tasks_skipped: int  # already in the database for this target
    tasks_tuned: int
    trials: int  # measured candidates in this run
    failed_trials: int
    seconds: float
    stopped_by: str  # "done", "trials", "time budget"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["db_dir"] = str(self.db_dir)
        return d


def parse_duration(text: str) -> float:
    """Seconds in ``"2h"``, ``"30m"``, ``"90s"``, ``"1h30m"`` or a plain number of seconds."""
    import re

    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", s)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*[hms]", "", s).strip():
        raise UsageError(f"cannot read the duration {text!r}; write it like 2h, 30m, 90s or 1h30m")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0}
    total = sum(float(v) * scale[u] for v, u in parts)
    if total <= 0:
        raise UsageError(f"the duration {text!r} is zero; give a positive time budget such as 30m")
    return total


def tuning_target_dict(target_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The compile target plus ``num-cores`` (MetaSchedule needs it to tune)."""
    d = dict(target_dict)
    d.setdefault("num-cores", _physical_cores())
    return d


def _physical_cores() -> int:
    try:
        import psutil

        return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:
        return int(os.cpu_count() or 1)


def _target_key(target_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {k: target_dict[k] for k in _TARGET_KEYS if k in target_dict}


def _read_state(db_dir: Path) -> dict[str, Any]:
    p = db_dir / STATE_FILE
    if not p.is_file():
        return {}
    try:
        rec = json.loads(p.read_text())
        if rec.get("format") != STATE_FORMAT:
            raise ValueError(f"format {rec.get('format')!r}")
        return rec
    except (OSError, ValueError) as e:
        raise UsageError(f"{p} is not an edgeres tuning state file ({e}); delete it to re-tune every task") from e


def _write_state(db_dir: Path, target_key: Mapping[str, Any], complete: set[str]) -> None:
    from edgeres.fileio import write_json

    write_json(db_dir / STATE_FILE, {"format": STATE_FORMAT, "target": dict(target_key),
                                     "complete": sorted(complete)})


def _check_db_target(db_dir: Path, state: Mapping[str, Any], key: Mapping[str, Any]) -> None:
    have = state.get("target")
    if have is not None and dict(have) != dict(key):
        raise UsageError(f"tuning database {db_dir} was tuned for {have}, not {dict(key)}; "
                         "use one --db directory per target CPU")


def _task_hash(task: Any) -> str:
    import tvm_ffi

    return str(tvm_ffi.structural_hash(task.dispatched[0]))


def _tuned_in_db(db: Any, task: Any) -> bool:
    mod = task.dispatched[0]
    return bool(db.has_workload(mod)) and len(db.get_top_k(db.commit_workload(mod), 1)) > 0


def _as_onnx(source: Any, tmp: Path) -> Path:
    """An ONNX path for ``source``: an ONNX path, an OnnxSource/ExportResult, or a LoadedModel."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    if getattr(source, "model", None) is not None and hasattr(source, "preprocessing"):
        from edgeres.export import export_onnx

        return export_onnx(source, tmp / "model.onnx").path
    path = getattr(source, "path", None)
    if path is None:
        raise UsageError(f"cannot tune a {type(source).__name__}; pass an ONNX file, a checkpoint or a zoo name")
    return Path(path)


def tune(source: Any, target: Any, db_dir: str | os.PathLike, *, trials: int, trials_per_task: int | None = None,
         time_budget_s: float | None = None, progress: bool = True, log: Callable[[str], Any] = print,
         options: Mapping[str, Any] | None = None, builder: str = "in-process", seed: int | None = None,
         seed_builtin: bool = True, device: Any = None) -> TuneResult:
    """Tune ``source`` (ONNX path, OnnxSource or LoadedModel) for ``target`` into ``db_dir``.

    ``trials`` caps the measured candidates of this run (over all tasks), ``trials_per_task``
    those of one task (default: an even share, at least 8), ``time_budget_s`` the wall time
    (the batches in flight finish first). Tasks the database already holds are skipped.
    ``options`` are TVM backend options (e.g. ``{"layout": "NCHW"}``), as given to compile.
    ``builder``: ``"in-process"`` (fast) or ``"local"`` (MetaSchedule's LocalBuilder).
    ``seed_builtin``: first measure edgeres' builtin schedule of each task and record it, so
    the database never holds a winner slower than compile's default (and the search starts there).
    ``device`` (an :class:`edgeres.devices.DeviceSpec`) measures the candidates on the board(s)
    through TVM's RPC (MetaSchedule's RPCRunner; a tracker key with several boards measures on
    all of them in parallel) instead of this machine; a target of another architecture needs one.
    """
    from edgeres.backends import tvm as tb

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise UsageError(f"trials must be a positive integer, got {trials!r}")
    if trials_per_task is not None and (not isinstance(trials_per_task, int) or trials_per_task < 1):
        raise UsageError(f"trials_per_task must be a positive integer, got {trials_per_task!r}")
    if time_budget_s is not None and time_budget_s <= 0:
        raise UsageError(f"the time budget must be positive, got {time_budget_s!r} s")
    if builder not in ("in-process", "local"):
        raise UsageError(f"builder must be 'in-process' or 'local', got {builder!r}")
    if isinstance(target, str):
        from edgeres.targets import get_target

        target = get_target(target)
    if getattr(target, "backend", "tvm") != "tvm":
        raise UsageError(f"target {target.name!r} uses the {target.backend} backend; tuning is for TVM targets "
                         "(e.g. --target x86-64-host)")
    measure = _measurer(target, device, builder)
    t0 = time.monotonic()
    db_path = Path(db_dir)
    with tempfile.TemporaryDirectory(prefix="edgeres-tune-") as tmp:
        onnx_path = _as_onnx(source, Path(tmp))
        mod, compile_target = tb.tuning_module(onnx_path, target, options)
        return _tune_module(mod, compile_target, db_path, getattr(target, "name", "?"), trials=trials,
                            trials_per_task=trials_per_task, time_budget_s=time_budget_s, progress=progress,
                            log=log, builder=builder, seed=seed, seed_builtin=seed_builtin, t0=t0,
                            work=Path(tmp), measure=measure)


def _tune_module(mod: Any, compile_target: Any, db_path: Path, target_name: str, *, trials: int,
                 trials_per_task: int | None, time_budget_s: float | None, progress: bool,
                 log: Callable[[str], Any], builder: str, seed: int | None, seed_builtin: bool, t0: float,
                 work: Path, measure: dict[str, Any]) -> TuneResult:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from edgeres.backends.tvm import metaschedule as tuning_ms

    target_dict = json.loads(str(compile_target))  # str(Target) is its JSON form
    triple = str(target_dict.get("mtriple", ""))
    tuning_ms.light_tensor_intrin("aarch64" if triple.startswith(("aarch64", "arm64")) else "x86_64")
    key = _target_key(target_dict)
    tune_target = tvm.target.Target(tuning_target_dict(target_dict))
    _quiet_meta_schedule()
    db_path.mkdir(parents=True, exist_ok=True)
    state = _read_state(db_path)
    _check_db_target(db_path, state, key)
    complete = set(state.get("complete", []))
    db = ms.database.JSONDatabase(work_dir=str(db_path))
    tasks = [t for t in ms.relax_integration.extract_tasks(mod, tune_target)
             if not t.mod.attrs or not t.mod.attrs.get("tirx.is_scheduled", False)]
    hashes = [_task_hash(t) for t in tasks]
    todo = [(t, h) for t, h in zip(tasks, hashes) if not (h in complete and _tuned_in_db(db, t))]
    skipped = len(tasks) - len(todo)
    log(f"{len(tasks)} tasks, {skipped} already in {db_path}, {len(todo)} to tune")
    if not todo:
        return TuneResult(db_path, target_name, len(tasks), skipped, 0, 0, 0, time.monotonic() - t0, "done")
    per_task = trials_per_task or max(8, math.ceil(trials / len(todo)))
    per_iter = max(1, min(tuning_ms.TRIALS_PER_ITER, per_task))
    deadline = t0 + time_budget_s if time_budget_s else None
    counts = {"trials": 0, "failed": 0}
    per_task_trials = [0] * len(todo)
    bar = _Bar(min(trials, per_task * len(todo)), progress, log)

    def on_batch(task_id: int, n: int, failed: int) -> None:
        counts["trials"] += n
        counts["failed"] += failed
        per_task_trials[task_id] += n
        bar.advance(n, todo[task_id][0].task_name)

    callback = tuning_ms.progress_callback(on_batch, deadline)
    with _unnamed_log_handlers_hidden():
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            [t for t, _ in todo], work_dir=str(work), strategy=tuning_ms.search_strategy(per_task),
            num_threads=_physical_cores(), seed=seed)
    remote = measure.get("device") is not None
    shared = {"shared": True, "fcompile": measure["fcompile"]} if remote else {}
    build = (tuning_ms.in_process_builder(deadline, **shared) if builder == "in-process"
             else tuning_ms.local_builder())
    if remote:
        runner = tuning_ms.rpc_runner(measure["device"], workers=measure["workers"])
        log(f"measuring on {measure['device'].label}: {measure['workers']} board(s) in parallel")
    else:
        runner = tuning_ms.local_runner()
    if seed_builtin:
        seeded = tuning_ms.seed_builtin([t for t, _ in todo], db, tune_target,
                                        tuning_ms.in_process_builder(**shared), runner)
        log(f"measured the builtin schedule of {seeded} tasks (records that tuning must beat)")
    stopped = "interrupted"
    try:
        with bar:
            ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work), max_trials_global=trials,
                               max_trials_per_task=per_task, num_trials_per_iter=per_iter, builder=build,
                               runner=runner, database=db, cost_model=tuning_ms.cost_model(per_task),
                               measure_callbacks=[*ms.MeasureCallback.create("default"), callback])
        stopped = "time budget" if callback.stopped else ("trials" if counts["trials"] >= trials else "done")
    except Exception:
        if not callback.stopped:  # the budget callback's exception may come back re-wrapped by TVM's FFI
            raise
        stopped = "time budget"
    finally:
        # Records are already on disk. Cut short (budget, Ctrl-C), only tasks that got their
        # full share are finished: the next run tunes the others again, from their records.
        finished = {h for (t, h), n in zip(todo, per_task_trials)
                    if (stopped == "done" or n >= per_task) and _tuned_in_db(db, t)}
        _write_state(db_path, key, complete | finished)
        if stopped == "interrupted":
            log(f"interrupted after {counts['trials']} trials: the records are kept in {db_path}; "
                "run the same command again to continue")
    seconds = time.monotonic() - t0
    log(f"tuned {len(finished)} tasks with {counts['trials']} trials ({counts['failed']} failed) "
        f"in {seconds:.0f} s; database: {db_path}")
    return TuneResult(db_path, target_name, len(tasks), skipped, len(finished), counts["trials"], counts["failed"],
                      seconds, stopped)


def _measurer(target: Any, device: Any, builder: str) -> dict[str, Any]:
    """Where candidates are measured: this machine, or the board(s) ``device`` names (checked now:
    reachable, and of the target's architecture)."""
    from edgeres.backends.tvm import cross as tvm_cross

    if device is None:
        if tvm_cross.needs_cross(target):
            raise UsageError(f"target {target.name!r} is {tvm_cross.target_arch(target)}: tuning measures candidates "
                             "on the board; pass --tracker HOST:PORT --key KEY (or --device) for its RPC server(s)")
        return {}
    if builder != "in-process":
        raise UsageError("measuring on a board needs the in-process builder (it links for the board)")
    from edgeres.backends.tvm.rpc import TvmDevice, tracker_keys

    with TvmDevice(device) as board:
        arch = board.describe().get("arch")
    if arch and arch != tvm_cross.target_arch(target):
        raise UsageError(f"{device.label} is {arch} but target {target.name!r} is {tvm_cross.target_arch(target)}; "
                         "tune for the board's target")
    workers = 1
    if device.via_tracker:
        from tvm import rpc

        tracker = rpc.connect_tracker(device.tracker_host, device.tracker_port)
        workers = tracker_keys(tracker.summary()).get(device.key, 1)
        tracker.close()
    return {"device": device, "workers": workers, "fcompile": tvm_cross.cross_compiler(target)}


def _quiet_meta_schedule() -> None:
    """MetaSchedule prints every scheduler step at INFO on the console: keep warnings only
    (its per-task logs go to files in a temporary directory), unless the user set a level."""
    import logging

    root = logging.getLogger("tvm.s_tir.meta_schedule")
    if root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)


class _unnamed_log_handlers_hidden:  # noqa: N801 - used as a context manager
    """MetaSchedule's logger setup lists the names of the handlers on its logger and fails
    on an unnamed one (left by its own setup in an earlier tuning run in this process):
    hide those while it runs."""

    def __enter__(self) -> None:
        import logging

        self._logger = logging.getLogger("tvm.s_tir.meta_schedule")
        self._hidden = [h for h in self._logger.handlers if h.get_name() is None]
        for h in self._hidden:
            self._logger.removeHandler(h)

    def __exit__(self, *exc: Any) -> None:
        for h in self._hidden:
            self._logger.addHandler(h)


class _Bar:
    """A rich progress bar over trials (or nothing)."""

    def __init__(self, total: int, enabled: bool, log: Callable[[str], Any]) -> None:
        self.total, self.enabled = total, enabled
        self._p: Any = None
        self._id: Any = None

    def __enter__(self) -> "_Bar":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("tuning {task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), transient=False)
            self._p.__enter__()
            self._id = self._p.add_task("", total=self.total)
        return self

    def advance(self, n: int, name: str) -> None:
        if self._p is not None:
            self._p.update(self._id, advance=n, description=name[:40])

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)
