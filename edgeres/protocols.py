"""Evaluation protocols of the ResNet paper for ``edgeres validate`` (numpy + Pillow; no torch).

``1-crop`` (default)
    the model's own preprocessing: resize, centre crop (what calibration and the runtime use).
``10-crop``
    resize the shorter side as the preprocessing does, then the four corner crops and the centre
    crop of the input size, and their horizontal flips; the ten softmax outputs are averaged
    (He et al. 2015, sec. 3.4 / Table 3). Works for any bundle: it changes the images, not the
    model. On images already at the input size the five crops coincide (10-crop = 1 crop + flip).
``multi-scale``
    fully-convolutional testing: the whole image resized so its shorter side is each of the
    scales, softmax averaged over the scales (sec. 3.4 / Table 4). Only for artifacts compiled
    with a dynamic spatial size; any other is refused with the reason.

A protocol runner returns the averaged *probabilities*, so top-1/top-5, agreement and the
report's cosine are computed on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from edgeres.errors import UsageError
from edgeres.preprocessing import Preprocessing

CROPS = (1, 10)


@dataclass(frozen=True)
class Protocol:
    crops: int = 1
    scales: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.crops not in CROPS:
            raise UsageError(f"--crops must be 1 or 10, got {self.crops}")
        if self.scales and self.crops != 1:
            raise UsageError("--scales and --crops 10 are two protocols; choose one")
        if any(int(s) < 8 for s in self.scales):
            raise UsageError(f"--scales must be image sizes in pixels (>= 8), got {list(self.scales)}")

    @property
    def name(self) -> str:
        if self.scales:
            return f"multi-scale ({', '.join(map(str, self.scales))}; shorter side, whole image, softmax averaged)"
        if self.crops == 10:
            return "10-crop (4 corners + centre and their horizontal flips, softmax averaged)"
        return "1-crop (the model's preprocessing: resize, centre crop)"

    @property
    def plain(self) -> bool:
        return self.crops == 1 and not self.scales


def parse_scales(text: str | None) -> tuple[int, ...]:
    """``"224,256,384"`` -> (224, 256, 384); UsageError for anything else."""
    if not text:
        return ()
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UsageError(f"--scales takes comma-separated sizes such as 224,256,384; got {text!r}") from None


def _hwc(img: Any) -> np.ndarray:
    from edgeres.data.transforms import _as_hwc_uint8, to_rgb

    if isinstance(img, np.ndarray):
        return _as_hwc_uint8(img)
    return np.asarray(to_rgb(img), dtype=np.uint8)


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of HWC uint8 to (H, W) (Pillow, as the preprocessing)."""
    from PIL import Image

    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    return np.asarray(Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)


def ten_crop(img: Any, pre: Preprocessing) -> np.ndarray:
    """(10, 3, H, W) float32: corners TL, TR, BL, BR, centre, then the same five flipped left-right."""
    from PIL import Image

    from edgeres.data.transforms import normalize, resize_shorter

    arr = _hwc(img)
    if pre.resize is not None:
        arr = np.asarray(resize_shorter(Image.fromarray(arr), pre.resize), dtype=np.uint8)
    ch, cw = pre.input_size
    h, w = arr.shape[:2]
    if h < ch or w < cw:
        arr, (h, w) = _resize(arr, (ch, cw)), (ch, cw)
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    corners = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), (top, left)]
    crops = [arr[y: y + ch, x: x + cw] for y, x in corners]
    crops += [c[:, ::-1] for c in crops]
    return normalize(np.stack(crops), pre)


def scaled(img: Any, pre: Preprocessing, scale: int) -> np.ndarray:
    """(1, 3, H', W'): the whole image with its shorter side resized to ``scale``."""
    from PIL import Image

    from edgeres.data.transforms import normalize, resize_shorter

    arr = np.asarray(resize_shorter(Image.fromarray(_hwc(img)), int(scale)), dtype=np.uint8)
    return normalize(arr[None], pre)


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def views(ds: Any, protocol: Protocol, batch: int = 16) -> Iterator[tuple[list[np.ndarray], np.ndarray]]:
    """Per group of ``batch`` images: (their view stacks, labels). 10-crop: one (10, 3, H, W) stack per
    image; multi-scale: one (1, 3, H', W') array per scale per image."""
    for start in range(0, len(ds), batch):
        idx = range(start, min(start + batch, len(ds)))
        stacks = []
        for i in idx:
            img = ds.raw(i)
            if protocol.scales:
                stacks.append([scaled(img, ds.preprocessing, s) for s in protocol.scales])
            else:
                stacks.append([ten_crop(img, ds.preprocessing)])
        yield stacks, np.asarray(ds.labels[start: start + len(idx)], dtype=np.int64)


def averaged(runner: Callable[[np.ndarray], np.ndarray]) -> Callable[[Sequence[Sequence[np.ndarray]]], np.ndarray]:
    """A runner over view stacks: the softmax of every view, averaged per image -> (N, classes)."""
    def run(stacks: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
        out = []
        for arrays in stacks:
            probs = np.concatenate([softmax(runner(a)) for a in arrays])
            out.append(probs.mean(axis=0))
        return np.stack(out).astype(np.float32)

    return run


def check_dynamic(input_shape: Sequence[Any], what: str) -> None:
    """UsageError unless ``input_shape``'s height and width are dynamic (non-positive, None or a name)."""
    dims = list(input_shape)[2:4]
    if len(dims) == 2 and all(not isinstance(d, int) or d <= 0 for d in dims):
        return
    shown = "x".join(str(d) for d in dims) or "?"
    raise UsageError(f"--scales needs an artifact compiled with a dynamic spatial size, but {what} takes a fixed "
                     f"{shown} input (shape {list(input_shape)}); multi-scale testing feeds whole images of "
                     "several sizes. Use --crops 10, or compile an ONNX whose input height/width are symbolic for "
                     "a backend that keeps them (onnxruntime)")


def validate_with_protocol(fp32_onnx: Path, deploy_onnx: Path, artifact: Any, reference: Any, runner: Any,
                           runner_name: str, ds: Any, max_drop: float | None, ctx: dict[str, Any],
                           protocol: Protocol) -> Any:
    """The paper's evaluation protocols: softmax averaged over crops (and scales)."""
    from edgeres.evaluate import compare
    from edgeres.onnx_io import graph_io, load_model

    if protocol.scales:
        shape = artifact.input_shape if artifact is not None else graph_io(load_model(deploy_onnx)).inputs[0].dims
        check_dynamic(shape, f"the {runner_name} artifact")
        check_dynamic(graph_io(load_model(fp32_onnx)).inputs[0].dims, f"the FP32 model {fp32_onnx.name}")
    ctx["protocol"] = protocol.name
    return compare(averaged(reference), averaged(runner), views(ds, protocol), max_drop=max_drop, context=ctx)
