"""ImageFolder trees: ``root/<class>/**/*.png|jpg|...``, or a flat directory of unlabelled images.

Class names are the sorted names of ``root``'s visible subdirectories; images are
found recursively inside each, by extension (case-insensitive). Hidden files and
directories (a leading ``.``) are ignored.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeres.data.dataset import DataWarning
from edgeres.errors import InputError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"}
)
_EXPECTED = "expected DIR/<class>/*.png|jpg|jpeg|bmp|webp (one subdirectory per class)"


@dataclass(frozen=True)
class FolderListing:
    """The images under a directory and their labels (-1 everywhere when unlabelled)."""

    root: Path
    paths: tuple[Path, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    labelled: bool


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a visible file whose extension is a known image type (any case)."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def _visible_entries(directory: Path) -> tuple[list[Path], list[Path]]:
    """(sorted visible subdirectories, sorted visible files) directly in ``directory``."""
    dirs, files = [], []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as e:
        raise InputError(f"cannot list {directory}: {e.strerror or e}; check the path and its permissions") from e
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            dirs.append(Path(entry.path))
        elif entry.is_file():
            files.append(Path(entry.path))
    return dirs, files


def list_images(directory: str | os.PathLike, *, recursive: bool = True) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under ``directory``, sorted, hidden entries skipped.

    Symlinked directories are followed once (a link cycle is not walked twice).
    """
    images: list[Path] = []
    others: list[Path] = []
    seen: set[str] = set()
    stack = [Path(directory)]
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in seen:
            continue
        seen.add(real)
        dirs, files = _visible_entries(d)
        for f in files:
            (images if is_image_file(f) else others).append(f)
        if recursive:
            stack.extend(reversed(dirs))
    return sorted(images), sorted(others)


def _no_images(root: Path, others: list[Path]) -> InputError:
    skipped = ""
    if others:
        example = others[0].relative_to(root).as_posix()
        skipped = f" (skipped {len(others)} files with other extensions, e.g. {example})"
    return InputError(f"no images found in {root}{skipped}; {_EXPECTED}")


def scan_folder(root: str | os.PathLike, *, allow_unlabelled: bool = False) -> FolderListing:
    """List an ImageFolder tree, or with ``allow_unlabelled`` a flat directory of images.

    A class directory without images only warns (the class keeps its label index);
    no images at all raises :class:`InputError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a directory; {_EXPECTED}")
    class_dirs, top_files = _visible_entries(root)
    top_images = [f for f in top_files if is_image_file(f)]

    if class_dirs:
        per_class = [list_images(d) for d in class_dirs]
        if any(imgs for imgs, _ in per_class):
            names = tuple(d.name for d in class_dirs)
            paths: list[Path] = []
            labels: list[int] = []
            for k, (d, (imgs, _)) in enumerate(zip(class_dirs, per_class)):
                if not imgs:
                    warnings.warn(f"class directory {d} has no images; the class keeps label {k} but has no examples",
                                  DataWarning, stacklevel=3)
                paths.extend(imgs)
                labels.extend([k] * len(imgs))
            if top_images:
                warnings.warn(f"ignoring {len(top_images)} images directly in {root} (not in a class directory)",
                              DataWarning, stacklevel=3)
            return FolderListing(root, tuple(paths), np.asarray(labels, dtype=np.int64), names, True)
        others = [f for _, o in per_class for f in o]
        if not (top_images and allow_unlabelled):
            raise _no_images(root, others + [f for f in top_files if not is_image_file(f)])

    if top_images:
        if not allow_unlabelled:
            raise InputError(
                f"{root} has {len(top_images)} images but no class subdirectories; "
                f"put them in {root}/<class>/ (labels come from the directory names)"
            )
        return FolderListing(root, tuple(sorted(top_images)), np.full(len(top_images), -1, dtype=np.int64), (), False)
    raise _no_images(root, [f for f in top_files if not is_image_file(f)])
