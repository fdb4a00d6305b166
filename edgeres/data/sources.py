"""``open_dataset``: turn a data spec (``builtin``, a directory, a CIFAR directory, a ``.npz``) into an ImageDataset.

Split resolution for a directory ``root`` (see :func:`resolve_split`):

* ``train``: ``root/train``; ``val``: ``root/val``, ``root/validation``, ``root/test``;
  ``calib``: ``root/calib``, then ``root/train``. A ``root/<name>.npz`` counts too.
* A candidate directory counts as a split only if it contains subdirectories (class
  directories) -- so a *class* named ``train`` or ``test`` is not mistaken for one
  (``root/calib`` also counts when it holds images directly).
* No split directories at all: ``root`` itself is used for every split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeres.data import builtin as _builtin
from edgeres.data.cifar import find_cifar, load_cifar
from edgeres.data.dataset import ImageDataset, SourceInfo, take_balanced
from edgeres.data.folder import scan_folder
from edgeres.data.npz import load_npz
from edgeres.errors import InputError, UsageError
from edgeres.preprocessing import Preprocessing

SPLITS: tuple[str, ...] = ("train", "val", "calib")
#: Images per class of the built-in set when the spec is just ``builtin``.
BUILTIN_SIZES: dict[str, int] = {"train": 500, "val": 100, "calib": 50}
#: Seed of the built-in generator (fixed: the data do not change with the training seed).
BUILTIN_SEED = 0
SPLIT_DIRS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "validation", "test"),
    "calib": ("calib", "train"),
}
_ALL_SPLIT_NAMES = ("train", "val", "validation", "test", "calib")
_SPEC_HELP = "pass 'builtin', a directory of images (DIR/<class>/*.jpg), a CIFAR python directory or a .npz file"


def _has_subdir(d: Path) -> bool:
    try:
        return any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(d))
    except OSError:
        return False


def _split_candidate(root: Path, name: str) -> Path | None:
    d = root / name
    if d.is_dir() and (_has_subdir(d) or name == "calib"):
        return d
    f = root / f"{name}.npz"
    return f if f.is_file() else None


def resolve_split(root: str | os.PathLike, split: str) -> Path:
    """The directory (or ``.npz``) holding ``split`` under ``root``; ``root`` itself if it has no splits."""
    root = Path(root)
    for name in SPLIT_DIRS[split]:
        found = _split_candidate(root, name)
        if found is not None:
            return found
    present = [n for n in _ALL_SPLIT_NAMES if _split_candidate(root, n) is not None]
    if present:
        looked = ", ".join(f"{n}/" for n in SPLIT_DIRS[split])
        raise InputError(
            f"{root} has split directories ({', '.join(present)}) but none for '{split}' (looked for {looked}); "
            f"add one, or point at a directory without split subdirectories"
        )
    return root


def parse_builtin(spec: str, split: str) -> int | None:
    """Images per class for a ``builtin`` / ``builtin:N`` spec (N sets the train split); None if not builtin."""
    if spec != "builtin" and not spec.startswith("builtin:"):
        return None
    if spec == "builtin":
        return BUILTIN_SIZES[split]
    text = spec.split(":", 1)[1]
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"bad data spec {spec!r}; use 'builtin' or 'builtin:N' (N >= 1 training images per class)")
    return n if split == "train" else BUILTIN_SIZES[split]


def map_labels(
    labels: np.ndarray, data_names: Sequence[str], model_names: Sequence[str], source: str
) -> np.ndarray:
    """Re-index ``labels`` (indices into ``data_names``) to positions in ``model_names``, by name."""
    position = {}
    for k, name in enumerate(model_names):
        position.setdefault(str(name), k)
    table = np.empty(len(data_names), dtype=np.int64)
    for k, name in enumerate(data_names):
        if name not in position:
            shown = ", ".join(list(model_names)[:8]) + (", ..." if len(model_names) > 8 else "")
            raise InputError(
                f"data has class {name!r} the model was not trained on (model classes: {shown}); "
                f"remove it from {source} or use a model trained on it"
            )
        table[k] = position[name]
    out = labels.copy()
    mask = labels >= 0
    out[mask] = table[labels[mask]]
    return out


@dataclass(frozen=True)
class _Source:
    """What a data spec holds for one split, before labels are mapped to the model's classes."""

    images: np.ndarray | None  # decoded images (builtin, CIFAR, .npz), or None for files
    paths: Sequence[Path] | None  # image files (a folder), or None
    labels: np.ndarray
    class_names: Sequence[str]
    source: str
    info: SourceInfo
    labelled: bool = True


def _read_source(text: str, split: str, allow_unlabelled: bool) -> _Source:
    n_builtin = parse_builtin(text, split)
    if n_builtin is not None:
        images, labels = _builtin.generate_readonly(split, n_builtin, BUILTIN_SEED)
        params = {"split": split, "n_per_class": n_builtin, "seed": BUILTIN_SEED, "generator": _builtin.GENERATOR_VERSION}
        return _Source(images, None, labels, _builtin.BUILTIN_CLASSES, f"builtin:{split}",
                       SourceInfo("builtin", params=params))
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"data path {path} does not exist; {_SPEC_HELP}")
    cifar = find_cifar(path) if path.is_dir() else None
    if cifar is not None:
        images, labels, names, files = load_cifar(cifar, split)
        return _Source(images, None, labels, names, str(cifar.path),
                       SourceInfo(f"cifar{cifar.variant}", root=cifar.path, files=tuple(files), params={"split": split}))
    target = resolve_split(path, split) if path.is_dir() else path
    if target.is_file():
        if target.suffix.lower() != ".npz":
            raise InputError(f"{target} is a file, not a data set; {_SPEC_HELP}")
        images, maybe_labels, names = load_npz(target, allow_unlabelled=allow_unlabelled)
        labelled = maybe_labels is not None
        labels = maybe_labels if labelled else np.full(len(images), -1, dtype=np.int64)
        return _Source(images, None, labels, names, str(target), SourceInfo("npz", root=target.parent, files=(target,)),
                       labelled)
    listing = scan_folder(target, allow_unlabelled=allow_unlabelled)
    return _Source(None, listing.paths, listing.labels, listing.class_names, str(target),
                   SourceInfo("folder", root=target, params={"labelled": listing.labelled}), listing.labelled)


def open_dataset(
    spec: str | os.PathLike,
    split: str,
    pre: Preprocessing,
    *,
    class_names: Sequence[str] | None = None,
    augment: bool = False,
    limit: int | None = None,
    seed: int = 0,
    allow_unlabelled: bool = False,
) -> ImageDataset:
    """Open ``split`` ("train", "val" or "calib") of the data at ``spec``.

    ``spec``: ``"builtin"`` / ``"builtin:N"``, an ImageFolder directory (with or without
    split subdirectories), a CIFAR-10/100 python directory (or its parent), or a
    ``.npz`` file. ``class_names`` (the model's classes) fixes the label order: data
    classes are mapped to it by name and a class the model lacks is an error.
    ``limit`` keeps a deterministic class-balanced subset (seeded by ``seed``);
    ``seed`` also seeds augmentation. ``allow_unlabelled`` accepts a flat directory of
    images (labels -1), e.g. for calibration.
    """
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    raw = _read_source(os.fspath(spec), split, allow_unlabelled)
    labels, names = raw.labels, raw.class_names
    if class_names is not None and len(class_names) > 0:
        if raw.labelled:
            labels = map_labels(np.asarray(labels), names, class_names, raw.source)
        names = tuple(str(n) for n in class_names)
    ds = ImageDataset(images=raw.images, paths=raw.paths, labels=labels, class_names=names, preprocessing=pre,
                      source=raw.source, info=raw.info, labelled=raw.labelled, augment=augment, seed=seed)
    if len(ds) == 0:
        raise InputError(f"{raw.source} holds no images for split '{split}'; {_SPEC_HELP}")
    if limit is not None:
        ds = take_balanced(ds, limit, seed)
    return ds
