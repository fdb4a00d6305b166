"""RPC boards beyond one plain server: a farm of two TVM servers under one tracker key, and an
aarch64 board emulated with qemu.

* TVM's tracker with two ``python -m tvm.exec.rpc_server --key farm`` (module fixture, stopped
  in ``finally``): a devices.toml device naming the tracker and key runs an artifact on a board
  of the key (fast); a key nobody registered and a tracker passed as ``--device`` are one-line
  errors that say what to run (fast); MetaSchedule measures through the tracker on both boards,
  the database gets records, and compile applies them (slow).
* ``edgeres serve-device`` runs in Debian's arm64 Python with the aarch64 TVM wheel under
  qemu-aarch64 (tools/setup-aarch64.sh installs it): an INT8 ResNet-20 built for rpi5 is validated
  on it (equal to validating it here, where it runs in the C++ runner under qemu, and within the
  integer path's tolerance of ONNX Runtime on the same Q/DQ model), benched and profiled (both
  labelled emulated), and an x86 artifact is refused before upload (slow).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeres.devices import resolve_device
from edgeres.errors import DeviceError, UsageError

tvm = pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")
from rpc_servers import ROOT, edgeres_server, run_cli, tvm_server, tvm_tracker, wait_for_key  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:only .* calibration images")]
SETUP = "run tools/setup-aarch64.sh"




def _report(path: Path) -> dict:
    d = json.loads(path.read_text())
    d.pop("seconds")
    return {**d, "context": d["context"]["data_fingerprint"]}


@pytest.fixture(scope="module")
def emulated_board():
    from edgeres.backends.tvm import cross
    from edgeres.backends.tvm.cpp_runner import missing_requirements

    if cross.host_arch() != "x86_64" or cross.find_cross_cxx("aarch64") is None:
        pytest.skip(f"needs the aarch64 cross toolchain on an x86-64 host: {SETUP}")
    reason = missing_requirements("aarch64")
    if reason:
        pytest.skip(f"cannot run aarch64 programs here ({reason})")
    python = cross.aarch64_python()
    if python is None:
        pytest.skip(f"no emulated aarch64 Python with this TVM: {SETUP}")
    srv = edgeres_server(python=python, module=True, env={"PYTHONPATH": str(ROOT)}, timeout=600, wait=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def arm_bundle(emulated_board, tmp_path_factory) -> tuple[Path, Path]:
    """ResNet-20 INT8 for rpi5 (integer sdot kernels), calibrated on labelled images named like its classes."""
    from edgeres.data.builtin import write_image_folder
    from edgeres.pipeline import compile_bundle

    src = tmp_path_factory.mktemp("shapes") / "s"
    write_image_folder(src, 1, 1, seed=4)
    data = tmp_path_factory.mktemp("numbered") / "val"
    for i, d in enumerate(sorted(p for p in (src / "val").iterdir() if p.is_dir())[:10]):
        shutil.copytree(d, data / str(i))
    out = tmp_path_factory.mktemp("bundles") / "r20-rpi5-int8"
    compile_bundle("resnet20", "rpi5", out, precision="int8", weights="random", calib=str(data), quant={"num_calib": 10})
    return out, data


@pytest.mark.slow
def test_aarch64_bundle_on_emulated_board(emulated_board, arm_bundle, tiny_onnx, make_images, tmp_path, capsys):
    from edgeres.backends import get_backend, reference_runner
    from edgeres.bundle import load_bundle

    bundle, data = arm_bundle
    address = emulated_board.address
    backend = get_backend("tvm")
    art = load_bundle(bundle).artifact()
    assert art.info["arch"] == "aarch64" and art.info["int8_kernels"]
    # the board's logits: the Q/DQ model's within the integer path's tolerance (ORT's fused Q/DQ vs TVM)
    x = make_images(3, 32, seed=9)
    with backend.open_device(resolve_device(address)) as board:
        info = board.describe()
        logits = board.load(art)(x)
    assert info["arch"] == "aarch64" and info["emulated"] is True and info["server"] == "edgeres serve-device"
    ref = reference_runner(load_bundle(bundle).deploy_onnx)(x)
    assert np.abs(logits - ref).max() <= 0.02 * float(ref.max() - ref.min())
    # validate on the board == validate here (the same aarch64 library, in the C++ runner under qemu)
    code, _, err = run_cli(["validate", bundle, "--data", data, "--device", address, "--json", tmp_path / "r.json"],
                         capsys)
    assert code in (0, 1), err
    code_l, _, err = run_cli(["validate", bundle, "--data", data, "--json", tmp_path / "l.json"], capsys)
    assert code_l == code, err
    assert _report(tmp_path / "r.json") == _report(tmp_path / "l.json")
    assert json.loads((tmp_path / "r.json").read_text())["num_images"] == 10
    # timings on the emulator are labelled so
    code, out, err = run_cli(["bench", bundle, "--device", address, "--repeats", "3", "--json", tmp_path / "b.json"],
                           capsys)
    assert code == 0, err
    assert "emulated ms" in out and "EMULATED" in out and json.loads((tmp_path / "b.json").read_text())["emulated"]
    code, out, err = run_cli(["profile", bundle, "--device", address, "--repeats", "3", "--json", tmp_path / "p.json"],
                           capsys)
    assert code == 0, err
    assert "emulated ms" in out and "EMULATED" in out
    prof = json.loads((tmp_path / "p.json").read_text())
    assert [s["stage"] for s in prof["stages"]] == ["stem", "layer1", "layer2", "layer3", "head"] and prof["emulated"]
    # an x86 artifact is refused before upload
    from edgeres.targets import get_target

    x86 = backend.compile(tiny_onnx, get_target("x86-64-host"), tmp_path / "x86", precision="fp32")
    with pytest.raises(UsageError, match=r"built for x86_64 but .* is aarch64"):
        with backend.open_device(resolve_device(address)) as board:
            board.load(x86)


@pytest.fixture(scope="module")
def farm():
    tracker = tvm_tracker()
    servers = [tvm_server(tracker=tracker.address, key="farm", wait=False) for _ in range(2)]
    try:
        for s in servers:
            s.port  # noqa: B018 - waits until it listens
        wait_for_key(tracker, "farm", 2)
        yield tracker, servers
    finally:
        for s in servers:
            s.stop()
        tracker.stop()


@pytest.mark.slow
def test_tuning_through_a_tracker_farm(farm, tiny_onnx, make_images, tmp_path):
    pytest.importorskip("xgboost", reason="MetaSchedule needs xgboost: pip install xgboost-cpu")
    from edgeres.backends import get_backend
    from edgeres.backends.tvm.tuning import tune
    from edgeres.targets import get_target

    tracker, servers = farm
    spec = resolve_device(tracker=tracker.address, key="farm")
    target = get_target("x86-64-host")
    logs: list[str] = []
    res = tune(tiny_onnx, target, tmp_path / "db", trials=6, trials_per_task=1, progress=False, log=logs.append,
               device=spec, seed=0)
    assert any("2 board(s) in parallel" in line for line in logs)
    assert res.trials > 0 and res.failed_trials < res.trials and res.tasks_tuned > 0
    records = (tmp_path / "db" / "database_tuning_record.json").read_text().splitlines()
    assert len(records) >= res.trials - res.failed_trials
    assert all(s.count("connected from") >= 1 for s in servers)  # both boards measured candidates
    backend = get_backend("tvm")
    art = backend.compile(tiny_onnx, target, tmp_path / "tuned", precision="fp32",
                          options={"tuning_db": str(tmp_path / "db")})
    assert art.info["tuned_functions"] > 0
    x = make_images(2, 16, seed=1)
    with backend.open_device(spec) as board:  # and the tuned artifact runs on a board of the farm
        np.testing.assert_allclose(board.load(art)(x), backend.load(art)(x), rtol=1e-5, atol=1e-5)


def test_named_tracker_device_runs_on_a_board_of_the_key(farm, tiny_onnx, make_images, tmp_path):
    from edgeres.backends import get_backend
    from edgeres.targets import get_target

    tracker, servers = farm
    (tmp_path / "devices.toml").write_text(f'[lab-farm]\ntracker = "{tracker.address}"\nkey = "farm"\n'
                                           'target = "x86-64-host"\n')
    spec = resolve_device("lab-farm", devices=[tmp_path / "devices.toml"])
    backend = get_backend("tvm")
    art = backend.compile(tiny_onnx, get_target(spec.target), tmp_path / "art", precision="fp32")
    x = make_images(2, 16, seed=3)
    loads = sum(s.count("load_module") for s in servers)
    with backend.open_device(spec) as board:
        info = board.describe()
        logits = board.load(art)(x)
    assert info["server"] == "tvm" and info["arch"] == "x86_64"
    assert info["device"] == f"lab-farm (tracker {tracker.address} key 'farm')"
    np.testing.assert_array_equal(logits, backend.load(art)(x))
    assert sum(s.count("load_module") for s in servers) == loads + 1  # uploaded to, and run on, one board


def test_tracker_mistakes_are_one_line_with_a_fix(farm):
    from edgeres.backends import get_backend

    tracker, _ = farm
    backend = get_backend("tvm")
    with pytest.raises(DeviceError) as e:
        with backend.open_device(resolve_device(tracker=tracker.address, key="rpi9")) as board:
            board.describe()
    msg = str(e.value)
    assert "no board is registered under key 'rpi9'" in msg and "'farm': 2" in msg
    assert f"rpc_server --tracker {tracker.address} --key rpi9" in msg and "\n" not in msg
    with pytest.raises(DeviceError, match=r"no TVM RPC session started .*tracker addresses go to --tracker") as e:
        with backend.open_device(resolve_device(tracker.address)) as board:  # a tracker given as --device
            board.describe()
    assert "\n" not in str(e.value)
