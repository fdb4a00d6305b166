"""Tensor-level comparison of a Q/DQ model with its FP32 reference, layer by layer, in ONNX Runtime.

A *quantized layer* is a node of the Q/DQ model with at least one input from a
``DequantizeLinear`` of an activation (Conv, Gemm, residual Add, pooling...). Q/DQ insertion
keeps node and producer names, so each such node's output exists under the same name in the
FP32 reference graph (the same preparation: BatchNormalization folded, equalized if the
Q/DQ model was). Two measurements per layer, on the same images:

* **in the model**: the layer's output in the whole Q/DQ model vs FP32 — the error that has
  piled up to this point;
* **alone**: a copy of the layer, with its own quantized inputs and weights (the Q/DQ model's
  scales, zero points and integer weights), reading the FP32 model's activations — the error
  this layer adds by itself. Layers are ranked by it, so the culprit comes first rather than
  everything downstream of it.

:func:`restore` returns a Q/DQ model with some layers computed in float again (the
reference's weights, float inputs): what ``--exclude`` would give, for bisection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from edgeres.quantize.collect import iter_tensors

if TYPE_CHECKING:  # pragma: no cover
    import onnx


@dataclass(frozen=True)
class LayerError:
    """One quantized layer. SNR in dB (higher is better), cosine of the flattened outputs per image
    (mean), max |INT8 - FP32|; ``alone_*`` for the layer by itself, the others in the whole model."""

    index: int  # position among the quantized layers, in graph order
    name: str
    op_type: str
    output: str
    input_range: tuple[float, float] | None  # the (first) quantized activation input's range
    snr_db: float
    cosine: float
    max_abs: float
    alone_snr_db: float
    alone_cosine: float
    alone_max_abs: float
    clipped: float  # fraction of the FP32 input values outside the range (clipping)
    levels_per_std: float  # quantization steps per standard deviation of the FP32 input's median channel

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _const(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def quantized_layers(qmodel) -> list[tuple[Any, dict[int, Any]]]:
    """(node, {input index: the DequantizeLinear node feeding it}) for every quantized layer, in order."""
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    layers = []
    for node in qmodel.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        dqs = {i: producer[x] for i, x in enumerate(node.input)
               if x in producer and producer[x].op_type == "DequantizeLinear"}
        if any(producer.get(dq.input[0]) is not None and producer[dq.input[0]].op_type == "QuantizeLinear"
               for dq in dqs.values()):
            layers.append((node, dqs))
    return layers


def _activation_source(qmodel, dq) -> str | None:
    """The float tensor a DequantizeLinear(QuantizeLinear(t)) pair quantizes, or None for a constant."""
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    q = producer.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def _range(consts: dict[str, np.ndarray], dq) -> tuple[float, float] | None:
    scale = consts.get(dq.input[1])
    zp = consts.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.uint8)
    if scale is None or zp is None or np.size(scale) != 1:
        return None
    s, z = float(scale), int(np.asarray(zp).reshape(()))
    lo, hi = (0, 255) if np.asarray(zp).dtype == np.uint8 else (-128, 127)
    return (s * (lo - z), s * (hi - z))


def _probe_model(reference, qmodel, layers) -> tuple["onnx.ModelProto", dict[str, str]]:
    """The reference graph plus, per layer, a copy computing it from Q/DQ'd FP32 activations."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(reference)
    g = model.graph
    have = {t.name for t in g.initializer}
    qconsts = {t.name: t for t in qmodel.graph.initializer}
    qproducer = {o: n for n in qmodel.graph.node for o in n.output}
    probes: dict[str, str] = {}
    k = 0

    def copy_const(name: str) -> None:
        if name and name not in have and name in qconsts:
            g.initializer.append(qconsts[name])
            have.add(name)

    for node, dqs in layers:
        inputs = list(node.input)
        for i, dq in dqs.items():
            k += 1
            src = _activation_source(qmodel, dq)
            for c in dq.input[1:]:
                copy_const(c)
            if src is None:  # a weight or bias: DequantizeLinear(integer initializer)
                copy_const(dq.input[0])
                nodes = [dq]
            else:
                q = qproducer[dq.input[0]]
                for c in q.input[1:]:
                    copy_const(c)
                nodes = [q, dq]
            renamed = {}
            for n in nodes:
                c = onnx.NodeProto()
                c.CopyFrom(n)
                c.name = f"{n.name}__alone{k}"
                c.input[:] = [renamed.get(x, x) for x in c.input]
                renamed[n.output[0]] = f"{n.output[0]}__alone{k}"
                c.output[:] = [renamed[n.output[0]]]
                g.node.append(c)
            inputs[i] = renamed[dq.output[0]]
        for x in inputs:
            copy_const(x)
        out = f"{node.output[0]}__alone"
        probe = helper.make_node(node.op_type, inputs, [out], name=f"{node.name}__alone", domain=node.domain)
        probe.attribute.extend(node.attribute)
        g.node.append(probe)
        probes[node.name] = out
    return model, probes


class _Acc:
    """Streaming SNR / cosine / max-abs of ``b`` against ``a``."""

    def __init__(self) -> None:
        self.sig = self.err = self.max = 0.0
        self.cos: list[np.ndarray] = []

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a64, b64 = a.astype(np.float64).reshape(len(a), -1), b.astype(np.float64).reshape(len(b), -1)
        d = b64 - a64
        self.sig += float(np.sum(a64 * a64))
        self.err += float(np.sum(d * d))
        self.max = max(self.max, float(np.abs(d).max(initial=0.0)))
        na, nb = np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1)
        self.cos.append(np.where((na > 0) & (nb > 0), np.sum(a64 * b64, 1) / np.maximum(na * nb, 1e-300),
                                 (na == nb).astype(np.float64)))

    def result(self) -> tuple[float, float, float]:
        snr = 10.0 * np.log10(self.sig / self.err) if self.err > 0 else float("inf")
        if self.sig == 0 and self.err > 0:
            snr = float("-inf")
        return float(snr), float(np.mean(np.concatenate(self.cos))) if self.cos else 1.0, self.max


def compare_layers(reference, qmodel, images: np.ndarray) -> list[LayerError]:
    """Per quantized layer of ``qmodel``: its error against ``reference`` (the prepared FP32 graph)
    on ``images``, in the model and alone (see the module doc). In graph order."""
    layers = quantized_layers(qmodel)
    consts = _const(qmodel)
    outputs = [n.output[0] for n, _ in layers]
    probe_model, probes = _probe_model(reference, qmodel, layers)
    sources = {n.name: next((s for s in (_activation_source(qmodel, dq) for dq in dqs.values()) if s), None)
               for n, dqs in layers}
    ranges = {n.name: next((r for r in (_range(consts, dq) for i, dq in sorted(dqs.items())
                                        if _activation_source(qmodel, dq)) if r), None) for n, dqs in layers}
    wanted = list(dict.fromkeys(outputs + list(probes.values()) + [s for s in sources.values() if s]))
    inmodel = {n.name: _Acc() for n, _ in layers}
    alone = {n.name: _Acc() for n, _ in layers}
    clip = {n.name: [0, 0, 0.0, 0.0] for n, _ in layers}  # clipped, count, sum, sum of squares
    batches = [images[i: i + 32] for i in range(0, len(images), 32)]
    ref_iter = iter_tensors(probe_model, wanted, batches)
    q_iter = iter_tensors(qmodel, outputs, batches)
    for (_, _, rv), (_, _, qv) in zip(ref_iter, q_iter):
        for node, _ in layers:
            o = node.output[0]
            inmodel[node.name].add(rv[o], qv[o])
            alone[node.name].add(rv[o], rv[probes[node.name]])
            src, r = sources[node.name], ranges[node.name]
            if src is not None and r is not None:
                x = rv[src].astype(np.float64)
                axes = tuple(d for d in range(x.ndim) if d != 1) if x.ndim >= 2 else None
                c = clip[node.name]
                c[0] += int(np.count_nonzero((x < r[0]) | (x > r[1])))
                c[1] += x.size
                c[2] = c[2] + np.sum(x, axis=axes)
                c[3] = c[3] + np.sum(np.square(x), axis=axes)
    out = []
    for i, (node, _) in enumerate(layers):
        snr, cos, mx = inmodel[node.name].result()
        asnr, acos, amx = alone[node.name].result()
        r = ranges[node.name]
        c = clip[node.name]
        clipped = c[0] / c[1] if c[1] else 0.0
        std = _median_channel_std(c[2], c[3], c[1])
        step = (r[1] - r[0]) / 255.0 if r else 0.0
        out.append(LayerError(i, node.name, node.op_type, node.output[0], r, snr, cos, mx, asnr, acos, amx,
                              clipped, std / step if step > 0 else float("inf")))
    return out


def _median_channel_std(total: Any, squares: Any, count: int) -> float:
    """Standard deviation of the median channel (axis 1): what a typical channel gets from the range."""
    if not count:
        return 0.0
    total, squares = np.atleast_1d(total), np.atleast_1d(squares)
    n = count / total.size
    var = np.maximum(squares / n - (total / n) ** 2, 0.0)
    return float(np.median(np.sqrt(var)))


def restore(qmodel, reference, names: Iterable[str]) -> "onnx.ModelProto":
    """A copy of ``qmodel`` with the layers ``names`` computed in float: their quantized activation
    inputs read the float tensors, their weights and biases are the reference's."""
    import onnx

    from edgeres.quantize.graph import drop_unused_initializers

    names = set(names)
    out = onnx.ModelProto()
    out.CopyFrom(qmodel)
    g = out.graph
    ref_nodes = {n.name: n for n in reference.graph.node}
    ref_inits = {t.name: t for t in reference.graph.initializer}
    have = {t.name for t in g.initializer}
    by_name = {n.name: n for n in g.node}
    for node, dqs in quantized_layers(out):
        if node.name not in names:
            continue
        ref = ref_nodes.get(node.name)
        for i, dq in dqs.items():
            src = _activation_source(out, dq)
            if src is not None:
                by_name[node.name].input[i] = src
            elif ref is not None and i < len(ref.input) and ref.input[i] in ref_inits:
                w = ref.input[i]
                if w not in have:
                    g.initializer.append(ref_inits[w])
                    have.add(w)
                by_name[node.name].input[i] = w
    _drop_dead_nodes(out)
    drop_unused_initializers(out)
    return out


def _drop_dead_nodes(model) -> None:
    """Remove nodes whose outputs nothing reads (Q/DQ pairs left behind by :func:`restore`)."""
    g = model.graph
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        keep = [n for n in g.node if any(o in used for o in n.output)]
        if len(keep) == len(g.node):
            return
        del g.node[:]
        g.node.extend(keep)


def worst_first(rows: Sequence[LayerError]) -> list[LayerError]:
    """Rows ranked by the error each layer adds alone (lowest SNR first), ties by in-model SNR."""
    return sorted(rows, key=lambda r: (r.alone_snr_db, r.snr_db))
