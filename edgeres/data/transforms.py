"""Image decoding, evaluation preprocessing and training augmentation (Pillow + numpy only).

:func:`preprocess` implements exactly the steps documented on
:class:`edgeres.preprocessing.Preprocessing` and is what calibration, validation
and the deployment runtime use, so an image becomes the same tensor everywhere.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from PIL import Image

from edgeres.errors import InputError
from edgeres.preprocessing import Preprocessing


def _to_8bit(img: Any) -> Any:
    """Scale 16-bit / 32-bit integer and float grayscale modes to 8 bits (Pillow would clip them)."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        out = (arr.astype(np.uint32) + 128) // 257
    elif img.mode == "I":
        arr = np.clip(arr, 0, 65535)
        out = (arr.astype(np.int64) + 128) // 257 if arr.max(initial=0) > 255 else arr
    else:  # "F": floats in [0, 1] are scaled, anything else clipped to 0..255
        arr = np.nan_to_num(arr.astype(np.float64))
        out = np.rint(arr * 255.0) if arr.max(initial=0.0) <= 1.0 else arr
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def to_rgb(img: Any) -> Any:
    """Convert a PIL image of any mode (L, LA, P, RGBA, CMYK, I;16, F, ...) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        img = _to_8bit(img)
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Any:
    """Decode ``path`` into an RGB ``PIL.Image``; an unreadable file raises :class:`InputError`."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError as e:
        raise InputError(f"image {path} does not exist; check the path") from e
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if reason.startswith("cannot identify image file"):
            reason = "not an image Pillow can read"
        raise InputError(f"cannot decode image {path}: {reason}; remove or replace it") from e


def _as_image(img: Any) -> Any:
    """Accept a PIL image or an HWC / HW uint8 array; return an RGB PIL image."""
    if isinstance(img, np.ndarray):
        return Image.fromarray(_as_hwc_uint8(img))
    if isinstance(img, Image.Image):
        return to_rgb(img)
    raise InputError(f"expected a PIL image or an HxWx3 uint8 array, got {type(img).__name__}")


def _as_hwc_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise InputError(f"image arrays must be uint8 (0..255), got {arr.dtype}; convert with np.clip(x, 0, 255).astype(np.uint8)")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(f"image arrays must be HxWx3 (or HxW), got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def normalize(hwc: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 ``(..., H, W, 3)`` -> float32 ``(..., 3, H, W)``: ``(x / 255 - mean) / std``."""
    x = hwc.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def resize_shorter(img: Any, size: int) -> Any:
    """Bilinear resize so the shorter side equals ``size`` (the longer side truncated, as torchvision)."""
    w, h = img.size
    if min(w, h) == size:
        return img
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    return img.resize((new_w, new_h), Image.Resampling.BILINEAR)


def center_crop(img: Any, size: tuple[int, int]) -> Any:
    """Center-crop to ``size`` (H, W); an image smaller than the crop is resized to ``size`` instead."""
    ch, cw = size
    w, h = img.size
    if (w, h) == (cw, ch):
        return img
    if w < cw or h < ch:
        return img.resize((cw, ch), Image.Resampling.BILINEAR)
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return img.crop((left, top, left + cw, top + ch))


def geometry(img: Any, pre: Preprocessing) -> np.ndarray:
    """The deterministic resize + center crop of ``pre``; returns HWC uint8 of ``pre.input_size``."""
    if isinstance(img, np.ndarray):
        arr = _as_hwc_uint8(img)
        if pre.resize is None and arr.shape[:2] == tuple(pre.input_size):
            return arr  # fast path: already the model's size
        img = Image.fromarray(arr)
    else:
        img = _as_image(img)
    if pre.resize is not None:
        img = resize_shorter(img, pre.resize)
    return np.asarray(center_crop(img, pre.input_size), dtype=np.uint8)


def preprocess(img: Any, pre: Preprocessing) -> np.ndarray:
    """Evaluation transform: PIL image or HWC uint8 array -> ``(3, H, W)`` float32 model input."""
    return normalize(geometry(img, pre), pre)


def _random_resized_box(
    w: int, h: int, rng: np.random.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """(left, top, width, height) of a random crop covering ``scale`` of the area with aspect in ``ratio``."""
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    # Fallback: the largest centred crop with the aspect clamped into ``ratio``.
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        cw, ch = int(round(h * ratio[1])), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def augment(
    img: Any,
    pre: Preprocessing,
    rng: np.random.Generator,
    *,
    pad: int = 4,
    flip: bool = True,
    scale: tuple[float, float] | None = None,
) -> np.ndarray:
    """Training transform; returns ``(3, H, W)`` float32 like :func:`preprocess`.

    * CIFAR-style (``pre.resize is None`` and ``scale`` not given): bring the image to
      ``input_size`` as :func:`preprocess` does, zero-pad ``pad`` pixels, take a random
      ``input_size`` crop, flip horizontally with probability 0.5.
    * Otherwise RandomResizedCrop: a random crop of ``scale`` (default (0.08, 1)) of the
      area with aspect ratio in (3/4, 4/3), resized (bilinear) to ``input_size``; then flip.
    """
    ch, cw = pre.input_size
    if pre.resize is None and scale is None:
        arr = geometry(img, pre)
        if pad > 0:
            arr = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)))
            top = int(rng.integers(0, 2 * pad + 1))
            left = int(rng.integers(0, 2 * pad + 1))
            arr = arr[top : top + ch, left : left + cw]
    else:
        pil_img = _as_image(img)
        w, h = pil_img.size
        left, top, bw, bh = _random_resized_box(w, h, rng, scale or (0.08, 1.0), (3 / 4, 4 / 3))
        box = (left, top, left + bw, top + bh)
        arr = np.asarray(pil_img.resize((cw, ch), Image.Resampling.BILINEAR, box=box), dtype=np.uint8)
    if flip and rng.random() < 0.5:
        arr = arr[:, ::-1]
    return normalize(arr, pre)
