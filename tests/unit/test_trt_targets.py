"""TensorRT targets, their options and the on-device build recipe (no TensorRT needed)."""

from __future__ import annotations

import pytest

from edgeres.backends.tensorrt.options import parse_version, resolve_options, version_in_range
from edgeres.backends.tensorrt.recipe import TRTEXEC_JETSON, build_recipe, fp16_onnx_name
from edgeres.errors import InputError, UsageError
from edgeres.targets import get_target, list_targets, parse_target

TRT_TARGETS = {
    # name: (compute capability, DLA cores, builds_on, arch)
    "jetson-agx-orin": ("8.7", 2, "device", "aarch64"),
    "jetson-orin-nano": ("8.7", 0, "device", "aarch64"),
    "jetson-xavier": ("7.2", 2, "device", "aarch64"),
    "jetson-nano": ("5.3", 0, "device", "aarch64"),
    "rtx-ampere": ("8.6", 0, "host", "x86_64"),
    "rtx-ada": ("8.9", 0, "host", "x86_64"),
    "datacenter-hopper": ("9.0", 0, "host", "x86_64"),
    "datacenter-grace-hopper": ("9.0", 0, "host", "aarch64"),
    "jetson-thor": ("11.0", 0, "device", "aarch64"),
}


@pytest.mark.parametrize("name", sorted(TRT_TARGETS))
def test_trt_target_fields(name):
    cc, dla, builds_on, arch = TRT_TARGETS[name]
    t = get_target(name)
    assert (t.backend, t.qdq_form, t.device, t.arch) == ("tensorrt", "tensorrt", "cuda", arch)
    opts = resolve_options(t)
    assert opts.compute_capability == cc
    assert opts.dla_cores == dla and opts.dla_core == -1
    assert opts.builds_on == builds_on
    assert parse_version(opts.trt_min) <= parse_version(opts.trt_max)
    assert opts.batch_min <= opts.batch_opt <= opts.batch_max
    assert opts.workspace_mb > 0


def test_jetson_alias_is_the_agx_orin_flagship():
    assert get_target("jetson").name == "jetson-agx-orin"
    assert get_target("jetson-orin").name == "jetson-agx-orin"
    names = [t.name for t in list_targets()]
    assert "jetson" not in names  # an alias, not a second target


def test_jetson_nano_is_fp16_only_and_old_tensorrt():
    t = get_target("jetson-nano")
    assert "int8" not in t.precisions and t.default_precision == "fp16"
    with pytest.raises(UsageError, match="not 'int8'"):
        build_recipe(t, "int8")
    opts = resolve_options(t)
    assert version_in_range("8.2.1", opts.trt_min, opts.trt_max)
    assert not version_in_range("10.3.0", opts.trt_min, opts.trt_max)


def test_tensorrt_version_ranges_are_honest():
    assert version_in_range("10.3.0", **_rng("jetson-agx-orin"))  # JetPack 6.1/6.2
    assert version_in_range("8.6.2", **_rng("jetson-agx-orin"))  # JetPack 6.0
    assert version_in_range("11.4.1", **_rng("jetson-agx-orin"))  # JetPack 7.2.2+
    assert version_in_range("8.5.2", **_rng("jetson-xavier"))  # JetPack 5.1.x
    assert not version_in_range("10.3.0", **_rng("jetson-xavier"))  # no JetPack 6 for Xavier
    assert not version_in_range("11.4.0", **_rng("jetson-orin-nano"))
    assert version_in_range("11.4.0", **_rng("datacenter-hopper"))
    assert version_in_range("8.0.1", **_rng("jetson-nano"))  # plain JetPack 4.6
    assert version_in_range("10.13.0", **_rng("jetson-thor")) and version_in_range("11.4.1", **_rng("jetson-thor"))


def _rng(name):
    o = resolve_options(get_target(name))
    return {"lo": o.trt_min, "hi": o.trt_max}


def test_recipe_int8_on_orin_has_flag_and_strongly_typed_variants():
    r = build_recipe(get_target("jetson"), "int8", "model_qdq.onnx", input_name="images", input_chw=(3, 224, 224))
    assert r["target"] == "jetson-agx-orin" and r["compute_capability"] == "8.7"
    assert r["recommended"] == "edgeres build-engine BUNDLE"
    apis = [v["api"] for v in r["variants"]]
    assert apis == ["weakly-typed", "strongly-typed"]
    trt10, trt11 = r["variants"]
    assert trt10["tensorrt"] == {"min": "8.6", "max": "10.99"}
    assert trt11["tensorrt"] == {"min": "11.0", "max": "11.99"}
    a10, a11 = trt10["trtexec_argv"], trt11["trtexec_argv"]
    assert a10[0] == TRTEXEC_JETSON  # JetPack's trtexec is not on PATH
    assert "--int8" in a10 and "--fp16" in a10
    assert "--int8" not in a11 and "--fp16" not in a11  # removed in TensorRT 11: precision is in the ONNX
    for argv in (a10, a11):
        assert "--onnx=model_qdq.onnx" in argv and "--saveEngine=model.engine" in argv
        assert "--minShapes=images:1x3x224x224" in argv
        assert "--maxShapes=images:8x3x224x224" in argv
        assert "--memPoolSize=workspace:2048M" in argv
        assert "--timingCacheFile=timing.cache" in argv
        assert not any(a.startswith("--useDLACore") for a in argv)
    assert any("Q/DQ" in n for n in r["notes"])


def test_recipe_fp16_on_tensorrt11_converts_the_onnx_first():
    r = build_recipe(get_target("rtx-ada"), "fp16", "resnet.onnx")
    trt10, trt11 = r["variants"]
    assert "--fp16" in trt10["trtexec_argv"] and not trt10["prepare"]
    assert "--onnx=resnet_fp16.onnx" in trt11["trtexec_argv"] and "--fp16" not in trt11["trtexec_argv"]
    assert "convert_to_fp16" in trt11["prepare"][0] and "modelopt.onnx.autocast" in trt11["prepare"][0]
    assert trt11["trtexec_argv"][0] == "trtexec"
    assert "--optShapes=input:8x3x224x224" in trt11["trtexec_argv"]


def test_recipe_dla_core_pins_the_batch_and_allows_gpu_fallback():
    r = build_recipe(get_target("jetson-agx-orin"), "fp16", options={"dla_core": 1})
    # only TensorRT versions with DLA: up to 10.7, and 11.4.1+ (JetPack 7.2.2+, strongly typed, FP16 ONNX)
    assert [v["tensorrt"] for v in r["variants"]] == [{"min": "8.6", "max": "10.7.99"}, {"min": "11.4.1", "max": "11.99"}]
    argv = r["variants"][0]["trtexec_argv"]
    assert "--useDLACore=1" in argv and "--allowGPUFallback" in argv and "--fp16" in argv
    assert "--minShapes=input:1x3x224x224" in argv and "--maxShapes=input:1x3x224x224" in argv
    assert "--target_dla" in r["variants"][1]["prepare"][0]
    assert r["batch"] == {"min": 1, "opt": 1, "max": 1}
    assert any("DLA" in n for n in r["notes"])
    with pytest.raises(UsageError, match="explicit Q/DQ"):
        build_recipe(get_target("jetson-agx-orin"), "int8", options={"dla_core": 0})


def test_recipe_fp32_turns_tf32_off():
    for target in ("rtx-ampere", "jetson-agx-orin", "jetson-nano"):
        r = build_recipe(get_target(target), "fp32")
        assert all("--noTF32" in v["trtexec_argv"] for v in r["variants"])
        assert not any("--noTF32" in v["trtexec_argv"] for v in build_recipe(get_target(target), "fp16")["variants"])


def test_recipe_for_old_jetpack_recommends_trtexec():
    nano = build_recipe(get_target("jetson-nano"), "fp16", input_chw=(3, 32, 32))
    assert len(nano["variants"]) == 1
    argv = nano["variants"][0]["trtexec_argv"]
    assert "--workspace=512" in argv and "--fp16" in argv  # TensorRT 8.0/8.2 have no --memPoolSize
    assert any("no INT8" in n for n in nano["notes"]) and any("trtexec" in n for n in nano["notes"])
    assert nano["variants"][0]["python_api"].startswith("trtexec only")
    assert nano["recommended"].startswith(TRTEXEC_JETSON)
    xavier = build_recipe(get_target("jetson-xavier"), "int8")
    assert xavier["recommended"].startswith(TRTEXEC_JETSON)  # JetPack 5 has Python 3.8
    assert any("Python" in n for n in xavier["notes"])


def test_recipe_compatibility_options():
    r = build_recipe(get_target("rtx-ampere"), "int8",
                     options={"hardware_compatibility": "ampere+", "version_compatible": True, "int8_allow_fp16": False})
    argv = r["variants"][0]["trtexec_argv"]
    assert "--hardwareCompatibilityLevel=ampere+" in argv and "--versionCompatible" in argv
    assert "--int8" in argv and "--fp16" not in argv
    assert build_recipe(get_target("rtx-ampere"), "fp32")["variants"][0]["trtexec_argv"].count("--fp16") == 0


def test_fp16_onnx_name():
    assert fp16_onnx_name("model.onnx") == "model_fp16.onnx"
    assert fp16_onnx_name("dir/r50") == "dir/r50_fp16.onnx"


@pytest.mark.parametrize("override, match", [
    ({"dla_core": 2}, "has 2 DLA cores"),
    ({"batch": {"min": 4, "opt": 2, "max": 8}}, "min <= opt <= max"),
    ({"batch": {"min": 1, "max": 8}}, "batch must be a table"),
    ({"workspace_mb": 0}, "workspace_mb must be an integer >= 1"),
    ({"hardware_compatibility": "ampere+"}, "discrete GPUs only"),
    ({"version_compatible": True, "dla_core": 0}, "cannot use DLA"),
    ({"compute_capability": "9.0"}, "cannot be set per build"),
])
def test_bad_options_are_rejected_with_a_fix(override, match):
    with pytest.raises(UsageError, match=match):
        resolve_options(get_target("jetson-agx-orin"), override)


def test_nano_has_no_dla():
    with pytest.raises(UsageError, match="has no DLA"):
        resolve_options(get_target("jetson-orin-nano"), {"dla_core": 0})


def _raw(**tensorrt):
    return {"name": "x", "backend": "tensorrt", "precisions": ["fp16"], "tensorrt": tensorrt}


def test_target_file_errors_in_the_tensorrt_table():
    with pytest.raises(InputError, match="lacks compute_capability"):
        resolve_options(parse_target(_raw()))
    with pytest.raises(InputError, match="unknown keys"):
        resolve_options(parse_target(_raw(compute_capability="8.6", dla="yes")))
    with pytest.raises(InputError, match="builds_on"):
        resolve_options(parse_target(_raw(compute_capability="8.6", builds_on="cloud")))
    with pytest.raises(InputError, match="above tensorrt.max"):
        resolve_options(parse_target(_raw(compute_capability="8.6", tensorrt={"min": "11.0", "max": "10.0"})))
    with pytest.raises(UsageError, match="not a TensorRT target"):
        resolve_options(get_target("x86-64"))
