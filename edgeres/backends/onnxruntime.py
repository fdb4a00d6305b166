"""ONNX Runtime: the reference runner everywhere, and a deployment backend of its own.

Helpers used across edgeres::

    session(onnx_path_or_bytes, threads=None) -> onnxruntime.InferenceSession
    make_runner(onnx_path, threads=None) -> OrtRunner     # NCHW float32 batch -> logits

Backend interface (``compile``/``load``): "compiling" writes ``model.onnx``, the given
model (FP32 or Q/DQ INT8) after ONNX Runtime's *basic* graph optimizations, plus a
``model.ort.json`` sidecar. Why basic and not "all": basic rewrites (constant folding,
redundant node removal) keep standard ONNX ops, so the saved file runs on any machine,
any ONNX Runtime build and any execution provider. Extended/all levels insert
contrib ops (FusedConv, QLinearConv fusions) and, at "all", NCHWc layouts chosen for the
vector width of the compiling CPU: ONNX Runtime documents such files as tied to the
hardware they were optimized on. The runtime level (target option
``graph_optimization_level``, default "all") is applied when the session is created,
which takes well under a second for a ResNet.

Target options (``[onnxruntime]`` table): ``providers`` (default ["CPUExecutionProvider"]),
``graph_optimization_level`` (disabled | basic | extended | all, at run time),
``saved_optimization_level`` (none | basic | extended; none copies the model verbatim),
``threads`` (intra-op threads; default ONNX Runtime's choice).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgeres.backends.base import Artifact, Backend, Capabilities, check_precision, run_all_in_chunks, run_in_chunks
from edgeres.errors import InputError, UsageError
from edgeres.fileio import atomic_path, write_json

NAME = "onnxruntime"
MODEL_FILE = "model.onnx"
SIDECAR_FILE = "model.ort.json"
SIDECAR_FORMAT = "edgeres-onnxruntime/1"
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
LEVELS = ("disabled", "basic", "extended", "all")
SAVED_LEVELS = ("none", "basic", "extended")
OPTION_KEYS = ("providers", "graph_optimization_level", "saved_optimization_level", "threads")
# Ops that mean ONNX Runtime runs integer kernels (after its Q/DQ fusions).
INT8_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
            "QGemm", "QLinearAdd", "QLinearGlobalAveragePool", "DynamicQuantizeMatMul")


# -- availability ---------------------------------------------------------------------


def available() -> bool:
    """True when onnxruntime imports."""
    return unavailable_reason() == ""


def unavailable_reason() -> str:
    """Empty when available, else why not (one line)."""
    try:
        import onnxruntime  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means unavailable
        return f"onnxruntime does not import ({type(e).__name__}: {e})"
    return ""


def version() -> str | None:
    try:
        import onnxruntime as ort
    except Exception:  # noqa: BLE001
        return None
    return str(ort.__version__)


# -- sessions and runners -------------------------------------------------------------


def _level(name: str) -> Any:
    import onnxruntime as ort

    key = str(name).lower()
    if key not in LEVELS:
        raise UsageError(f"graph_optimization_level must be one of {list(LEVELS)}, got {name!r}")
    return {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[key]


def _check_providers(providers: Sequence[str] | None) -> list[str]:
    import onnxruntime as ort

    wanted = list(providers) if providers else list(DEFAULT_PROVIDERS)
    have = ort.get_available_providers()
    missing = [p for p in wanted if p not in have]
    if missing:
        raise UsageError(f"ONNX Runtime here has no {', '.join(missing)} (available: {', '.join(have)}); "
                         "change the target's [onnxruntime] providers or install the matching onnxruntime build")
    return wanted


def _check_threads(threads: Any) -> int | None:
    if threads is None or threads == 0:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    return threads


def session(onnx_path_or_bytes: str | os.PathLike | bytes, threads: int | None = None, *,
            providers: Sequence[str] | None = None, optimization_level: str = "all",
            optimized_model_path: str | os.PathLike | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for a model file or serialized bytes.

    Raises InputError for a missing or corrupt model, UsageError for bad options.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = _level(optimization_level)
    opts.log_severity_level = 3  # errors only: ORT warns about harmless things on stderr
    nthreads = _check_threads(threads)
    if nthreads:
        opts.intra_op_num_threads = nthreads
    if optimized_model_path is not None:
        opts.optimized_model_filepath = str(optimized_model_path)
    prov = _check_providers(providers)
    if isinstance(onnx_path_or_bytes, (bytes, bytearray)):
        src: Any = bytes(onnx_path_or_bytes)
        label = "the in-memory ONNX model"
    else:
        path = Path(onnx_path_or_bytes)
        if not path.is_file():
            raise InputError(f"ONNX model {path} does not exist; check the path")
        src, label = str(path), str(path)
    try:
        return ort.InferenceSession(src, opts, providers=prov)
    except Exception as e:  # noqa: BLE001 - ORT raises its own pybind exception types
        reason = " ".join(str(e).split())[:300]
        raise InputError(f"{label} is not a valid ONNX model: {reason}; re-export it (edgeres export)") from e


class OrtRunner:
    """Runner on an InferenceSession: NCHW float32 batch (any size) -> float32 logits (the first output);
    :meth:`run_all` returns every output (a feature extractor's stages)."""

    def __init__(self, sess: Any, source: str = "") -> None:
        self.session = sess
        self.source = source
        inp = sess.get_inputs()[0]
        self.input_name: str = inp.name
        self.output_name: str = sess.get_outputs()[0].name
        self.output_names: list[str] = [o.name for o in sess.get_outputs()]
        self.input_shape: tuple[int | None, ...] = tuple(d if isinstance(d, int) else None for d in inp.shape)
        out_shape = sess.get_outputs()[0].shape
        self.num_classes: int | None = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
        self.fixed_batch: int | None = self.input_shape[0] if self.input_shape else None

    def _check(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        want = self.input_shape
        if x.ndim != len(want) or any(w is not None and g != w for g, w in zip(x.shape[1:], want[1:], strict=True)):
            shown = ", ".join("?" if d is None else str(d) for d in want[1:])
            raise InputError(f"input batch has shape {tuple(x.shape)} but {self.source or 'the model'} expects "
                             f"(N, {shown}); resize/crop images to the model's input size")
        return x

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = self._check(batch)
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes or 0), dtype=np.float32)
        return run_in_chunks(self._run, x, self.fixed_batch)

    def _run_all(self, x: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in self.session.run(self.output_names, {self.input_name: x})]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of the model, in its graph order (NCHW float32 batch of any size)."""
        x = self._check(batch)
        if x.shape[0] == 0:
            raise InputError("no images in the batch")
        return run_all_in_chunks(self._run_all, x, self.fixed_batch)


def make_runner(onnx_path: str | os.PathLike | bytes, threads: int | None = None, *,
                providers: Sequence[str] | None = None, optimization_level: str = "all") -> OrtRunner:
    """The reference runner: ONNX Runtime on ``onnx_path`` (input name read from the model)."""
    sess = session(onnx_path, threads, providers=providers, optimization_level=optimization_level)
    label = "the in-memory ONNX model" if isinstance(onnx_path, (bytes, bytearray)) else Path(onnx_path).name
    return OrtRunner(sess, label)


# -- backend interface ----------------------------------------------------------------


def _options(target: Any, options: Mapping[str, Any] | None) -> dict[str, Any]:
    merged: dict[str, Any] = dict(target.options_dict()) if target is not None else {}
    merged.update(dict(options or {}))
    unknown = sorted(set(merged) - set(OPTION_KEYS))
    if unknown:
        raise UsageError(f"ONNX Runtime options: unknown keys {unknown}; allowed: {list(OPTION_KEYS)}")
    saved = str(merged.get("saved_optimization_level", "basic")).lower()
    if saved not in SAVED_LEVELS:
        raise UsageError(f"saved_optimization_level must be one of {list(SAVED_LEVELS)} (\"all\" ties the file to "
                         f"this CPU), got {merged.get('saved_optimization_level')!r}")
    level = str(merged.get("graph_optimization_level", "all")).lower()
    _level(level)
    providers = merged.get("providers") or list(DEFAULT_PROVIDERS)
    if isinstance(providers, str) or not all(isinstance(p, str) for p in providers):
        raise UsageError(f"providers must be a list of provider names, got {providers!r}")
    return {"providers": list(providers), "graph_optimization_level": level, "saved_optimization_level": saved,
            "threads": _check_threads(merged.get("threads"))}


def count_ops(onnx_path: str | os.PathLike) -> dict[str, int]:
    """Node count per op type of an ONNX file (main graph)."""
    from edgeres.onnx_io import load_model, op_counts

    return op_counts(load_model(onnx_path, external_data=False))


def compile(onnx_path: str | os.PathLike, target: Any, out_dir: str | os.PathLike, *, precision: str,
            options: Mapping[str, Any] | None = None) -> Artifact:
    """Write ``out_dir/model.onnx`` (basic-optimized, portable) and ``model.ort.json``."""
    t0 = time.perf_counter()
    src = Path(onnx_path)
    opts = _options(target, options)
    make_runner(src, providers=opts["providers"], optimization_level="disabled")  # validates the file
    counts = count_ops(src)
    check_precision(counts, precision, src.name, target)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / MODEL_FILE
    with atomic_path(dest) as tmp:
        if opts["saved_optimization_level"] == "none":
            import onnx

            onnx.save(onnx.load(str(src)), str(tmp))  # inlines any external-data weights
        else:
            # ORT writes the optimized model when the session is created.
            session(src, providers=opts["providers"], optimization_level=opts["saved_optimization_level"],
                    optimized_model_path=tmp)
    # What ONNX Runtime actually runs at the runtime level: are there integer kernels?
    probe = out / f".{MODEL_FILE}.runtime-probe"
    try:
        session(dest, providers=opts["providers"], optimization_level=opts["graph_optimization_level"],
                optimized_model_path=probe)
        runtime_ops = count_ops(probe)
    finally:
        probe.unlink(missing_ok=True)
    int8_ops = {op: n for op, n in runtime_ops.items() if op in INT8_OPS}
    runner = make_runner(dest, providers=opts["providers"])
    batch = getattr(target, "batch_size", 1) or 1
    input_shape = (runner.fixed_batch or batch, *[int(d or 0) for d in runner.input_shape[1:]])
    info = {
        "onnxruntime_version": version(),
        "providers": opts["providers"],
        "graph_optimization_level": opts["graph_optimization_level"],
        "saved_optimization_level": opts["saved_optimization_level"],
        "threads": opts["threads"],
        "dynamic_batch": runner.fixed_batch is None,
        "num_classes": runner.num_classes,
        "int8_kernels": bool(int8_ops),
        "int8_ops": int8_ops,
    }
    seconds = time.perf_counter() - t0
    artifact = Artifact(backend=NAME, path=dest, precision=precision, input_name=runner.input_name,
                        input_shape=input_shape, files=(MODEL_FILE, SIDECAR_FILE), compile_seconds=seconds,
                        info=info)
    write_json(out / SIDECAR_FILE, {"format": SIDECAR_FORMAT, **artifact.to_dict()})
    return artifact


def _resolve_path(artifact_or_path: Artifact | str | os.PathLike) -> Path:
    if isinstance(artifact_or_path, Artifact):
        return artifact_or_path.path
    p = Path(artifact_or_path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.is_file():
        raise InputError(f"ONNX Runtime artifact {p} does not exist; compile the model first")
    return p


def load(artifact_or_path: Artifact | str | os.PathLike, target: Any = None, *,
         threads: int | None = None) -> OrtRunner:
    """A Runner for a compiled artifact (an Artifact, ``model.onnx``, or its directory).

    Providers, runtime optimization level and threads come from ``target`` if given, else
    from the artifact's sidecar, else the defaults; ``threads`` overrides both.
    """
    path = _resolve_path(artifact_or_path)
    if target is not None:
        opts = _options(target, None)
    else:
        import json

        side = path.with_name(SIDECAR_FILE)
        info = {}
        if side.is_file():
            try:
                info = json.loads(side.read_text()).get("info", {})
            except (OSError, ValueError) as e:
                raise InputError(f"{side} is not valid JSON ({e}); compile the model again") from e
        opts = _options(None, {k: info[k] for k in ("providers", "graph_optimization_level", "threads")
                               if info.get(k) is not None})
    sess = session(path, threads if threads is not None else opts["threads"], providers=opts["providers"],
                   optimization_level=opts["graph_optimization_level"])
    return OrtRunner(sess, path.name)


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime: the deployed model is the (basic-optimized) ONNX file itself."""

    name = NAME
    extra = "edgeres"
    capabilities = Capabilities(precisions=("fp32", "int8"))

    def unavailable_reason(self) -> str:
        return unavailable_reason()

    def version(self) -> str | None:
        return version()

    def compile(self, onnx_path: str | os.PathLike, target: Any, out_dir: str | os.PathLike, *, precision: str,
                options: Mapping[str, Any] | None = None) -> Artifact:
        return compile(onnx_path, target, out_dir, precision=precision, options=options)

    def load(self, artifact: Artifact | str | os.PathLike, target: Any = None, *,
             variant: str | None = None) -> OrtRunner:
        self.no_variants(variant)
        return load(artifact, target)

    def preflight(self, target: Any, precision: str, options: Mapping[str, Any] | None = None) -> None:
        self.require()
        _options(target, options)


BACKEND = OnnxRuntimeBackend()
