"""What a new user reads: lists at 80 columns, --json, help text, progress, piped output (issue 15)."""

import io
import json
import os
import subprocess
import sys

import pytest


def _run(*args, columns=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    if columns:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "edgeres", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_targets_at_80_columns_never_cut_names():
    from edgeres.targets import list_targets

    r = _run("targets", columns=80)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    assert "…" not in r.stdout
    for t in list_targets():
        assert any(ln.split()[:1] == [t.name] for ln in lines), t.name  # the whole name, first on its line
    assert len(lines) < 2 * len(list_targets()) + 12  # no one-word-per-line wrapping
    assert "x86-64-avx2" in r.stdout and "x86-64-avx512" in r.stdout


def test_target_details_and_verbose_hold_the_long_text():
    from edgeres.targets import get_target

    t = get_target("x86-64-avx512")
    r = _run("targets", "avx512")  # an alias works too; piped, no $COLUMNS: nothing wrapped
    assert r.returncode == 0, r.stderr
    assert t.description in r.stdout and str(t.source) in r.stdout
    r = _run("targets", "--verbose")
    assert t.description in r.stdout


def _main(capsys, *args):
    from edgeres.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr().out
    assert e.value.code == 0, out
    return out


def test_list_commands_have_json(capsys):
    from edgeres.models import list_models
    from edgeres.targets import list_targets

    data = json.loads(_main(capsys, "targets", "--json"))
    assert [d["name"] for d in data] == [t.name for t in list_targets()]
    assert data[0]["description"] and data[0]["source"].endswith(".toml")
    assert json.loads(_main(capsys, "targets", "jetson", "--json"))[0]["name"] == "jetson-agx-orin"
    data = json.loads(_main(capsys, "models", "resnet*", "--json"))
    assert [d["name"] for d in data] == [m.name for m in list_models("resnet*")]


def test_piped_output_does_not_break_long_lines(tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "bundle-that-does-not-exist"
    r = _run("validate", deep, "--data", "builtin")
    assert r.returncode == 2
    assert str(deep) in r.stderr.replace("\n", "") and r.stderr.count("\n") == 1


def test_compile_help_is_readable_at_80_columns():
    r = _run("compile", "--help", columns=80)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "<bool>" not in text and "<list[" not in text and "<str>" not in text
    assert "…" not in text
    assert "MODEL-TARGET-PRECISION" in text
    flat = " ".join(text.replace("│", " ").split())
    assert "--num-calib INTEGER Calibration images" in flat
    assert "--calib-cache PATH Calibration cache" in flat


def test_progress_bar_on_a_terminal_and_one_line_when_piped():
    from rich.console import Console

    from edgeres.progress import track

    term = io.StringIO()
    items = list(track(iter([[0] * 32] * 4), "calibrating", 128, "images", count=len,
                       console=Console(file=term, force_terminal=True, width=100)))
    assert len(items) == 4 and "128/128" in term.getvalue() and "calibrating" in term.getvalue()
    piped = io.StringIO()
    list(track(iter([[0] * 32] * 4), "calibrating", 128, "images", count=len,
               console=Console(file=piped, force_terminal=False, width=100)))
    assert piped.getvalue().count("\n") == 1 and piped.getvalue().startswith("calibrating: 128 images in ")
    quiet = io.StringIO()
    list(track(iter([1, 2]), "x", 2, "items", enabled=False, console=Console(file=quiet)))
    assert quiet.getvalue() == ""


def test_quickstart_writes_the_sample_images_its_hint_names(tmp_path):
    from edgeres.outputs import written_by_edgeres
    from edgeres.quickstart import sample_paths, write_samples

    paths = write_samples(tmp_path)
    assert paths == sample_paths(tmp_path) and all(p.is_file() and written_by_edgeres(p) for p in paths)
    from PIL import Image

    assert Image.open(paths[0]).size == (32, 32)


def test_every_command_help_renders(capsys, monkeypatch):
    from edgeres.cli import app

    monkeypatch.setenv("COLUMNS", "80")
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"compile", "run", "quantize", "tune", "build-engine"} <= set(names)
    for cmd in names:
        out = _main(capsys, cmd, "--help")
        assert f"Usage: edgeres {cmd}" in out, cmd
        assert "<bool>" not in out and "<list[" not in out and "<str>" not in out, out


def test_piped_quantize_prints_one_line_per_stage(tmp_path, capsys):
    from edgeres.cli import main
    from edgeres.export import export_onnx, resolve_source

    fp32 = export_onnx(resolve_source("resnet20", "random"), tmp_path / "r20.onnx").path
    with pytest.raises(SystemExit) as e:
        main(["quantize", str(fp32), "--calib", "builtin", "--num-calib", "40", "--out", str(tmp_path / "q.onnx")])
    captured = capsys.readouterr()
    assert e.value.code == 0, captured.err
    stage_lines = [ln for ln in captured.err.splitlines() if ln.startswith("calibrating")]
    assert len(stage_lines) == 1 and stage_lines[0].startswith("calibrating: 40 images in "), captured.err
    assert "\x1b[" not in captured.err  # no escape codes in a log
