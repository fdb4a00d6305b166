"""Probe copies of quantized layers run beside the originals, in one pass of ONNX Runtime.

* :func:`local_errors`: each layer's output error when only its own inputs and weights are
  quantized, on FP32 activations (no extra model per layer): the fallback's ranking proxy.
* :func:`measure_bias`: bias correction. In the Q/DQ model, beside every quantized Conv/Gemm,
  a copy with FP32 weights reads the same (unquantized) input; the per-channel mean of
  ``copy - original`` over calibration images is the layer's own output mean shift (weight
  rounding and input clipping/rounding), measured where the layer sits in the quantized model;
  a second pass adds what is left against the FP32 model's means.
  :func:`with_bias` adds it to the layer's bias: an ONNX rewrite every backend receives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from edgeres.quantize.collect import channel_means, iter_tensors
from edgeres.quantize.qdq import QuantPlan, activation_qparams, insert_qdq, plan_quantization, quantize_weight

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgeres.quantize.options import QuantOptions

BIAS_OPS = ("Conv", "Gemm")
SIGNIFICANCE = 2.0  # a channel's shift is corrected when its mean exceeds this many standard errors
# Half of the remaining shift: every layer's remainder also holds what the upstream layers' remainders
# cause, so correcting all of them in full at once over-corrects (measured: half is as good or better).
RESIDUAL_DAMPING = 0.5


class _Fresh:
    def __init__(self) -> None:
        self.i = 0

    def __call__(self, base: str) -> str:
        self.i += 1
        return f"{base}__probe{self.i}"


def _copy(model) -> "onnx.ModelProto":
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _add_probe(g, node, inputs: list[str], fresh: _Fresh) -> str:
    """Append a copy of ``node`` reading ``inputs``; return its output name."""
    from onnx import helper

    probe = helper.make_node(node.op_type, inputs, [fresh(node.output[0])], name=fresh(node.name),
                             domain=node.domain)
    probe.attribute.extend(node.attribute)
    g.node.append(probe)
    return probe.output[0]


def _channel_errors(pairs: Mapping[str, tuple[str, str]], model, images: Iterable[np.ndarray]
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per node, summed over images: squared error and squared reference per channel (axis 1)."""
    names = [t for pair in pairs.values() for t in pair]
    acc: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for _, _, values in iter_tensors(model, names, list(images)):
        for name, (a, b) in pairs.items():
            va = values[a].astype(np.float64)
            axes = tuple(d for d in range(va.ndim) if d != 1) if va.ndim >= 2 else None
            first, second = np.sum(np.square(values[b] - va), axis=axes), np.sum(np.square(va), axis=axes)
            old = acc.get(name)
            acc[name] = (first, second) if old is None else (old[0] + first, old[1] + second)
    return acc


def local_errors(cal, inputs: Iterable[np.ndarray], nodes: Sequence[str]) -> dict[str, float]:
    """Per node: mean over output channels of ``||y_q - y|| / ||y||``, ``y_q`` from quantized inputs and weights.

    ``cal`` is a :class:`~edgeres.quantize.calibrated.Calibrated`. One pass over FP32
    activations: a copy of each node reading Q/DQ'd inputs and INT8 weights is added beside
    it, so upstream error does not pile up (a proxy for the node's own harm; the cpu form's
    INT32 bias is left float, a negligible error).
    """
    from onnx import helper, numpy_helper

    opts = cal.options
    model = _copy(cal.model)
    g, plan = model.graph, cal.plan()
    inits = {t.name: t for t in g.initializer}
    node_by_name = {n.name: n for n in g.node}
    fresh = _Fresh()
    dq_of: dict[str, str] = {}
    pairs: dict[str, tuple[str, str]] = {}
    zp_dtype = np.int8 if opts.form == "tensorrt" else np.uint8
    for name in nodes:
        node = node_by_name[name]
        new_inputs = list(node.input)
        for (owner, idx), t in plan.activations.items():
            if owner != name:
                continue
            if t not in dq_of:
                scale, zp = activation_qparams(*cal.ranges[plan.tied.get(t, t)], opts.form)
                s, z, q, dq = fresh(f"{t}_s"), fresh(f"{t}_z"), fresh(f"{t}_q"), fresh(f"{t}_dq")
                g.initializer.extend([numpy_helper.from_array(np.asarray(scale, np.float32), s),
                                      numpy_helper.from_array(np.asarray(zp, zp_dtype), z)])
                g.node.extend([helper.make_node("QuantizeLinear", [t, s, z], [q], name=fresh("Q")),
                               helper.make_node("DequantizeLinear", [q, s, z], [dq], name=fresh("DQ"))])
                dq_of[t] = dq
            new_inputs[idx] = dq_of[t]
        for site in (w for w in plan.weights if w.node == name):
            qw, scale = quantize_weight(numpy_helper.to_array(inits[node.input[site.index]]), site.axis,
                                        opts.per_channel, opts.reduce_range)
            shape = [-1 if opts.per_channel and d == site.axis else 1 for d in range(qw.ndim)]
            w = (qw.astype(np.float32) * scale.reshape(shape)).astype(np.float32)
            w_name = fresh(f"{node.input[site.index]}_w8")
            g.initializer.append(numpy_helper.from_array(w, w_name))
            new_inputs[site.index] = w_name
        pairs[name] = (node.output[0], _add_probe(g, node, new_inputs, fresh))
    acc = _channel_errors(pairs, model, inputs)
    return {n: channel_error(*acc[n]) for n in pairs}


def channel_error(err: np.ndarray, ref: np.ndarray) -> float:
    """Mean over channels of ``sqrt(err / ref)`` (channels that are all zero in FP32 skipped).

    Per channel, so a channel 1000x larger than the others cannot hide the others'
    loss (an outlier channel crushing its neighbours' quantization is the classic case).
    """
    err, ref = np.atleast_1d(err), np.atleast_1d(ref)
    live = ref > 0
    if not live.any():
        return float(err.sum() > 0)
    return float(np.mean(np.sqrt(err[live] / ref[live])))


def bias_sites(model, plan: QuantPlan) -> list[str]:
    """Quantized Conv/Gemm nodes whose output mean bias correction can adjust."""
    kinds = {n.name: n.op_type for n in model.graph.node}
    return [w.node for w in plan.weights if kinds[w.node] in BIAS_OPS and (w.node, 0) in plan.activations]


def _image_means(model, outputs: Sequence[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """Per output tensor: (images, channels) means over every axis but 0 and 1."""
    acc: dict[str, list[np.ndarray]] = {o: [] for o in outputs}
    for _, _, values in iter_tensors(model, list(dict.fromkeys(outputs)), [images]):
        for o in outputs:
            acc[o].append(channel_means(values[o]))
    return {o: np.concatenate(acc[o]) for o in outputs}


def significant_shift(diff: np.ndarray, z: float = SIGNIFICANCE) -> np.ndarray:
    """Mean over images of per-image, per-channel differences (images, channels); 0 where the mean is
    within ``z`` standard errors of 0 (noise of the estimate, not a shift: correcting it adds error)."""
    n = diff.shape[0]
    mean = diff.mean(axis=0)
    se = diff.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.full_like(mean, np.inf)
    return np.where(np.abs(mean) > z * se, mean, 0.0)


def reference_means(model, options: "QuantOptions", images: np.ndarray) -> dict[str, np.ndarray]:
    """The FP32 model's per-image, per-channel output means at every bias site, on ``images``: what
    :func:`measure_bias` compares against (measure it once when several candidates are corrected)."""
    sites = bias_sites(model, plan_quantization(model, options.form))
    outputs = {n.name: n.output[0] for n in model.graph.node}
    return _image_means(model, [outputs[s] for s in sites], images)


def measure_bias(model, ranges: Mapping[str, tuple[float, float]], options: "QuantOptions",
                 images: np.ndarray, reference: Mapping[str, np.ndarray] | None = None,
                 weight_cache: dict | None = None) -> dict[str, np.ndarray]:
    """Per quantized Conv/Gemm of ``model`` (the prepared FP32 graph): the bias correction, on ``images``.

    Two passes. (1) Each layer's own output mean shift, measured where it sits in the Q/DQ model:
    a copy with FP32 weights reads the same unquantized input (weight rounding, input clipping and
    rounding; no upstream error, so nothing is corrected twice). (2) With those corrections in, half
    of the remaining per-channel mean difference between the Q/DQ model and the FP32 model at each
    layer's output (what upstream noise does through the nonlinearities) is added too. Only shifts
    beyond :data:`SIGNIFICANCE` standard errors (per-image means) are corrected. ``reference``: the FP32
    means of :func:`reference_means` on the same ``images``, when already measured; ``weight_cache``: as
    for :func:`~edgeres.quantize.qdq.insert_qdq` (``model``'s weights quantized once).
    """
    from onnx import numpy_helper

    plan = plan_quantization(model, options.form)
    sites = bias_sites(model, plan)
    qmodel = insert_qdq(model, plan, ranges, per_channel=options.per_channel, reduce_range=options.reduce_range,
                        weight_cache=weight_cache)
    g = qmodel.graph
    fp_nodes = {n.name: n for n in model.graph.node}
    fp_inits = {t.name: t for t in model.graph.initializer}
    q_nodes = {n.name: n for n in g.node}
    fresh = _Fresh()
    pairs: dict[str, tuple[str, str]] = {}
    for name in sites:
        fp = fp_nodes[name]
        inputs = [plan.activations[(name, 0)]]
        for w in fp.input[1:]:
            if not w:
                inputs.append("")
                continue
            copy = numpy_helper.from_array(numpy_helper.to_array(fp_inits[w]), fresh(w))
            g.initializer.append(copy)
            inputs.append(copy.name)
        pairs[name] = (q_nodes[name].output[0], _add_probe(g, fp, inputs, fresh))
    means = _image_means(qmodel, [t for pair in pairs.values() for t in pair], images)
    local = {n: significant_shift(means[b] - means[a]) for n, (a, b) in pairs.items()}
    corrected = with_bias(model, {n: v.astype(np.float32) for n, v in local.items()})
    q2 = insert_qdq(corrected, plan_quantization(corrected, options.form), ranges, per_channel=options.per_channel,
                    reduce_range=options.reduce_range, weight_cache=weight_cache)
    outputs = {n: fp_nodes[n].output[0] for n in sites}
    ref = reference if reference is not None else reference_means(model, options, images)
    got = _image_means(q2, list(outputs.values()), images)
    return {n: (local[n] + RESIDUAL_DAMPING * significant_shift(ref[o] - got[o])).astype(np.float32)
            for n, o in outputs.items()}


def with_bias(model, deltas: Mapping[str, np.ndarray], skip: Iterable[str] = ()) -> "onnx.ModelProto":
    """A copy of ``model`` with ``deltas[node]`` added to each node's bias (nodes in ``skip`` untouched)."""
    from onnx import numpy_helper

    out = _copy(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    skip = set(skip)
    for node in g.node:
        delta = deltas.get(node.name)
        if delta is None or node.name in skip or not np.any(delta):
            continue
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if has_bias and node.input[2] not in inits:
            continue
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32) if has_bias else np.zeros_like(delta)
        if bias.shape != np.shape(delta):
            continue
        name = f"{node.name}.bias_corrected"
        g.initializer.append(numpy_helper.from_array((bias + delta).astype(np.float32), name))
        if has_bias:
            node.input[2] = name
        else:
            node.input.append(name)
    if deltas:
        from edgeres.quantize.graph import drop_unused_initializers

        drop_unused_initializers(out)
    return out
