import numpy as np
import pytest

from edgeres.errors import InputError
from edgeres.evaluate import AccuracyReport, compare, topk_hits
from edgeres.fileio import atomic_dir, atomic_path


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "f.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_on_success(tmp_path):
    dest = tmp_path / "bundle"
    with atomic_dir(dest) as d:
        (d / "a").write_text("1")
    assert (dest / "a").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(dest) as d:
            (d / "a").write_text("2")
            raise RuntimeError("interrupted")
    assert (dest / "a").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_topk_hits_hand_computed():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]], dtype=np.float32)
    labels = np.array([1, 2, 1])
    assert topk_hits(logits, labels, 1).tolist() == [True, False, False]
    assert topk_hits(logits, labels, 2).tolist() == [True, False, True]
    assert topk_hits(logits, labels, 5).tolist() == [True, True, True]  # k capped at 3 classes


def _batches(x, y, bs=4):
    for i in range(0, len(x), bs):
        yield x[i : i + bs], y[i : i + bs]


def test_compare_numbers_and_verdict():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 6)).astype(np.float32)
    y = x.argmax(1)
    y[:2] = (y[:2] + 1) % 6  # reference is right on 8/10

    def ref(b):
        return b

    def art(b):  # flips the prediction of rows whose first value is largest negative
        out = b.copy()
        out[:, 0] += 100.0 * (b[:, 0] < -1.0)
        return out

    flipped = int(((x[:, 0] < -1.0) & (x.argmax(1) != 0)).sum())
    r = compare(ref, art, _batches(x, y), max_drop=0.0)
    assert r.num_images == 10 and r.reference.top1 == pytest.approx(0.8)
    assert r.agreement_top1 == pytest.approx(1 - flipped / 10)
    assert r.drop_top1 == pytest.approx(100 * (r.reference.top1 - r.artifact.top1))
    assert r.passed == (r.drop_top1 <= 0.0)
    same = compare(ref, ref, _batches(x, y), max_drop=0.0)
    assert same.passed and same.agreement_top1 == 1.0 and same.mean_cosine == pytest.approx(1.0)
    d = r.to_dict()
    for key in ("reference", "artifact", "drop_top1", "agreement_top1", "num_images", "passed"):
        assert key in d
    assert 0.0 <= d["reference"]["top1"] <= 1.0
    assert AccuracyReport.from_dict(d).num_images == 10


def test_compare_rejects_bad_data():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(InputError, match="no validation images"):
        compare(lambda b: b, lambda b: b, iter([]))
    with pytest.raises(InputError, match="unlabelled"):
        compare(lambda b: b, lambda b: b, iter([(x, np.array([-1, 0]))]))
    with pytest.raises(InputError, match="outside the model's 3 classes"):
        compare(lambda b: b, lambda b: b, iter([(x, np.array([0, 7]))]))
    with pytest.raises(InputError, match="non-finite"):
        compare(lambda b: b, lambda b: b * np.nan, iter([(x, np.array([0, 1]))]))


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "a").write_text("1")
    finally:
        os.umask(mask)
    assert oct((tmp_path / "f").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "d").stat().st_mode & 0o777) == oct(0o755)
