"""Data safety and bad input through the CLI, as a user meets them (issue 15): no user file is lost,
no traceback, one line that says what to do."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from edgeres.cli import main

FAST = ("--target", "onnxruntime-cpu", "--precision", "fp32")  # no compiler: seconds, not minutes


@pytest.fixture
def cli(capsys):
    """``cli(*args)`` runs ``edgeres ARGS`` in this process (the console script's ``main``); returns
    returncode, stdout and stderr like subprocess.run."""

    def run(*args):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


def _one_error_line(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory):
    from edgeres.pipeline import compile_bundle

    out = tmp_path_factory.mktemp("rb") / "bundle"
    compile_bundle("resnet20", "onnxruntime-cpu", out, precision="fp32", weights="random")
    return out


def test_compile_out_never_replaces_a_users_file(cli, tmp_path):
    f = tmp_path / "thesis.txt"
    f.write_text("three years of work")
    # refused before any work: the missing weights are not even looked at yet
    _one_error_line(cli("compile", "resnet20", *FAST, "--out", f), "--out", "--force")
    assert f.read_text() == "three years of work"
    r = cli("compile", "resnet20", "--weights", "random", *FAST, "--out", f, "--force")
    assert r.returncode == 0, r.stderr
    assert (f / "manifest.json").is_file()  # replaced only because the user said --force


def test_compile_out_never_deletes_a_folder_edgeres_did_not_write(cli, tmp_path, random_bundle):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"jpeg bytes")
    for extra in ((), ("--force",)):
        _one_error_line(cli("compile", "resnet20", "--weights", "random", *FAST, "--out", photos, *extra),
                        "not an edgeres bundle")
    assert (photos / "cat.jpg").read_bytes() == b"jpeg bytes"
    link = tmp_path / "latest"
    link.symlink_to(photos)
    _one_error_line(cli("compile", "resnet20", "--weights", "random", *FAST, "--out", link), "symlink")
    assert link.is_symlink()


def test_compile_replaces_its_own_bundle_but_keeps_files_added_to_it(cli, tmp_path):
    out = tmp_path / "b"
    for _ in range(2):  # re-running the same command replaces the bundle it wrote
        r = cli("compile", "resnet20", "--weights", "random", *FAST, "--out", out)
        assert r.returncode == 0, r.stderr
    (out / "my-notes.md").write_text("measured on the board: 3 ms")
    _one_error_line(cli("compile", "resnet20", "--weights", "random", *FAST, "--out", out, "--force"),
                    "my-notes.md")
    assert (out / "my-notes.md").is_file() and (out / "manifest.json").is_file()


def test_other_outputs_are_checked_before_work(cli, tmp_path, random_bundle):
    user = tmp_path / "user.bin"
    user.write_bytes(b"user data")
    onnx_user = tmp_path / "model.onnx"
    onnx_user.write_bytes(b"user data")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"jpeg")
    cases = [
        ("export", "resnet20", "--weights", "random", "--out", onnx_user),
        ("quantize", random_bundle / "model.fp32.onnx", "--calib", "builtin", "--out", onnx_user),
        ("train", "resnet20", "--data", "builtin:5", "--epochs", "1", "--out", tmp_path / "user.pt"),
        ("validate", random_bundle, "--data", "builtin", "--json", user),
        ("sensitivity", random_bundle / "model.fp32.onnx", "--calib", "builtin", "--val", "builtin", "--plot", user),
        ("make-data", photos),
    ]
    (tmp_path / "user.pt").write_bytes(b"user data")
    for args in cases:
        _one_error_line(cli(*args), str(args[-1]))
    assert user.read_bytes() == b"user data" and onnx_user.read_bytes() == b"user data"
    assert (tmp_path / "user.pt").read_bytes() == b"user data" and (photos / "cat.jpg").read_bytes() == b"jpeg"
    assert [p.name for p in photos.iterdir()] == ["cat.jpg"]


def _onnx_file(path, outputs):
    """A valid ONNX model with one NCHW input and the given (name, shape) outputs (Conv + Identity)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["fmap"], pads=[1, 1, 1, 1])]
    outs = []
    for name, shape in outputs:
        if name != "fmap":
            nodes.append(helper.make_node("Flatten", ["fmap"], [name]) if len(shape) == 2
                         else helper.make_node("Identity", ["fmap"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              outs, [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_an_onnx_that_is_not_a_classifier_is_refused_at_load(cli, tmp_path):
    fmap = _onnx_file(tmp_path / "backbone.onnx", [("fmap", ["N", 4, 8, 8])])
    line = _one_error_line(cli("compile", fmap, *FAST, "--out", tmp_path / "b"), "not (N, classes)", "[")
    assert "'fmap'" in line
    assert not (tmp_path / "b").exists()
    two = _onnx_file(tmp_path / "two.onnx", [("a", ["N", 256]), ("b", ["N", 4, 8, 8])])
    _one_error_line(cli("quantize", two, "--calib", "builtin", "--out", tmp_path / "q.onnx"), "2 outputs")


def test_output_check_can_be_relaxed_for_another_task(tmp_path):
    from edgeres.export import load_onnx
    from edgeres.onnx_io import check_outputs, load_model

    fmap = _onnx_file(tmp_path / "backbone.onnx", [("fmap", ["N", 4, 8, 8])])
    check_outputs(load_model(fmap), task="features")  # the feature-extractor task decides for itself
    logits = _onnx_file(tmp_path / "cls.onnx", [("logits", ["N", 256])])
    load_onnx(logits)


def test_calib_cache_in_a_missing_folder_is_created_atomically(cli, tmp_path):
    from edgeres.quantize.cache import CACHE_FORMAT

    cache = tmp_path / "caches" / "sub" / "r20.calib.json"
    r = cli("compile", "resnet20", "--weights", "random", "--target", "onnxruntime-cpu", "--precision", "int8",
            "--calib", "builtin", "--num-calib", "32", "--calib-cache", cache, "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(cache.read_text())["format"] == CACHE_FORMAT
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    (tmp_path / "afile").write_text("x")
    _one_error_line(cli("compile", "resnet20", "--weights", "random", "--target", "onnxruntime-cpu", "--calib",
                        "builtin", "--calib-cache", tmp_path / "afile" / "c.json", "--out", tmp_path / "b2"),
                    "afile is a file")
    old = tmp_path / "old.calib.json"
    old.write_text(json.dumps({"format": "edgeres.calib-cache/1"}))
    _one_error_line(cli("compile", "resnet20", "--weights", "random", "--target", "onnxruntime-cpu", "--calib",
                        "builtin", "--calib-cache", old, "--out", tmp_path / "b3"), "another edgeres version")


def test_run_takes_a_folder_of_images(cli, tmp_path, random_bundle):
    from edgeres.data.builtin import write_image_folder

    root = write_image_folder(tmp_path / "shapes", 1, 1)
    r = cli("run", random_bundle, root / "val" / "circle", root / "val" / "square" / "square_00000.png")
    assert r.returncode == 0, r.stderr
    assert "circle_00000.png" in r.stdout and "square_00000.png" in r.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    _one_error_line(cli("run", random_bundle, empty), "holds no images", "image files")


def test_random_weights_are_marked_and_warned_about(cli, random_bundle):
    from edgeres.bundle import load_bundle
    from edgeres.export import MODEL_METADATA_KEY
    from edgeres.onnx_io import load_model

    b = load_bundle(random_bundle)
    assert b.random_weights and b.manifest["model"]["random_weights"] is True
    meta = {p.key: p.value for p in load_model(b.file("fp32")).metadata_props}
    assert json.loads(meta[MODEL_METADATA_KEY])["weights"] == "random"
    img = random_bundle / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(img)
    for args in (("run", random_bundle, img), ("bench", random_bundle, "--repeats", "3"),
                 ("validate", random_bundle, "--data", "builtin")):
        with pytest.warns(UserWarning, match=r"compiled with --weights random: its predictions and accuracy mean"):
            cli(*args)  # validate then fails: the random model's classes are not the data's
    img.unlink()


def test_bench_says_which_is_faster():
    from edgeres.cli_format import speed_vs

    assert speed_vs(2.0, 1.0) == "2.00x slower"
    assert speed_vs(0.69, 1.0) == "1.45x faster"
    assert speed_vs(1.0, 1.0) == "same"


def test_missing_weights_and_calibration_suggest_what_the_user_has(cli, tmp_path):
    line = _one_error_line(cli("compile", "resnet50", "--target", "jetson", "--out", tmp_path / "b"),
                           "--weights random", "--data builtin")
    assert "--calib" not in line  # the source problem comes first
    _one_error_line(cli("compile", "resnet20", "--weights", "random", "--target", "x86-64", "--precision", "int8",
                        "--out", tmp_path / "b"), "--calib builtin", "make-data")


def test_selftest_and_bench_json_never_replace_a_users_file(cli_main, random_bundle, tmp_path):
    """--json of selftest/bench (like profile/debug): a user's file is refused before any work, --force
    replaces it, and the file edgeres wrote is replaced on the next run without --force."""
    for args in (["selftest", random_bundle], ["bench", random_bundle, "--repeats", "3"]):
        mine = tmp_path / f"{args[0]}.json"
        mine.write_text('{"my": "numbers"}')
        r = cli_main(*args, "--json", mine)
        assert r.returncode == 2 and "was not written by edgeres; pass --force" in r.stderr, r.stderr
        assert json.loads(mine.read_text()) == {"my": "numbers"}
        assert cli_main(*args, "--json", mine, "--force").returncode == 0
        assert json.loads(mine.read_text())["format"].startswith("edgeres.")
        assert cli_main(*args, "--json", mine).returncode == 0  # its own file: replaced
