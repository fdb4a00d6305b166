"""Output paths: edgeres replaces only what it wrote, never a user's file or folder (edgeres/outputs.py)."""

import json
import os

import numpy as np
import pytest

from edgeres.errors import InputError, UsageError
from edgeres.fileio import atomic_dir, write_json
from edgeres.outputs import check_calib_cache, check_dir_output, check_file_output, foreign_files, written_by_edgeres


def _bundle(root, extra=()):
    """A directory that is an edgeres bundle as far as its manifest goes (real manifest, real hashes)."""
    from edgeres.bundle import write_manifest

    root.mkdir()
    (root / "labels.txt").write_text("a\nb\n")
    (root / "artifact").mkdir()
    (root / "artifact" / "model.bin").write_bytes(b"\0" * 16)
    write_manifest(root, {"model": {"name": "m"}})
    for name in extra:
        (root / name).write_text("mine")
    return root


def test_a_users_file_is_refused_and_kept(tmp_path):
    f = tmp_path / "notes.json"
    f.write_text('{"my": "data"}')
    with pytest.raises(UsageError, match=r"--json .*notes.json exists and was not written by edgeres; pass --force"):
        check_file_output(f, "--json")
    assert check_file_output(f, "--json", force=True) == f
    assert f.read_text() == '{"my": "data"}'  # checking never touches it


@pytest.mark.parametrize("name", ["model.onnx", "weights.pt", "plot.png", "history.csv", "x.txt"])
def test_foreign_files_of_every_kind_are_refused(tmp_path, name):
    f = tmp_path / name
    f.write_bytes(b"\x89PNG not really" if name.endswith(".png") else b"user bytes")
    with pytest.raises(UsageError, match="not written by edgeres"):
        check_file_output(f)


def test_files_edgeres_wrote_are_recognised(tmp_path):
    from edgeres.checkpoint import save_checkpoint
    from edgeres.export import export_onnx, resolve_source
    from edgeres.training.state import EpochRecord, output_paths, write_history

    src = resolve_source("resnet20", "random")
    onnx_path = export_onnx(src, tmp_path / "r20.onnx").path
    ckpt = save_checkpoint(tmp_path / "r20.pt", src.model, src.name, src.preprocessing)
    paths = output_paths(tmp_path / "r20.pt")
    write_history(paths, {"model": "resnet20"}, [EpochRecord(1, 10, 0.1, 1.0, 0.5, 1.1, 0.4, 2.0, 100.0)])
    report = tmp_path / "report.json"
    write_json(report, {"reference": {}, "artifact": {}, "drop_top1": 0.0, "agreement_top1": 1.0})
    cache = tmp_path / "c.json"
    write_json(cache, {"format": "edgeres.calib-cache/1"})
    for p in (report, cache, onnx_path, ckpt, paths.history_json, paths.history_csv):
        assert written_by_edgeres(p), p
        check_file_output(p)  # replaceable without --force
    import torch

    torch.save({"state_dict": {}}, tmp_path / "theirs.pt")  # a torch file, but not an edgeres checkpoint
    assert not written_by_edgeres(tmp_path / "theirs.pt")
    empty = tmp_path / "empty.onnx"
    empty.touch()
    check_file_output(empty)  # an empty file holds nothing to lose


def test_plots_are_marked_as_edgeres(tmp_path):
    pytest.importorskip("matplotlib")
    from edgeres.plots import training_curves

    png = training_curves(tmp_path / "h.png", [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_top1": 0.5,
                                                "val_top1": 0.4, "lr": 0.1}])
    assert written_by_edgeres(png)


def test_symlinks_and_folders_in_the_way_of_a_file(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(UsageError, match="is a symlink"):
        check_file_output(link)
    check_file_output(link, force=True)
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(UsageError, match="is an existing folder"):
        check_file_output(tmp_path / "d.onnx", force=True)


def test_parent_that_is_a_file_is_caught_before_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="afile is a file, not a folder"):
        check_file_output(tmp_path / "afile" / "sub" / "out.onnx")
    with pytest.raises(UsageError, match="afile is a file, not a folder"):
        check_dir_output(tmp_path / "afile" / "bundle")
    check_file_output(tmp_path / "new" / "deeper" / "out.onnx")  # missing folders are created later


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere")
def test_unwritable_folder_is_caught_before_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="permission denied"):
            check_file_output(ro / "x.onnx")
    finally:
        ro.chmod(0o700)


def test_bundle_folders(tmp_path):
    b = _bundle(tmp_path / "b")
    assert foreign_files(b, "bundle") == []
    check_dir_output(b)
    empty = tmp_path / "empty"
    empty.mkdir()
    check_dir_output(empty)
    dirty = _bundle(tmp_path / "dirty", extra=["my-notes.txt"])
    for force in (False, True):
        with pytest.raises(UsageError, match=r"holds files edgeres did not write \(my-notes.txt\)"):
            check_dir_output(dirty, force=force)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"jpeg")
    for force in (False, True):
        with pytest.raises(UsageError, match="is a folder that is not an edgeres bundle.*even with --force"):
            check_dir_output(photos, force=force)
    f = tmp_path / "file"
    f.write_text("user")
    with pytest.raises(UsageError, match="is an existing file, not an edgeres bundle; pass --force"):
        check_dir_output(f)
    check_dir_output(f, force=True)


def test_atomic_dir_replaces_a_symlink_not_its_target(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("user data")
    link = tmp_path / "out"
    link.symlink_to(real)
    with pytest.raises(UsageError, match="symlink"):
        check_dir_output(link)
    with atomic_dir(link, check=lambda p: check_dir_output(p, force=True)) as tmp:
        (tmp / "new.txt").write_text("edgeres")
    assert not link.is_symlink() and (link / "new.txt").is_file()
    assert (real / "keep.txt").read_text() == "user data"
    assert not list(tmp_path.glob(".out.old-*"))


def test_atomic_dir_rechecks_before_the_swap(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UsageError):
        with atomic_dir(out, check=check_dir_output) as tmp:
            (tmp / "artifact").write_text("x")
            out.mkdir()  # the user put something there while edgeres worked
            (out / "theirs.txt").write_text("user data")
    assert (out / "theirs.txt").read_text() == "user data"
    assert not list(tmp_path.glob(".out.*"))


def test_make_data_tree_is_recognised(tmp_path):
    from edgeres.data.builtin import write_image_folder

    root = write_image_folder(tmp_path / "shapes", 2, 1)
    assert foreign_files(root, "data") == []
    check_dir_output(root, kind="data")
    (root / "train" / "circle" / "mine.png").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"train/circle/mine.png"):
        check_dir_output(root, kind="data", force=True)


def test_tuning_db_folders_only_get_files_added(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    (db / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="pass --force to add to it"):
        check_dir_output(db, "--db", kind="tuning-db", adds=True)
    check_dir_output(db, "--db", kind="tuning-db", adds=True, force=True)
    write_json(db / "edgeres_tuning.json", {"format": "edgeres-tuning/1"})
    check_dir_output(db, "--db", kind="tuning-db", adds=True)
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        check_dir_output(f, "--db", kind="tuning-db", adds=True, force=True)


def test_calib_cache_checks(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="afile is a file"):
        check_calib_cache(tmp_path / "afile" / "c.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"a": 1}))
    with pytest.raises(InputError, match="is not an edgeres calibration cache"):
        check_calib_cache(other)
    check_calib_cache(tmp_path / "not" / "yet" / "c.json")


def test_fit_warning_for_data_unlike_the_models():
    from edgeres.data import DataWarning
    from edgeres.data.fit import fit_warning
    from edgeres.models import get_model_info
    from edgeres.pipeline import open_data

    info = get_model_info("resnet18")
    imagenet = info.default_preprocessing([str(i) for i in range(1000)])
    with pytest.warns(DataWarning, match=r"32x32, the model takes 224x224 \(upscaled 7x\) and it has 10 classes, "
                                         r"the model 1000"):
        open_data("builtin:20", "calib", imagenet, limit=16, allow_unlabelled=True)
    cifar = get_model_info("resnet20").default_preprocessing([str(i) for i in range(10)])
    ds = open_data("builtin:20", "calib", cifar, limit=16, allow_unlabelled=True)
    assert fit_warning(ds, cifar, "calibration", 10) is None
    assert np.isfinite(ds[0][0]).all()
