"""Integer INT8 convolutions for TVM (edgeres.backends.tvm.int8): layer by layer, then whole models.

Each layer case builds a one-convolution Relax module as the ONNX importer emits a Q/DQ model
(quantize -> dequantize on the activation, dequantize of int8 per-channel weights, bias, ReLU),
compiles it as the TVM backend does, and compares the result with an exact integer reference
computed in numpy: the integer kernel must be exact up to the final float32 scaling.
"""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")

from edgeres.backends import tvm as tb  # noqa: E402
from edgeres.backends.tvm import int8 as tvm_int8  # noqa: E402
from edgeres.backends.tvm import options as tt  # noqa: E402
from edgeres.targets import get_target  # noqa: E402


def _target(name: str):
    opts = tt.parse_options(get_target(name), None)
    return tt.make_target(tt.resolve_target_dict(opts.target, cross=False))


HOST_KIND = tvm_int8.int8_kind(_target("x86-64-host"))
needs_kernel = pytest.mark.skipif(HOST_KIND is None, reason="this CPU has no SSSE3/AVX2/AVX-512 dot product")


def _layer(n, c, h, w, k, kh, stride, pad, dilation, *, zp=0, act="uint8", wmax=63, seed=0, pool=False):
    """(relax module, float input, exact reference) for one quantized conv + bias + ReLU."""
    from tvm import relax

    rng = np.random.default_rng(seed)
    wq = rng.integers(-wmax, wmax + 1, (k, c, kh, kh)).astype(np.int8)
    wq[:, 0, 0, 0] = wmax  # every channel reaches the limit
    sw = (rng.random(k) * 0.02 + 0.005).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    s = np.float32(0.05)
    lo, hi = (0, 255) if act == "uint8" else (-128, 127)
    x = ((rng.integers(lo, hi + 1, (n, c, h, w)) - zp) * s).astype(np.float32)  # exactly representable
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((n, c, h, w), "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            zc = relax.const(np.array(zp, dtype=act))
            q = bb.emit(relax.op.quantize(xv, relax.const(s), zc, axis=1, out_dtype=act))
            dq = bb.emit(relax.op.dequantize(q, relax.const(s), zc, axis=1, out_dtype="float32"))
            wf = bb.emit(relax.op.dequantize(relax.const(wq), relax.const(sw), relax.const(np.zeros(k, np.int8)),
                                             axis=0, out_dtype="float32"))
            y = bb.emit(relax.op.nn.conv2d(dq, wf, strides=stride, padding=pad, dilation=dilation))
            y = bb.emit(relax.op.add(y, relax.const(bias.reshape(1, k, 1, 1))))
            y = bb.emit(relax.op.nn.relu(y))
            if pool:  # (n, k) logits, for the C++ runner
                y = bb.emit(relax.op.mean(y, axis=[2, 3]))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    # exact reference: integer convolution of (q - zp) with wq, zero (= zp) padding
    xq = np.rint(x / s).astype(np.int64)  # = q - zp
    t, left, b, r = pad
    xp = np.pad(xq, ((0, 0), (0, 0), (t, b), (left, r)))
    oh = (h + t + b - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + left + r - dilation * (kh - 1) - 1) // stride + 1
    acc = np.zeros((n, k, oh, ow), np.int64)
    for i in range(kh):
        for j in range(kh):
            win = xp[:, :, i * dilation: i * dilation + stride * (oh - 1) + 1: stride,
                     j * dilation: j * dilation + stride * (ow - 1) + 1: stride]
            acc += np.einsum("nchw,kc->nkhw", win, wq[:, :, i, j].astype(np.int64))
    ref = np.maximum(acc * (s * sw.astype(np.float64)).reshape(1, k, 1, 1) + bias.reshape(1, k, 1, 1), 0)
    return bb.get(), x, (ref.mean(axis=(2, 3)) if pool else ref)


def _compile(mod, target="x86-64-host", options=None):
    opts = tt.parse_options(get_target(target), options)
    tvm_target = tt.make_target(tt.resolve_target_dict(opts.target, cross=False))
    counts: dict[str, int] = {}
    lowered, _ = tb.apply_schedules(tb.lower(mod, tvm_target, opts, counts), tvm_target, opts)
    vm = tvm.relax.VirtualMachine(tvm.compile(lowered, tvm_target), tvm.cpu())
    return vm, counts, tb.conv_kernels(lowered)


def _run(vm, x):
    return vm["main"](tvm.runtime.tensor(x)).numpy()


CASES = [  # n, c, h, w, k, kernel, stride, (top, left, bottom, right), dilation, zero point, activation dtype
    (1, 16, 12, 12, 32, 3, 1, (1, 1, 1, 1), 1, 0, "uint8"),     # 3x3 same, post-ReLU input
    (1, 32, 13, 11, 16, 3, 2, (1, 1, 1, 1), 1, 0, "uint8"),     # stride 2, odd sizes
    (2, 64, 7, 7, 32, 1, 1, (0, 0, 0, 0), 1, 0, "uint8"),       # 1x1, batch 2, 49 pixels
    (1, 3, 30, 30, 16, 7, 2, (3, 3, 3, 3), 1, 122, "uint8"),    # stem: 7x7 over 3 channels, zero point 122
    (1, 8, 9, 9, 16, 3, 1, (0, 1, 2, 1), 1, 7, "uint8"),        # asymmetric padding with a zero point
    (1, 16, 10, 10, 16, 3, 1, (2, 2, 2, 2), 2, 0, "uint8"),     # dilation 2
    (1, 12, 5, 5, 16, 3, 1, (1, 1, 1, 1), 1, -3, "int8"),       # int8 activations, 25 pixels
]


@needs_kernel
@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}c{}_{}x{}k{}f{}s{}p{}d{}z{}{}".format(*c[:8], *c[8:]))
def test_integer_convolution_is_exact(case):
    *shape, zp, act = case
    mod, x, ref = _layer(*shape, zp=zp, act=act)
    vm, counts, kernels = _compile(mod)
    assert counts == {"int8": 1, "float": 0}
    assert kernels == {"packed_int8": 1, "packed": 0, "tvm": 0}
    np.testing.assert_allclose(_run(vm, x), ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


@needs_kernel
def test_integer_and_fake_quant_float_agree():
    mod, x, ref = _layer(1, 16, 12, 12, 32, 3, 1, (1, 1, 1, 1), 1)
    integer, _, _ = _compile(mod)
    flt, counts, kernels = _compile(mod, options={"int8": "float"})
    assert counts == {} and kernels["packed_int8"] == 0 and kernels["packed"] == 1
    np.testing.assert_allclose(_run(integer, x), _run(flt, x), rtol=1e-5, atol=1e-4)


@needs_kernel
def test_8bit_weights_keep_float_kernels_where_vpmaddubsw_would_saturate():
    mod, x, ref = _layer(1, 16, 8, 8, 16, 3, 1, (1, 1, 1, 1), 1, wmax=127)
    vm, counts, kernels = _compile(mod)
    if HOST_KIND in tvm_int8.SATURATING:
        assert counts == {"int8": 0, "float": 1} and kernels["packed_int8"] == 0
    else:  # VNNI multiplies into int32 directly: 8-bit weights are fine
        assert counts == {"int8": 1, "float": 0}
    np.testing.assert_allclose(_run(vm, x), ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


@needs_kernel
def test_output_channels_not_a_multiple_of_16_stay_float_and_are_counted():
    mod, x, ref = _layer(1, 8, 6, 6, 24, 3, 1, (1, 1, 1, 1), 1)
    vm, counts, kernels = _compile(mod)
    assert counts == {"int8": 0, "float": 1} and kernels["packed_int8"] == 0
    np.testing.assert_allclose(_run(vm, x), ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


@needs_kernel
def test_generic_x86_target_uses_the_ssse3_kernel():
    assert tvm_int8.int8_kind(_target("x86-64")) == "ssse3"
    mod, x, ref = _layer(1, 16, 6, 6, 32, 3, 1, (1, 1, 1, 1), 1, zp=3)
    vm, counts, _ = _compile(mod, target="x86-64")
    assert counts == {"int8": 1, "float": 0}
    np.testing.assert_allclose(_run(vm, x), ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def test_kinds_per_target():
    assert tvm_int8.int8_kind(_target("rpi5")) == "sdot"  # cortex-a76 +dotprod
    assert tvm_int8.int8_kind(_target("rpi4")) is None  # cortex-a72: no dot product
    assert tvm_int8.int8_kind(tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu",
                                                  "mcpu": "cascadelake"})) == "vnni"
    assert tvm_int8.int8_kind(tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu",
                                                  "mcpu": "haswell"})) == "avx2"


def test_weight_packing_layout():
    wq = np.arange(32 * 3 * 2 * 2).reshape(32, 3, 2, 2).astype(np.int8)
    p = tvm_int8.pack_weights(wq)
    assert p.shape == (2, 2, 2, 1, 16, 4)  # (K/16, KH, KW, C4/4, 16, 4), C padded 3 -> 4
    assert p[1, 0, 1, 0, 5, 2] == wq[16 + 5, 2, 0, 1]
    assert (p[..., 3] == 0).all()


def test_int8_option_is_validated():
    from edgeres.errors import UsageError

    with pytest.raises(UsageError, match="int8 must be one of"):
        tt.parse_options(get_target("x86-64-host"), {"int8": "fast"})


@pytest.fixture(scope="module")
def arm_runner(tmp_path_factory):
    """The C++ runner cross-built for aarch64 (runs under qemu)."""
    from edgeres.backends.tvm import cross as tvm_cross
    from edgeres.backends.tvm.cpp_runner import cached_runner, missing_requirements

    if tvm_cross.host_arch() != "x86_64" or tvm_cross.find_cross_cxx("aarch64") is None:
        pytest.skip("aarch64 toolchain absent: run tools/setup-aarch64.sh")
    reason = missing_requirements("aarch64")
    if reason:
        pytest.skip(f"cannot build/run aarch64 programs here ({reason})")
    return cached_runner("aarch64", cache_dir=tmp_path_factory.mktemp("cpp"))


def test_rpi5_sdot_kernel_runs_under_qemu(tmp_path, arm_runner):
    """AArch64 dot product (cortex-a76 +dotprod): int8 x int8 after the kernel's -128 shift, checked
    under qemu against the exact reference (zero point 9, stride 2, 8-bit weights)."""
    from edgeres.backends.tvm import cross as tvm_cross
    from edgeres.backends.tvm.cpp_runner import run_cpp_runner

    target = get_target("rpi5")
    opts = tt.parse_options(target, None)
    tvm_target = tt.make_target(tt.resolve_target_dict(opts.target, cross=True))
    mod, x, ref = _layer(1, 20, 9, 9, 32, 3, 2, (1, 1, 1, 1), 1, zp=9, wmax=127, pool=True)
    counts: dict[str, int] = {}
    lowered, _ = tb.apply_schedules(tb.lower(mod, tvm_target, opts, counts), tvm_target, opts)
    assert counts == {"int8": 1, "float": 0} and tb.conv_kernels(lowered)["packed_int8"] == 1
    so = tvm_cross.export_library(tvm.compile(lowered, tvm_target), tmp_path / "rpi5.so", target)
    got = run_cpp_runner(arm_runner, so, x).logits
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def test_rpi5_int8_resnet20_under_qemu_matches_the_host(r20_untrained_qdq, make_images, tmp_path, arm_runner):
    """The backend's INT8 compile for rpi5 (every convolution on sdot, 8-bit weights from ONNX
    Runtime's quantizer) against the host's fake-quantized float compile of the same model."""
    from edgeres.backends.tvm.cpp_runner import run_cpp_runner

    art = tb.compile(r20_untrained_qdq, get_target("rpi5"), tmp_path / "rpi5", precision="int8")
    assert art.info["conv_kernels"]["packed_int8"] == 20 and "(sdot)" in art.info["int8_note"]  # 19 convs + the classifier
    host = tb.compile(r20_untrained_qdq, get_target("x86-64-host"), tmp_path / "host", precision="int8",
                      options={"int8": "float"})
    x = make_images(1, 32)
    got, ref = run_cpp_runner(arm_runner, art.path, x).logits, tb.load(host)(x)
    assert np.abs(got - ref).max() <= 0.02 * float(np.abs(ref).max())
    assert got.argmax() == ref.argmax()


@needs_kernel
@pytest.mark.filterwarnings("ignore:only 8 calibration images")
def test_resnet20_runs_every_convolution_as_integer(r20_untrained_onnx, make_images, tmp_path):
    """A whole Q/DQ ResNet-20 from edgeres' quantizer (7-bit weights, as the x86 targets quantize):
    every convolution integer, logits close to ONNX Runtime's on the same Q/DQ model."""
    from edgeres.backends import onnxruntime as ortb
    from edgeres.quantize import QuantOptions, quantize

    x = make_images(8, 32)
    q = tmp_path / "r20.int8.onnx"
    quantize(r20_untrained_onnx, q, lambda: iter([x]), data_fingerprint="t",
             options=QuantOptions(method="minmax", reduce_range=True, bias_correction="off"))
    art = tb.compile(q, get_target("x86-64-host"), tmp_path / "int", precision="int8")
    assert art.info["conv_kernels"] == {"packed_int8": 20, "packed": 0, "tvm": 0}  # 19 convolutions + the classifier
    assert art.info["int8_kernels"] is True and art.info["int8_note"].startswith("20 of 20")
    flt = tb.compile(q, get_target("x86-64-host"), tmp_path / "float", precision="int8", options={"int8": "float"})
    assert flt.info["int8_kernels"] is False and "int8 = \"float\"" in flt.info["int8_note"]
    got, fake = tb.load(art)(x), tb.load(flt)(x)
    ref = ortb.make_runner(q)(x)
    scale = float(np.abs(fake).max())
    assert np.abs(got - fake).max() <= 0.02 * scale  # the same numerics; float sums round differently
    assert np.abs(got - ref).max() <= 0.05 * scale  # ORT requantizes with its own rounding
    assert (got.argmax(1) == fake.argmax(1)).mean() >= 0.875


def _asm(executable) -> str:
    text = ""
    for m in [executable.mod, *executable.mod.imports]:
        try:
            text += m.inspect_source("asm")
        except Exception:  # noqa: BLE001 - modules without assembly (the VM's)
            pass
    return text


@pytest.mark.parametrize("mcpu,kind,instruction", [("cascadelake", "vnni", "vpdpbusd"),
                                                   ("skylake-avx512", "avx512bw", "vpmaddubsw")])
def test_avx512_kernels_compile_to_their_instructions(mcpu, kind, instruction):
    """Compile-only (this CPU may lack AVX-512): the intrinsics lower through TVM's LLVM."""
    target_dict = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu}
    opts = tt.parse_options(get_target("x86-64-avx512"), {"target": target_dict})
    tvm_target = tt.make_target(target_dict)
    assert tvm_int8.int8_kind(tvm_target) == kind
    mod, _, _ = _layer(1, 16, 8, 8, 32, 3, 1, (1, 1, 1, 1), 1, wmax=63)
    counts: dict[str, int] = {}
    lowered, _ = tb.apply_schedules(tb.lower(mod, tvm_target, opts, counts), tvm_target, opts)
    assert counts == {"int8": 1, "float": 0}
    asm = _asm(tvm.compile(lowered, tvm_target))
    assert instruction in asm and "zmm" in asm


def test_artifact_for_a_cpu_this_machine_lacks_is_refused_not_run(tiny_onnx, tmp_path):
    from edgeres.errors import BackendUnavailable

    art = tb.compile(tiny_onnx, get_target("x86-64-avx512"), tmp_path / "a", precision="fp32")
    missing = tt.missing_host_features(art.info["tvm_target"])
    if not missing:
        pytest.skip("this CPU has AVX-512 VNNI: the artifact runs here")
    with pytest.raises(BackendUnavailable, match="this CPU lacks avx512"):
        tb.load(art)
    # compile --val then validates the deployed ONNX with ONNX Runtime, and says so
    from edgeres.pipeline import _artifact_runner

    runner, name = _artifact_runner(art, tb, tiny_onnx)
    assert name.startswith("onnxruntime (the tvm artifact cannot run here") and callable(runner)
