#!/usr/bin/env python
"""Two small image classification sets from *real* images, for INT8 accuracy checks beyond the built-in data.

Nothing is installed and nothing is downloaded at run time: the images are read from two wheel files
you fetch once with pip's ordinary client (the wheels are zip archives)::

    pip download scikit-image scikit-learn --no-deps -d wheels/
    python bench/realish_data.py --wheels wheels/ --out data/realish

``photos``  ten real photographs shipped with scikit-image (astronaut, cat, coffee, Hubble deep field,
            rocket, retina, motorcycle, IHC stain, brick, grass); a sample is a random crop (8-45 % of
            the shorter side) resized to 32x32, flipped, with brightness/contrast jitter and sensor
            noise; the class is the photograph. Natural-image statistics (heavy-tailed activations).
``digits``  the 1797 handwritten digits of scikit-learn (UCI, 8x8, 16 grey levels), upscaled to 32x32,
            randomly tinted, shifted and noised; train, calibration and validation images come from
            *different* handwritten samples.

Each is written as an ImageFolder tree ``OUT/<name>/{train,calib,val}/<class>/*.png``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "rocket.jpg", "retina.jpg",
          "motorcycle_left.png", "ihc.png", "brick.png", "grass.png")
SPLITS = {"train": 300, "calib": 50, "val": 150}  # per class


def _wheel(wheels: Path, prefix: str) -> zipfile.ZipFile:
    found = sorted(wheels.glob(f"{prefix}-*.whl"))
    if not found:
        raise SystemExit(f"no {prefix}-*.whl in {wheels}; run: pip download scikit-image scikit-learn --no-deps "
                         f"-d {wheels}")
    return zipfile.ZipFile(found[-1])


def _save(out: Path, split: str, cls: str, i: int, arr: np.ndarray) -> None:
    d = out / split / cls
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(d / f"{i:05d}.png")


def _jitter(rng: np.random.Generator, arr: np.ndarray) -> np.ndarray:
    x = arr.astype(np.float32)
    x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean() + rng.uniform(-25, 25)
    x += rng.normal(scale=rng.uniform(0, 8), size=x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def photos(wheels: Path, out: Path, seed: int = 0) -> None:
    z = _wheel(wheels, "scikit_image")
    for c, name in enumerate(PHOTOS):
        img = Image.open(io.BytesIO(z.read(f"skimage/data/{name}"))).convert("RGB")
        w, h = img.size
        for split, n in SPLITS.items():
            rng = np.random.default_rng([seed, c, list(SPLITS).index(split)])
            for i in range(n):
                side = int(min(w, h) * rng.uniform(0.08, 0.45))
                x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
                crop = img.resize((32, 32), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
                arr = np.asarray(crop, dtype=np.uint8)
                if rng.random() < 0.5:
                    arr = arr[:, ::-1]
                _save(out, split, Path(name).stem, i, _jitter(rng, arr))


def digits(wheels: Path, out: Path, seed: int = 0) -> None:
    z = _wheel(wheels, "scikit_learn")
    data = np.loadtxt(io.BytesIO(gzip.decompress(z.read("sklearn/datasets/data/digits.csv.gz"))), delimiter=",")
    images, labels = data[:, :64].reshape(-1, 8, 8) / 16.0, data[:, 64].astype(int)
    order = np.random.default_rng(seed).permutation(len(labels))
    parts = {"train": order[:1000], "calib": order[1000:1297], "val": order[1297:]}
    copies = {"train": 3, "calib": 2, "val": 3}  # augmented draws per handwritten sample
    for split, idx in parts.items():
        rng = np.random.default_rng([seed, 7, list(parts).index(split)])
        k = 0
        for _ in range(copies[split]):
            for j in idx:
                big = np.asarray(Image.fromarray((images[j] * 255).astype(np.uint8)).resize(
                    (24, 24), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
                canvas = np.zeros((32, 32), np.float32)
                dy, dx = rng.integers(0, 9, size=2)
                canvas[dy: dy + 24, dx: dx + 24] = big
                fg, bg = rng.uniform(120, 255, 3), rng.uniform(0, 110, 3)
                rgb = bg + canvas[..., None] * (fg - bg)
                _save(out, split, str(labels[j]), k, _jitter(rng, rgb.astype(np.uint8)))
                k += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheels", type=Path, required=True, help="directory holding the two downloaded wheels")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    photos(args.wheels, args.out / "photos", args.seed)
    digits(args.wheels, args.out / "digits", args.seed)
    for name in ("photos", "digits"):
        counts = {s: sum(1 for _ in (args.out / name / s).rglob("*.png")) for s in SPLITS}
        print(f"{args.out / name}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
