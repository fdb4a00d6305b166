"""Portable x86 artifacts (target x86-64): one library per ISA level, the best one chosen at load time.

Selection is checked against faked CPUs (flag sets of real CPU generations), every variant this
machine can execute is run and compared with ONNX Runtime, variants it cannot execute (faked
with EDGERES_CPUINFO) are refused with a one-line error by the Python runtime and the C++ runner,
and each variant's library holds the instructions of its level (objdump).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")

from edgeres.backends import onnxruntime as ortb  # noqa: E402
from edgeres.backends import tvm as tb  # noqa: E402
from edgeres.backends.tvm import options as tt  # noqa: E402
from edgeres.backends.tvm import variants as tv  # noqa: E402
from edgeres.errors import BackendUnavailable, UsageError  # noqa: E402
from edgeres.targets import get_target  # noqa: E402

pytestmark = pytest.mark.skipif(tv.cpu_flags() is None or "sse4_2" not in (tv.cpu_flags() or ()),
                                reason="needs an x86-64 Linux CPU (/proc/cpuinfo)")


def _flags(level: str) -> set[str]:
    return set(tt.required_cpu_flags(tv.get_level(level).tvm_target()))


CPUS = {  # name: (/proc/cpuinfo flags, best INT8 level, best FP32 level)
    "nehalem": (_flags("x86-64-v2") | {"sse2"}, "x86-64-v2", "x86-64-v2"),
    "haswell": (_flags("x86-64-v3"), "x86-64-v3", "x86-64-v3"),
    "alderlake": (_flags("x86-64-v3") | {"avx_vnni"}, "x86-64-v3-vnni", "x86-64-v3"),
    "skylake-sp": (_flags("x86-64-v4"), "x86-64-v4", "x86-64-v4"),
    "cascadelake": (_flags("x86-64-v4-vnni"), "x86-64-v4-vnni", "x86-64-v4"),
    "sapphirerapids": (_flags("x86-64-v4-bf16") | {"avx_vnni", "amx_tile", "amx_int8", "amx_bf16"},
                       "x86-64-v4-vnni", "x86-64-v4"),
}


def _listed(precision: str) -> list[tv.Variant]:
    levels = tv.levels_for(get_target("x86-64").options_dict()["variants"], precision)
    return [tv.Variant(lv.name, tv.variant_file(lv.name, lv is levels[-1]),
                       tuple(tt.required_cpu_flags(lv.tvm_target()))) for lv in levels]


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_each_cpu_gets_its_best_level_and_never_one_it_lacks(cpu):
    flags, int8_best, fp32_best = CPUS[cpu]
    assert tv.select(_listed("int8"), flags).name == int8_best
    assert tv.select(_listed("fp32"), flags).name == fp32_best
    for precision in ("fp32", "int8", "bf16"):
        for v in _listed(precision):
            if not tv.missing_flags(v, flags):
                assert tv.select(_listed(precision), flags, v.name) == v
            else:  # forcing a level this CPU lacks: refused, naming the flags
                with pytest.raises(BackendUnavailable, match=f"variant {v.name} .* needs .*which this CPU lacks"):
                    tv.select(_listed(precision), flags, v.name)


def test_bf16_bundles_run_only_on_bf16_cpus():
    assert [v.name for v in _listed("bf16")] == ["x86-64-v4-bf16"]
    assert tv.select(_listed("bf16"), CPUS["sapphirerapids"][0]).name == "x86-64-v4-bf16"
    with pytest.raises(BackendUnavailable, match="no variant of .* runs on this CPU.*avx512_bf16"):
        tv.select(_listed("bf16"), CPUS["cascadelake"][0])


def test_selection_errors_are_one_line():
    with pytest.raises(UsageError, match="has no variant 'x86-64-v9'"):
        tv.select(_listed("int8"), CPUS["haswell"][0], "x86-64-v9")
    with pytest.raises(BackendUnavailable, match="no variant .* runs on this CPU: the most portable, x86-64-v2, needs"):
        tv.select(_listed("int8"), {"sse2"})
    with pytest.raises(UsageError, match="unknown x86 ISA level 'x86-64-v5'"):
        tt.parse_options(get_target("x86-64"), {"variants": ["x86-64-v5"]})


def test_amx_levels_need_linux_permission():
    amx = tv.Variant("amx", "model.amx.so", ("sse4_2", "amx_tile"))
    base = tv.Variant("x86-64-v2", "model.so", ("sse4_2",))
    assert tv.select([amx, base], {"sse4_2", "amx_tile"}, amx_ok=False).name == "x86-64-v2"
    assert tv.select([amx, base], {"sse4_2", "amx_tile"}, amx_ok=True).name == "amx"


# -- a real portable bundle ---------------------------------------------------------------


@pytest.fixture(scope="module")
def portable_int8(r20_untrained_onnx, make_images, tmp_path_factory):
    """ResNet-20 quantized as the x86 targets quantize (7-bit weights), compiled for x86-64: 5 levels."""
    from edgeres.quantize import QuantOptions, quantize

    q = tmp_path_factory.mktemp("q") / "r20.int8.onnx"
    quantize(r20_untrained_onnx, q, lambda: iter([make_images(8, 32)]), data_fingerprint="t",
             options=QuantOptions(method="minmax", form="cpu", reduce_range=True, bias_correction="off"))
    art = tb.compile(q, get_target("x86-64"), tmp_path_factory.mktemp("portable") / "artifact", precision="int8")
    return art, q


@pytest.fixture(scope="module")
def portable_fp32(tiny_onnx, tmp_path_factory):
    return tb.compile(tiny_onnx, get_target("x86-64"), tmp_path_factory.mktemp("portable32") / "artifact",
                      precision="fp32", options={"jobs": 1})


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:only 8 calibration images")
def test_portable_int8_bundle_runs_every_variant_this_cpu_can(portable_int8, make_images):
    art, q = portable_int8
    names = [v["name"] for v in art.info["variants"]]
    assert names == ["x86-64-v4-vnni", "x86-64-v4", "x86-64-v3-vnni", "x86-64-v3", "x86-64-v2"]
    assert art.path.name == "model.so" and art.info["variants"][-1]["file"] == "model.so"
    listed = (art.path.parent / "model.variants").read_text().splitlines()[1:]
    assert [ln.split("\t")[0] for ln in listed] == names
    for v in art.info["variants"]:
        assert v["conv_kernels"]["packed_int8"] == 20, v  # every convolution and the classifier integer, everywhere
        assert len(v["sha256"]) == 64 and v["file"] in art.files
    x = make_images(4, 32, seed=3)
    ref = ortb.make_runner(q)(x)
    flags = tv.cpu_flags()
    ran = []
    for v in art.info["variants"]:
        if tv.missing_flags(tv.Variant.from_dict(v), flags):
            with pytest.raises(BackendUnavailable, match="which this CPU lacks"):
                tb.load(art, variant=v["name"])
            continue
        runner = tb.load(art, variant=v["name"])
        assert runner.variant == v["name"]
        got = runner(x)
        assert np.abs(got - ref).max() <= 0.05 * float(np.abs(ref).max()), v["name"]
        ran.append(v["name"])
    best = tb.load(art)
    assert best.variant == ran[0]  # the best one this CPU runs, without asking


@pytest.mark.slow
def test_portable_fp32_variants_match_onnxruntime_and_hold_their_instructions(portable_fp32, tiny_onnx, make_images):
    art = portable_fp32
    assert [v["name"] for v in art.info["variants"]] == ["x86-64-v4", "x86-64-v3", "x86-64-v2"]
    x = make_images(3, 16, seed=4)
    ref = ortb.make_runner(tiny_onnx)(x)
    for v in art.info["variants"]:
        if not tv.missing_flags(tv.Variant.from_dict(v), tv.cpu_flags()):
            np.testing.assert_allclose(tb.load(art, variant=v["name"])(x), ref, rtol=1e-4, atol=1e-4)
    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed")
    asm = {v["name"]: subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(art.path.parent / v["file"])],
                                     capture_output=True, text=True, check=True).stdout for v in art.info["variants"]}
    assert re.search(r"vfmadd\w+ps\s.*%zmm", asm["x86-64-v4"])  # 512-bit FMA tiles
    assert "%zmm" not in asm["x86-64-v3"] and re.search(r"vfmadd\w+ps\s.*%ymm", asm["x86-64-v3"])
    assert "%ymm" not in asm["x86-64-v2"] and "%zmm" not in asm["x86-64-v2"] and "vfmadd" not in asm["x86-64-v2"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:only 8 calibration images")
def test_int8_variants_hold_their_dot_products(portable_int8):
    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed")
    art, _ = portable_int8

    def asm(name: str) -> str:
        v = next(v for v in art.info["variants"] if v["name"] == name)
        return subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(art.path.parent / v["file"])],
                              capture_output=True, text=True, check=True).stdout

    assert re.search(r"vpdpbusd\s.*%zmm", asm("x86-64-v4-vnni"))
    assert re.search(r"vpmaddubsw\s.*%zmm", asm("x86-64-v4"))
    v3vnni = asm("x86-64-v3-vnni")
    assert re.search(r"vpdpbusd\s.*%ymm", v3vnni) and "%zmm" not in v3vnni  # AVX-VNNI: VEX, 256-bit
    assert re.search(r"vpmaddubsw\s.*%ymm", asm("x86-64-v3"))
    assert re.search(r"pmaddubsw\s.*%xmm", asm("x86-64-v2"))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:only 8 calibration images")
def test_variants_this_cpu_lacks_are_refused_not_run(portable_int8, make_images, tmp_path, monkeypatch):
    """A faked AVX2-only CPU: the Python runtime and the C++ runner pick x86-64-v3 and refuse AVX-512."""
    from edgeres.backends.tvm.cpp_runner import missing_requirements

    art, _ = portable_int8
    flags = sorted(tv.cpu_flags() or ())
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: " + " ".join(f for f in flags if not f.startswith(("avx512", "avx_vnni")))
                    + "\n")
    monkeypatch.setenv(tv.CPUINFO_ENV, str(fake))
    assert tb.load(art).variant == "x86-64-v3"
    with pytest.raises(BackendUnavailable, match="variant x86-64-v4-vnni of .* needs avx512f.*which this CPU lacks"):
        tb.load(art, variant="x86-64-v4-vnni")
    monkeypatch.setenv(tv.VARIANT_ENV, "x86-64-v4")
    with pytest.raises(BackendUnavailable, match="variant x86-64-v4 of"):
        tb.load(art)
    monkeypatch.delenv(tv.VARIANT_ENV)
    reason = missing_requirements("host")
    if reason:
        pytest.skip(f"cannot build the C++ runner here ({reason})")
    from edgeres.backends.tvm.cpp_runner import cached_runner

    exe = cached_runner("host", cache_dir=tmp_path / "cpp")
    x = make_images(1, 32, seed=5)
    x.tofile(tmp_path / "in.bin")
    cmd = [str(exe), str(art.path), str(tmp_path / "in.bin"), "--shape", "1x3x32x32"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "# variant=x86-64-v3 " in out.stdout, out.stderr
    out = subprocess.run([*cmd, "--variant", "x86-64-v4-vnni"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert re.match(r"error: variant x86-64-v4-vnni needs avx512f, .* which this CPU lacks", out.stderr)
    listing = subprocess.run([str(exe), str(art.path), "--list-variants"], capture_output=True, text=True).stdout
    assert "x86-64-v4-vnni\tmodel.x86-64-v4-vnni.so\tlacks avx512f" in listing
    assert "x86-64-v3\tmodel.x86-64-v3.so\truns" in listing
    monkeypatch.delenv(tv.CPUINFO_ENV)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert f"# variant={tb.load(art).variant} " in out.stdout  # C++ and Python choose alike


def test_profile_and_boards_use_the_variant_that_runs(portable_fp32, tmp_path, monkeypatch):
    """`edgeres profile` on a portable bundle profiles the variant `run` picks (it profiled the x86-64-v2
    baseline, 3.6x slower than what runs, on a Zen 4); a board gets the variant its reported flags run."""
    from edgeres.backends.tvm.backend import TvmBackend
    from edgeres.backends.tvm.rpc import TvmDevice
    from edgeres.backends.tvm.runner import pick_variant

    art = portable_fp32
    here = tb.load(art).variant
    res = TvmBackend().profile(art, repeats=3)
    assert res["variant"] == here and res["operators"]
    monkeypatch.setenv(tv.VARIANT_ENV, "x86-64-v2")
    assert TvmBackend().profile(art, repeats=3)["variant"] == "x86-64-v2"
    monkeypatch.delenv(tv.VARIANT_ENV)
    assert pick_variant(art, None)[1] == "x86-64-v2"  # unknown CPU: the most portable one
    assert pick_variant(art, CPUS["haswell"][0])[0].path.name == "model.x86-64-v3.so"

    class Board(TvmDevice):  # what a board reports, without a connection
        def __init__(self, flags, emulated=False):
            self._features, self._info = list(flags), {"emulated": emulated, "arch": "x86_64"}

    assert Board(CPUS["haswell"][0]).board_artifact(art).path.name == "model.x86-64-v3.so"
    assert Board(CPUS["skylake-sp"][0]).board_artifact(art).path.name == "model.x86-64-v4.so"
    assert Board(CPUS["haswell"][0], emulated=True).board_artifact(art).path.name == "model.so"
