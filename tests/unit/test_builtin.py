"""The built-in generated data set: deterministic, varied, balanced, learnable but not trivial."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgeres.data import builtin
from edgeres.data.builtin import BUILTIN_CLASSES, generate, write_image_folder
from edgeres.errors import UsageError


def _digests(images: np.ndarray) -> set[str]:
    return {hashlib.sha256(img.tobytes()).hexdigest() for img in images}


def test_classes_are_ten_short_lowercase_names():
    assert len(BUILTIN_CLASSES) == 10
    assert len(set(BUILTIN_CLASSES)) == 10
    assert all(n.isalpha() and n.islower() and len(n) <= 10 for n in BUILTIN_CLASSES)


def test_same_seed_gives_identical_bytes_and_other_seed_differs():
    builtin._generate_cached.cache_clear()  # really regenerate, not the memoised arrays
    a_img, a_lab = generate("train", 20, seed=0)
    builtin._generate_cached.cache_clear()
    b_img, b_lab = generate("train", 20, seed=0)
    assert a_img.dtype == np.uint8 and a_img.shape == (200, 32, 32, 3)
    assert a_lab.dtype == np.int64 and a_lab.shape == (200,)
    assert a_img.tobytes() == b_img.tobytes()
    assert np.array_equal(a_lab, b_lab)
    c_img, _ = generate("train", 20, seed=1)
    assert not np.array_equal(a_img, c_img)


def test_smaller_request_is_a_prefix_of_a_larger_one():
    small, _ = generate("val", 7)
    large, _ = generate("val", 30)
    assert np.array_equal(small, large[: len(small)])


def test_splits_are_disjoint():
    digests = {split: _digests(generate(split, 60)[0]) for split in ("train", "val", "calib")}
    assert len(digests["train"]) == 600  # no duplicates inside a split either
    assert not digests["train"] & digests["val"]
    assert not digests["train"] & digests["calib"]
    assert not digests["val"] & digests["calib"]


def test_all_classes_present_balanced_and_interleaved():
    _, labels = generate("calib", 13)
    assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, 13))
    assert np.array_equal(labels[:10], np.arange(10))  # any prefix is balanced


def test_images_vary_within_a_class_and_no_pixel_gives_the_class_away():
    images, labels = generate("train", 50)
    x = images.astype(np.float32)
    for c in range(10):
        cls = x[labels == c]
        # Every pixel of every class takes many different values (colour, position, noise vary).
        assert cls.std(axis=0).min() > 15.0, BUILTIN_CLASSES[c]
    # Mean colour per class is close to the global mean: colour alone does not tell classes apart.
    class_means = np.stack([x[labels == c].mean(axis=(0, 1, 2)) for c in range(10)])
    assert np.abs(class_means - x.mean(axis=(0, 1, 2))).max() < 30.0


def test_generation_is_fast_enough():
    import time

    builtin._generate_cached.cache_clear()
    t0 = time.perf_counter()
    generate("train", 200)
    # 2000 images; ~0.5 s on a quiet core. Generous bound: the machine is shared.
    assert time.perf_counter() - t0 < 20.0


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="unknown split 'test'"):
        generate("test", 10)
    with pytest.raises(UsageError, match=">= 1"):
        generate("train", 0)


def test_write_image_folder_writes_pngs_that_decode_to_the_same_pixels(tmp_path):
    from PIL import Image

    root = write_image_folder(tmp_path / "shapes", 3, 2)
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(BUILTIN_CLASSES)
    assert len(list((root / "train").rglob("*.png"))) == 30
    assert len(list((root / "val").rglob("*.png"))) == 20
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dir renamed away
    images, labels = generate("val", 2)
    first = root / "val" / BUILTIN_CLASSES[int(labels[0])] / f"{BUILTIN_CLASSES[int(labels[0])]}_00000.png"
    assert np.array_equal(np.asarray(Image.open(first)), images[0])
    # Writing again replaces the tree atomically.
    write_image_folder(tmp_path / "shapes", 1, 1)
    assert len(list((root / "train").rglob("*.png"))) == 10


def _normalise(images: np.ndarray):
    import torch

    x = images.astype(np.float32) / 255.0
    x = (x - x.mean(axis=(0, 1, 2))) / x.std(axis=(0, 1, 2))
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _fit(model, x, y, *, epochs: int, lr: float, batch: int = 64) -> None:
    import torch

    steps = epochs * ((len(x) + batch - 1) // batch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def _accuracy(model, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_learnable_by_a_small_cnn_but_not_by_a_linear_model():
    """A tiny CNN trained for a few seconds beats 60 % held-out; logistic regression on pixels stays poor."""
    torch = pytest.importorskip("torch")
    from torch import nn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        xtr_u8, ytr_np = generate("train", 150)
        xva_u8, yva_np = generate("val", 50)
        xtr, xva = _normalise(xtr_u8), _normalise(xva_u8)
        ytr, yva = torch.from_numpy(ytr_np), torch.from_numpy(yva_np)

        linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
        _fit(linear, xtr, ytr, epochs=6, lr=3e-3)
        linear_acc = _accuracy(linear, xva, yva)

        def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        cnn = nn.Sequential(
            *block(3, 24, 2), *block(24, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2), *block(64, 64),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )
        _fit(cnn, xtr, ytr, epochs=5, lr=1e-2)
        cnn_acc = _accuracy(cnn, xva, yva)
    finally:
        torch.set_num_threads(threads)

    assert linear_acc < 0.45, f"a linear model on raw pixels got {linear_acc:.2f}: the data set is too easy"
    assert cnn_acc > 0.60, f"a small CNN only reached {cnn_acc:.2f} held-out: the data set is not learnable enough"
    assert cnn_acc > linear_acc + 0.3
