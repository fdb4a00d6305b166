"""Reading ONNX files: the one loader every stage uses, the graph's inputs/outputs, op counts.

Every error is one :class:`~edgeres.errors.InputError` line that names the file and says what
to do: a missing file, a file that is not ONNX, weights in an external-data file that is not
next to the model, a model the ONNX checker rejects, an input that is not an NCHW image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from edgeres.errors import InputError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:200] or type(e).__name__)


def load_model(path: str | os.PathLike, *, external_data: bool = True, check: bool = False) -> Any:
    """``onnx.ModelProto`` of ``path``; one-line InputError for a missing, corrupt or invalid file.

    ``external_data``: also load weights kept in external-data files (they must sit where the
    model says, relative to it). ``check``: run ``onnx.checker.check_model`` too.
    """
    return load_with_data_files(path, external_data=external_data, check=check)[0]


def load_with_data_files(path: str | os.PathLike, *, external_data: bool = True,
                         check: bool = False) -> tuple[Any, list[Path]]:
    """:func:`load_model`, and the external-data files the model's weights came from (sorted)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        what = "is a directory, not an ONNX file" if p.is_dir() else "does not exist"
        raise InputError(f"ONNX model {p} {what}; check the path")
    if p.stat().st_size == 0:
        raise InputError(f"ONNX model {p} is an empty file; re-export it (edgeres export)")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError and friends
        raise InputError(f"{p} is not a valid ONNX model ({_reason(e)}); re-export it (edgeres export)") from e
    if not model.graph.node and not model.graph.output:  # protobuf reads many non-ONNX files as empty messages
        raise InputError(f"{p} is not an ONNX model (it holds no graph); re-export it (edgeres export)")
    files = external_data_files(model, p)
    if external_data:
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise InputError(f"{p} keeps its weights in {missing[0].name}, which is not next to it; copy the "
                             "external-data file beside the model")
        try:
            onnx.load_external_data_for_model(model, str(p.parent))
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot read the external weights of {p} ({_reason(e)}); re-export it") from e
    if check:
        try:
            onnx.checker.check_model(model)
        except Exception as e:  # noqa: BLE001 - ValidationError
            raise InputError(f"{p} is not a valid ONNX model ({_reason(e)}); re-export it (edgeres export)") from e
    return model, files


def external_data_files(model: Any, path: str | os.PathLike) -> list[Path]:
    """The external-data files ``model`` (loaded from ``path``) refers to, sorted."""
    import onnx

    locations = {e.value for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                 for e in t.external_data if e.key == "location"}
    return sorted(Path(path).parent / loc for loc in locations)


def _dims(value_info: Any) -> list[int | str]:
    out: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        out.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
    return out


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, ONNX element type, dims (symbolic dims are strings)."""

    name: str
    elem_type: int
    dims: tuple[int | str, ...]

    @property
    def static_dims(self) -> tuple[int | None, ...]:
        return tuple(d if isinstance(d, int) else None for d in self.dims)


@dataclass(frozen=True)
class GraphIO:
    """The inputs (initializers excluded) and outputs of a model's main graph."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def graph_io(model: Any) -> GraphIO:
    """The model's graph inputs (not initializers) and outputs."""
    inits = {i.name for i in model.graph.initializer}

    def spec(v: Any) -> TensorSpec:
        return TensorSpec(v.name, int(v.type.tensor_type.elem_type), tuple(_dims(v)))

    return GraphIO(tuple(spec(v) for v in model.graph.input if v.name not in inits),
                   tuple(spec(v) for v in model.graph.output))


def load_classifier(path: str | os.PathLike) -> Any:
    """:func:`load_model` (checked) of a classifier: one image input and one logits output, else InputError."""
    model = load_model(path, check=True)
    io = graph_io(model)
    if len(io.inputs) != 1 or len(io.outputs) != 1:
        raise InputError(f"{path} must have one image input and one logits output; it has "
                         f"{len(io.inputs)} inputs and {len(io.outputs)} outputs")
    return model


def image_input(model: Any, label: str = "the model", *, static_chw: bool = False) -> TensorSpec:
    """The model's one NCHW image input; InputError naming ``label`` otherwise.

    ``static_chw``: C, H and W must be fixed numbers (the batch may be symbolic).
    """
    inputs = graph_io(model).inputs
    if len(inputs) != 1:
        raise InputError(f"{label} has {len(inputs)} graph inputs {[i.name for i in inputs]}; edgeres compiles "
                         "image classifiers with exactly one NCHW image input")
    inp = inputs[0]
    if len(inp.dims) != 4:
        raise InputError(f"{label} input {inp.name!r} has shape {list(inp.dims)}; edgeres needs an NCHW image "
                         "input (N, C, H, W)")
    if static_chw and any(not isinstance(d, int) for d in inp.dims[1:]):
        raise InputError(f"{label} input {inp.name!r} has symbolic dims {list(inp.dims[1:])} besides the batch; "
                         "export it with a fixed C, H, W")
    return inp


#: What a model computes: ``classify`` (one (N, classes) logits output) is the only task checked here;
#: other tasks (e.g. feature extractors) define their own output rules.
TASKS = ("classify",)


def _output_dims(model: Any) -> list[tuple[int | str, ...] | None]:
    """Dims of each graph output (None where the file gives no shape and inference cannot tell)."""
    outs = graph_io(model).outputs
    if all(o.dims for o in outs):
        return [o.dims for o in outs]
    try:
        import onnx

        inferred = graph_io(onnx.shape_inference.infer_shapes(model)).outputs
    except Exception:  # noqa: BLE001 - inference is best effort; the declared dims stay
        inferred = outs
    return [o.dims or i.dims or None for o, i in zip(outs, inferred)]


def check_outputs(model: Any, label: str = "the model", task: str = "classify") -> None:
    """Refuse a model whose outputs do not fit ``task``: a classifier has one (N, classes) output.

    Other tasks are checked by the code that handles them (nothing is checked here for them).
    """
    if task != "classify":
        return
    outs = graph_io(model).outputs
    if len(outs) != 1:
        raise InputError(f"{label} has {len(outs)} outputs {[o.name for o in outs]}; an image classifier has one "
                         "output, the (N, classes) logits — export the classifier, not a multi-output graph")
    dims = _output_dims(model)[0]
    if dims is not None and len(dims) != 2:
        raise InputError(f"{label} output {outs[0].name!r} has shape {list(dims)}, not (N, classes): it is not an "
                         "image classifier (a feature map or detection output?); edgeres compiles classifiers")


def op_counts(model: Any) -> dict[str, int]:
    """Node count per op type of the main graph."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def num_qdq(counts: Mapping[str, int]) -> int:
    """How many QuantizeLinear/DequantizeLinear nodes ``counts`` holds."""
    return sum(counts.get(op, 0) for op in QDQ_OPS)
