"""ONNX -> Relax: the model imported with a static input shape, and TVM error messages in one line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeres.errors import CompileError, UsageError


@dataclass(frozen=True)
class ImportedModel:
    """An ONNX model imported into Relax with a static input shape."""

    mod: Any  # tvm.IRModule
    input_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]  # of the first output (the logits of a classifier)
    num_qdq: int
    output_shapes: tuple[tuple[int, ...], ...] = ()  # of every output (a feature extractor has several)


def first_line(e: BaseException) -> str:
    """The line of a TVM error that says what went wrong (TVM errors end with it, after a traceback)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    msg = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
    return (msg or type(e).__name__)[:300]


def import_onnx(onnx_path: str | os.PathLike, batch_size: int = 1, proto: Any = None) -> ImportedModel:
    """Import ``onnx_path`` (or its already loaded ``proto``) into Relax with batch ``batch_size``.

    The ONNX batch dimension may be symbolic or equal to ``batch_size``.
    """
    from tvm.relax.frontend.onnx import from_onnx

    from edgeres.onnx_io import image_input, load_model, num_qdq, op_counts

    path = Path(onnx_path)
    proto = proto if proto is not None else load_model(path)
    inp = image_input(proto, path.name, static_chw=True)
    batch = inp.static_dims[0]
    if batch not in (None, batch_size):
        raise UsageError(f"{path.name} has a fixed batch of {batch} but the target compiles batch {batch_size}; "
                         "export the model with a dynamic batch (edgeres export does)")
    static = (batch_size, *[int(d) for d in inp.dims[1:]])
    try:
        mod = from_onnx(proto, shape_dict={inp.name: list(static)})
    except Exception as e:  # noqa: BLE001 - the frontend raises many types
        raise CompileError(f"TVM cannot import {path.name}: {first_line(e)}; check that the model uses standard "
                           "ONNX ops (opset <= 20) or compile it with the onnxruntime backend") from e
    shapes = _output_shapes(mod, proto)
    return ImportedModel(mod, inp.name, static, shapes[0], num_qdq(op_counts(proto)), shapes)


def _output_shapes(mod: Any, proto: Any) -> tuple[tuple[int, ...], ...]:
    try:
        ret = mod["main"].ret_ty
        fields = getattr(ret, "fields", None)  # a tuple of outputs
        return tuple(tuple(int(v) for v in r.shape.values) for r in (fields if fields is not None else [ret]))
    except Exception:  # noqa: BLE001 - another TVM version's spelling
        return tuple(tuple(int(d.dim_value) for d in o.type.tensor_type.shape.dim) for o in proto.graph.output)
