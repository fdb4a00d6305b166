"""edgeres.data: transforms, ImageFolder, CIFAR batches, .npz, open_dataset and batching."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

from edgeres.data import (
    DataWarning,
    augment,
    iter_batches,
    load_image,
    open_dataset,
    preprocess,
    split_train_val,
)
from edgeres.data.cifar import safe_unpickle
from edgeres.errors import InputError, UsageError
from edgeres.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, cifar_preprocessing

MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32)
STD = np.asarray(IMAGENET_STD, dtype=np.float32)


def _norm(values: np.ndarray) -> np.ndarray:
    """Expected model input for HWC uint8-valued ``values``: (3, H, W) float32."""
    x = (np.asarray(values, dtype=np.float32) / np.float32(255.0) - MEAN) / STD
    return x.transpose(2, 0, 1)


def _save(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(array).save(path, format=fmt)


def _img(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


# ---------------------------------------------------------------------------- transforms
def test_preprocess_constant_image_through_resize_and_crop_is_exact():
    pre = Preprocessing(input_size=(5, 7), resize=9)
    out = preprocess(np.full((13, 20, 3), (10, 128, 250), dtype=np.uint8), pre)
    assert out.shape == (3, 5, 7) and out.dtype == np.float32
    expected = _norm(np.full((5, 7, 3), (10, 128, 250)))
    np.testing.assert_array_equal(out, expected)


def test_preprocess_center_crop_picks_the_middle_pixels():
    arr = np.arange(7 * 6 * 3, dtype=np.uint8).reshape(7, 6, 3)
    out = preprocess(arr, Preprocessing(input_size=(4, 4), resize=None))
    # top = round((7 - 4) / 2) = 2, left = round((6 - 4) / 2) = 1
    np.testing.assert_array_equal(out, _norm(arr[2:6, 1:5]))


def test_preprocess_resizes_shorter_side_bilinearly_then_crops():
    # A 2x4 horizontal ramp, shorter side 2 -> 4: a 4x8 image whose middle 4 columns are
    # exact bilinear blends: 0.25*0+0.75*40, 0.75*40+0.25*80, 0.25*40+0.75*80, 0.75*80+0.25*120.
    ramp = np.array([0, 40, 80, 120], dtype=np.uint8)
    arr = np.repeat(np.repeat(ramp[None, :, None], 2, axis=0), 3, axis=2)
    out = preprocess(arr, Preprocessing(input_size=(4, 4), resize=4))
    expected_row = np.array([30, 50, 70, 90], dtype=np.float32)
    np.testing.assert_array_equal(out, _norm(np.broadcast_to(expected_row[None, :, None], (4, 4, 3))))


def test_preprocess_image_smaller_than_crop_is_resized_to_input_size():
    arr = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 5
    pre = Preprocessing(input_size=(8, 6), resize=None)
    out = preprocess(arr, pre)
    direct = np.asarray(Image.fromarray(arr).resize((6, 8), Image.Resampling.BILINEAR))
    assert out.shape == (3, 8, 6)
    np.testing.assert_array_equal(out, _norm(direct))


def test_preprocess_accepts_pil_and_array_alike_and_rejects_bad_arrays():
    arr = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    pre = Preprocessing(input_size=(16, 16), resize=20)
    np.testing.assert_array_equal(preprocess(arr, pre), preprocess(Image.fromarray(arr), pre))
    with pytest.raises(InputError, match="uint8"):
        preprocess(arr.astype(np.float32), pre)
    with pytest.raises(InputError, match="HxWx3"):
        preprocess(np.zeros((4, 4, 5), dtype=np.uint8), pre)


def test_load_image_converts_modes_to_rgb(tmp_path):
    gray = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "g.png")), np.repeat(gray[..., None], 3, 2))

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 180, 10
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert np.asarray(load_image(tmp_path / "a.png"))[0, 0].tolist() == [180, 0, 0]

    Image.fromarray(np.full((3, 3, 3), (9, 99, 199), dtype=np.uint8)).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").mode == "RGB"

    sixteen = np.array([[0, 65535], [32896, 257 * 7]], dtype=np.uint16)  # 16-bit: scaled, not clipped
    Image.fromarray(sixteen).save(tmp_path / "s.png")
    out = np.asarray(load_image(tmp_path / "s.png"))
    assert out.shape == (2, 2, 3)
    assert out[..., 0].tolist() == [[0, 255], [128, 7]]


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n garbage", b"hello, I am text"])
def test_load_image_corrupt_file_names_the_file(tmp_path, content):
    bad = tmp_path / "broken.png"
    bad.write_bytes(content)
    with pytest.raises(InputError, match=r"cannot decode image .*broken\.png: .*; remove or replace it"):
        load_image(bad)


def test_augment_cifar_style_shapes_range_and_determinism():
    pre = cifar_preprocessing()
    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = augment(img, pre, np.random.default_rng(5))
    b = augment(img, pre, np.random.default_rng(5))
    assert a.shape == (3, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    lo = ((0 - np.array(pre.mean)) / np.array(pre.std)).min()
    hi = ((1 - np.array(pre.mean)) / np.array(pre.std)).max()
    assert lo - 1e-5 <= a.min() and a.max() <= hi + 1e-5
    outs = [augment(img, pre, np.random.default_rng(s)) for s in range(12)]
    assert len({o.tobytes() for o in outs}) > 6  # crops/flips vary
    # Without padding or flipping the CIFAR-style augmentation is the evaluation transform.
    np.testing.assert_array_equal(augment(img, pre, np.random.default_rng(0), pad=0, flip=False), preprocess(img, pre))


def test_augment_random_resized_crop_for_imagenet_style():
    pre = Preprocessing(input_size=(24, 20), resize=28)
    img = np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    outs = [augment(img, pre, rng) for _ in range(8)]
    assert all(o.shape == (3, 24, 20) and o.dtype == np.float32 for o in outs)
    assert len({o.tobytes() for o in outs}) == 8
    # scale=(1, 1) with a square-ish source covers (almost) the whole image.
    full = augment(np.full((30, 30, 3), 77, dtype=np.uint8), pre, rng, scale=(1.0, 1.0), flip=False)
    np.testing.assert_array_equal(full, _norm(np.full((24, 20, 3), 77)))


# ---------------------------------------------------------------------------- ImageFolder
def _tree(root, spec: dict[str, list[str]], value: int = 50):
    for cls, files in spec.items():
        for i, name in enumerate(files):
            _save(root / cls / name, _img(value + 10 * i))
    return root


def test_image_folder_finds_png_jpg_any_case_and_ignores_hidden(tmp_path):
    root = _tree(tmp_path / "d", {"dog": ["a.png", "b.JPG"], "cat": ["c.jpeg", "d.PNG"], "emu": ["e.webp"]})
    (root / "dog" / "notes.txt").write_text("not an image")
    _save(root / "dog" / ".hidden.png", _img(1))
    _save(root / ".cache" / "x.png", _img(1))
    _save(root / "cat" / "sub" / "f.bmp", _img(3))  # nested images count for their class
    ds = open_dataset(root, "val", cifar_preprocessing(8))
    assert ds.class_names == ("cat", "dog", "emu")
    assert [p.name for p in ds.paths] == ["c.jpeg", "d.PNG", "f.bmp", "a.png", "b.JPG", "e.webp"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert ds.labelled and ds.source == str(root)
    x, y = ds[3]
    np.testing.assert_array_equal(x, preprocess(_img(50), cifar_preprocessing(8)))
    assert y == 1


def test_empty_folder_errors_and_empty_class_warns(tmp_path):
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match=r"no images found in .*none; expected DIR/<class>/\*\.png"):
        open_dataset(tmp_path / "none", "val", cifar_preprocessing())
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "x.txt").write_text("x")
    with pytest.raises(InputError, match=r"no images found .*skipped 1 files with other extensions, e.g. a/x.txt"):
        open_dataset(tmp_path / "empty", "val", cifar_preprocessing())
    root = _tree(tmp_path / "some", {"a": ["1.png"], "c": ["2.png"]})
    (root / "b").mkdir()
    with pytest.warns(DataWarning, match="has no images"):
        ds = open_dataset(root, "val", cifar_preprocessing())
    assert ds.class_names == ("a", "b", "c") and ds.labels.tolist() == [0, 2]


def test_flat_directory_is_unlabelled_only_when_allowed(tmp_path):
    for i in range(3):
        _save(tmp_path / "flat" / f"{i}.png", _img(i))
    with pytest.raises(InputError, match=r"has 3 images but no class subdirectories; put them in .*/<class>/"):
        open_dataset(tmp_path / "flat", "calib", cifar_preprocessing())
    ds = open_dataset(tmp_path / "flat", "calib", cifar_preprocessing(), allow_unlabelled=True, class_names=["x"])
    assert len(ds) == 3 and not ds.labelled and ds.labels.tolist() == [-1, -1, -1]
    assert ds.class_names == ("x",)


def test_corrupt_image_in_folder_names_the_file(tmp_path):
    root = _tree(tmp_path / "d", {"a": ["good.png"]})
    (root / "a" / "zz_bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    ds = open_dataset(root, "val", cifar_preprocessing(8))
    ds[0]
    with pytest.raises(InputError, match=r"cannot decode image .*zz_bad\.jpg"):
        ds[1]


def test_class_names_remap_labels_by_name_and_reject_unknown_classes(tmp_path):
    root = _tree(tmp_path / "d", {"cat": ["1.png"], "dog": ["2.png", "3.png"]})
    ds = open_dataset(root, "val", cifar_preprocessing(8), class_names=["dog", "bird", "cat"])
    assert ds.class_names == ("dog", "bird", "cat")
    assert ds.labels.tolist() == [2, 0, 0]
    assert ds[0][1] == 2
    with pytest.raises(InputError, match=r"data has class 'dog' the model was not trained on"):
        open_dataset(root, "val", cifar_preprocessing(8), class_names=["cat", "bird"])


def test_split_resolution(tmp_path):
    pair = tmp_path / "pair"
    _tree(pair / "train", {"a": ["1.png", "2.png"], "b": ["3.png"]})
    _tree(pair / "val", {"a": ["4.png"], "b": ["5.png"]})
    pre = cifar_preprocessing(8)
    assert len(open_dataset(pair, "train", pre)) == 3
    assert open_dataset(pair, "val", pre).source == str(pair / "val")
    assert open_dataset(pair, "calib", pre).source == str(pair / "train")  # no calib/: fall back to train

    other = tmp_path / "other"
    _tree(other / "train", {"a": ["1.png"]})
    _tree(other / "test", {"a": ["2.png"]})
    _tree(other / "calib", {"a": ["3.png", "4.png"]})
    assert open_dataset(other, "val", pre).source == str(other / "test")
    assert len(open_dataset(other, "calib", pre)) == 2

    only_train = tmp_path / "only_train"
    _tree(only_train / "train", {"a": ["1.png"]})
    with pytest.raises(InputError, match=r"none for 'val' \(looked for val/, validation/, test/\)"):
        open_dataset(only_train, "val", pre)

    # No split directories: the root serves every split; a *class* called "train" is not a split.
    flat = _tree(tmp_path / "flat", {"train": ["1.png"], "car": ["2.png"]})
    for split in ("train", "val", "calib"):
        ds = open_dataset(flat, split, pre)
        assert ds.source == str(flat) and ds.class_names == ("car", "train")

    with pytest.raises(UsageError, match="unknown split"):
        open_dataset(flat, "holdout", pre)
    with pytest.raises(InputError, match="does not exist"):
        open_dataset(tmp_path / "missing", "val", pre)


# ---------------------------------------------------------------------------- CIFAR
def _cifar_batch(n: int, seed: int, label_key: bytes = b"labels", classes: int = 10) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    record = {
        b"batch_label": b"synthetic batch",
        label_key: [int(v) for v in rng.integers(0, classes, n)],
        b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072).copy(),  # R plane, G plane, B plane
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    return record, images


def _dump(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def test_cifar10_batches_round_trip(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    train = [_cifar_batch(6, s) for s in range(5)]
    for i, (record, _) in enumerate(train, 1):
        _dump(d / f"data_batch_{i}", record)
    test_record, test_images = _cifar_batch(4, 99)
    _dump(d / "test_batch", test_record)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _dump(d / "batches.meta", {b"label_names": names, b"num_vis": 3072})

    pre = cifar_preprocessing()
    for spec in (d, tmp_path):  # the extracted dir or its parent
        val = open_dataset(spec, "val", pre)
        assert val.class_names[0] == "airplane" and len(val.class_names) == 10
        assert len(val) == 4 and val.labels.tolist() == test_record[b"labels"]
        np.testing.assert_array_equal(val.raw(2), test_images[2])
        np.testing.assert_array_equal(val[2][0], preprocess(test_images[2], pre))
    tr = open_dataset(d, "train", pre)
    assert len(tr) == 30
    np.testing.assert_array_equal(tr.raw(6), train[1][1][0])
    assert len(open_dataset(d, "calib", pre, limit=10)) == 10


def test_cifar100_format(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    record, images = _cifar_batch(5, 3, label_key=b"fine_labels", classes=3)
    record[b"coarse_labels"] = [0] * 5
    _dump(d / "train", record)
    _dump(d / "test", _cifar_batch(2, 4, label_key=b"fine_labels", classes=3)[0])
    _dump(d / "meta", {b"fine_label_names": [b"apple", b"bee", b"cup"], b"coarse_label_names": [b"x"]})
    ds = open_dataset(tmp_path, "train", cifar_preprocessing())
    assert ds.class_names == ("apple", "bee", "cup")
    assert ds.labels.tolist() == record[b"fine_labels"]
    np.testing.assert_array_equal(ds.raw(4), images[4])
    assert len(open_dataset(tmp_path, "val", cifar_preprocessing())) == 2


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_cifar_pickle_is_refused(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    record, _ = _cifar_batch(2, 0)
    record[b"labels"] = evil
    _dump(d / "test_batch", record)
    with pytest.raises(InputError, match=r"refusing to load .*test_batch: it references (posix|os)\.system"):
        open_dataset(d, "val", cifar_preprocessing())
    assert not marker.exists()
    # A pickle-based "builtins.eval" gadget is refused as well.
    (d / "test_batch").write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(InputError, match="builtins.eval"):
        safe_unpickle(d / "test_batch")
    (d / "test_batch").write_bytes(b"\x80\x02}q\x00(U\x04data")  # truncated
    with pytest.raises(InputError, match="cannot read CIFAR batch"):
        open_dataset(d, "val", cifar_preprocessing())


# ---------------------------------------------------------------------------- .npz
def test_npz_loading_layouts_names_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 10, 12, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "hwc.npz", images=images, labels=labels, class_names=np.array(["x", "y", "z"]))
    np.savez(tmp_path / "chw.npz", images=images.transpose(0, 3, 1, 2), labels=labels)
    pre = Preprocessing(input_size=(10, 12), resize=None)
    a = open_dataset(tmp_path / "hwc.npz", "val", pre)
    b = open_dataset(tmp_path / "chw.npz", "val", pre)
    assert a.class_names == ("x", "y", "z") and b.class_names == ("0", "1", "2")
    np.testing.assert_array_equal(a.raw(5), images[5])
    np.testing.assert_array_equal(b[5][0], a[5][0])
    assert open_dataset(tmp_path / "hwc.npz", "val", pre, class_names=["z", "y", "x"]).labels.tolist() == [2, 1, 0, 2, 1, 0]

    np.savez(tmp_path / "bad_shape.npz", images=np.zeros((4, 5, 6, 7), np.uint8), labels=np.zeros(4, int))
    with pytest.raises(InputError, match=r"no channel axis of size 3 \(shape \(4, 5, 6, 7\)\)"):
        open_dataset(tmp_path / "bad_shape.npz", "val", pre)
    np.savez(tmp_path / "float.npz", images=images.astype(np.float32), labels=labels)
    with pytest.raises(InputError, match="'images' must be uint8"):
        open_dataset(tmp_path / "float.npz", "val", pre)
    np.savez(tmp_path / "count.npz", images=images, labels=labels[:5])
    with pytest.raises(InputError, match="5 labels for 6 images"):
        open_dataset(tmp_path / "count.npz", "val", pre)
    np.savez(tmp_path / "nolabels.npz", images=images)
    with pytest.raises(InputError, match="has no 'labels' array"):
        open_dataset(tmp_path / "nolabels.npz", "val", pre)
    assert not open_dataset(tmp_path / "nolabels.npz", "calib", pre, allow_unlabelled=True).labelled
    np.savez(tmp_path / "objects.npz", images=images, labels=labels, class_names=np.array(["a", 1], dtype=object))
    with pytest.raises(InputError, match="stores Python objects"):
        open_dataset(tmp_path / "objects.npz", "val", pre)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read .*junk.npz"):
        open_dataset(tmp_path / "junk.npz", "val", pre)


# ---------------------------------------------------------------------------- dataset API
def test_fingerprint_tracks_files_selection_and_preprocessing(tmp_path):
    root = _tree(tmp_path / "d", {"a": ["1.png", "2.png"], "b": ["3.png"]})
    pre = cifar_preprocessing(8)
    fp = open_dataset(root, "val", pre).fingerprint()
    assert fp == open_dataset(root, "val", pre).fingerprint() and len(fp) == 64
    _save(root / "b" / "4.png", _img(9))
    fp_added = open_dataset(root, "val", pre).fingerprint()
    assert fp_added != fp
    assert open_dataset(root, "val", pre, limit=2).fingerprint() != fp_added
    assert open_dataset(root, "val", cifar_preprocessing(16)).fingerprint() != fp_added
    builtin = open_dataset("builtin", "calib", pre)
    assert builtin.fingerprint() == open_dataset("builtin", "calib", pre).fingerprint()
    assert builtin.fingerprint() != open_dataset("builtin", "val", pre).fingerprint()


def test_builtin_spec_sizes_and_bad_spec():
    pre = cifar_preprocessing()
    assert len(open_dataset("builtin", "val", pre)) == 1000
    assert len(open_dataset("builtin", "calib", pre)) == 500
    small = open_dataset("builtin:20", "train", pre)
    assert len(small) == 200 and small.class_names[0] == "circle"
    assert len(open_dataset("builtin:20", "val", pre)) == 1000
    with pytest.raises(UsageError, match="builtin:N"):
        open_dataset("builtin:lots", "train", pre)
    with pytest.raises(InputError, match="data has class 'circle'"):
        open_dataset("builtin", "val", pre, class_names=["cat", "dog"])


def test_limit_is_balanced_and_deterministic():
    pre = cifar_preprocessing()
    a = open_dataset("builtin", "val", pre, limit=35, seed=3)
    b = open_dataset("builtin", "val", pre, limit=35, seed=3)
    c = open_dataset("builtin", "val", pre, limit=35, seed=4)
    counts = np.bincount(a.labels, minlength=10)
    assert len(a) == 35 and counts.max() - counts.min() <= 1
    assert a.fingerprint() == b.fingerprint() and a.fingerprint() != c.fingerprint()


def test_iter_batches_order_limit_and_fast_path_match_items():
    ds = open_dataset("builtin", "calib", cifar_preprocessing())
    batches = list(iter_batches(ds, 64, limit=150))
    assert [len(y) for _, y in batches] == [64, 64, 22]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (150, 3, 32, 32)
    np.testing.assert_array_equal(y, ds.labels[:150])
    for i in (0, 77, 149):  # the vectorised path equals item-by-item preprocessing
        np.testing.assert_array_equal(x[i], ds[i][0])
    big = open_dataset("builtin", "calib", Preprocessing(input_size=(40, 40), resize=44), limit=5)
    (xb, _), = list(iter_batches(big, 8))
    assert xb.shape == (5, 3, 40, 40)
    with pytest.raises(UsageError, match="batch size"):
        next(iter_batches(ds, 0))


def test_split_train_val_is_balanced_and_disjoint():
    ds = open_dataset("builtin:30", "train", cifar_preprocessing(), augment=True)
    tr, va = split_train_val(ds, 0.2, seed=1)
    assert len(tr) == 240 and len(va) == 60
    assert np.bincount(va.labels, minlength=10).tolist() == [6] * 10
    assert tr.augment and not va.augment
    tr_imgs = {tr.raw(i).tobytes() for i in range(len(tr))}
    assert not tr_imgs & {va.raw(i).tobytes() for i in range(len(va))}
    with pytest.raises(UsageError, match="between 0 and 1"):
        split_train_val(ds, 1.5)


def test_augmented_items_depend_on_epoch_not_on_call_order_and_work_with_dataloader():
    torch = pytest.importorskip("torch")
    ds = open_dataset("builtin:10", "train", cifar_preprocessing(), augment=True, seed=7)
    first = [ds[i][0] for i in (3, 1, 2)]
    again = [ds[i][0] for i in (1, 2, 3)]
    np.testing.assert_array_equal(first[0], again[2])  # same (seed, epoch, item) -> same draw
    epoch0 = np.stack([ds[i][0] for i in range(20)])
    ds.set_epoch(1)
    epoch1 = np.stack([ds[i][0] for i in range(20)])
    assert not np.array_equal(epoch0, epoch1)

    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False, num_workers=0)
    xb, yb = next(iter(loader))
    assert xb.shape == (8, 3, 32, 32) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    np.testing.assert_array_equal(xb.numpy(), epoch1[:8])
    assert yb.tolist() == ds.labels[:8].tolist()


def test_subset_views_and_errors():
    ds = open_dataset("builtin", "calib", cifar_preprocessing())
    sub = ds.subset([5, 2, 9])
    assert sub.labels.tolist() == [5, 2, 9]
    np.testing.assert_array_equal(sub[1][0], ds[2][0])
    with pytest.raises(UsageError, match="out of range"):
        ds.subset([len(ds)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # opening builtin data warns about nothing
        open_dataset("builtin", "calib", cifar_preprocessing())
