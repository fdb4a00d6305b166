"""Q/DQ conformance check for TensorRT, without a GPU.

Structural rules a Q/DQ ONNX must meet for TensorRT's explicit quantization:

* ``opset``       default-domain opset >= 13 (per-channel Q/DQ)
* ``int8``        every QuantizeLinear/DequantizeLinear is signed INT8
* ``int32-bias``  no INT32 bias DequantizeLinear (ONNX Runtime's default; TensorRT's parser rejects it)
* ``zero-point``  zero points are 0 (symmetric)
* ``scale``       scales are constant, positive and finite
* ``axis``        per-channel axis valid: Conv weights axis 0, ConvTranspose 1, Gemm/MatMul the output-channel axis
* ``per-tensor-activation``  activations are quantized per tensor
* ``pair``        every QuantizeLinear feeds only DequantizeLinear nodes with the same scale and zero point
* ``op``          no operators TensorRT lacks (integer-arithmetic ops, custom domains, sequences, strings)

Then, when ``tensorrt`` or ``tensorrt_rtx`` imports, NVIDIA's real ``OnnxParser`` parses the
file, and with ``tensorrt_rtx`` (which builds in a CPU-only mode) ``build_serialized_network``
is attempted too.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgeres.errors import BackendUnavailable

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
UNSUPPORTED_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear",
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
    "SequenceLength", "SplitToSequence", "ConcatFromSequence", "StringNormalizer",
    "TfIdfVectorizer", "Unique", "Compress", "BitShift",
})
_NOISE = re.compile(r"\s*\[checkMacros\.cpp::catchCudaError[^\]]*\][^\n]*?\(cudaError \d+:[^)]*\)\)")


class Issue(NamedTuple):
    rule: str
    node: str
    message: str


@dataclass
class ConformanceReport:
    """Result of :func:`check_qdq`. ``ok``: no issues and no TensorRT parse/build failure."""

    path: str
    ok: bool
    issues: list[Issue] = field(default_factory=list)
    trt_parser: str | None = None  # "tensorrt-rtx 1.7.1.116" | "tensorrt 10.3.0" | None
    trt_parse_ok: bool | None = None
    trt_build_ok: bool | None = None
    stats: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["issues"] = [i._asdict() for i in self.issues]
        return d


def _const_values(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    vals = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    return vals


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Checker:
    def __init__(self, model: Any) -> None:
        import onnx

        self.onnx = onnx
        self.g = model.graph
        self.model = model
        self.vals = _const_values(self.g)
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[tuple[Any, int]]] = {}
        for n in self.g.node:
            for i, name in enumerate(n.input):
                self.consumers.setdefault(name, []).append((n, i))
        self.types = {v.name: v.type.tensor_type.elem_type for v in [*self.g.input, *self.g.value_info, *self.g.output]}
        self.issues: list[Issue] = []

    def add(self, rule: str, node: Any, message: str) -> None:
        self.issues.append(Issue(rule, node.name or node.output[0], message))

    def run(self) -> list[Issue]:
        opset = next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < 13:
            self.issues.append(Issue("opset", "<model>", f"opset {opset} < 13: per-channel Q/DQ needs opset 13+; re-export with opset >= 13"))
        for n in self.g.node:
            if n.domain not in ("", "ai.onnx"):
                self.add("op", n, f"{n.domain}::{n.op_type} is a custom-domain op TensorRT cannot parse without a plugin")
            elif n.op_type in UNSUPPORTED_OPS:
                self.add("op", n, f"{n.op_type} is not supported by TensorRT's ONNX parser")
            elif n.op_type == "QuantizeLinear":
                self.check_q(n)
            elif n.op_type == "DequantizeLinear":
                self.check_dq(n)
        return self.issues

    def _dtype_name(self, elem_type: int) -> str:
        return self.onnx.TensorProto.DataType.Name(elem_type).lower()

    def _scale_zp(self, n: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
        scale = self.vals.get(n.input[1]) if len(n.input) > 1 else None
        zp = self.vals.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if scale is None:
            self.add("scale", n, f"scale {n.input[1] if len(n.input) > 1 else '?'} is not a constant; TensorRT needs constant scales")
        elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            self.add("scale", n, f"scale has non-positive or non-finite values (min {np.min(scale):.3g}); recalibrate")
        if len(n.input) > 2 and n.input[2] and zp is None:
            self.add("zero-point", n, "zero point is not a constant; use a constant 0")
        elif zp is not None and np.any(zp != 0):
            self.add("zero-point", n, "zero point is not 0 (asymmetric); TensorRT needs symmetric quantization: ActivationSymmetric/WeightSymmetric")
        return scale, zp

    def check_q(self, n: Any) -> None:
        scale, zp = self._scale_zp(n)
        out_dtype = _attr(n, "output_dtype", 0)
        qtype = out_dtype or (zp.dtype.name if zp is not None else "uint8")  # ONNX default: uint8
        if isinstance(qtype, int):
            qtype = self._dtype_name(qtype)
        if qtype != "int8":
            self.add("int8", n, f"quantizes to {qtype}; TensorRT explicit quantization needs signed int8 (QuantType.QInt8)")
        is_weight = n.input[0] in self.vals
        if scale is not None and scale.size > 1 and not is_weight:
            self.add("per-tensor-activation", n, f"activation quantized per channel ({scale.size} scales); TensorRT needs per-tensor activation scales")
        consumers = self.consumers.get(n.output[0], [])
        if any(o.name == n.output[0] for o in self.g.output):
            self.add("pair", n, "QuantizeLinear output is a graph output; it must feed a DequantizeLinear")
        for c, _ in consumers:
            if c.op_type != "DequantizeLinear":
                self.add("pair", n, f"QuantizeLinear feeds {c.op_type} {c.name!r}; it must feed only DequantizeLinear")
                continue
            c_scale = self.vals.get(c.input[1]) if len(c.input) > 1 else None
            c_zp = self.vals.get(c.input[2]) if len(c.input) > 2 and c.input[2] else None
            same_scale = scale is not None and c_scale is not None and np.array_equal(scale, c_scale)
            same_zp = (zp is None and c_zp is None) or (zp is not None and c_zp is not None and np.array_equal(zp, c_zp))
            if not (same_scale and same_zp):
                self.add("pair", c, f"DequantizeLinear after {n.name!r} has a different scale or zero point")
        if is_weight and scale is not None and scale.size > 1:
            self.check_axis(n, self.vals[n.input[0]].ndim, scale.size, self.vals[n.input[0]].shape,
                            self.consumers.get(n.output[0], []), via_dq=True)

    def check_dq(self, n: Any) -> None:
        scale, _ = self._scale_zp(n)
        x = n.input[0]
        if x in self.vals:
            arr = self.vals[x]
            if arr.dtype == np.int32:
                self.add("int32-bias", n, "INT32 DequantizeLinear (quantized bias) is rejected by TensorRT's parser; "
                                          "keep biases float (extra_options QuantizeBias=False)")
                return
            if arr.dtype != np.int8:
                self.add("int8", n, f"dequantizes {arr.dtype.name} weights; TensorRT needs int8 (QuantType.QInt8)")
            if scale is not None and scale.size > 1:
                self.check_axis(n, arr.ndim, scale.size, arr.shape, self.consumers.get(n.output[0], []))
            return
        prod = self.producer.get(x)
        if prod is None or prod.op_type != "QuantizeLinear":
            kind = prod.op_type if prod is not None else "graph input"
            if x in self.types and self.types[x] == self.onnx.TensorProto.INT32:
                self.add("int32-bias", n, "INT32 DequantizeLinear is rejected by TensorRT's parser; keep biases float")
            else:
                self.add("pair", n, f"DequantizeLinear input {x!r} comes from {kind}, not from a QuantizeLinear or an int8 constant")
        elif scale is not None and scale.size > 1 and prod.input[0] not in self.vals:
            self.add("per-tensor-activation", n, f"activation dequantized per channel ({scale.size} scales); use per-tensor")

    def check_axis(self, n: Any, rank: int, nscale: int, shape: tuple[int, ...], consumers: list, via_dq: bool = False) -> None:
        axis = int(_attr(n, "axis", 1))
        if not -rank <= axis < rank:
            self.add("axis", n, f"axis {axis} is out of range for a rank-{rank} tensor")
            return
        axis %= rank
        if shape[axis] != nscale:
            self.add("axis", n, f"{nscale} scales but dimension {axis} has size {shape[axis]}")
            return
        if via_dq:  # weight -> Q -> DQ -> op: look through the DQ
            consumers = [cc for c, _ in consumers if c.op_type == "DequantizeLinear" for cc in self.consumers.get(c.output[0], [])]
        for c, idx in consumers:
            want = None
            if c.op_type == "Conv" and idx == 1:
                want = 0
            elif c.op_type == "ConvTranspose" and idx == 1:
                want = 1
            elif c.op_type == "Gemm" and idx == 1:
                want = 0 if _attr(c, "transB", 0) else 1
            elif c.op_type == "MatMul" and idx == 1:
                want = rank - 1
            if want is not None and axis != want:
                self.add("axis", n, f"per-channel axis {axis} for {c.op_type} {c.name!r} weights; TensorRT needs the output-channel axis {want}")


def _trt_module() -> tuple[Any, str] | None:
    for mod, label in (("tensorrt", "tensorrt"), ("tensorrt_rtx", "tensorrt-rtx")):
        try:
            return importlib.import_module(mod), label
        except (ImportError, OSError):
            continue
    return None


def _clean(msg: str) -> str:
    return " ".join(_NOISE.sub("", msg).split())


def _trt_check(report: ConformanceReport, path: Path, trt: Any, label: str, build: bool) -> None:
    from edgeres.backends.tensorrt.builder import make_logger, network_flags, parser_errors

    report.trt_parser = f"{label} {trt.__version__}"
    logger = make_logger(trt)
    try:
        builder = trt.Builder(logger)
    except Exception as e:  # full TensorRT without a GPU cannot create a builder
        report.notes.append(f"{report.trt_parser}: no builder here ({type(e).__name__}); parse skipped")
        report.trt_parser = None
        return
    network = builder.create_network(0 if label == "tensorrt-rtx" else network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    report.trt_parse_ok = bool(parser.parse_from_file(str(path)))
    if not report.trt_parse_ok:
        errs = parser_errors(parser) or logger.errors() or ["parse failed without a message"]
        for e in errs:
            node, _, msg = e.partition(": ")
            report.issues.append(Issue("trt-parse", node if msg else "<model>", _clean(msg or e)))
        return
    if not build or label != "tensorrt-rtx":
        if build:
            report.notes.append("build not attempted: only tensorrt-rtx builds without a GPU")
        return
    config = builder.create_builder_config()
    profile = None
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = [int(d) for d in t.shape]
        if any(d < 0 for d in dims):
            fixed = [1 if d < 0 else d for d in dims]
            profile = profile or builder.create_optimization_profile()
            profile.set_shape(t.name, fixed, fixed, fixed)
    if profile is not None:
        config.add_optimization_profile(profile)
    report.trt_build_ok = builder.build_serialized_network(network, config) is not None
    if not report.trt_build_ok:
        errs = [_clean(m) for m in logger.errors()] or ["build failed without a message"]
        report.issues.append(Issue("trt-build", "<model>", errs[-1]))


def check_qdq(onnx_path: str | Path, *, parse_with_trt: bool | None = None, build: bool = True) -> ConformanceReport:
    """Check a Q/DQ ONNX against TensorRT's explicit-quantization rules.

    ``parse_with_trt``: None parses with ``tensorrt``/``tensorrt_rtx`` when one imports; True
    requires one (BackendUnavailable otherwise); False runs only the structural rules.
    ``build``: also try a CPU-only engine build (``tensorrt_rtx`` only).
    """
    from edgeres.onnx_io import load_model

    path = Path(onnx_path)
    model = load_model(path)
    checker = _Checker(model)
    issues = checker.run()
    ops = [n.op_type for n in model.graph.node]
    report = ConformanceReport(path=str(path), ok=False, issues=list(issues), stats={
        "quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
        "nodes": len(ops)})
    if report.stats["quantize_linear"] + report.stats["dequantize_linear"] == 0:
        report.notes.append("no Q/DQ nodes: this is not a quantized model")
    if parse_with_trt is not False:
        found = _trt_module()
        if found is None:
            if parse_with_trt:
                raise BackendUnavailable("no TensorRT parser here; install one with: pip install 'edgeres[trtcheck]'")
            report.notes.append("TensorRT parser not installed (pip install 'edgeres[trtcheck]'); structural rules only")
        else:
            _trt_check(report, path, found[0], found[1], build)
    report.ok = not report.issues and report.trt_parse_ok is not False and report.trt_build_ok is not False
    return report


def format_report(report: ConformanceReport) -> str:
    """Human-readable multi-line summary (the CLI prints it)."""
    s = report.stats
    lines = [f"Q/DQ conformance of {Path(report.path).name}: {'PASS' if report.ok else 'FAIL'}",
             f"  {s.get('quantize_linear', 0)} QuantizeLinear, {s.get('dequantize_linear', 0)} DequantizeLinear, "
             f"{s.get('nodes', 0)} nodes; {len(report.issues)} issue(s)"]
    for rule, node, msg in report.issues:
        lines.append(f"  [{rule}] {node}: {msg}")
    if report.trt_parser:
        parse = {True: "parsed", False: "REJECTED", None: "not run"}[report.trt_parse_ok]
        built = {True: "CPU-only build ok", False: "build FAILED", None: "no build"}[report.trt_build_ok]
        lines.append(f"  TensorRT parser ({report.trt_parser}): {parse}; {built}")
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)
