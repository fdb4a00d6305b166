"""Preprocessing that travels with the model.

Input size, resize/crop, mean/std and class names are recorded in the checkpoint,
in the ONNX model's ``metadata_props`` (key :data:`ONNX_METADATA_KEY`, JSON) and in
the bundle manifest. Calibration, validation and the runtime read them from there;
nothing downstream guesses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

from edgeres.errors import InputError

ONNX_METADATA_KEY = "edgeres.preprocessing"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input tensor (NCHW float32, RGB).

    Steps, in order: decode to RGB; if ``resize`` is set, resize so the *shorter*
    side equals ``resize`` (bilinear); center-crop to ``input_size`` (H, W) (if the
    image is smaller than the crop it is resized to ``input_size`` directly);
    scale to [0, 1]; subtract ``mean`` and divide by ``std`` per channel.
    """

    input_size: tuple[int, int] = (224, 224)
    resize: int | None = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    class_names: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        h, w = self.input_size
        if h <= 0 or w <= 0:
            raise InputError(f"input size must be positive, got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise InputError("preprocessing mean/std need 3 values each and std > 0")

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) or None

    def with_classes(self, names: Sequence[str]) -> "Preprocessing":
        return replace(self, class_names=tuple(str(n) for n in names))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        try:
            return cls(
                input_size=(int(d["input_size"][0]), int(d["input_size"][1])),
                resize=None if d.get("resize") in (None, 0) else int(d["resize"]),
                mean=tuple(float(x) for x in d["mean"]),
                std=tuple(float(x) for x in d["std"]),
                class_names=tuple(str(x) for x in d.get("class_names", ())),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise InputError(f"malformed preprocessing record ({e!r}); re-export the model with edgeres") from e

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Preprocessing":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise InputError(f"malformed preprocessing record: {e}") from e


def imagenet_preprocessing(size: int = 224, class_names: Sequence[str] = ()) -> Preprocessing:
    """torchvision's ImageNet evaluation transform: resize 256 (scaled), center crop ``size``."""
    return Preprocessing(
        input_size=(size, size),
        resize=int(round(size * 256 / 224)),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=tuple(class_names),
    )


def cifar_preprocessing(size: int = 32, class_names: Sequence[str] = ()) -> Preprocessing:
    """CIFAR-style: no resize, (center crop to) ``size``, CIFAR-10 mean/std."""
    return Preprocessing(
        input_size=(size, size), resize=None, mean=CIFAR_MEAN, std=CIFAR_STD, class_names=tuple(class_names)
    )


def read_onnx_preprocessing(model: Any) -> Preprocessing | None:
    """Return the preprocessing stored in an ``onnx.ModelProto``'s metadata, or None."""
    for prop in model.metadata_props:
        if prop.key == ONNX_METADATA_KEY:
            return Preprocessing.from_json(prop.value)
    return None


def write_onnx_preprocessing(model: Any, pre: Preprocessing) -> None:
    """Store ``pre`` in an ``onnx.ModelProto``'s metadata (replacing an older record)."""
    for prop in list(model.metadata_props):
        if prop.key == ONNX_METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = ONNX_METADATA_KEY
    entry.value = pre.to_json()
