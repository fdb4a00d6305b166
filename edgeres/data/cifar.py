"""CIFAR-10 / CIFAR-100 "python version" batches, unpickled safely.

CIFAR-10 (``cifar-10-batches-py/``): ``data_batch_1`` .. ``data_batch_5``, ``test_batch``,
``batches.meta`` (``label_names``). CIFAR-100 (``cifar-100-python/``): ``train``,
``test``, ``meta`` (``fine_label_names``). Each batch is a Python-2 pickle of a dict
with ``data`` (N, 3072) uint8 (1024 red, 1024 green, 1024 blue values, row-major) and
``labels`` / ``fine_labels``.

Pickles can run arbitrary code, so they are read with an unpickler that only
resolves the few globals these files use (numpy array reconstruction and basic
builtins); anything else is refused.
"""

from __future__ import annotations

import builtins
import codecs
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeres.data.dataset import DataWarning
from edgeres.errors import InputError

CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR100_DIRNAME = "cifar-100-python"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
#: Used when ``batches.meta`` is missing (the published CIFAR-10 label order).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_REEXTRACT = "re-extract the official cifar python archive"


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles from Python 3 store bytes
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("builtins", "__builtin__"):
        for name in ("dict", "list", "tuple", "str", "bytes", "int", "float", "bool"):
            allowed[(module, name)] = getattr(builtins, name)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals; everything else raises ``pickle.UnpicklingError``."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def safe_unpickle(path: str | os.PathLike) -> Any:
    """Unpickle a CIFAR batch (``encoding="bytes"``) allowing only numpy arrays and builtins."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        if str(e).startswith("forbidden global"):
            raise InputError(
                f"refusing to load {path}: it references {str(e).split()[-1]}, which CIFAR batches never do "
                f"(the file may be malicious); {_REEXTRACT}"
            ) from e
        raise InputError(f"cannot read CIFAR batch {path}: {e}; {_REEXTRACT}") from e
    except OSError as e:
        raise InputError(f"cannot read CIFAR batch {path}: {e.strerror or e}; {_REEXTRACT}") from e
    except Exception as e:  # truncated / corrupt pickles raise many types
        raise InputError(f"cannot read CIFAR batch {path}: {type(e).__name__}: {e}; {_REEXTRACT}") from e


def _str_keys(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InputError(f"{path} is not a CIFAR batch (expected a dict, got {type(obj).__name__}); {_REEXTRACT}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


@dataclass(frozen=True)
class CifarDir:
    """A located CIFAR directory and which variant it is (10 or 100)."""

    path: Path
    variant: int


def find_cifar(root: str | os.PathLike) -> CifarDir | None:
    """Detect a CIFAR-10/100 python directory at ``root`` or as its child; None if it is not one."""
    root = Path(root)
    for d in (root, root / CIFAR10_DIRNAME, root / CIFAR100_DIRNAME):
        if not d.is_dir():
            continue
        if any((d / n).is_file() for n in (*CIFAR10_TRAIN, "test_batch", "batches.meta")):
            return CifarDir(d, 10)
        if (d / "meta").is_file() and ((d / "train").is_file() or (d / "test").is_file()):
            return CifarDir(d, 100)
    return None


def _batch_files(cifar: CifarDir, split: str) -> list[Path]:
    d = cifar.path
    if cifar.variant == 100:
        name = "test" if split == "val" else "train"
        if not (d / name).is_file():
            raise InputError(f"CIFAR-100 directory {d} has no '{name}' file; {_REEXTRACT}")
        return [d / name]
    if split == "val":
        if not (d / "test_batch").is_file():
            raise InputError(f"CIFAR-10 directory {d} has no test_batch (the val split); {_REEXTRACT}")
        return [d / "test_batch"]
    present = [d / n for n in CIFAR10_TRAIN if (d / n).is_file()]
    if not present:
        raise InputError(f"CIFAR-10 directory {d} has no data_batch_1..5 (the {split} split); {_REEXTRACT}")
    if len(present) < len(CIFAR10_TRAIN):
        warnings.warn(f"CIFAR-10 directory {d} has only {len(present)} of 5 training batches; using those",
                      DataWarning, stacklevel=3)
    return present


def _class_names(cifar: CifarDir) -> tuple[str, ...]:
    d = cifar.path
    meta_name, key = ("meta", "fine_label_names") if cifar.variant == 100 else ("batches.meta", "label_names")
    meta = d / meta_name
    if not meta.is_file():
        if cifar.variant == 10:
            return CIFAR10_CLASSES
        raise InputError(f"CIFAR-100 directory {d} has no 'meta' file (class names); {_REEXTRACT}")
    record = _str_keys(safe_unpickle(meta), meta)
    names = record.get(key)
    if not isinstance(names, (list, tuple)) or not names:
        raise InputError(f"{meta} has no '{key}' list; {_REEXTRACT}")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    record = _str_keys(safe_unpickle(path), path)
    data = record.get("data")
    labels = record.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise InputError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {got}; {_REEXTRACT}")
    if labels is None:
        raise InputError(f"{path} has no '{label_key}' entry; {_REEXTRACT}")
    try:
        labels_arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: '{label_key}' is not a list of integers; {_REEXTRACT}") from e
    if labels_arr.shape[0] != data.shape[0]:
        raise InputError(f"{path}: '{label_key}' must hold one label per image ({data.shape[0]}); {_REEXTRACT}")
    if labels_arr.size and (labels_arr.min() < 0 or labels_arr.max() >= num_classes):
        raise InputError(f"{path}: labels must be in 0..{num_classes - 1}; {_REEXTRACT}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels_arr


def load_cifar(cifar: CifarDir, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], list[Path]]:
    """Images (N, 32, 32, 3) uint8, labels (N,) int64, class names and the batch files read.

    ``train`` and ``calib`` read the training batches, ``val`` the test batch.
    """
    names = _class_names(cifar)
    label_key = "fine_labels" if cifar.variant == 100 else "labels"
    files = _batch_files(cifar, split)
    parts = [_read_batch(f, label_key, len(names)) for f in files]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    if images.shape[0] == 0:
        raise InputError(f"CIFAR batches in {cifar.path} hold no images; {_REEXTRACT}")
    meta = cifar.path / ("meta" if cifar.variant == 100 else "batches.meta")
    return images, labels, names, files + ([meta] if meta.is_file() else [])
