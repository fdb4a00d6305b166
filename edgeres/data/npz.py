"""Images in a NumPy ``.npz`` archive.

Keys: ``images`` — (N, H, W, 3) or (N, 3, H, W) uint8 (also (N, H, W) or (N, H, W, 1)
grayscale); ``labels`` — (N,) integers; optional ``class_names`` — (C,) strings.
Loaded with ``allow_pickle=False``: store names as a string array
(``np.array(names, dtype=str)``), not as Python objects.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from edgeres.errors import InputError

_FORMAT = "an .npz with 'images' (N,H,W,3 uint8), 'labels' (N,) and optionally 'class_names'"


def _to_nhwc(images: np.ndarray, path: Path) -> np.ndarray:
    if images.dtype != np.uint8:
        raise InputError(
            f"{path}: 'images' must be uint8 (0..255), got {images.dtype}; "
            "save np.clip(x, 0, 255).astype(np.uint8)"
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise InputError(f"{path}: 'images' must be (N, H, W, 3) or (N, 3, H, W), got shape {images.shape}")
    if images.shape[-1] in (1, 3):
        nhwc = images
    elif images.shape[1] in (1, 3):
        nhwc = images.transpose(0, 2, 3, 1)
    else:
        raise InputError(
            f"{path}: 'images' has no channel axis of size 3 (shape {images.shape}); "
            "expected (N, H, W, 3) or (N, 3, H, W)"
        )
    if nhwc.shape[-1] == 1:
        nhwc = np.repeat(nhwc, 3, axis=-1)
    if nhwc.shape[0] == 0 or nhwc.shape[1] == 0 or nhwc.shape[2] == 0:
        raise InputError(f"{path}: 'images' is empty (shape {images.shape}); store at least one image")
    return np.ascontiguousarray(nhwc)


def _class_names(arr: np.ndarray, path: Path) -> tuple[str, ...]:
    if arr.ndim != 1 or arr.dtype.kind not in "US" or arr.size == 0:
        raise InputError(
            f"{path}: 'class_names' must be a non-empty 1-D string array, got {arr.dtype} {arr.shape}; "
            "save np.array(names, dtype=str)"
        )
    names = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in arr.tolist())
    if len(set(names)) != len(names):
        raise InputError(f"{path}: 'class_names' has duplicates; every class needs a distinct name")
    return names


def _labels(arr: np.ndarray, n: int, path: Path) -> np.ndarray:
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise InputError(f"{path}: 'labels' must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"{path}: {arr.shape[0]} labels for {n} images; store one label per image")
    if n and arr.min() < 0:
        raise InputError(f"{path}: labels must be >= 0 (found {int(arr.min())})")
    return arr.astype(np.int64)


def load_npz(
    path: str | os.PathLike, *, allow_unlabelled: bool = False
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """Images (N, H, W, 3) uint8, labels (N,) int64 (None if absent and allowed) and class names.

    Without ``class_names`` in the file the names are ``"0" .. str(max label)``.
    """
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        raise InputError(f"cannot read {path}: not an .npz (zip) archive; expected {_FORMAT}")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "images" not in keys:
                raise InputError(f"{path} has no 'images' array (found: {', '.join(sorted(keys)) or 'nothing'}); expected {_FORMAT}")
            raw_images = z["images"]
            raw_labels = z["labels"] if "labels" in keys else None
            raw_names = z["class_names"] if "class_names" in keys else None
    except InputError:
        raise
    except FileNotFoundError as e:
        raise InputError(f"{path} does not exist; check the path") from e
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise InputError(f"{path} stores Python objects (pickled); save strings as np.array(names, dtype=str)") from e
        raise InputError(f"cannot read {path}: {e}; expected {_FORMAT}") from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"cannot read {path}: {e}; expected {_FORMAT}") from e

    images = _to_nhwc(raw_images, path)
    names = _class_names(raw_names, path) if raw_names is not None else None
    if raw_labels is None:
        if not allow_unlabelled:
            raise InputError(f"{path} has no 'labels' array; add one (N,) integer label per image")
        return images, None, names or ()
    labels = _labels(raw_labels, images.shape[0], path)
    if names is None:
        names = tuple(str(i) for i in range(int(labels.max()) + 1 if labels.size else 0))
    elif labels.size and labels.max() >= len(names):
        raise InputError(f"{path}: label {int(labels.max())} has no entry in 'class_names' ({len(names)} names)")
    return images, labels, names
