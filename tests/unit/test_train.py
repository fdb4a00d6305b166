"""Training: a real (tiny) run of ResNet-20 on the built-in data, exact resume, init, refusals."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from edgeres.checkpoint import load_checkpoint, read_checkpoint_file
from edgeres.data import BUILTIN_CLASSES, iter_batches, open_dataset, write_image_folder
from edgeres.errors import InputError, UsageError
from edgeres.recipes import lr_at, resolve_config
from edgeres.training import resolve_device, train
from edgeres.training.state import output_paths

# Small enough for a few seconds per run on 2 cores: 8 train images/class, 40-image splits.
DATA = "builtin:8"
TINY = dict(limit=40, batch_size=10, progress=False, plot=False)


class Interrupted(Exception):
    pass


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these tiny batches gain nothing from two, and on a busy 2-core
    machine two OpenMP threads spin against each other (runs got ~10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """Two uninterrupted epochs (quick recipe: warmup + cosine, augmentation on)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    result = train("resnet20", DATA, out, epochs=2, **TINY)
    return out, result


def test_output_paths_layout(tmp_path):
    p = output_paths(tmp_path / "runs" / "r20.pt")
    assert (p.best.name, p.last.name, p.history_json.name, p.history_csv.name) == (
        "r20.pt", "r20.last.pt", "r20.history.json", "r20.history.csv")
    d = output_paths(tmp_path / "runs" / "r20")
    assert (d.best.name, d.last.name, d.history_csv.parent.name) == ("best.pt", "last.pt", "r20")


def test_short_run_learns_and_writes_a_loadable_checkpoint(tmp_path):
    lines: list[str] = []
    out = tmp_path / "r20.pt"
    result = train("resnet20", "builtin:4", out, epochs=6, limit=40, batch_size=10, lr=0.02,
                   overrides={"schedule": "constant", "warmup": 0, "augment": False, "weight_decay": 0.0},
                   progress=False, log=lines.append)
    losses = [r.train_loss for r in result.history]
    assert result.epochs_run == 6 and len(losses) == 6
    assert losses[-1] < losses[0] - 0.3, losses
    assert result.best_checkpoint == out and out.is_file()
    assert (tmp_path / "r20.last.pt").is_file()
    assert any(line.startswith("epoch 6/6") for line in lines)

    loaded = load_checkpoint(out)
    assert loaded.name == "resnet20"
    assert loaded.preprocessing.class_names == BUILTIN_CLASSES
    assert loaded.preprocessing.input_size == (32, 32)
    assert loaded.meta["epoch"] == result.best_epoch
    assert loaded.meta["config"]["lr"] == 0.02 and loaded.meta["data"]["spec"] == "builtin:4"
    # The reloaded model reproduces the recorded val top-1 on the same val images.
    val = open_dataset("builtin:4", "val", loaded.preprocessing, limit=40)
    correct = 0
    with torch.no_grad():
        for x, y in iter_batches(val, 64):
            correct += int((loaded.model(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
    assert correct / len(val) == pytest.approx(result.best_val_top1, abs=1e-9)
    assert result.best_val_top1 == max(r.val_top1 for r in result.history)

    history = json.loads((tmp_path / "r20.history.json").read_text())
    assert history["model"] == "resnet20" and len(history["epochs"]) == 6
    csv_rows = (tmp_path / "r20.history.csv").read_text().strip().splitlines()
    assert csv_rows[0].startswith("epoch,iteration,lr,train_loss") and len(csv_rows) == 7


def test_resume_equals_uninterrupted_run(tmp_path, straight_run):
    _, straight = straight_run
    out = tmp_path / "run"

    def stop_after_first(record):
        if record.epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train("resnet20", DATA, out, epochs=2, on_epoch_end=stop_after_first, **TINY)
    first = json.loads((out / "history.json").read_text())["epochs"]
    assert len(first) == 1
    resumed = train("resnet20", DATA, out, resume=out / "last.pt", **TINY)
    assert resumed.epochs_run == 1 and resumed.epoch == 2 and len(resumed.history) == 2
    for a, b in zip(straight.history, resumed.history):
        assert a.iteration == b.iteration and a.lr == pytest.approx(b.lr, abs=1e-12)
        assert a.train_loss == pytest.approx(b.train_loss, abs=1e-6)
        assert a.val_loss == pytest.approx(b.val_loss, abs=1e-6)
        assert a.val_top1 == b.val_top1
    cfg = resolve_config("quick", epochs=2, batch_size=10)
    ipe = straight.history[0].iteration
    assert [r.lr for r in straight.history] == pytest.approx([lr_at(cfg, 0, ipe), lr_at(cfg, ipe, ipe)])
    w_straight = read_checkpoint_file(straight.last_checkpoint)["state_dict"]
    w_resumed = read_checkpoint_file(resumed.last_checkpoint)["state_dict"]
    for key, value in w_straight.items():
        assert torch.allclose(value.float(), w_resumed[key].float(), atol=1e-6), key


def test_resume_refusals(tmp_path, straight_run):
    out, _ = straight_run
    with pytest.raises(InputError, match="no training state.*last.pt"):
        train("resnet20", DATA, tmp_path / "x", resume=out / "best.pt", **TINY)
    with pytest.raises(UsageError, match="already finished its 2 epochs.*--epochs"):
        train("resnet20", DATA, tmp_path / "x", resume=out / "last.pt", **TINY)
    with pytest.raises(UsageError, match=r"--recipe finetune differs .* lr = 0\.01 here, 0\.1 in the run"):
        train("resnet20", DATA, tmp_path / "x", resume=out / "last.pt", recipe="finetune", epochs=3, **TINY)
    with pytest.raises(UsageError, match="is a run of 'resnet20'"):
        train("resnet32", DATA, tmp_path / "x", resume=out / "last.pt", **TINY)
    # Another data set's classes: refused with both lists.
    other = tmp_path / "two"
    rng = np.random.default_rng(0)
    from PIL import Image

    for name in ("apple", "pear"):
        (other / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(other / name / f"{i}.png")
    with pytest.raises(InputError, match=r"trained on classes \[circle, square.*\(10 in all\)\] but the data has \[apple, pear\]"):
        train("resnet20", str(other), tmp_path / "x", resume=out / "last.pt", epochs=3, **TINY)


def test_resume_with_the_recipe_the_run_started_with(tmp_path):
    """Re-running the starting command with --resume added continues the run (as timm/Ultralytics users
    resume); a recipe that configures the run otherwise is refused, naming every field that differs."""
    from typer.testing import CliRunner

    from edgeres.cli import app

    out = tmp_path / "run"
    start = dict(recipe="quick", epochs=2, batch_size=10, progress=False, plot=False)

    def stop_after_first(record):
        raise Interrupted

    with pytest.raises(Interrupted):
        train("resnet20", "builtin:4", out, on_epoch_end=stop_after_first, **start)
    last = out / "last.pt"
    with pytest.raises(UsageError) as refused:
        train("resnet20", "builtin:4", out, resume=last, **{**start, "recipe": "finetune"})
    message = str(refused.value)
    assert message.startswith("--recipe finetune differs from the configuration") and "(recipe quick)" in message
    for field in ("lr = 0.01 here, 0.1 in the run", "weight_decay = 0.0001 here, 0.0005 in the run"):
        assert field in message, message
    assert "epochs" not in message and "batch_size" not in message  # given: overrides of the run, not compared
    with pytest.raises(UsageError, match=r"epochs = 6 here, 2 in the run.*pass the options the run started with"):
        train("resnet20", "builtin:4", out, resume=last, **{**start, "epochs": None})

    cmd = ["train", "resnet20", "--data", "builtin:4", "--out", str(out), "--recipe", "quick", "--epochs", "2",
           "--batch-size", "10", "--no-plot"]
    result = CliRunner().invoke(app, [*cmd, "--resume", str(last)])
    assert result.exit_code == 0, (result.output, result.exception)
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2] and history["resumed_from"] == str(last)
    assert history["recipe"] == "quick"


def test_init_class_checks_and_head_replacement(tmp_path, straight_run):
    out, _ = straight_run
    folder = write_image_folder(tmp_path / "folder", 3, 2)
    shutil.move(str(folder / "train" / "circle"), str(folder / "train" / "zcircle"))
    shutil.move(str(folder / "val" / "circle"), str(folder / "val" / "zcircle"))
    init_args = dict(epochs=1, batch_size=10, progress=False)
    # Same class count, different names: the old head would silently mislabel -> refused.
    with pytest.raises(InputError, match="but the data has .*zcircle.*--replace-head"):
        train("resnet20", str(folder), tmp_path / "a", init=out / "best.pt", **init_args)
    lines: list[str] = []
    res = train("resnet20", str(folder), tmp_path / "a", init=out / "best.pt", replace_head=True,
                log=lines.append, **init_args)
    assert res.class_names[-1] == "zcircle"
    assert any("new classifier head for 10 classes" in line for line in lines), lines

    # A torchvision-style plain state dict with another class count: head replaced, backbone kept.
    from edgeres.models import create_model

    torch.manual_seed(1)
    donor = create_model("resnet20", num_classes=5)
    torch.save(donor.state_dict(), tmp_path / "plain.pth")
    lines.clear()
    train("resnet20", DATA, tmp_path / "b.pt", init=tmp_path / "plain.pth", log=lines.append,
          overrides={"lr": 1e-9, "momentum": 0.0, "weight_decay": 0.0, "augment": False}, epochs=1, **TINY)
    assert any("file's has 5" in line for line in lines), lines
    trained = read_checkpoint_file(tmp_path / "b.pt")["state_dict"]
    assert torch.allclose(trained["conv1.weight"], donor.state_dict()["conv1.weight"], atol=1e-6)
    assert trained["fc.weight"].shape == (10, 64)

    with pytest.raises(UsageError, match="either --init .* or --resume"):
        train("resnet20", DATA, tmp_path / "c", init=out / "best.pt", resume=out / "last.pt", **TINY)


def test_held_out_val_when_data_has_no_val_split(tmp_path):
    folder = write_image_folder(tmp_path / "f", 4, 1)
    shutil.rmtree(folder / "val")
    flat = folder / "train"  # <class>/*.png, no split directories
    res = train("resnet20", str(flat), tmp_path / "r", epochs=1, batch_size=8, progress=False)
    meta = load_checkpoint(res.best_checkpoint).meta
    assert meta["data"]["val_split"] == "held out 10% of train"
    assert (meta["data"]["train_images"], meta["data"]["val_images"]) == (30, 10)


def test_bad_options():
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu:x")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(UsageError, match="unknown training option.*lrate"):
        train("resnet20", DATA, "/nonexistent/x", overrides={"lrate": 1}, progress=False)
    with pytest.raises(UsageError, match="lr is given twice"):
        train("resnet20", DATA, "/nonexistent/x", lr=0.1, overrides={"lr": 0.2}, progress=False)
    with pytest.raises(UsageError, match="num_classes=5 but the data has 10"):
        train("resnet20", DATA, "/nonexistent/x", num_classes=5, **TINY)


def test_cli_fine_tune_with_frozen_backbone_reports_head_and_trains_only_fc(tmp_path):
    """`edgeres train --init other-classes.pth --freeze-backbone`: the new head is reported, only fc moves,
    BatchNorm statistics stay as loaded, and the training-curve PNG is written next to the history."""
    from typer.testing import CliRunner

    from edgeres.cli import app
    from edgeres.models import create_model

    torch.manual_seed(3)
    donor = create_model("resnet20", num_classes=5)
    with torch.no_grad():  # non-default BN statistics, to see that they are kept
        donor.bn1.running_mean.uniform_(-0.5, 0.5)
    torch.save(donor.state_dict(), tmp_path / "donor.pth")
    out = tmp_path / "ft"
    result = CliRunner().invoke(app, ["train", "resnet20", "--data", "builtin:2", "--out", str(out), "--epochs", "1",
                                      "--batch-size", "10", "--lr", "0.05", "--init", str(tmp_path / "donor.pth"),
                                      "--freeze-backbone"])
    assert result.exit_code == 0, result.output
    assert "classifier head replaced: new fc for 10 classes" in result.output
    assert "trainable parameters: 650 of 269,722 (backbone frozen)" in result.output  # fc: 64 x 10 + 10

    trained = read_checkpoint_file(out / "last.pt")
    assert trained["meta"]["config"]["freeze_backbone"] is True
    state, ref = trained["state_dict"], donor.state_dict()
    for key, value in ref.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    assert state["fc.weight"].shape == (10, 64)
    torch.manual_seed(0)  # the run's fresh head started from the seed-0 init; it must have moved
    assert not torch.allclose(state["fc.weight"], create_model("resnet20", num_classes=10).fc.weight)

    png = out / "history.png"
    if importlib.util.find_spec("matplotlib") is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    # Resuming with the head unfrozen is refused (the optimizer holds the fc parameters only).
    with pytest.raises(UsageError, match="freeze_backbone=True; resume without changing --freeze-backbone"):
        train("resnet20", "builtin:2", out, resume=out / "last.pt", epochs=2, freeze_backbone=False,
              batch_size=10, progress=False, plot=False)


def test_curves_skipped_with_a_note_without_matplotlib(tmp_path, monkeypatch):
    from edgeres import plots
    from edgeres.training.state import EpochRecord, write_curves

    def missing():
        raise UsageError("plots need matplotlib, which is not installed; pip install 'edgeres[plot]'")

    monkeypatch.setattr(plots, "_matplotlib", missing)
    paths = output_paths(tmp_path / "r")
    note = write_curves(paths, [EpochRecord(1, 5, 0.1, 2.0, 0.2, 2.1, 0.1, 1.0, 50.0)])
    assert note is not None and note.startswith("note: no training-curve plot") and "matplotlib" in note
    assert not paths.curves_png.exists()
