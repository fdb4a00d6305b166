"""A built-in, deterministic, learnable image set generated on the fly (no files needed).

Ten classes of procedurally drawn 32x32 RGB images: five solid shapes (circle,
square, triangle, cross, ring) and five textures (horizontal stripes, vertical
stripes, diagonal stripes, checkerboard, dots). Position, size, rotation,
colours, a background gradient and pixel noise vary per image, so no single
pixel gives the class away, yet a small CNN learns it in seconds.

Generation is vectorised numpy: every image is rendered from a signed distance
function on a 32x32 grid, anti-aliased by clipping the distance to one pixel.
Each (split, class, parameter) draws from its own random stream, so

* the same ``(split, n_per_class, seed)`` always gives the same bytes,
* ``generate(split, n)`` is a prefix of ``generate(split, m)`` for ``n <= m``
  (per class), and
* the splits ``train``/``val``/``calib`` use disjoint seed streams.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from edgeres.errors import UsageError
from edgeres.fileio import atomic_dir

BUILTIN_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "hstripes",
    "vstripes",
    "diagonal",
    "checker",
    "dots",
)
SPLITS: tuple[str, ...] = ("train", "val", "calib")
IMAGE_SIZE = 32
#: Bump when the drawing changes: it is part of the data set's fingerprint.
GENERATOR_VERSION = 1

_SPLIT_IDS = {"train": 1, "val": 2, "calib": 3}
_SHAPES = 5  # the first five classes are shapes, the rest textures


def _streams(split: str, cls: int, seed: int) -> dict[str, np.random.Generator]:
    """One independent random stream per drawn parameter (keeps prefixes stable)."""
    names = ("cx", "cy", "size", "angle", "period", "phase", "variant", "bg", "fg", "gdir", "gamp", "noise", "sigma")
    root = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _SPLIT_IDS[split], cls, GENERATOR_VERSION])
    return {name: np.random.default_rng(child) for name, child in zip(names, root.spawn(len(names)))}


def _colours(bg_rng: np.random.Generator, fg_rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground colours (n, 3) with a clear contrast between them."""
    bg = bg_rng.uniform(0, 255, size=(n, 3))
    # Foreground: several candidates per image, take the first far enough from the background.
    cand = fg_rng.uniform(0, 255, size=(n, 8, 3))
    dist = np.linalg.norm(cand - bg[:, None, :], axis=-1)
    ok = dist >= 110.0
    first = np.where(ok.any(axis=1), ok.argmax(axis=1), dist.argmax(axis=1))
    fg = cand[np.arange(n), first]
    return bg, fg


def _sdf(cls: int, u: np.ndarray, v: np.ndarray, size: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, negative inside) of class ``cls`` in rotated coordinates u, v (n, H, W).

    Shapes use ``size`` (their radius); textures are unbounded periodic patterns.
    """
    r = size[:, None, None]
    p = period[:, None, None]
    if cls == 0:  # circle
        return np.hypot(u, v) - r
    if cls == 1:  # square
        s = 0.82 * r
        qu, qv = np.abs(u) - s, np.abs(v) - s
        return np.hypot(np.maximum(qu, 0), np.maximum(qv, 0)) + np.minimum(np.maximum(qu, qv), 0)
    if cls == 2:  # equilateral triangle: intersection of three half-planes
        d = None
        for k in range(3):
            a = np.pi / 2 + k * 2 * np.pi / 3
            h = u * np.cos(a) + v * np.sin(a) - 0.5 * r
            d = h if d is None else np.maximum(d, h)
        return d
    if cls == 3:  # cross: union of two bars
        w = 0.3 * r
        bar1 = np.maximum(np.abs(u) - r, np.abs(v) - w)
        bar2 = np.maximum(np.abs(u) - w, np.abs(v) - r)
        return np.minimum(bar1, bar2)
    if cls == 4:  # ring
        return np.abs(np.hypot(u, v) - 0.8 * r) - np.maximum(0.22 * r, 1.3)
    if cls in (5, 6, 7):  # stripes along v (the angle sets the orientation)
        pattern = (np.abs(((v / p) % 1.0) - 0.5) - 0.25) * p
    elif cls == 8:  # checkerboard
        su = (np.abs(((u / p) % 1.0) - 0.5) - 0.25) * p
        sv = (np.abs(((v / p) % 1.0) - 0.5) - 0.25) * p
        pattern = np.where((su < 0) == (sv < 0), -np.minimum(np.abs(su), np.abs(sv)), np.minimum(np.abs(su), np.abs(sv)))
    else:  # dots on a square lattice
        du = ((u / p) % 1.0 - 0.5) * p
        dv = ((v / p) % 1.0 - 0.5) * p
        pattern = np.hypot(du, dv) - 0.28 * p
    return pattern


def _angles(cls: int, rng: np.random.Generator, variant: np.ndarray, n: int) -> np.ndarray:
    """Rotation per image: free for shapes, limited for orientation-defined textures."""
    jitter = rng.uniform(-1.0, 1.0, size=n)
    if cls in (0, 4, 9):  # rotation-symmetric: circle, ring, dots
        return jitter * np.pi
    if cls < _SHAPES:  # square, triangle, cross: tilted, but upright enough to tell apart
        return jitter * np.deg2rad(30)
    if cls == 5:  # horizontal stripes: pattern varies along v (y) -> angle near 0
        return jitter * np.deg2rad(18)
    if cls == 6:  # vertical stripes
        return np.pi / 2 + jitter * np.deg2rad(18)
    if cls == 7:  # diagonal: either diagonal
        return np.where(variant < 0.5, np.pi / 4, -np.pi / 4) + jitter * np.deg2rad(12)
    return jitter * np.deg2rad(12)  # checkerboard: near axis-aligned (45 degrees would look like a diamond lattice)


def _render_class(split: str, cls: int, n: int, seed: int) -> np.ndarray:
    """Draw ``n`` images of class ``cls``; (n, 32, 32, 3) uint8."""
    s = _streams(split, cls, seed)
    shape = cls < _SHAPES
    lo, hi = (9.0, 23.0) if shape else (12.0, 20.0)
    cx = s["cx"].uniform(lo, hi, size=n)
    cy = s["cy"].uniform(lo, hi, size=n)
    size = s["size"].uniform(7.0, 12.0, size=n) if shape else s["size"].uniform(10.0, 18.0, size=n)
    variant = s["variant"].uniform(0.0, 1.0, size=n)
    angle = _angles(cls, s["angle"], variant, n)
    period = s["period"].uniform(4.0, 7.5, size=n)
    phase = s["phase"].uniform(0.0, 1.0, size=(n, 2)) * period[:, None]

    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64) + 0.5
    dx = xs[None] - cx[:, None, None]
    dy = ys[None] - cy[:, None, None]
    c, sn = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = dx * c + dy * sn
    v = -dx * sn + dy * c
    if shape:
        d = _sdf(cls, u, v, size, period)
    else:  # a periodic pattern (random phase) inside a box centred on (cx, cy)
        box = np.maximum(np.abs(u), np.abs(v)) - size[:, None, None]
        d = np.maximum(_sdf(cls, u + phase[:, 0, None, None], v + phase[:, 1, None, None], size, period), box)
    alpha = np.clip(0.5 - d, 0.0, 1.0)[..., None]

    bg, fg = _colours(s["bg"], s["fg"], n)
    grad_dir = s["gdir"].uniform(0, 2 * np.pi, size=n)
    grad_amp = s["gamp"].uniform(-40, 40, size=(n, 3))
    ramp = (np.cos(grad_dir)[:, None, None] * (xs - 16) + np.sin(grad_dir)[:, None, None] * (ys - 16)) / 16.0
    background = bg[:, None, None, :] + ramp[..., None] * grad_amp[:, None, None, :]
    img = background * (1.0 - alpha) + fg[:, None, None, :] * alpha
    sigma = s["sigma"].uniform(0.0, 10.0, size=n)
    img += s["noise"].standard_normal(size=img.shape, dtype=np.float32) * sigma[:, None, None, None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _generate_cached(split: str, n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    k = len(BUILTIN_CLASSES)
    images = np.empty((n_per_class * k, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for cls in range(k):
        images[cls::k] = _render_class(split, cls, n_per_class, seed)  # interleaved: item i has class i % k
    labels = np.tile(np.arange(k, dtype=np.int64), n_per_class)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _check(split: str, n_per_class: int) -> None:
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r} for the built-in data; use one of {', '.join(SPLITS)}")
    if int(n_per_class) < 1:
        raise UsageError(f"images per class must be >= 1, got {n_per_class}")


def generate(split: str, n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate the built-in set: images (N, 32, 32, 3) uint8 and labels (N,) int64.

    ``N = 10 * n_per_class``; item ``i`` has label ``i % 10`` (classes interleaved,
    so any prefix is balanced). Splits draw from disjoint random streams.
    """
    _check(split, n_per_class)
    images, labels = _generate_cached(split, int(n_per_class), int(seed))
    return images.copy(), labels.copy()


def generate_readonly(split: str, n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`generate` but returns cached read-only arrays (no copy)."""
    _check(split, n_per_class)
    return _generate_cached(split, int(n_per_class), int(seed))


def write_image_folder(
    root: str | os.PathLike, n_train_per_class: int, n_val_per_class: int, seed: int = 0
) -> Path:
    """Write the built-in set as PNG files: ``root/train/<class>/*.png`` and ``root/val/<class>/*.png``.

    The tree is built in a temporary directory and renamed onto ``root`` (replacing
    it) only when complete.
    """
    from PIL import Image

    root = Path(root)
    with atomic_dir(root) as tmp:
        for split, n in (("train", n_train_per_class), ("val", n_val_per_class)):
            images, labels = generate_readonly(split, n, seed)
            for name in BUILTIN_CLASSES:
                (tmp / split / name).mkdir(parents=True)
            for i, (img, label) in enumerate(zip(images, labels)):
                name = BUILTIN_CLASSES[int(label)]
                Image.fromarray(img).save(tmp / split / name / f"{name}_{i // len(BUILTIN_CLASSES):05d}.png")
    return root
