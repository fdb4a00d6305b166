"""Building a serialized TensorRT engine: every TensorRT version shim lives here.

Two API families, chosen from ``tensorrt.__version__``:

* TensorRT 8.5-10.x ("weakly typed"): precision comes from builder flags
  (``BuilderFlag.FP16`` / ``BuilderFlag.INT8``; INT8 from explicit Q/DQ needs no calibrator).
  8.x also needs ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` (deprecated and ignored in 10).
* TensorRT 11+ ("strongly typed"): the precision flags and calibrators are gone; every
  network is strongly typed, so precision comes from the ONNX itself (Q/DQ for INT8, FP16
  tensors for FP16).

FP32 engines are FP32: ``BuilderFlag.TF32`` (on by default on Ampere and later, in every family
that has it) is cleared. DLA builds are checked by :func:`~edgeres.backends.tensorrt.options.check_dla`
(FP16 only; no DLA in TensorRT 10.8-11.4.0). TensorRT 8.0-8.4 (JetPack 4.6 / 5.0) predate the
name-based Python API: those boards build with the recipe's ``trtexec`` line
(:mod:`edgeres.backends.tensorrt.trtexec`).

``configure`` takes the ``tensorrt`` module as an argument so the dispatch can be tested
without TensorRT; the attribute names it uses are TensorRT's real Python API.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgeres.backends.tensorrt.options import HARDWARE_COMPAT, TrtOptions, check_dla, parse_version
from edgeres.errors import BackendUnavailable, CompileError, UsageError
from edgeres.fileio import atomic_path

MIN_PYTHON_API = (8, 5)  # set_input_shape / set_tensor_address / execute_async_v3


def api_family(version: str) -> str:
    """``"weakly-typed"`` for TensorRT < 11, ``"strongly-typed"`` for 11 and later."""
    return "strongly-typed" if parse_version(version)[0] >= 11 else "weakly-typed"


def require_python_api(trt: Any) -> tuple[int, ...]:
    """The installed TensorRT version as a tuple; BackendUnavailable when it predates 8.5."""
    v = parse_version(trt.__version__)
    if v[:2] < MIN_PYTHON_API:
        raise BackendUnavailable(
            f"TensorRT {trt.__version__} predates the 8.5 Python API edgeres uses; build with the trtexec "
            "command in the bundle's recipe (recipe.json) instead"
        )
    return v


def make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that keeps warnings and errors (for one-line error messages) instead of printing."""

    class _Capture(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.WARNING):  # INTERNAL_ERROR=0 ... VERBOSE=4
                self.messages.append((str(severity).rsplit(".", 1)[-1], str(msg)))

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s in ("ERROR", "INTERNAL_ERROR")]

    return _Capture()


def network_flags(trt: Any) -> int:
    """``create_network`` flags: EXPLICIT_BATCH on 8.x; 0 on 10 (implicit batch is gone) and 11 (strongly typed always)."""
    if parse_version(trt.__version__)[0] < 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def parser_errors(parser: Any) -> list[str]:
    """The ONNX parser's errors as ``node (op): description`` strings."""
    out = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        desc = " ".join(str(e.desc()).split())
        node = e.node_name() if hasattr(e, "node_name") else str(e.node())
        op = e.node_operator() if hasattr(e, "node_operator") else ""
        out.append(f"{node} ({op}): {desc}" if node else desc)
    return out


def _dims(shape: Any) -> list[int]:
    return [int(d) for d in shape]


def add_profile(trt: Any, builder: Any, network: Any, config: Any, opts: TrtOptions) -> dict[str, Any] | None:
    """An optimization profile for a dynamic batch dimension; None when every input is static."""
    bmin, bopt, bmax = opts.profile()
    profile = None
    shapes: dict[str, Any] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = _dims(tensor.shape)
        if all(d >= 0 for d in dims):
            continue
        if any(d < 0 for d in dims[1:]):
            raise CompileError(
                f"input {tensor.name!r} has dynamic dimensions {dims} beyond the batch; export the ONNX with a fixed input size"
            )
        profile = profile or builder.create_optimization_profile()
        rest = dims[1:]
        lo, mid, hi = [bmin, *rest], [bopt, *rest], [bmax, *rest]
        profile.set_shape(tensor.name, lo, mid, hi)
        shapes[tensor.name] = {"min": lo, "opt": mid, "max": hi}
    if profile is None:
        return None
    config.add_optimization_profile(profile)
    return shapes


def configure(trt: Any, builder: Any, network: Any, config: Any, opts: TrtOptions, precision: str) -> dict[str, Any]:
    """Apply precision, workspace, profile, DLA and compatibility settings; return what was applied."""
    version = trt.__version__
    family = api_family(version)
    applied: dict[str, Any] = {"tensorrt": version, "api": family, "flags": []}

    def flag(name: str) -> None:
        config.set_flag(getattr(trt.BuilderFlag, name))
        applied["flags"].append(name)

    check_dla(opts, precision, version)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: FP32 convolutions/matmuls would round to TF32
        applied["cleared_flags"] = ["TF32"]
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # per-layer report (engine inspector)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
    applied["workspace_mb"] = opts.workspace_mb
    if family == "weakly-typed":
        if precision == "fp16":
            flag("FP16")
        elif precision == "int8":  # explicit Q/DQ: no calibrator
            flag("INT8")
            if opts.int8_allow_fp16:
                flag("FP16")
    # strongly typed (TensorRT 11+): precision comes from the ONNX's tensor types and Q/DQ nodes.
    applied["profile"] = add_profile(trt, builder, network, config, opts)
    if opts.uses_dla:
        have = int(getattr(builder, "num_DLA_cores", 0))
        if opts.dla_core >= have:
            raise CompileError(f"this device has {have} DLA cores, so DLA core {opts.dla_core} cannot be used; set dla_core=-1")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        flag("GPU_FALLBACK")
        applied["dla_core"] = opts.dla_core
    if opts.version_compatible:
        flag("VERSION_COMPATIBLE")
    if opts.hardware_compatibility:
        level = getattr(trt.HardwareCompatibilityLevel, HARDWARE_COMPAT[opts.hardware_compatibility], None)
        if level is None:
            raise BackendUnavailable(
                f"TensorRT {version} has no hardware compatibility level {opts.hardware_compatibility!r}; "
                "remove hardware_compatibility or upgrade TensorRT"
            )
        config.hardware_compatibility_level = level
        applied["hardware_compatibility"] = opts.hardware_compatibility
    return applied


def attach_timing_cache(config: Any, path: Path | None) -> bool:
    """Load the timing cache file if present (a new empty cache otherwise) and attach it to ``config``.
    True when an existing cache was accepted (reused); a cache from another GPU or TensorRT is not."""
    if path is None:
        return False
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if config.set_timing_cache(cache, False):  # ignore_mismatch=False: a cache from another GPU is refused
        return bool(data)
    config.set_timing_cache(config.create_timing_cache(b""), False)
    return False


def save_timing_cache(config: Any, path: Path | None) -> None:
    if path is None:
        return
    cache = config.get_timing_cache()
    if cache is None:
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(memoryview(cache.serialize()))


def build_engine(trt: Any, onnx_path: Path, engine_path: Path, opts: TrtOptions, precision: str,
                 timing_cache: Path | None) -> dict[str, Any]:
    """Parse ``onnx_path``, build, write ``engine_path`` atomically; return the applied settings, with the
    layer placement (``placement``) and the engine inspector's layer list (``layers``, not in the record)."""
    from edgeres.backends.tensorrt.placement import dla_placement, engine_layers

    require_python_api(trt)
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = parser_errors(parser) or logger.errors() or ["unknown parser error"]
        raise CompileError(
            f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: {errs[0]}"
            f"{f' (+{len(errs) - 1} more)' if len(errs) > 1 else ''}; run the Q/DQ conformance check on it"
        )
    config = builder.create_builder_config()
    applied = configure(trt, builder, network, config, opts, precision)
    applied["placement"] = dla_placement(trt, network, config)
    applied["timing_cache_reused"] = attach_timing_cache(config, timing_cache)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    applied["build_seconds"] = round(time.perf_counter() - t0, 3)
    if serialized is None:
        errs = logger.errors() or ["no error message from TensorRT"]
        raise CompileError(f"TensorRT {trt.__version__} failed to build the engine: {errs[-1]}")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(memoryview(serialized))
    save_timing_cache(config, timing_cache)
    applied["timing_cache"] = str(timing_cache) if timing_cache else None
    applied["layers"] = engine_layers(trt, serialized, logger, opts.dla_core)
    return applied


def onnx_summary(onnx_path: Path) -> dict[str, Any]:
    """What the backend needs to know about an ONNX before building: Q/DQ? FP16? its input."""
    import onnx

    from edgeres.onnx_io import image_input, load_model, num_qdq, op_counts

    model = load_model(onnx_path, external_data=False)
    g = model.graph
    inp = image_input(model, Path(onnx_path).name)
    f16 = onnx.TensorProto.FLOAT16
    has_fp16 = any(i.data_type == f16 for i in g.initializer) or any(
        v.type.tensor_type.elem_type == f16 for v in [*g.input, *g.output, *g.value_info])
    return {
        "input_name": inp.name,
        "input_shape": [d if isinstance(d, int) else -1 for d in inp.dims],
        "input_fp16": inp.elem_type == f16,
        "has_qdq": num_qdq(op_counts(model)) > 0,
        "has_fp16": has_fp16,
    }


def convert_to_fp16(onnx_path: str | Path, out_path: str | Path, *, keep_io_types: bool = True) -> Path:
    """Write an FP16 copy of an FP32 ONNX (IO kept float32 by default) for strongly typed TensorRT 11 builds.

    Uses ONNX Runtime's float16 converter (``onnxruntime.transformers.float16``); NVIDIA's
    ModelOpt AutoCast (``python -m modelopt.onnx.autocast``) is the alternative NVIDIA documents.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from edgeres.onnx_io import load_model

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    summary = onnx_summary(onnx_path)
    if summary["has_qdq"]:
        raise UsageError(f"{onnx_path.name} is a Q/DQ INT8 model; convert the FP32 ONNX to FP16, not the quantized one")
    model = load_model(onnx_path)
    converted = convert_float_to_float16(model, keep_io_types=keep_io_types)
    with atomic_path(out_path) as tmp:
        onnx.save(converted, str(tmp))
    return out_path
