"""Is this a Jetson, which one, and which JetPack/TensorRT should it have? Read from files only.

``nvidia-smi`` answers most queries "N/A" on Jetson (the integrated GPU is not an NVML device), so
the facts come from where L4T puts them:

* ``/proc/device-tree/compatible``: NUL-separated strings such as ``nvidia,p3737-0000+p3701-0005``,
  ``nvidia,tegra234`` -- the SoC names the GPU and so its compute capability;
* ``/proc/device-tree/model``: the board's marketing name;
* ``/etc/nv_tegra_release``: ``# R36 (release), REVISION: 4.3, ...`` -- the L4T release, which names
  the JetPack release and the TensorRT it ships;
* ``/sys/bus/platform/devices/*nvdla*`` (and ``/sys/devices/platform/host1x/*nvdla*``): one entry per DLA.

Every function takes ``root`` (default ``/``) so tests can point it at a fake tree.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# SoC -> (family, GPU architecture, compute capability)
TEGRA_CHIPS = {
    "tegra210": ("Jetson Nano / TX1", "Maxwell", "5.3"),
    "tegra186": ("Jetson TX2", "Pascal", "6.2"),
    "tegra194": ("Jetson AGX Xavier / Xavier NX", "Volta", "7.2"),
    "tegra234": ("Jetson Orin", "Ampere", "8.7"),
    "tegra264": ("Jetson Thor", "Blackwell", "11.0"),  # CUDA 13 numbering (CUDA 12.8 called it 10.1)
}

# L4T release -> (JetPack, TensorRT it ships). NVIDIA's JetPack release notes; FINDINGS.md.
L4T_JETPACK = {
    "32.6.1": ("4.6", "8.0.1"),
    "32.7.1": ("4.6.1", "8.2.1"), "32.7.2": ("4.6.2", "8.2.1"), "32.7.3": ("4.6.3", "8.2.1"),
    "32.7.4": ("4.6.4", "8.2.1"), "32.7.5": ("4.6.5", "8.2.1"), "32.7.6": ("4.6.6", "8.2.1"),
    "35.1.0": ("5.0.2", "8.4.1"),
    "35.2.1": ("5.1", "8.5.2"), "35.3.1": ("5.1.1", "8.5.2"), "35.4.1": ("5.1.2", "8.5.2"),
    "35.5.0": ("5.1.3", "8.5.2"), "35.6.0": ("5.1.4", "8.5.2"),
    "36.3.0": ("6.0", "8.6.2"),
    "36.4.0": ("6.1", "10.3.0"), "36.4.3": ("6.2", "10.3.0"), "36.4.4": ("6.2.1", "10.3.0"),
}
# JetPack -> the Python 3 of its Ubuntu (edgeres needs >= 3.10): 4.x 18.04, 5.x 20.04, 6.x 22.04, 7.x 24.04
JETPACK_PYTHON = {"4": "3.6", "5": "3.8", "6": "3.10", "7": "3.12"}


@dataclass(frozen=True)
class JetsonInfo:
    model: str  # /proc/device-tree/model
    soc: str  # e.g. tegra234
    family: str
    gpu_arch: str
    compute_capability: str
    l4t: str | None  # e.g. 36.4.3
    jetpack: str | None
    tensorrt_shipped: str | None  # the TensorRT this JetPack ships
    dla_cores: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ""


def compatible(root: Path = Path("/")) -> list[str]:
    """The device tree's ``compatible`` strings (empty off a device-tree machine)."""
    text = _read(Path(root) / "proc/device-tree/compatible")
    return [s for s in text.split("\0") if s]


def soc(root: Path = Path("/")) -> str | None:
    """``tegra234`` etc. when this is an NVIDIA Tegra (Jetson) board, else None."""
    for entry in compatible(root):
        vendor, _, name = entry.partition(",")
        if vendor == "nvidia" and name.startswith("tegra"):
            return name
    return None


def l4t_release(root: Path = Path("/")) -> str | None:
    """``36.4.3`` from ``/etc/nv_tegra_release`` (``# R36 (release), REVISION: 4.3, ...``)."""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?",
                  _read(Path(root) / "etc/nv_tegra_release"))
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2)}.{m.group(3) or 0}"


def dla_cores(root: Path = Path("/")) -> int:
    """How many DLA engines the kernel exposes (``*.nvdla0``, ``*.nvdla1`` platform devices)."""
    names: set[str] = set()
    for base in ("sys/bus/platform/devices", "sys/devices/platform", "sys/devices/platform/host1x",
                 "sys/devices/platform/bus@0/13e00000.host1x"):
        d = Path(root) / base
        try:
            names.update(p.name.rsplit(".", 1)[-1] for p in d.iterdir() if re.search(r"\.nvdla\d+$", p.name))
        except OSError:
            continue
    return len(names)


def detect(root: Path = Path("/")) -> JetsonInfo | None:
    """What Jetson this is (None when it is not one)."""
    chip = soc(root)
    if chip is None:
        return None
    family, arch, cc = TEGRA_CHIPS.get(chip, (f"NVIDIA {chip}", "unknown", ""))
    l4t = l4t_release(root)
    jp, trt = L4T_JETPACK.get(l4t or "", (None, None))
    model = _read(Path(root) / "proc/device-tree/model").strip("\0 \n") or family
    return JetsonInfo(model=model, soc=chip, family=family, gpu_arch=arch, compute_capability=cc, l4t=l4t,
                      jetpack=jp, tensorrt_shipped=trt, dla_cores=dla_cores(root))


__all__ = ["JETPACK_PYTHON", "JetsonInfo", "L4T_JETPACK", "TEGRA_CHIPS", "compatible", "detect", "dla_cores",
           "l4t_release", "soc"]
