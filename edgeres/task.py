"""What a model computes: ``classify`` (one ``(N, classes)`` logits output) or ``features``
(a backbone's stage outputs for a detector, e.g. Faster R-CNN / FPN: ``c2..c5``).

The task travels like the preprocessing: in the ONNX file's metadata (key
:data:`ONNX_TASK_KEY`, JSON) and in the bundle manifest (``"task"``). A file or bundle
without a record is a classifier.

Feature names follow the detection literature (He et al. 2015, §7; FPN): ``c2..c5`` are
the outputs of ``layer1..layer4`` of an ImageNet ResNet, at strides 4/8/16/32. A CIFAR
ResNet has three stages; edgeres names them ``c2..c4`` (``layer1..layer3``), at strides
1/2/4 of its 32x32 input, and records the strides it measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from edgeres.errors import InputError, UsageError

CLASSIFY = "classify"
FEATURES = "features"
TASKS = (CLASSIFY, FEATURES)
ONNX_TASK_KEY = "edgeres.task"
FEATURE_NAMES = ("c2", "c3", "c4", "c5")  # stage i+1 (layer{i+1}) of the backbone


@dataclass(frozen=True)
class FeatureOutput:
    """One output of a feature extractor: ONNX output name, backbone stage, stride, channels."""

    name: str
    stage: str | None = None  # e.g. "layer1"; None for an ONNX file edgeres did not export
    stride: int | None = None  # input size / feature-map size; None when the shape is not static
    channels: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "stage": self.stage, "stride": self.stride, "channels": self.channels}


@dataclass(frozen=True)
class Task:
    """``kind`` is ``classify`` or ``features``; ``outputs`` lists a feature extractor's outputs in order."""

    kind: str = CLASSIFY
    outputs: tuple[FeatureOutput, ...] = field(default_factory=tuple)

    @property
    def is_features(self) -> bool:
        return self.kind == FEATURES

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "outputs": [o.to_dict() for o in self.outputs]}

    @classmethod
    def from_dict(cls, d: Any) -> "Task":
        """From a manifest/metadata record: a dict, a bare task name, or None (a classifier)."""
        if d is None:
            return cls()
        if isinstance(d, str):
            return cls(check_task(d))
        try:
            outs = tuple(FeatureOutput(str(o["name"]), o.get("stage"), _opt_int(o.get("stride")),
                                       _opt_int(o.get("channels"))) for o in d.get("outputs", ()))
            return cls(check_task(str(d.get("kind", CLASSIFY))), outs)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise InputError(f"malformed task record ({e!r}); re-export the model with edgeres") from e

    def describe(self) -> str:
        """One line: ``features c2 (layer1, stride 4, 64 ch), ...`` or ``classify``."""
        if not self.is_features:
            return CLASSIFY
        parts = []
        for o in self.outputs:
            bits = [b for b in (o.stage, f"stride {o.stride}" if o.stride else None,
                                f"{o.channels} ch" if o.channels else None) if b]
            parts.append(f"{o.name} ({', '.join(bits)})" if bits else o.name)
        return f"{FEATURES}: {', '.join(parts)}"


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def check_task(task: str | None) -> str:
    """``task`` if known (None means classify); UsageError naming the choices otherwise."""
    if task is None:
        return CLASSIFY
    if task not in TASKS:
        raise UsageError(f"unknown --task {task!r}; choose {' or '.join(TASKS)}")
    return task


def parse_feature_names(spec: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The requested feature names (``"c2,c3"`` or a list) in backbone order; all of ``available`` if None."""
    if spec is None:
        return list(available)
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise UsageError(f"--features is empty; pass some of {','.join(available)}")
    unknown = [s for s in items if s not in available]
    if unknown:
        extra = (f"; this backbone has {len(available)} stages ({','.join(available)})"
                 if any(u in FEATURE_NAMES for u in unknown) else "")
        raise UsageError(f"unknown feature output(s) {', '.join(unknown)}; choose from {','.join(available)}{extra}")
    if len(set(items)) != len(items):
        raise UsageError(f"--features {','.join(items)} names an output twice")
    return [n for n in available if n in items]


def read_onnx_task(model: Any) -> Task | None:
    """The task stored in an ``onnx.ModelProto``'s metadata, or None (no record: a classifier)."""
    for prop in model.metadata_props:
        if prop.key == ONNX_TASK_KEY:
            try:
                return Task.from_dict(json.loads(prop.value))
            except json.JSONDecodeError as e:
                raise InputError(f"malformed {ONNX_TASK_KEY} metadata ({e}); re-export the model") from e
    return None


def write_onnx_task(model: Any, task: Task) -> None:
    """Store ``task`` in an ``onnx.ModelProto``'s metadata (replacing an older record)."""
    for prop in list(model.metadata_props):
        if prop.key == ONNX_TASK_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = ONNX_TASK_KEY
    entry.value = json.dumps(task.to_dict())


def features_from_graph(model: Any, label: str) -> Task:
    """A features task for an ONNX file edgeres did not export: every graph output, strides from static shapes."""
    from edgeres.onnx_io import graph_io

    io = graph_io(model)
    if not io.outputs:
        raise InputError(f"{label} has no outputs")
    h = io.inputs[0].dims[2] if io.inputs and len(io.inputs[0].dims) == 4 else None
    outs = []
    for o in io.outputs:
        stride = channels = None
        if len(o.dims) == 4:
            fh = o.dims[2]
            if isinstance(h, int) and isinstance(fh, int) and fh > 0 and h % fh == 0:
                stride = h // fh
            channels = o.dims[1] if isinstance(o.dims[1], int) else None
        outs.append(FeatureOutput(o.name, None, stride, channels))
    return Task(FEATURES, tuple(outs))


__all__ = ["CLASSIFY", "FEATURES", "FEATURE_NAMES", "ONNX_TASK_KEY", "TASKS", "FeatureOutput", "Task",
           "check_task", "features_from_graph", "parse_feature_names", "read_onnx_task", "write_onnx_task"]
