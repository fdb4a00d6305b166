"""A small residual CNN written with onnx.helper from numpy weights: no torch, no exporter."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _conv(name: str, cin: int, cout: int, rng: np.random.Generator, inits: list):
    from onnx import numpy_helper

    w = rng.normal(0.0, np.sqrt(2.0 / (cin * 9)), (cout, cin, 3, 3)).astype(np.float32)
    b = rng.normal(0.0, 0.05, cout).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
    return [f"{name}.w", f"{name}.b"]


def build_resnet_onnx(path: Path, *, hw: int = 32, width: int = 8, classes: int = 10, seed: int = 0) -> Path:
    """A small residual CNN (conv-relu, a residual block, pool, linear) with random weights, written
    with onnx.helper and edgeres' preprocessing metadata (CIFAR-style, the built-in data's classes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeres.data.builtin import BUILTIN_CLASSES
    from edgeres.preprocessing import cifar_preprocessing, write_onnx_preprocessing

    rng = np.random.default_rng(seed)
    inits: list = []
    nodes = [
        helper.make_node("Conv", ["input", *_conv("stem", 3, width, rng, inits)], ["s"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["s_r"]),
        helper.make_node("Conv", ["s_r", *_conv("c1", width, width, rng, inits)], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["c1_r"]),
        helper.make_node("Conv", ["c1_r", *_conv("c2", width, width, rng, inits)], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "s_r"], ["res"]),
        helper.make_node("Relu", ["res"], ["res_r"]),
        helper.make_node("GlobalAveragePool", ["res_r"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1),
    ]
    inits += [numpy_helper.from_array(rng.normal(0, 0.5, (classes, width)).astype(np.float32), "fc.w"),
              numpy_helper.from_array(np.zeros(classes, np.float32), "fc.b")]
    graph = helper.make_graph(
        nodes, "tiny_resnet", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, hw, hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeres-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    write_onnx_preprocessing(model, cifar_preprocessing(hw, BUILTIN_CLASSES[:classes]))
    onnx.save(model, str(path))
    return path
