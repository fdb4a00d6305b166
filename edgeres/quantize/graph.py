"""Graph preparation before quantization: name nodes, inline constants, fold BatchNormalization."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgeres.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

MIN_OPSET = 13  # per-channel DequantizeLinear (axis attribute)


def prepare_model(model) -> "onnx.ModelProto":
    """A copy of ``model`` ready to quantize.

    Every node gets a name, constants become initializers (``Constant`` nodes, and
    ``Identity`` of an initializer, which torch's exporter emits for shared values),
    and Conv→BatchNormalization pairs are folded.
    """
    import onnx

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise InputError(
            f"the ONNX model uses opset {opset}; INT8 Q/DQ needs opset >= {MIN_OPSET}: "
            "re-export it (edgeres export uses 17)"
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    used = {n.name for n in out.graph.node if n.name}
    for i, node in enumerate(out.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    inline_constants(out)
    fold_batchnorm(out)
    return out


def inline_constants(model) -> None:
    """Turn ``Constant`` nodes into initializers and bypass ``Identity`` of an initializer (in place)."""
    from onnx import helper

    g = model.graph
    outputs = {o.name for o in g.output}
    inits = {t.name for t in g.initializer}
    alias: dict[str, str] = {}
    keep = []
    for node in g.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and "value" in attrs and node.output[0] not in outputs:
            t = helper.get_attribute_value(attrs["value"])
            t.name = node.output[0]
            g.initializer.append(t)
            inits.add(t.name)
            continue
        src = alias.get(node.input[0], node.input[0]) if node.input else ""
        if node.op_type == "Identity" and src in inits and node.output[0] not in outputs:
            alias[node.output[0]] = src
            continue
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
        keep.append(node)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)


def fold_batchnorm(model) -> int:
    """Fold each inference BatchNormalization that follows a Conv into the Conv's weights (in place).

    Returns the number of folded BNs. A BN that cannot be folded (its input is used
    elsewhere, or its parameters are not constant) stays as it is.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    graph_outputs = {o.name for o in g.output}
    folded = 0
    for bn in [n for n in g.node if n.op_type == "BatchNormalization"]:
        conv = producers.get(bn.input[0])
        attrs = {a.name: helper.get_attribute_value(a) for a in bn.attribute}
        if (
            conv is None
            or conv.op_type != "Conv"
            or consumers.get(bn.input[0], 0) != 1
            or bn.input[0] in graph_outputs
            or len(bn.output) != 1
            or attrs.get("training_mode", 0)
            or not all(x in inits for x in bn.input[1:5])
            or conv.input[1] not in inits
            or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits)
        ):
            continue
        scale, beta, mean, var = (numpy_helper.to_array(inits[x]).astype(np.float64) for x in bn.input[1:5])
        factor = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_bias else np.zeros(w.shape[0])
        new_w = (w * factor.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        new_b = ((b - mean) * factor + beta).astype(np.float32)
        w_name, b_name = f"{conv.name}.folded_weight", f"{conv.name}.folded_bias"
        g.initializer.extend([numpy_helper.from_array(new_w, w_name), numpy_helper.from_array(new_b, b_name)])
        conv.input[1] = w_name
        if has_bias:
            conv.input[2] = b_name
        else:
            conv.input.append(b_name)
        conv.output[0] = bn.output[0]
        g.node.remove(bn)
        folded += 1
    if folded:
        drop_unused_initializers(model)
    return folded


def drop_unused_initializers(model) -> None:
    g = model.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    if len(keep) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)
        dropped_inputs = [i for i in g.input if i.name not in used]
        for i in dropped_inputs:
            g.input.remove(i)
