"""The map-style :class:`ImageDataset` and helpers to batch, subset and split it.

An :class:`ImageDataset` holds either decoded images in memory (built-in data,
CIFAR batches, ``.npz``) or a list of image files (ImageFolder), one label per
item, and the model's :class:`~edgeres.preprocessing.Preprocessing`. Item ``i`` is
``(float32 array (3, H, W), int label)``, so it works as a PyTorch ``DataLoader``
dataset without this module importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from edgeres.errors import InputError, UsageError
from edgeres.preprocessing import Preprocessing

#: Bump when what the fingerprint covers changes.
FINGERPRINT_VERSION = 1


class DataWarning(UserWarning):
    """Something odd about a data set that is not fatal (an empty class directory, a missing batch)."""


@dataclass(frozen=True)
class SourceInfo:
    """Where a data set's items come from; what :meth:`ImageDataset.fingerprint` hashes.

    ``files`` are stat-ed (relative path, size, mtime) at fingerprint time; ``params``
    is any JSON-able description (e.g. the built-in generator's arguments).
    """

    kind: str
    root: Path | None = None
    files: tuple[Path, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)


class ImageDataset:
    """Labelled (or unlabelled, label -1) images plus the preprocessing that turns them into model input.

    Exactly one of ``images`` (N, H, W, 3) uint8 or ``paths`` (N image files) is given.
    With ``augment=True`` items go through :func:`~edgeres.data.transforms.augment`
    with a random generator derived from ``(seed, epoch, item)``, so results do not
    depend on which DataLoader worker loads an item; call :meth:`set_epoch` each epoch.
    """

    def __init__(
        self,
        *,
        labels: np.ndarray,
        class_names: Sequence[str],
        preprocessing: Preprocessing,
        source: str,
        info: SourceInfo,
        images: np.ndarray | None = None,
        paths: Sequence[Path] | None = None,
        labelled: bool = True,
        augment: bool = False,
        seed: int = 0,
        index: np.ndarray | None = None,
    ) -> None:
        if (images is None) == (paths is None):
            raise ValueError("ImageDataset needs exactly one of images= or paths=")
        n = len(images) if images is not None else len(paths or ())
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (n,):
            raise ValueError(f"labels shape {labels.shape} does not match {n} images")
        self._images = images
        self._paths = tuple(Path(p) for p in paths) if paths is not None else None
        self._labels = labels
        self._index = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.preprocessing = preprocessing
        self.source = source
        self.info = info
        self.labelled = bool(labelled)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0

    # -- map-style protocol ------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._index.shape[0])

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        from edgeres.data.transforms import augment, preprocess

        j = int(self._index[i])
        img = self.raw(i)
        if self.augment:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch & 0xFFFFFFFF, j])
            return augment(img, self.preprocessing, rng), int(self._labels[j])
        return preprocess(img, self.preprocessing), int(self._labels[j])

    def __repr__(self) -> str:
        kind = "labelled" if self.labelled else "unlabelled"
        return f"ImageDataset({self.source!r}, {len(self)} {kind} images, {len(self.class_names)} classes)"

    # -- accessors ---------------------------------------------------------------------
    def raw(self, i: int) -> Any:
        """Item ``i`` before preprocessing: an HWC uint8 array or a decoded RGB PIL image."""
        j = int(self._index[i])
        if self._images is not None:
            return self._images[j]
        from edgeres.data.transforms import load_image

        return load_image(self._paths[j])  # type: ignore[index]

    @property
    def labels(self) -> np.ndarray:
        """Labels of the items in order (int64; -1 when unlabelled)."""
        return self._labels[self._index]

    @property
    def paths(self) -> tuple[Path, ...] | None:
        """Image files of the items in order (None for in-memory data)."""
        if self._paths is None:
            return None
        return tuple(self._paths[j] for j in self._index)

    @property
    def in_memory(self) -> bool:
        return self._images is not None

    # -- derived datasets --------------------------------------------------------------
    def _copy(self, **changes: Any) -> "ImageDataset":
        new = object.__new__(ImageDataset)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageDataset":
        """A view of the items at ``indices`` (positions in this data set), in that order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise UsageError(f"subset indices out of range for a data set of {len(self)} images")
        return self._copy(_index=self._index[idx])

    def with_augment(self, augment: bool) -> "ImageDataset":
        """The same items with training augmentation switched on or off."""
        return self._copy(augment=bool(augment))

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw for ``epoch`` (call before each epoch)."""
        self.epoch = int(epoch)

    # -- identity ----------------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 identifying exactly which images (and preprocessing) this data set yields.

        Covers the source (for files: sorted relative paths, sizes and mtimes, stat-ed
        now; for generated data: the generator's parameters), the selected items and
        their labels, the preprocessing and the augmentation flag. Used as the
        calibration-cache key.
        """
        info = self.info
        if self._paths is not None:
            files = sorted({self._paths[j] for j in self._index})
        else:
            files = sorted(info.files)
        listing = []
        for f in files:
            try:
                st = os.stat(f)
                stat = [st.st_size, st.st_mtime_ns]
            except OSError:
                stat = [None, None]
            rel = os.path.relpath(f, info.root) if info.root is not None else f.name
            listing.append([Path(rel).as_posix(), *stat])
        record = {
            "version": FINGERPRINT_VERSION,
            "kind": info.kind,
            "params": info.params,
            "files": listing,
            "index": hashlib.sha256(self._index.tobytes()).hexdigest(),
            "labels": hashlib.sha256(self.labels.tobytes()).hexdigest(),
            "class_names": list(self.class_names),
            "preprocessing": self.preprocessing.to_dict(),
            "augment": self.augment,
            "seed": self.seed if self.augment else None,
        }
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def balanced_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """Positions ordered so that every prefix is as class-balanced as possible (seeded shuffle per class)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x11A1])
    groups = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    if not groups:
        return np.zeros(0, dtype=np.int64)
    # Round-robin across classes; the rank within its class decides the round.
    pos = np.concatenate(groups)
    rank = np.concatenate([np.arange(len(g)) for g in groups])
    cls = np.concatenate([np.full(len(g), k) for k, g in enumerate(groups)])
    return pos[np.lexsort((cls, rank))].astype(np.int64)


def take_balanced(ds: ImageDataset, limit: int, seed: int = 0) -> ImageDataset:
    """A deterministic, class-balanced subset of at most ``limit`` items (kept in original order)."""
    if int(limit) < 1:
        raise UsageError(f"limit must be >= 1, got {limit}")
    if limit >= len(ds):
        return ds
    chosen = np.sort(balanced_order(ds.labels, seed)[: int(limit)])
    return ds.subset(chosen)


def split_train_val(ds: ImageDataset, val_fraction: float, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Split one data set into class-balanced (train, val) parts; val has augmentation off.

    Each class with at least two images gives ``round(n * val_fraction)`` of them
    (at least one, never all) to val.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise UsageError(f"val fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    labels = ds.labels
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5B17])
    val_parts = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) < 2:
            continue
        k = min(max(1, int(round(len(members) * val_fraction))), len(members) - 1)
        val_parts.append(members[:k])
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, dtype=np.int64)
    if val_idx.size == 0:
        raise InputError(f"{ds.source} is too small to split off a validation set; give a separate val directory")
    train_mask = np.ones(len(ds), dtype=bool)
    train_mask[val_idx] = False
    return ds.subset(np.flatnonzero(train_mask)), ds.subset(val_idx).with_augment(False)


def _identity_geometry(ds: ImageDataset) -> bool:
    pre = ds.preprocessing
    images = ds._images
    return images is not None and pre.resize is None and tuple(images.shape[1:3]) == tuple(pre.input_size)


def iter_batches(
    ds: ImageDataset, batch_size: int, *, limit: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x (N, 3, H, W) float32, y (N,) int64)`` batches in order (the first ``limit`` items).

    In-memory data already at the model's input size is normalised a whole batch at
    a time; everything else goes item by item through ``ds[i]``.
    """
    from edgeres.data.transforms import normalize

    if int(batch_size) < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    n = len(ds) if limit is None else min(int(limit), len(ds))
    fast = _identity_geometry(ds) and not ds.augment
    for start in range(0, n, int(batch_size)):
        stop = min(start + int(batch_size), n)
        if fast:
            idx = ds._index[start:stop]
            x = normalize(ds._images[idx], ds.preprocessing)  # type: ignore[index]
            y = ds._labels[idx]
        else:
            items = [ds[i] for i in range(start, stop)]
            x = np.stack([it[0] for it in items])
            y = np.asarray([it[1] for it in items], dtype=np.int64)
        yield x, np.asarray(y, dtype=np.int64)


__all__ = [
    "DataWarning",
    "ImageDataset",
    "SourceInfo",
    "balanced_order",
    "iter_batches",
    "split_train_val",
    "take_balanced",
]
