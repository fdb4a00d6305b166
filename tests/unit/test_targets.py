import textwrap

import pytest

from edgeres.errors import InputError, TargetNotFound
from edgeres.targets import get_target, list_targets, load_target_file, parse_target


def test_builtin_targets_load_and_validate():
    names = {t.name for t in list_targets()}
    assert {"x86-64", "x86-64-host", "onnxruntime-cpu"} <= names
    t = get_target("x86-64")
    assert t.backend == "tvm" and t.arch == "x86_64" and "int8" in t.precisions
    assert t.options["target"]["kind"] == "llvm"


def test_alias_resolves():
    assert get_target("host").name == "x86-64-host"
    assert get_target("ort").name == "onnxruntime-cpu"


def test_target_is_frozen():
    t = get_target("x86-64")
    with pytest.raises(Exception):
        t.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        t.options["target"] = {}
    copy = t.options_dict()
    copy["target"]["mcpu"] = "znver4"
    assert t.options["target"]["mcpu"] != "znver4"


def test_unknown_target_suggests():
    with pytest.raises(TargetNotFound, match=r"unknown target 'x86_64'.*Did you mean.*x86-64.*edgeres targets"):
        get_target("x86_64")


@pytest.mark.parametrize(
    "body, match",
    [
        ('name="a"\nbackend="tvm"', "lacks precisions"),
        ('name="a"\nbackend="cuda"\nprecisions=["fp32"]', "backend 'cuda' is not one of"),
        ('name="a"\nbackend="tvm"\nprecisions=["int4"]', "key 'precisions' must be"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\ndefault_precision="int8"', "default_precision"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\nbogus=1', "unknown keys"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\nbatch_size=0', "batch_size"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\nreduce_range="yes"', "key 'reduce_range' must be true or false"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\nreduce_range=1', "key 'reduce_range' must be true or false, got integer 1"),
        ('name = [', "not valid TOML"),
        # every field's type and range, named in one line with the expected type
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\nthresholds=1', "key 'thresholds' must be a table"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\ntvm=3', "key 'tvm' must be a table .*got integer 3"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\ntensorrt="x"', "key 'tensorrt' must be a table"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\naliases="abc"', "key 'aliases' must be an array of"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\naliases=["b", 3]', "key 'aliases' must be an array of"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\n[thresholds]\nmax_drop=-1', "thresholds.max_drop' must be a number"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\n[thresholds]\nmax_drop="1"', "got string '1'"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\n[thresholds]\nmax_drp=1', "unknown keys \\['max_drp'\\]"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\nbatch_size=true', "key 'batch_size' must be a positive integer"),
        ('name=1\nbackend="tvm"\nprecisions=["fp32"]', "key 'name' must be a non-empty string, got integer 1"),
        ('name="a"\nbackend="tvm"\nprecisions="fp32"', "key 'precisions' must be a non-empty array"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32", "fp32"]', "lists a value twice"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\ndescription=3', "key 'description' must be a string"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\ndevice="gpu"', "device 'gpu' is not one of"),
        ('name="a"\nbackend="tvm"\nprecisions=["fp32"]\narch=64', "key 'arch' must be a string"),
    ],
)
def test_bad_target_files(tmp_path, body, match):
    f = tmp_path / "t.toml"
    f.write_text(body)
    with pytest.raises(InputError, match=match):
        load_target_file(f)


def test_user_dir_and_env_override(tmp_path, monkeypatch):
    (tmp_path / "mine.toml").write_text(textwrap.dedent("""
        name = "x86-64"
        description = "my override"
        backend = "onnxruntime"
        precisions = ["fp32"]
    """))
    assert get_target("x86-64", [tmp_path]).description == "my override"
    monkeypatch.setenv("EDGERES_TARGETS_PATH", str(tmp_path))
    assert get_target("x86-64").description == "my override"
    with pytest.raises(InputError, match="does not exist"):
        list_targets([tmp_path / "missing"])


def test_path_to_toml_accepted(tmp_path):
    f = tmp_path / "board.toml"
    f.write_text('name="board"\nbackend="tvm"\nprecisions=["fp32"]\n[thresholds]\nmax_drop=0.5\n')
    t = get_target(str(f))
    assert t.name == "board" and t.max_drop == 0.5 and t.qdq_form == "cpu"


def test_parse_defaults():
    t = parse_target({"name": "g", "backend": "tensorrt", "precisions": ["fp16", "int8"]})
    assert t.device == "cuda" and t.qdq_form == "tensorrt" and t.default_precision == "fp16"


def test_reduce_range_per_target():
    for name in ("x86-64", "x86-64-host"):
        t = get_target(name)
        assert t.reduce_range is True and t.to_dict()["reduce_range"] is True
    for name in ("rtx-ada", "onnxruntime-cpu", "aarch64"):  # TensorRT, ONNX Runtime, ARM (SDOT, no vpmaddubsw)
        assert get_target(name).reduce_range is False
    assert parse_target({"name": "g", "backend": "tvm", "precisions": ["int8"], "reduce_range": True}).reduce_range


def test_reduce_range_survives_the_manifest(tmp_path):
    from types import SimpleNamespace

    from edgeres.targets import get_target_from_manifest

    t = get_target("x86-64")
    assert get_target_from_manifest(SimpleNamespace(manifest={"target": t.to_dict()}, root=tmp_path)).reduce_range
    old = {k: v for k, v in t.to_dict().items() if k != "reduce_range"}  # a bundle made before the option
    assert not get_target_from_manifest(SimpleNamespace(manifest={"target": old}, root=tmp_path)).reduce_range


def test_bad_target_file_from_the_cli_is_one_line(cli, tmp_path):
    """A hand-written target with a wrong type: one line naming the file, the key and the type, no traceback."""
    f = tmp_path / "board.toml"
    f.write_text('name="board"\nbackend="tvm"\nprecisions=["fp32"]\nthresholds=1\n')
    for args in (("targets", "--targets-dir", tmp_path), ("compile", "x.onnx", "--target", f)):
        r = cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().count("\n") == 0, r.stderr
        assert str(f) in r.stderr and "'thresholds' must be a table" in r.stderr
