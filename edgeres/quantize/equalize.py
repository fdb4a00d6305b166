"""Cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019) as an ONNX rewrite.

For two convolutions in a row, ``A -> [Relu] -> B`` (A's output read by nothing else),
output channel ``c`` of A can be divided by ``s_c > 0`` and input channel ``c`` of B
multiplied by ``s_c`` without changing the FP32 function (ReLU is positively homogeneous).
With ``s_c = sqrt(r1_c / r2_c)`` (``r1_c`` = max |A's weights of channel c|, ``r2_c`` = max |B's
weights reading channel c|) both weight ranges become ``sqrt(r1_c * r2_c)``: a channel that is
1000x the others stops crushing its neighbours' quantization levels, in the weights *and* in the
activation between A and B. In a ResNet every block's ``conv1 -> relu -> conv2`` is such a pair.

Applied to the prepared graph (BatchNormalization folded) before calibration, so the Q/DQ model,
its calibration and every backend see the equalized weights.
"""

from __future__ import annotations

import numpy as np

MIN_SCALE, MAX_SCALE = 1e-4, 1e4
ROUNDS = 2  # a second round settles chains A -> B -> C


def _pairs(model) -> list[tuple[object, object]]:
    """(A, B) conv pairs that can be equalized, in graph order."""
    from onnx import helper

    g = model.graph
    inits = {t.name for t in g.initializer}
    outputs = {o.name for o in g.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def plain_conv(n) -> bool:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        return (n.op_type == "Conv" and int(attrs.get("group", 1)) == 1 and len(n.input) > 1
                and n.input[1] in inits and (len(n.input) < 3 or not n.input[2] or n.input[2] in inits))

    def only(name: str):
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in outputs else None

    pairs = []
    for a in g.node:
        if not plain_conv(a):
            continue
        nxt = only(a.output[0])
        if nxt is not None and nxt.op_type == "Relu":
            nxt = only(nxt.output[0])
        if nxt is not None and plain_conv(nxt) and all(len(consumers[w]) == 1 for w in (*a.input[1:], nxt.input[1])
                                                          if w):
            pairs.append((a, nxt))  # weights and bias owned by these two nodes alone
    return pairs


def equalize(model) -> list[tuple[str, str]]:
    """Equalize every conv pair of ``model`` in place; returns the (A, B) node names equalized."""
    from onnx import numpy_helper

    g = model.graph
    done: list[tuple[str, str]] = []
    for _ in range(ROUNDS):
        inits = {t.name: t for t in g.initializer}
        for a, b in _pairs(model):
            wa = numpy_helper.to_array(inits[a.input[1]]).astype(np.float64)
            wb = numpy_helper.to_array(inits[b.input[1]]).astype(np.float64)
            if wb.shape[1] != wa.shape[0]:
                continue
            r1 = np.abs(wa).reshape(wa.shape[0], -1).max(axis=1)
            r2 = np.abs(wb).transpose(1, 0, 2, 3).reshape(wb.shape[1], -1).max(axis=1) if wb.ndim == 4 else None
            if r2 is None:
                continue
            live = (r1 > 0) & (r2 > 0)
            s = np.ones_like(r1)
            s[live] = np.clip(np.sqrt(r1[live] / r2[live]), MIN_SCALE, MAX_SCALE)
            if np.allclose(s, 1.0, rtol=1e-3):
                continue
            _set(inits, a.input[1], wa / s.reshape(-1, *([1] * (wa.ndim - 1))))
            if len(a.input) > 2 and a.input[2]:
                _set(inits, a.input[2], numpy_helper.to_array(inits[a.input[2]]).astype(np.float64) / s)
            _set(inits, b.input[1], wb * s.reshape(1, -1, *([1] * (wb.ndim - 2))))
            if (a.name, b.name) not in done:
                done.append((a.name, b.name))
    return done


def _set(inits: dict, name: str, value: np.ndarray) -> None:
    """Overwrite an initializer's values in place (each conv owns its folded weights and bias)."""
    from onnx import numpy_helper

    new = numpy_helper.from_array(value.astype(np.float32), name)
    inits[name].CopyFrom(new)
