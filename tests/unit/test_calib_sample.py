"""calib/: the sample calibration set's generator writes the quickstart's calibration images, and the
calibration README states the numbers edgeres applies."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CALIB = ROOT / "calib"


@pytest.fixture(scope="module")
def make_sample():
    spec = importlib.util.spec_from_file_location("make_sample", CALIB / "make_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digests(images) -> list[str]:
    return sorted(hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest() for img in images)


def test_sample_is_the_builtin_calib_split_and_opens_as_calib_data(make_sample, tmp_path, capsys):
    from edgeres.data import BUILTIN_CLASSES, open_dataset
    from edgeres.data.builtin import generate_readonly
    from edgeres.preprocessing import cifar_preprocessing

    out = tmp_path / "sample"
    assert make_sample.main([str(out), "--per-class", "3"]) == 0
    assert f"--calib {out}" in capsys.readouterr().out
    pngs = sorted(out.glob("*/*.png"))
    assert len(pngs) == 30 and {p.parent.name for p in pngs} == set(BUILTIN_CLASSES)
    expected, _ = generate_readonly("calib", 3, 0)
    assert _digests(np.asarray(Image.open(p)) for p in pngs) == _digests(expected)  # lossless, same pixels
    ds = open_dataset(out, "calib", cifar_preprocessing(), allow_unlabelled=True)
    assert len(ds) == 30 and set(ds.class_names) == set(BUILTIN_CLASSES)


def test_sample_never_replaces_a_folder_it_did_not_write(make_sample, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "photo.png").write_bytes(b"user data")
    assert make_sample.main([str(mine), "--per-class", "1"]) == 2
    assert "was not written by this script" in capsys.readouterr().err
    assert (mine / "photo.png").read_bytes() == b"user data"
    out = tmp_path / "sample"
    assert make_sample.main([str(out), "--per-class", "2"]) == 0
    assert make_sample.main([str(out), "--per-class", "1"]) == 0  # its own folder: replaced
    assert len(list(out.glob("*/*.png"))) == 10


def test_calibration_readme_states_what_edgeres_applies():
    from edgeres.data.sources import BUILTIN_SIZES, SPLIT_DIRS
    from edgeres.quantize.options import DEFAULT_NUM_CALIB
    from edgeres.quantize.collect import MIN_CALIB_IMAGES, RECOMMENDED_CALIB_IMAGES

    text = (CALIB / "README.md").read_text()
    flat = " ".join(text.split())
    assert f"fewer than {MIN_CALIB_IMAGES} gives a warning" in flat
    assert f"{RECOMMENDED_CALIB_IMAGES} or more is recommended" in flat
    assert f"(default {DEFAULT_NUM_CALIB})" in flat
    assert f"{BUILTIN_SIZES['calib']} images per class" in flat
    assert SPLIT_DIRS["calib"] == ("calib", "train")
    assert re.search(r"`DIR/calib`\W+else\W+`DIR/train`\W+else\W+`DIR` itself", flat)
    assert "calib/README.md" in (ROOT / "README.md").read_text()  # linked from the README
