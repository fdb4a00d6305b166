"""Bad input ends in one line that says what is wrong and how to fix it, exit code 2, no traceback.

Every command here fails before the weights matter, so the models have random weights
(``random_r20`` / ``random_r20_onnx``), not the trained fixture. Most run the command in this
process (``cli_main``: the same ``main()``, without ~2.5 s of interpreter and torch start-up
each); the first and the entry-point test start ``python -m edgeres`` as a user would.
"""

def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_unknown_model(cli, tmp_path):
    r = cli("export", "resnet51", "--weights", "random", "--out", tmp_path / "x.onnx")
    _one_line_error(r, "resnet51", "edgeres models")
    assert not (tmp_path / "x.onnx").exists()


def test_zoo_name_without_weights_is_refused(cli_main, tmp_path):
    r = cli_main("export", "resnet18", "--out", tmp_path / "x.onnx")
    _one_line_error(r, "--weights", "random")


def test_unknown_target(cli_main, tmp_path):
    r = cli_main("compile", "resnet20", "--weights", "random", "--target", "jetson-nanoo", "--out", tmp_path / "b")
    _one_line_error(r, "jetson-nanoo", "edgeres targets")
    assert not (tmp_path / "b").exists()


def test_missing_checkpoint(cli_main, tmp_path):
    r = cli_main("export", tmp_path / "nope.pt", "--out", tmp_path / "x.onnx")
    _one_line_error(r, "does not exist")


def test_corrupt_checkpoint(cli_main, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a zip at all" * 10)
    r = cli_main("export", bad, "--out", tmp_path / "x.onnx")
    _one_line_error(r, "corrupt")


class Evil:
    """A picklable class: a checkpoint holding one must not be unpickled (weights_only=True)."""


def test_pickle_with_code_is_refused(cli_main, tmp_path):
    import torch

    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "obj": Evil()}, bad)
    r = cli_main("export", "resnet20", "--weights", bad, "--out", tmp_path / "x.onnx")
    _one_line_error(r, "refuses")


def test_corrupt_onnx(cli_main, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 100)
    r = cli_main("quantize", bad, "--calib", "builtin", "--out", tmp_path / "q.onnx")
    _one_line_error(r, "not a valid ONNX model")
    assert not (tmp_path / "q.onnx").exists()


def test_empty_data_dir(cli_main, tmp_path, random_r20_onnx):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli_main("quantize", random_r20_onnx, "--calib", empty, "--out", tmp_path / "q.onnx")
    _one_line_error(r, "no images")
    assert not (tmp_path / "q.onnx").exists()


def test_missing_bundle(cli_main, tmp_path):
    r = cli_main("validate", tmp_path / "nobundle", "--data", "builtin")
    _one_line_error(r, "does not exist")


def test_int8_without_calibration(cli_main, random_r20, tmp_path):
    r = cli_main("compile", random_r20, "--target", "x86-64", "--precision", "int8", "--out", tmp_path / "b")
    _one_line_error(r, "--calib")


def test_precision_not_supported_by_target(cli_main, random_r20, tmp_path):
    r = cli_main("compile", random_r20, "--target", "x86-64", "--precision", "fp16", "--out", tmp_path / "b")
    _one_line_error(r, "does not support fp16")


def test_module_entry_point_lists_models(cli):
    r = cli("models", "resnet1*")
    assert r.returncode == 0, r.stderr
    for name in ("resnet18", "resnet101", "resnet110", "resnet1202"):
        assert name in r.stdout
    assert "resnet50" not in r.stdout


def test_calibration_images_need_not_share_the_model_classes(cli_main, tmp_path):
    """An ImageNet-style zoo model (classes '0'..'999') calibrates on any folder of images."""
    out = tmp_path / "r20.int8.onnx"
    fp32 = tmp_path / "r20.onnx"
    r = cli_main("export", "resnet20", "--weights", "random", "--out", fp32)
    assert r.returncode == 0, r.stderr
    r = cli_main("quantize", fp32, "--calib", "builtin", "--num-calib", "20", "--out", out)
    assert r.returncode == 0, r.stderr
    assert out.is_file()
