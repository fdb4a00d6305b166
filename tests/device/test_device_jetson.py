"""Jetson detection from files (device tree, nv_tegra_release, sysfs), the doctor, and the build checks that
depend on them -- against fake root trees of real boards, since no Jetson is attached here."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest

from edgeres.backends.tensorrt import jetson

BOARDS = {
    # name: (compatible strings, model, nv_tegra_release first line, DLA device names)
    "agx-orin-jp62": (["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"],
                      "NVIDIA Jetson AGX Orin Developer Kit",
                      "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64",
                      ["15880000.nvdla0", "158c0000.nvdla1"]),
    "orin-nano-jp60": (["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"],
                       "NVIDIA Jetson Orin Nano Developer Kit",
                       "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64", []),
    "nano-jp46": (["nvidia,p3449-0000-b00+p3448-0002-b00", "nvidia,jetson-nano", "nvidia,tegra210"],
                  "NVIDIA Jetson Nano Developer Kit",
                  "# R32 (release), REVISION: 6.1, GCID: 27863751, BOARD: t210ref, EABI: aarch64", []),
    "xavier-jp512": (["nvidia,p2972-0000", "nvidia,galen", "nvidia,tegra194"], "Jetson-AGX",
                     "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64",
                     ["15880000.nvdla0", "158c0000.nvdla1"]),
    "thor-jp70": (["nvidia,p3971-0080+p3834-0008", "nvidia,tegra264"], "NVIDIA Jetson AGX Thor Developer Kit",
                  "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64", []),
}


def fake_root(tmp_path: Path, board: str) -> Path:
    compat, model, release, dlas = BOARDS[board]
    root = tmp_path / board
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/compatible").write_bytes(b"\0".join(c.encode() for c in compat) + b"\0")
    (root / "proc/device-tree/model").write_bytes(model.encode() + b"\0")
    (root / "etc").mkdir()
    (root / "etc/nv_tegra_release").write_text(release + ", DATE: Wed Jan  8 01:49:37 UTC 2025\n")
    for d in dlas:
        (root / "sys/bus/platform/devices" / d).mkdir(parents=True)
    return root


@pytest.mark.parametrize("board, soc, cc, l4t, jetpack, trt, dla", [
    ("agx-orin-jp62", "tegra234", "8.7", "36.4.3", "6.2", "10.3.0", 2),
    ("orin-nano-jp60", "tegra234", "8.7", "36.3.0", "6.0", "8.6.2", 0),
    ("nano-jp46", "tegra210", "5.3", "32.6.1", "4.6", "8.0.1", 0),
    ("xavier-jp512", "tegra194", "7.2", "35.4.1", "5.1.2", "8.5.2", 2),
    ("thor-jp70", "tegra264", "11.0", "38.2.0", None, None, 0),
])
def test_jetson_detected_from_files(tmp_path, board, soc, cc, l4t, jetpack, trt, dla):
    info = jetson.detect(fake_root(tmp_path, board))
    assert (info.soc, info.compute_capability, info.l4t, info.jetpack, info.tensorrt_shipped, info.dla_cores) == \
        (soc, cc, l4t, jetpack, trt, dla)
    assert jetson.detect(tmp_path / "empty") is None


# which SoCs each JetPack line supports (NVIDIA's JetPack release notes)
JETPACK_SOCS = {"4": {"tegra210", "tegra186", "tegra194"}, "5": {"tegra194", "tegra234"}, "6": {"tegra234"}}


def test_each_jetson_targets_tensorrt_range_holds_what_its_jetpacks_ship():
    """Defect 8: every JetPack that supports a board (and that the target is for: its OS Python or newer)
    ships a TensorRT inside the target's range -- e.g. plain JetPack 4.6 ships 8.0.1, not 8.2."""
    from edgeres.backends.tensorrt.options import parse_version, resolve_options, version_in_range
    from edgeres.targets import list_targets

    chips = {cc: chip for chip, (_, _, cc) in jetson.TEGRA_CHIPS.items()}
    checked = 0
    for t in list_targets():
        if t.backend != "tensorrt" or resolve_options(t).builds_on != "device":
            continue
        o = resolve_options(t)
        chip = chips[o.compute_capability]
        for l4t, (jp, trt) in jetson.L4T_JETPACK.items():
            major = jp.split(".")[0]
            target_os_python = parse_version(o.device_python)
            if chip in JETPACK_SOCS.get(major, ()) and parse_version(jetson.JETPACK_PYTHON[major]) >= target_os_python:
                assert version_in_range(trt, o.trt_min, o.trt_max), (t.name, l4t, jp, trt)
                checked += 1
    assert checked >= 15


def _fake_nvidia_smi(tmp_path: Path) -> Path:
    """nvidia-smi as it answers on Jetson (nvgpu is no NVML device): N/A, and a log of every call."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho called >> {tmp_path / 'smi.log'}\necho 'Orin (nvgpu), N/A'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    return bindir


def test_gpu_on_jetson_comes_from_the_device_tree_not_nvidia_smi(tmp_path, monkeypatch):
    """Defect 3: nvidia-smi answers N/A on Jetson, which left no compute capability and refused every build."""
    from edgeres.backends.tensorrt import cuda

    monkeypatch.setenv("PATH", f"{_fake_nvidia_smi(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    root = fake_root(tmp_path, "agx-orin-jp62")
    gpu = cuda.gpu_info(root)
    assert gpu["compute_capability"] == "8.7" and gpu["via"] == "device-tree"
    assert gpu["jetson"]["jetpack"] == "6.2" and not (tmp_path / "smi.log").exists()
    assert cuda.gpu_info(tmp_path / "not-a-jetson", probe_cuda=False) is None  # off Jetson, N/A is "no GPU"


def test_check_buildable_here_on_a_jetson_with_tensorrt(tmp_path, monkeypatch):
    """On an AGX Orin with JetPack 6.2's TensorRT 10.3 the engine can be built; the same board cannot build
    jetson-xavier (SM 7.2), and an x86 host with the same GPU answer cannot build a Jetson target."""
    from edgeres.backends.tensorrt import cuda, recipe
    from edgeres.targets import get_target

    root = fake_root(tmp_path, "agx-orin-jp62")
    real = cuda.gpu_info
    monkeypatch.setattr(cuda, "gpu_info", lambda *a, **k: real(root, probe_cuda=False))
    monkeypatch.setattr(recipe, "import_tensorrt", lambda: (types.SimpleNamespace(__version__="10.3.0"), ""))
    monkeypatch.setattr(recipe.platform, "machine", lambda: "aarch64")
    ok, why = recipe.check_buildable_here(get_target("jetson-agx-orin"))
    assert ok, why
    ok, why = recipe.check_buildable_here(get_target("jetson-xavier"))
    assert not ok and "needs 8.4-8.5.99" in why
    monkeypatch.setattr(recipe, "import_tensorrt", lambda: (types.SimpleNamespace(__version__="8.5.2"), ""))
    ok, why = recipe.check_buildable_here(get_target("jetson-xavier"))
    assert not ok and "SM 8.7" in why and "SM 7.2" in why
    monkeypatch.setattr(recipe.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(recipe, "import_tensorrt", lambda: (types.SimpleNamespace(__version__="10.3.0"), ""))
    ok, why = recipe.check_buildable_here(get_target("jetson-agx-orin"))
    assert not ok and "aarch64" in why


def test_host_targets_are_tied_to_the_cpu_architecture(monkeypatch):
    """Defect 8 (GH200): an x86-64 target never builds on the aarch64 Grace host, and the aarch64 sibling does."""
    from edgeres.backends.tensorrt import cuda, recipe
    from edgeres.targets import get_target

    monkeypatch.setattr(cuda, "gpu_info", lambda *a, **k: {"name": "NVIDIA GH200 480GB", "compute_capability": "9.0",
                                                           "count": 1, "via": "cudart"})
    monkeypatch.setattr(recipe, "import_tensorrt", lambda: (types.SimpleNamespace(__version__="10.13.0"), ""))
    monkeypatch.setattr(recipe.platform, "machine", lambda: "aarch64")
    assert not recipe.check_buildable_here(get_target("datacenter-hopper"))[0]
    assert recipe.check_buildable_here(get_target("gh200"))[0]


def _doctor(root: Path, target: str) -> dict:
    code = "from edgeres.cli import main; main()"
    env = {**os.environ, "EDGERES_DOCTOR_ROOT": str(root)}
    r = subprocess.run([sys.executable, "-c", f"import sys; sys.argv = ['edgeres', 'doctor', '--target', {target!r}, "
                        f"'--json']; {code}"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode in (0, 2), r.stderr
    return {**json.loads(r.stdout), "rc": r.returncode}


def test_doctor_on_a_jetson_says_what_fits_and_what_is_missing(tmp_path):
    rep = _doctor(fake_root(tmp_path, "agx-orin-jp62"), "jetson")
    checks = {c["name"]: c for c in rep["checks"]}
    assert checks["Jetson board"]["ok"] and "JetPack 6.2" in checks["Jetson board"]["found"]
    assert checks["DLA cores"]["ok"] and "2 on this board" in checks["DLA cores"]["found"]
    assert "JetPack's TensorRT" not in checks  # JetPack 6.2's 10.3 is inside jetson-agx-orin's range
    assert not checks["TensorRT Python bindings"]["ok"]  # not installed here: the fix names the apt package
    assert "python3-libnvinfer" in checks["TensorRT Python bindings"]["fix"]
    assert "--system-site-packages" in checks["TensorRT Python bindings"]["fix"]
    assert rep["rc"] == 2 and "TensorRT Python bindings" in rep["missing"]
    rep = _doctor(fake_root(tmp_path, "xavier-jp512"), "jetson-agx-orin")
    checks = {c["name"]: c for c in rep["checks"]}
    assert not checks["Jetson board"]["ok"] and "jetson-xavier" in checks["Jetson board"]["fix"]
    assert not checks["JetPack's TensorRT"]["ok"] and "8.5.2" in checks["JetPack's TensorRT"]["found"]


def test_doctor_without_a_target_lists_every_backend(tmp_path):
    from edgeres.doctor import diagnose

    rep = diagnose(root=tmp_path)
    names = [c["name"] for c in rep.checks]
    assert {"Python", "onnxruntime", "onnxruntime backend", "tvm backend", "tensorrt backend"} <= set(names)
    torch = next(c for c in rep.checks if c["name"].startswith("torch"))
    assert torch["required"] is False  # the device side never needs it
    assert rep.ready  # this machine runs the device side
