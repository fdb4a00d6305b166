"""`edgeres selftest` on TVM x86 bundles, without torch (CI runs it under Python 3.10): PASS on a good bundle,
FAIL with numbers on a swapped artifact, a clean refusal (exit 2, no SIGILL) for an artifact built for CPU
features this machine lacks."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")

from test_device_side import _edgeres_without_torch, _one_line_error, _reseal  # noqa: E402
from tiny_onnx import build_resnet_onnx  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:only .* calibration images")


@pytest.fixture(scope="module")
def tvm_bundles(tmp_path_factory):
    from edgeres.pipeline import compile_bundle

    root = tmp_path_factory.mktemp("device_tvm")
    out = {}
    for seed in (0, 1):
        model = build_resnet_onnx(root / f"tiny{seed}.onnx", seed=seed)
        out[seed] = compile_bundle(str(model), "x86-64-host", root / f"b{seed}", precision="int8", calib="builtin",
                                   quant={"num_calib": 64}).bundle
    return out


def test_selftest_passes_on_a_tvm_x86_bundle(tvm_bundles):
    r = _edgeres_without_torch("selftest", tvm_bundles[0])
    assert r.returncode == 0 and "PASS selftest" in r.stdout and "tvm artifact artifact/model.so" in r.stdout, \
        r.stdout + r.stderr


def test_selftest_fails_with_numbers_on_a_swapped_library(tvm_bundles, tmp_path):
    bad = tmp_path / "swapped"
    shutil.copytree(tvm_bundles[0], bad)
    shutil.copyfile(tvm_bundles[1] / "artifact" / "model.so", bad / "artifact" / "model.so")  # same shapes
    _reseal(bad)
    r = _edgeres_without_torch("selftest", bad)
    assert r.returncode == 1 and "FAIL selftest" in r.stdout and "max abs err" in r.stdout and "limit" in r.stdout


def test_selftest_refuses_an_artifact_for_cpu_features_this_machine_lacks(tvm_bundles, tmp_path):
    """An x86 library recorded as needing AMX (this CPU, like most VMs, has none): refused before it runs."""
    from edgeres.backends.tvm.options import EXPLICIT_FEATURES

    flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    lacking = [f for f in ("amx-int8", "amx-tile") if EXPLICIT_FEATURES[f] not in flags]
    if not lacking:
        pytest.skip("this CPU has AMX: no feature to fake as missing")
    bad = tmp_path / "wrong-cpu"
    shutil.copytree(tvm_bundles[0], bad)
    side = bad / "artifact" / "model.tvm.json"
    rec = json.loads(side.read_text())
    flag = EXPLICIT_FEATURES[lacking[0]]
    rec["info"]["tvm_target"] = {**rec["info"]["tvm_target"], "mcpu": "sapphirerapids", "mattr": [f"+{lacking[0]}"]}
    if "cpu_flags" in rec["info"]:  # what the library records it needs (edgeres since the portable bundles)
        rec["info"]["cpu_flags"] = [*rec["info"]["cpu_flags"], flag]
    side.write_text(json.dumps(rec))
    man = json.loads((bad / "manifest.json").read_text())
    man["artifact"]["info"]["tvm_target"] = rec["info"]["tvm_target"]
    if "cpu_flags" in rec["info"]:
        man["artifact"]["info"]["cpu_flags"] = rec["info"]["cpu_flags"]
    (bad / "manifest.json").write_text(json.dumps(man))
    _reseal(bad)
    r = _edgeres_without_torch("selftest", bad)
    assert r.returncode == 2, r.stdout + r.stderr  # not -4 (SIGILL)
    line = _one_line_error(r)
    assert "this CPU lacks" in line and flag in line
