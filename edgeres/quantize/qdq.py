"""Explicit Q/DQ INT8 ONNX: which tensors to quantize (a plan) and the insertion itself.

Two forms:

``tensorrt``
    Symmetric int8 activations (zero point 0), symmetric int8 weights per output
    channel as ``DequantizeLinear(int8 initializer)``, biases left float (TensorRT's
    parser rejects an INT32 bias DequantizeLinear). Q/DQ on the activation input of
    every Conv/Gemm/MatMul and on both inputs of residual Adds, so TensorRT can fuse
    conv + add + relu in INT8.
``cpu``
    What ONNX Runtime's CPU kernels fuse into QLinearConv/QLinearAdd: asymmetric uint8
    activations, symmetric int8 per-channel weights and INT32 biases as
    ``DequantizeLinear`` (a float bias stops the fusion). MaxPool inputs are quantized
    too (the output sharing the input's scale) so the stem convolution fuses, and the
    global-pool input so the last residual Add fuses.

With ``reduce_range`` (either form; ONNX Runtime's option of the same name) weights use 7
bits, levels -63..63, still stored as int8: what x86 integer kernels without VNNI need.

Q/DQ pairs are inserted on the *consumer* side: a producer's output keeps its name,
so FP32 and INT8 models can be compared tensor by tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np

from edgeres.errors import InputError, UsageError
from edgeres.quantize.graph import drop_unused_initializers, prepare_model

__all__ = [
    "FORMS",
    "QuantPlan",
    "WeightSite",
    "activation_qparams",
    "calibration_tensors",
    "check_form",
    "insert_qdq",
    "plan_quantization",
    "prepare_model",
    "quantize_weight",
    "weight_levels",
]

if TYPE_CHECKING:  # pragma: no cover
    import onnx

FORMS = ("tensorrt", "cpu")
# Ops whose activation input the cpu form quantizes besides Conv/Gemm/MatMul/Add: MaxPool
# (ONNX Runtime drops the Q/DQ around it, so the stem conv fuses) and the global pool,
# GlobalAveragePool or ReduceMean (its quantized input gives the last residual Add an
# output Q, so that Add fuses too).
CPU_ONLY_OPS = ("MaxPool", "GlobalAveragePool", "ReduceMean")
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class WeightSite:
    """A constant weight input of a node, quantized per channel along ``axis``."""

    node: str
    index: int
    axis: int


@dataclass
class QuantPlan:
    """What to quantize in one graph for one form.

    ``activations``: (node name, input index) -> tensor name, for every activation input
    that gets a Q/DQ pair. ``weights``: weight inputs to quantize. ``biases``: node name
    -> bias input index (cpu form only). ``tied``: output tensor -> input tensor whose
    quantization parameters it must share (MaxPool in the cpu form). ``followers``: other
    (node, input index) that read a quantized tensor: they read its dequantized value
    too, so each tensor has one Q/DQ pair and its producer can fuse with the Q
    (excluded nodes are no followers: they read the float tensor).
    """

    form: str
    activations: dict[tuple[str, int], str] = field(default_factory=dict)
    weights: list[WeightSite] = field(default_factory=list)
    biases: dict[str, int] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)
    followers: dict[tuple[str, int], str] = field(default_factory=dict)

    @property
    def tensors(self) -> list[str]:
        """Activation tensors that get a Q/DQ pair, in first-use order."""
        return list(dict.fromkeys(self.activations.values()))

    @property
    def nodes(self) -> list[str]:
        """Nodes with at least one quantized input."""
        names = [n for n, _ in self.activations] + [w.node for w in self.weights]
        return list(dict.fromkeys(names))


def check_form(form: str) -> None:
    if form not in FORMS:
        raise UsageError(f"unknown quantization form {form!r}; choose one of {', '.join(FORMS)}")


# --------------------------------------------------------------------------- planning


def _constants(model) -> set[str]:
    g = model.graph
    return {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}


def _weight_axis(node, inits: Mapping) -> int | None:
    """Output-channel axis of a node's weight (input 1), or None if it has no quantizable weight."""
    from onnx import helper

    if len(node.input) < 2 or node.input[1] not in inits:
        return None
    w = inits[node.input[1]]
    if w.data_type != 1:  # FLOAT
        return None
    if node.op_type == "Conv":
        return 0
    if len(w.dims) != 2:
        return None
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return 0 if attrs.get("transB", 0) else 1
    return 1  # MatMul: B is [K, N]


def plan_quantization(model, form: str, exclude: Iterable[str] = ()) -> QuantPlan:
    """Decide which inputs of which nodes to quantize (``model`` as from :func:`prepare_model`)."""
    check_form(form)
    exclude = set(exclude)
    names = [n.name for n in model.graph.node]
    unknown = sorted(exclude - set(names))
    if unknown:
        sample = ", ".join(n for n in names[:5])
        raise UsageError(f"unknown node name(s) to keep in FP32: {', '.join(unknown)}; node names look like: {sample}")
    consts = _constants(model)
    inits = {t.name: t for t in model.graph.initializer}
    plan = QuantPlan(form=form)
    for node in model.graph.node:
        if node.name in exclude:
            continue
        op = node.op_type
        if op in ("Conv", "Gemm", "MatMul"):
            axis = _weight_axis(node, inits)
            if axis is None or node.input[0] in consts:
                continue
            plan.activations[(node.name, 0)] = node.input[0]
            plan.weights.append(WeightSite(node.name, 1, axis))
            bias_idx = 2 if op in ("Conv", "Gemm") else None
            if form == "cpu" and bias_idx is not None and len(node.input) > 2 and node.input[2] in inits:
                plan.biases[node.name] = bias_idx
        elif op == "Add" and len(node.input) == 2 and not any(i in consts for i in node.input):
            plan.activations[(node.name, 0)] = node.input[0]
            plan.activations[(node.name, 1)] = node.input[1]
        elif op in CPU_ONLY_OPS and form == "cpu" and len(node.output) == 1:
            plan.activations[(node.name, 0)] = node.input[0]
            if op == "MaxPool":
                plan.tied[node.output[0]] = node.input[0]
    # A tie only matters when the output is quantized too.
    quantized = set(plan.activations.values())
    plan.tied = {o: i for o, i in plan.tied.items() if o in quantized}
    for node in model.graph.node:
        if node.name in exclude:
            continue
        for idx, name in enumerate(node.input):
            if name in quantized and (node.name, idx) not in plan.activations:
                plan.followers[(node.name, idx)] = name
    return plan


def calibration_tensors(model) -> list[str]:
    """Every activation tensor either form may quantize (with nothing excluded): what calibration measures."""
    tensors: dict[str, None] = {}
    for form in FORMS:
        tensors.update(dict.fromkeys(plan_quantization(model, form).tensors))
    return list(tensors)


# --------------------------------------------------------------------------- parameters


def activation_qparams(lo: float, hi: float, form: str) -> tuple[float, int]:
    """(scale, zero point) of an activation range: int8 symmetric (tensorrt) or uint8 asymmetric (cpu)."""
    if form == "tensorrt":
        amax = max(abs(lo), abs(hi))
        return (amax / 127.0 if amax > 0 else 1.0 / 127.0), 0
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        return 1.0 / 255.0, 0
    scale = (hi - lo) / 255.0
    return scale, int(np.clip(round(-lo / scale), 0, 255))


def weight_levels(reduce_range: bool) -> int:
    """Largest |q| of a symmetric weight: 127 (8 bits) or 63 (7 bits, ``reduce_range``)."""
    return 63 if reduce_range else 127


def quantize_weight(
    w: np.ndarray, axis: int, per_channel: bool, reduce_range: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weight quantization: (int8 values, float32 scales per channel or a scalar).

    ``reduce_range`` (ONNX Runtime's name): 7-bit weights, levels -63..63 (scale amax / 63),
    still stored as int8. x86 integer kernels without VNNI (``vpmaddubsw``) add pairs of
    uint8 x int8 products into int16 with saturation; 7-bit weights can never saturate.
    """
    levels = weight_levels(reduce_range)
    if per_channel:
        reduce = tuple(d for d in range(w.ndim) if d != axis)
        amax = np.abs(w).max(axis=reduce) if w.size else np.zeros(w.shape[axis])
    else:
        amax = np.asarray(np.abs(w).max() if w.size else 0.0)
    scale = np.where(amax > 0, amax / float(levels), 1.0).astype(np.float32)
    shape = [1] * w.ndim
    if per_channel:
        shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -levels, levels).astype(np.int8)
    return q, scale


# --------------------------------------------------------------------------- insertion


class _Names:
    """Fresh tensor/node names that collide with nothing in the graph."""

    def __init__(self, model) -> None:
        g = model.graph
        self.used = {t.name for t in g.initializer} | {i.name for i in g.input} | {o.name for o in g.output}
        self.used |= {x for n in g.node for x in (*n.input, *n.output, n.name)}

    def __call__(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def insert_qdq(
    model, plan: QuantPlan, ranges: Mapping[str, tuple[float, float]], *, per_channel: bool = True,
    reduce_range: bool = False, weight_cache: dict | None = None,
) -> "onnx.ModelProto":
    """A copy of ``model`` with Q/DQ pairs per ``plan``; ``ranges`` maps activation tensors to (lo, hi).

    ``reduce_range``: 7-bit weights (see :func:`quantize_weight`). ``weight_cache``: a dict kept by a
    caller that builds many Q/DQ models of the *same weights* (candidates differing in ranges or
    biases): the quantized weights are computed once.
    """
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    fresh = _Names(out)
    inits = {t.name: t for t in g.initializer}
    zp_dtype = np.int8 if plan.form == "tensorrt" else np.uint8

    missing = [t for t in plan.tensors if plan.tied.get(t, t) not in ranges]
    if missing:
        raise InputError(
            f"no calibration range for tensor(s) {', '.join(missing[:5])}; recalibrate (delete the calibration cache)"
        )
    qparams: dict[str, tuple[float, int]] = {}
    for t in plan.tensors:
        src = plan.tied.get(t, t)
        qparams[t] = activation_qparams(*ranges[src], plan.form)

    new_inits: list = []
    qdq_after: dict[str, list] = {}  # producer tensor -> Q/DQ nodes to emit right after it
    dq_name: dict[str, str] = {}
    for t in plan.tensors:
        scale, zp = qparams[t]
        s_name, z_name = fresh(f"{t}_scale"), fresh(f"{t}_zero_point")
        new_inits += [
            numpy_helper.from_array(np.asarray(scale, dtype=np.float32), s_name),
            numpy_helper.from_array(np.asarray(zp, dtype=zp_dtype), z_name),
        ]
        q_out, dq_out = fresh(f"{t}_quantized"), fresh(f"{t}_dequantized")
        q_node = helper.make_node("QuantizeLinear", [t, s_name, z_name], [q_out], name=fresh(f"{t}_QuantizeLinear"))
        dq_node = helper.make_node(
            "DequantizeLinear", [q_out, s_name, z_name], [dq_out], name=fresh(f"{t}_DequantizeLinear")
        )
        qdq_after.setdefault(t, []).extend([q_node, dq_node])
        dq_name[t] = dq_out

    nodes = {n.name: n for n in g.node}
    head: list = []  # weight/bias DequantizeLinear nodes (they depend on initializers only)
    weight_scales: dict[tuple[str, int], np.ndarray] = {}
    weight_dq: dict[tuple[str, int], str] = {}
    for site in plan.weights:
        node = nodes[site.node]
        w_name = node.input[site.index]
        key = (w_name, site.axis)
        if key not in weight_dq:
            ckey = (w_name, site.axis, per_channel, reduce_range)
            if weight_cache is not None and ckey in weight_cache:
                q, scale = weight_cache[ckey]
            else:
                q, scale = quantize_weight(numpy_helper.to_array(inits[w_name]), site.axis, per_channel, reduce_range)
                if weight_cache is not None:
                    weight_cache[ckey] = (q, scale)
            q_name, s_name, z_name = fresh(f"{w_name}_int8"), fresh(f"{w_name}_scale"), fresh(f"{w_name}_zero_point")
            new_inits += [
                numpy_helper.from_array(q, q_name),
                numpy_helper.from_array(scale, s_name),
                numpy_helper.from_array(np.zeros(scale.shape, dtype=np.int8), z_name),
            ]
            attrs = {"axis": site.axis} if per_channel else {}
            out_name = fresh(f"{w_name}_dequantized")
            head.append(helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [out_name],
                                         name=fresh(f"{w_name}_DequantizeLinear"), **attrs))
            weight_dq[key] = out_name
            weight_scales[key] = scale
        node.input[site.index] = weight_dq[key]
        bias_idx = plan.biases.get(site.node)
        x_name = plan.activations.get((site.node, 0))
        if bias_idx is not None and x_name is not None:
            _quantize_bias(node, bias_idx, qparams[x_name][0], weight_scales[key], inits, new_inits, head, fresh)

    for (node_name, idx), t in (plan.activations | plan.followers).items():
        nodes[node_name].input[idx] = dq_name[t]

    graph_inputs = {i.name for i in g.input}
    ordered = head + [n for t, ns in qdq_after.items() if t in graph_inputs or t in inits for n in ns]
    for node in g.node:
        ordered.append(node)
        for o in node.output:
            ordered.extend(qdq_after.get(o, ()))
    del g.node[:]
    g.node.extend(ordered)
    g.initializer.extend(new_inits)
    drop_unused_initializers(out)
    return out


def _quantize_bias(node, idx, x_scale, w_scale, inits, new_inits, head, fresh) -> None:
    """Replace a float bias by DequantizeLinear(int32) with scale x_scale * w_scale (cpu form)."""
    from onnx import helper, numpy_helper

    b = numpy_helper.to_array(inits[node.input[idx]]).astype(np.float64)
    scale = (np.float64(x_scale) * w_scale.astype(np.float64)).astype(np.float32)
    if scale.ndim == 1 and b.shape != scale.shape:
        return  # a bias that is not one value per output channel: keep it float
    q = np.round(b / scale.astype(np.float64))
    if not np.all(np.isfinite(q)) or np.abs(q).max(initial=0) > _INT32_MAX:
        return  # would overflow int32: keep the bias float (the node then runs unfused but exact)
    b_name = node.input[idx]
    q_name, s_name, z_name = fresh(f"{b_name}_int32"), fresh(f"{b_name}_scale"), fresh(f"{b_name}_zero_point")
    new_inits += [
        numpy_helper.from_array(q.astype(np.int32), q_name),
        numpy_helper.from_array(scale, s_name),
        numpy_helper.from_array(np.zeros(scale.shape, dtype=np.int32), z_name),
    ]
    out_name = fresh(f"{b_name}_dequantized")
    attrs = {"axis": 0} if scale.ndim == 1 else {}
    head.append(helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [out_name],
                                 name=fresh(f"{b_name}_DequantizeLinear"), **attrs))
    node.input[idx] = out_name

