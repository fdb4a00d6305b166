"""The TVM backend: compile real small ResNets for x86-64 targets and compare with ONNX Runtime.

Each TVM compile is a module-scoped fixture (a few seconds each on 2 cores): ResNet-20 at
32x32 for x86-64-host and x86-64, and a tiny residual CNN at 16x16 (Q/DQ int8; batch 2).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeres.errors import BackendUnavailable, InputError, UsageError
from edgeres.targets import get_target, parse_target

tvm = pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")
from edgeres.backends import onnxruntime as ortb  # noqa: E402
from edgeres.backends import tvm as tb  # noqa: E402
from edgeres.backends.tvm import options as tt  # noqa: E402


def _assert_logits_close(got: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> None:
    assert got.shape == ref.shape and got.dtype == np.float32
    scale = float(np.abs(ref).max())
    assert scale > 1e-3, "degenerate reference logits"
    diff = float(np.abs(got - ref).max())
    assert diff < rel * scale, f"max |diff| {diff:.3g} at logit scale {scale:.3g}"


@pytest.fixture(scope="module")
def host_fp32(r20_untrained_onnx, tmp_path_factory):
    return tb.compile(r20_untrained_onnx, get_target("x86-64-host"), tmp_path_factory.mktemp("host") / "artifact",
                      precision="fp32")


@pytest.fixture(scope="module")
def generic_fp32(r20_untrained_onnx, tmp_path_factory):
    return tb.compile(r20_untrained_onnx, get_target("x86-64"), tmp_path_factory.mktemp("generic") / "artifact",
                      precision="fp32")


@pytest.fixture(scope="module")
def host_int8(tiny_qdq, tmp_path_factory):
    return tb.compile(tiny_qdq, get_target("x86-64-host"), tmp_path_factory.mktemp("int8") / "artifact",
                      precision="int8")


def _batch2_target():
    rec = {"name": "x86-64-b2", "backend": "tvm", "precisions": ["fp32"], "batch_size": 2,
           "tvm": {"target": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v2"}}}
    return parse_target(rec)


@pytest.fixture(scope="module")
def one_record_db(tiny_onnx, tmp_path_factory) -> Path:
    """A MetaSchedule database holding one record: the builtin schedule of the first convolution,
    for the workloads :func:`tb.tuning_module` reports (what a tuning run would write)."""
    from tvm.s_tir import meta_schedule as ms

    from edgeres.backends.tvm import schedule as tvm_schedule

    mod, tvm_target = tb.tuning_module(tiny_onnx, _batch2_target(), {"layout": "NHWC"})
    task = next(t for t in ms.relax_integration.extract_tasks(mod, tvm_target) if "conv2d" in t.task_name)
    workload_mod = task.dispatched[0]
    sch = tvm_schedule.schedule_func(workload_mod["main"])
    work = tmp_path_factory.mktemp("db")
    db = ms.database.JSONDatabase(work_dir=str(work))
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(workload_mod), [1e-4], tvm_target))
    return work


@pytest.fixture(scope="module")
def tiny_b2(tiny_onnx, one_record_db, tmp_path_factory):
    """Batch-2 artifact of the tiny CNN: NHWC, one function from the tuning database, the rest
    left as TVM's default lowering (schedule "none")."""
    return tb.compile(tiny_onnx, _batch2_target(), tmp_path_factory.mktemp("tiny") / "artifact", precision="fp32",
                      options={"tuning_db": str(one_record_db), "layout": "NHWC", "schedule": "none"})


# -- numerics ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5])
def test_host_target_matches_onnxruntime(host_fp32, r20_untrained_onnx, make_images, n):
    x = make_images(n, 32, seed=n)
    _assert_logits_close(tb.load(host_fp32)(x), ortb.make_runner(r20_untrained_onnx)(x))


def test_generic_target_matches_onnxruntime(generic_fp32, r20_untrained_onnx, make_images):
    x = make_images(5, 32, seed=7)
    _assert_logits_close(tb.load(generic_fp32)(x), ortb.make_runner(r20_untrained_onnx)(x))
    assert generic_fp32.info["tvm_target"]["mcpu"] == "x86-64-v2"


def test_batch2_artifact_pads_the_last_chunk(tiny_b2, tiny_onnx, make_images):
    assert tiny_b2.input_shape == (2, 3, 16, 16)
    runner = tb.load(tiny_b2.path)
    ref = ortb.make_runner(tiny_onnx)
    for n in (1, 2, 5):  # 1: padded; 5: two full chunks + one padded
        x = make_images(n, 16, seed=20 + n)
        _assert_logits_close(runner(x), ref(x))
    assert runner(np.zeros((0, 3, 16, 16), np.float32)).shape == (0, 10)
    assert tiny_b2.info["layout"] == "NHWC" and tiny_b2.info["schedule"] == "none"
    assert tiny_b2.info["tuning_db"] and tiny_b2.info["tuned_functions"] == 1


def test_qdq_model_compiles_and_matches_onnxruntime_on_the_same_model(host_int8, tiny_qdq, make_images):
    x = make_images(16, 16, seed=3)
    got = tb.load(host_int8)(x)
    # ORT with graph optimizations off runs the Q/DQ graph in float, as TVM does: the same
    # numbers except where a value sits on a rounding boundary of a quantizer (one step apart).
    ref = ortb.make_runner(tiny_qdq, optimization_level="disabled")(x)
    diff, scale = np.abs(got - ref), float(np.abs(ref).max())
    assert np.median(diff) < 1e-4 * scale and (diff > 1e-4 * scale).mean() < 0.2 and diff.max() < 0.02 * scale
    # ORT's default level fuses Q/DQ into integer kernels, which round differently: looser.
    int8_ref = ortb.make_runner(tiny_qdq)(x)
    _assert_logits_close(got, int8_ref, rel=0.05)
    assert (got.argmax(1) == int8_ref.argmax(1)).mean() >= 0.75
    assert host_int8.precision == "int8"
    # ONNX Runtime's quantizer writes 8-bit weights: on CPUs whose integer kernel is vpmaddubsw
    # (AVX2, no VNNI) the TVM backend keeps them on float kernels and says why.
    from edgeres.backends.tvm.int8 import SATURATING, int8_kind

    kind = int8_kind(tt.make_target(host_int8.info["tvm_target"]))
    if kind is None or kind in SATURATING:
        assert host_int8.info["int8_kernels"] is False and "float kernels" in host_int8.info["int8_note"]
    else:
        assert host_int8.info["int8_kernels"] is True


# -- artifact files, sidecar, load ------------------------------------------------------


def test_every_resnet_convolution_uses_the_packed_kernel(host_fp32, generic_fp32):
    for art in (host_fp32, generic_fp32):
        assert art.info["layout"] == "NHWC" and art.info["conv"] == "packed"
        assert art.info["conv_kernels"]["packed"] >= 5 and art.info["conv_kernels"]["tvm"] == 0, art.info


def test_native_mcpu_is_resolved_to_the_host_cpu(host_fp32):
    from tvm.target import codegen

    mcpu = host_fp32.info["tvm_target"]["mcpu"]
    assert mcpu != "native" and mcpu == codegen.llvm_get_system_cpu()
    assert f'"mcpu":"{mcpu}"' in host_fp32.info["tvm_target_str"]


def test_artifact_files_and_sidecar(host_fp32):
    root = host_fp32.path.parent
    assert host_fp32.path == root / "model.so" and host_fp32.path.stat().st_size > 10_000
    assert set(host_fp32.files) == {"model.so", "model.tvm.json"}
    assert all((root / f).is_file() for f in host_fp32.files)
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], "temporary files left behind"
    side = json.loads((root / "model.tvm.json").read_text())
    assert side["format"] == "edgeres-tvm/1" and side["backend"] == "tvm" and side["file"] == "model.so"
    assert side["input_name"] == "input" and side["input_shape"] == [1, 3, 32, 32]
    assert side["precision"] == "fp32" and side["compile_seconds"] > 0
    info = side["info"]
    assert info["output_shape"] == [1, 10] and info["tvm_version"] == tvm.__version__
    assert info["tvm_target"]["kind"] == "llvm" and info["arch"] == "x86_64"
    assert info["schedule"] == "builtin" and info["int8_kernels"] is False


def test_load_from_a_copied_directory_by_path_alone(host_fp32, tmp_path, make_images):
    dest = tmp_path / "moved"
    shutil.copytree(host_fp32.path.parent, dest)
    x = make_images(3, 32, seed=11)
    want = tb.load(host_fp32)(x)
    for where in (dest / "model.so", dest, str(dest / "model.so")):
        np.testing.assert_array_equal(tb.load(where)(x), want)
    art = tb.read_artifact(dest)
    assert art.path == dest / "model.so" and art.input_shape == (1, 3, 32, 32) and art.precision == "fp32"


def test_load_without_sidecar_says_to_recompile(host_fp32, tmp_path):
    shutil.copyfile(host_fp32.path, tmp_path / "model.so")
    with pytest.raises(InputError, match="model.tvm.json is missing next to model.so; compile the model again"):
        tb.load(tmp_path / "model.so")


def test_wrong_input_shape_is_a_clear_error(host_fp32, make_images):
    msg = r"input batch has shape \(2, 3, 16, 16\) but model.so expects \(N, 3, 32, 32\)"
    with pytest.raises(InputError, match=msg):
        tb.load(host_fp32)(make_images(2, 16))


def test_threads_option_sizes_the_pool(host_fp32, make_images):
    runner = tb.load(host_fp32, threads=1)
    assert runner.threads == 1
    x = make_images(1, 32)
    np.testing.assert_allclose(runner(x), tb.load(host_fp32)(x), rtol=0, atol=1e-6)


# -- errors -----------------------------------------------------------------------------


def test_corrupt_onnx_is_an_input_error(corrupt_onnx, tmp_path):
    with pytest.raises(InputError, match=r"broken.onnx is not a valid ONNX model \(.*\); re-export it"):
        tb.compile(corrupt_onnx, get_target("x86-64"), tmp_path / "out", precision="fp32")
    assert not (tmp_path / "out" / "model.so").exists()


def test_precision_must_fit_the_model(r20_untrained_onnx, tiny_qdq, tmp_path):
    with pytest.raises(UsageError, match="has no QuantizeLinear/DequantizeLinear nodes.*quantize it first"):
        tb.compile(r20_untrained_onnx, get_target("x86-64"), tmp_path, precision="int8")
    with pytest.raises(UsageError, match="is a quantized \\(Q/DQ\\) model but precision fp32"):
        tb.compile(tiny_qdq, get_target("x86-64"), tmp_path, precision="fp32")
    with pytest.raises(UsageError, match="compiles precisions \\['fp32', 'int8', 'bf16'\\], not 'fp16'"):
        tb.compile(r20_untrained_onnx, get_target("x86-64"), tmp_path, precision="fp16")


@pytest.mark.parametrize("options, error, pattern", [
    ({"bogus": 1}, UsageError, r"unknown keys \['bogus'\]"),
    ({"layout": "NCWH"}, UsageError, "layout must be one of"),
    ({"schedule": "fast"}, UsageError, "schedule must be one of"),
    ({"threads": 0}, UsageError, "threads must be a positive integer"),
    ({"target": "llvm -mcpu=native"}, UsageError, "TVM 0.27 rejects"),
    ({"target": {"kind": "llvm", "mcpu": "znver33", "mtriple": "x86_64-linux-gnu"}}, UsageError,
     r"LLVM does not know mcpu 'znver33' for x86_64-linux-gnu \(did you mean znver3"),
    ({"tuning_db": "/nonexistent/db"}, InputError, "is not a MetaSchedule work directory"),
])
def test_bad_options_are_rejected(tiny_onnx, tmp_path, options, error, pattern):
    with pytest.raises(error, match=pattern):
        tb.compile(tiny_onnx, get_target("x86-64"), tmp_path, precision="fp32", options=options)


def test_backend_unavailable(monkeypatch, tiny_onnx, tmp_path):
    from edgeres.backends import get_backend

    from edgeres.backends.tvm import runner

    monkeypatch.setattr(runner, "unavailable_reason", lambda: "apache-tvm does not import (ImportError: nope)")
    assert tb.available() is False and tb.BACKEND.available() is False
    with pytest.raises(BackendUnavailable, match=r"tvm backend is not available here .*pip install 'edgeres\[tvm\]'"):
        get_backend("tvm")
    with pytest.raises(BackendUnavailable, match=r"pip install 'edgeres\[tvm\]'"):
        tb.compile(tiny_onnx, get_target("x86-64"), tmp_path, precision="fp32")


def test_cross_target_without_toolchain_fails_fast(monkeypatch, tiny_onnx, tmp_path):
    from edgeres.backends.tvm import cross as tvm_cross

    monkeypatch.setattr(tvm_cross, "find_cross_cxx", lambda arch="aarch64": None)
    with pytest.raises(BackendUnavailable, match="aarch64 cross compiler"):
        tb.compile(tiny_onnx, get_target("aarch64"), tmp_path / "arm", precision="fp32")
    assert not (tmp_path / "arm").exists()


def test_native_mcpu_cannot_cross_compile(tiny_onnx, tmp_path):
    rec = {"name": "arm-native", "backend": "tvm", "arch": "aarch64", "precisions": ["fp32"],
           "tvm": {"target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "native"}}}
    from edgeres.backends.tvm import cross as tvm_cross

    if tvm_cross.find_cross_cxx("aarch64") is None:
        pytest.skip("aarch64 toolchain absent (the toolchain check comes first)")
    with pytest.raises(UsageError, match="mcpu = \"native\" .* cannot apply"):
        tb.compile(tiny_onnx, parse_target(rec), tmp_path, precision="fp32")
