"""BF16 convolutions for TVM (edgeres.backends.tvm.bf16): exact against a numpy BF16 reference where this
CPU has AVX512_BF16, the vdpbf16ps instruction in the code everywhere, refusals where a target has none."""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")

from edgeres.backends import tvm as tb  # noqa: E402
from edgeres.backends.tvm import bf16 as tvm_bf16  # noqa: E402
from edgeres.backends.tvm import options as tt  # noqa: E402
from edgeres.backends.tvm import variants as tv  # noqa: E402
from edgeres.errors import BackendUnavailable, UsageError  # noqa: E402
from edgeres.targets import get_target  # noqa: E402

BF16_TARGET = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v4", "mattr": ["+avx512bf16"]}
HOST_HAS_BF16 = "avx512_bf16" in (tv.cpu_flags() or ())


def _bf16(x: np.ndarray) -> np.ndarray:
    return (tvm_bf16.to_bf16_bits(x).astype(np.uint32) << 16).view(np.float32)


def _conv(c, h, k, kh, stride, pad):
    """(relax module, input, BF16 reference): conv + bias + ReLU, NCHW as the ONNX importer emits it."""
    from tvm import relax

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((k, c, kh, kh)) * 0.1).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    x = rng.standard_normal((2, c, h, h)).astype(np.float32)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(xv, relax.const(w), strides=stride, padding=pad))
            y = bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const(bias.reshape(1, k, 1, 1)))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    xp = np.pad(_bf16(x).astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    wb = _bf16(w).astype(np.float64)
    oh = (h + 2 * pad - kh) // stride + 1
    ref = np.zeros((2, k, oh, oh))
    for i in range(kh):
        for j in range(kh):
            win = xp[:, :, i: i + stride * (oh - 1) + 1: stride, j: j + stride * (oh - 1) + 1: stride]
            ref += np.einsum("nchw,kc->nkhw", win, wb[:, :, i, j])
    return bb.get(), x, np.maximum(ref + bias.reshape(1, k, 1, 1), 0)


def _compile(mod, target_dict):
    opts = tt.parse_options(get_target("x86-64-host"), {"target": target_dict})
    target = tt.make_target(target_dict)
    lowered, _ = tb.apply_schedules(tb.lower(mod, target, opts, precision="bf16"), target, opts)
    assert any("bf16" in gv.name_hint for gv, _ in lowered.functions_items())
    return tvm.compile(lowered, target)


@pytest.mark.parametrize("case", [(16, 12, 32, 3, 1, 1), (3, 30, 64, 7, 2, 3), (64, 7, 64, 1, 1, 0)],
                         ids=["3x3", "stem7x7s2", "1x1"])
def test_bf16_convolution_is_exact_and_uses_vdpbf16ps(case):
    mod, x, ref = _conv(*case)
    ex = _compile(mod, BF16_TARGET)
    asm = "".join(m.inspect_source("asm") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")
    assert re.search(r"vdpbf16ps\s.*%zmm", asm) and "edgeres_dpbf16" not in asm.replace(".globl", "")
    if not HOST_HAS_BF16:
        pytest.skip("this CPU has no AVX512_BF16: compiled and checked, not run")
    got = tvm.relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def test_bf16_is_refused_where_the_target_has_none(tiny_onnx, tmp_path):
    with pytest.raises(UsageError, match="x86-64-avx2' compiles for x86-64-v3, which has no BF16 dot product"):
        tb.compile(tiny_onnx, get_target("x86-64-avx2"), tmp_path / "a", precision="bf16")
    with pytest.raises(UsageError, match=r"compiles for x86-64-v3, which has no BF16 dot product \(AVX512_BF16"):
        tb.compile(tiny_onnx, get_target("x86-64-host"), tmp_path / "b", precision="bf16",
                   options={"target": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"}})


@pytest.mark.filterwarnings("ignore:only 8 calibration images")
def test_portable_bf16_bundle_carries_only_the_bf16_level(r20_untrained_onnx, make_images, tmp_path, monkeypatch):
    from edgeres.backends import onnxruntime as ortb

    art = tb.compile(r20_untrained_onnx, get_target("x86-64"), tmp_path / "a", precision="bf16")
    assert [v["name"] for v in art.info["variants"]] == ["x86-64-v4-bf16"]
    assert "avx512_bf16" in art.info["variants"][0]["cpu_flags"]
    fake = tmp_path / "cpuinfo"
    fake.write_text("flags\t: " + " ".join(f for f in sorted(tv.cpu_flags() or ()) if f != "avx512_bf16") + "\n")
    monkeypatch.setenv(tv.CPUINFO_ENV, str(fake))
    with pytest.raises(BackendUnavailable, match="no variant of .* runs on this CPU.*avx512_bf16"):
        tb.load(art)
    monkeypatch.delenv(tv.CPUINFO_ENV)
    if not HOST_HAS_BF16:
        pytest.skip("this CPU has no AVX512_BF16")
    x = make_images(4, 32, seed=9)
    got, ref = tb.load(art)(x), ortb.make_runner(r20_untrained_onnx)(x)
    assert np.abs(got - ref).max() <= 0.03 * float(np.abs(ref).max())  # BF16 inputs, FP32 sums
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.75
