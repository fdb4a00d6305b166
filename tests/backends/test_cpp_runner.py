"""The C++ runner every TVM bundle carries: built natively with the system compiler against the
installed TVM wheels, its top-5 and logits must match the Python runtime's."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest

from edgeres.backends.tvm import cross as tvm_cross
from edgeres.errors import InputError

tvm = pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")

pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning")
SHAPE = (2, 3, 32, 32)  # batch 2: the runner must print one result per sample
CLASSES = [f"class_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """ResNet-20 (random weights) compiled by TVM for the host: library, labels, Python VM."""
    import onnx
    import torch
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from edgeres.models import create_model

    root = tmp_path_factory.mktemp("cpprun")
    torch.manual_seed(0)
    net = create_model("resnet20", num_classes=10).eval()
    with torch.no_grad():
        torch.onnx.export(net, (torch.zeros(SHAPE),), str(root / "r20.onnx"), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    mod = relax.get_pipeline("zero")(from_onnx(onnx.load(str(root / "r20.onnx")), shape_dict={"input": list(SHAPE)}))
    so = tvm_cross.export_library(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), root / "artifact" / "model.so")
    (root / "labels.txt").write_text("\n".join(CLASSES) + "\n")  # bundle layout: labels.txt beside artifact/
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(so)), tvm.cpu())
    return {"root": root, "so": so, "python": lambda x: vm["main"](tvm.runtime.tensor(x)).numpy()}


@pytest.fixture(scope="module")
def runner(model) -> Path:
    from edgeres.backends.tvm.cpp_runner import build_cpp_runner, missing_requirements, write_cpp_runner

    reason = missing_requirements("host")
    if reason:
        pytest.skip(f"cannot build the C++ runner here ({reason})")
    src = write_cpp_runner(model["so"].parent)
    exe = build_cpp_runner(src)
    assert exe == src / f"build-{tvm_cross.host_arch()}" / "edgeres_tvm_classify"
    return exe


def test_write_cpp_runner_copies_the_template(tmp_path):
    from edgeres.backends.tvm.cpp_runner import TEMPLATE_DIR, TEMPLATE_FILES, write_cpp_runner

    out = write_cpp_runner(tmp_path / "artifact")
    assert out == tmp_path / "artifact" / "cpp"
    assert sorted(p.name for p in out.iterdir()) == sorted(TEMPLATE_FILES)
    assert all(filecmp.cmp(out / n, TEMPLATE_DIR / n, shallow=False) for n in TEMPLATE_FILES)
    assert write_cpp_runner(tmp_path / "artifact") == out  # rewriting in place works


def test_native_runner_matches_python_runtime(model, runner):
    from edgeres.backends.tvm.cpp_runner import run_cpp_runner

    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    ref = model["python"](x)
    out = run_cpp_runner(runner, model["so"], x, repeat=2)
    assert out.command[0] == str(runner)  # native: no emulator
    np.testing.assert_allclose(out.logits, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    assert len(out.top) == 2
    for n in range(2):
        order = np.argsort(-ref[n], kind="stable")[:5]
        assert [e.index for e in out.top[n]] == list(order)
        assert [e.label for e in out.top[n]] == [CLASSES[i] for i in order]  # from ../labels.txt
        probs = np.exp(ref[n] - ref[n].max()) / np.exp(ref[n] - ref[n].max()).sum()
        np.testing.assert_allclose([e.prob for e in out.top[n]], probs[order], rtol=1e-4)
    assert out.latency_ms is not None and out.latency_ms > 0


def test_runner_explicit_labels_and_topk(model, runner, tmp_path):
    from edgeres.backends.tvm.cpp_runner import run_cpp_runner

    labels = tmp_path / "names.txt"
    labels.write_text("".join(f"n{i}\r\n" for i in range(10)))  # CRLF tolerated
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    out = run_cpp_runner(runner, model["so"], x, labels=labels, topk=3)
    top1 = int(np.argmax(model["python"](x)[0]))
    assert [len(t) for t in out.top] == [3, 3]
    assert (out.top[0][0].index, out.top[0][0].label) == (top1, f"n{top1}")


def test_runner_rejects_wrong_shape_and_non_tvm_library(model, runner, tmp_path):
    from edgeres.backends.tvm.cpp_runner import run_cpp_runner

    with pytest.raises(InputError, match="does not fit the model"):
        run_cpp_runner(runner, model["so"], np.zeros((2, 3, 16, 16), np.float32))
    bogus = tmp_path / "bogus.so"
    bogus.write_bytes(b"not a library")
    with pytest.raises(InputError, match="cannot load .*bogus.so as a TVM library"):
        run_cpp_runner(runner, bogus, np.zeros(SHAPE, np.float32))
    with pytest.raises(InputError, match="NCHW"):
        run_cpp_runner(runner, model["so"], np.zeros((3, 32, 32), np.float32))


def test_build_reports_missing_sources(tmp_path):
    from edgeres.backends.tvm.cpp_runner import build_cpp_runner

    with pytest.raises(InputError, match="write_cpp_runner"):
        build_cpp_runner(tmp_path)
