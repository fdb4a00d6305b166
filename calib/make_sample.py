#!/usr/bin/env python
"""Write the quickstart's calibration images as a folder of PNGs: the sample calibration set.

    python calib/make_sample.py                 # -> calib/sample/<class>/*.png
    python calib/make_sample.py DIR [--per-class N]

These are the images ``edgeres quickstart`` calibrates on (``--calib builtin``: the built-in
data set's ``calib`` split, 50 images per class for its 10 classes, 500 in all, generated
on the fly and disjoint from its train and val images). Written out, they are an example
of a calibration folder to pass as ``--calib DIR``; ``edgeres compile ... --calib
calib/sample`` gives the same calibration as ``--calib builtin``. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MARKER = ".edgeres-calib-sample"  # written last; the script replaces only folders that carry it


def write_sample(out: Path, per_class: int) -> int:
    """Write ``per_class`` images of each built-in class to ``out/<class>/``; returns the image count."""
    from PIL import Image

    from edgeres.data.builtin import BUILTIN_CLASSES, generate_readonly
    from edgeres.data.sources import BUILTIN_SEED
    from edgeres.fileio import atomic_dir

    images, labels = generate_readonly("calib", per_class, BUILTIN_SEED)
    with atomic_dir(out) as tmp:
        for name in BUILTIN_CLASSES:
            (tmp / name).mkdir()
        for i, (img, label) in enumerate(zip(images, labels)):
            name = BUILTIN_CLASSES[int(label)]
            Image.fromarray(img).save(tmp / name / f"{name}_{i // len(BUILTIN_CLASSES):05d}.png")
        (tmp / MARKER).write_text(f"built-in calib split, {per_class} per class, seed {BUILTIN_SEED}\n")
    return len(images)


def main(argv: list[str] | None = None) -> int:
    from edgeres.data.sources import BUILTIN_SIZES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", type=Path, default=Path(__file__).resolve().parent / "sample")
    ap.add_argument("--per-class", type=int, default=BUILTIN_SIZES["calib"],
                    help=f"images per class (default {BUILTIN_SIZES['calib']}: the quickstart's)")
    args = ap.parse_args(argv)
    if args.per_class < 1:
        print("error: --per-class must be at least 1", file=sys.stderr)
        return 2
    if args.out.exists() and not (args.out / MARKER).is_file():
        print(f"error: {args.out} exists and was not written by this script; pick another folder", file=sys.stderr)
        return 2
    n = write_sample(args.out, args.per_class)
    print(f"wrote {n} calibration images to {args.out} (use: --calib {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
