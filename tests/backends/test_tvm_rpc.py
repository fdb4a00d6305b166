"""Boards over TVM's RPC, against real servers on 127.0.0.1: TVM's own ``python -m tvm.exec.rpc_server``
and ``edgeres serve-device``. One x86 ResNet-20 bundle (random weights) is shared by the tests; the
commands run in this process (``edgeres.cli.main``) so that TVM is imported once.

Validate on a server equals validate here; bench and profile run on the server; a server killed
mid-run gives a one-line error and no report; a dropped connection is re-opened and the run
completes; an artifact for another architecture is refused before anything is uploaded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from edgeres.devices import DeviceSpec, resolve_device
from edgeres.errors import DeviceError, UsageError

tvm = pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")
from rpc_servers import edgeres_server, free_port, run_cli, tvm_server  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
CLASSES = 10
PER_CLASS = 8  # 80 images: two validation batches (64 + 16)


@pytest.fixture(scope="module")
def numbered_data(tmp_path_factory) -> Path:
    """Labelled 32x32 images in folders named like the random-weight model's classes ("0".."9")."""
    from edgeres.data.builtin import write_image_folder

    src = tmp_path_factory.mktemp("shapes") / "s"
    write_image_folder(src, 1, PER_CLASS, seed=3)
    out = tmp_path_factory.mktemp("numbered") / "val"
    for i, d in enumerate(sorted(p for p in (src / "val").iterdir() if p.is_dir())[:CLASSES]):
        shutil.copytree(d, out / str(i))
    return out


@pytest.fixture(scope="module")
def servers():
    """Three servers started at once (each imports TVM: seconds), while the bundle compiles."""
    procs = {"plain": tvm_server(wait=False), "edgeres": edgeres_server(wait=False), "victim": tvm_server(wait=False)}
    yield procs
    for p in procs.values():
        p.stop()


@pytest.fixture(scope="module")
def x86_bundle(servers, tmp_path_factory) -> Path:
    from edgeres.pipeline import compile_bundle

    out = tmp_path_factory.mktemp("bundles") / "r20-x86"
    compile_bundle("resnet20", "x86-64-host", out, precision="fp32", weights="random")
    return out


@pytest.fixture(scope="module")
def local_report(x86_bundle, numbered_data, tmp_path_factory) -> Path:
    from edgeres.pipeline import validate_bundle

    out = tmp_path_factory.mktemp("local") / "local.json"
    validate_bundle(x86_bundle, str(numbered_data)).write(out)
    return out


@pytest.fixture(scope="module")
def plain_server(servers):
    return servers["plain"]


@pytest.fixture(scope="module")
def edgeres_srv(servers):
    return servers["edgeres"]


def _report(path: Path) -> dict:
    d = json.loads(path.read_text())
    d.pop("seconds")
    ctx = d.pop("context")
    return {**d, "data_fingerprint": ctx["data_fingerprint"]}




def _check_r20_profile(p: dict) -> None:
    """ResNet-20: the NCHW->NHWC transpose and conv1 form the stem; each stage has 3 blocks of 2 convs
    (stages 2 and 3 also one option-A shortcut op); the head is the pooling, the classifier as a 1x1
    convolution on the packed kernels (output channels padded to the register tile) and its bias."""
    assert [s["stage"] for s in p["stages"]] == ["stem", "layer1", "layer2", "layer3", "head"]
    assert [s["kernels"] for s in p["stages"]] == [2, 6, 7, 7, 3]
    assert sum(s["ms"] for s in p["stages"]) == pytest.approx(p["kernels_ms"], rel=1e-6)
    convs = [o for o in p["operators"] if "conv2d" in o["name"]]
    assert len(convs) == 20 and all(o["ms"] > 0 for o in p["operators"])  # 19 convolutions + the classifier
    assert {o["stage"] for o in convs if o["shape"][1] == 8} == {"layer3"}  # 8x8 outputs (NHWC): layer3 only
    assert p["end_to_end_ms"]["median"] > 0 and len(p["end_to_end_ms"]["samples"]) == 3


def test_remote_validate_equals_local(x86_bundle, numbered_data, plain_server, local_report, tmp_path, capsys):
    (tmp_path / "devices.toml").write_text(f'[lab-box]\nhost = "127.0.0.1"\nport = {plain_server.port}\n'
                                           'target = "x86-64-host"\n')
    code, out, err = run_cli(["validate", x86_bundle, "--data", numbered_data, "--device", "lab-box",
                            "--devices", tmp_path / "devices.toml", "--json", tmp_path / "remote.json"], capsys)
    assert code == 0, err
    assert _report(tmp_path / "remote.json") == _report(local_report)
    rec = json.loads((tmp_path / "remote.json").read_text())
    assert rec["num_images"] == CLASSES * PER_CLASS
    assert rec["context"]["backend"] == f"tvm on lab-box (127.0.0.1:{plain_server.port})"
    assert rec["context"]["device"]["server"] == "tvm" and rec["context"]["device"]["arch"] == "x86_64"
    assert plain_server.count("load_module") >= 1  # the artifact really ran there


def test_bench_and_profile_on_serve_device(x86_bundle, edgeres_srv, tmp_path, capsys):
    code, out, err = run_cli(["bench", x86_bundle, "--device", edgeres_srv.address, "--repeats", "10",
                            "--json", tmp_path / "b.json"], capsys)
    assert code == 0, err
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["board"]["server"] == "edgeres serve-device" and b["board"]["cores"] == os.cpu_count()
    assert b["emulated"] is False and "emulated" not in out.lower()
    art = b["runners"]["artifact"]
    assert art["samples"] == 10 and 0 < art["median_ms"] <= art["p90_ms"] <= art["p99_ms"]
    assert art["images_per_s"] == pytest.approx(1000.0 / art["median_ms"])
    assert "onnxruntime-fp32" in b["runners"]  # the server's Python has onnxruntime
    code, out, err = run_cli(["profile", x86_bundle, "--device", edgeres_srv.address, "--repeats", "3", "--json",
                            tmp_path / "p.json", "--plot", tmp_path / "p.png"], capsys)
    assert code == 0, err
    assert "layer3" in out and "sum of stages" in out
    _check_r20_profile(json.loads((tmp_path / "p.json").read_text()))
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_here(x86_bundle):
    from edgeres.backends import get_backend
    from edgeres.bundle import load_bundle

    _check_r20_profile(get_backend("tvm").profile(load_bundle(x86_bundle).artifact(), repeats=3))


def test_profile_on_plain_server_says_what_to_start(x86_bundle, plain_server, capsys):
    code, out, err = run_cli(["profile", x86_bundle, "--device", plain_server.address, "--repeats", "3"], capsys)
    assert code == 2 and "plain TVM RPC server" in err and "serve-device" in err


def _after_first_batch(monkeypatch, action) -> None:
    """Do ``action`` once the board has classified the first validation batch."""
    from edgeres.backends.tvm import rpc

    original = rpc.TvmRemoteRunner.__call__
    state = {"calls": 0}

    def wrapped(self, batch):
        out = original(self, batch)
        state["calls"] += 1
        if state["calls"] == 1:
            action()
        return out

    monkeypatch.setattr(rpc.TvmRemoteRunner, "__call__", wrapped)


def test_killed_server_gives_clear_error_and_no_report(x86_bundle, numbered_data, servers, tmp_path, monkeypatch,
                                                       capsys):
    srv = servers["victim"]
    try:
        _after_first_batch(monkeypatch, srv.stop)
        out = tmp_path / "report.json"
        code, _, err = run_cli(["validate", x86_bundle, "--data", numbered_data, "--device", srv.address,
                              "--json", out], capsys)
    finally:
        srv.stop()
    assert code == 2
    assert err.startswith("error: lost 127.0.0.1:") and "after 64 images" in err and "nothing was written" in err
    assert "Traceback" not in err and not out.exists() and not list(tmp_path.iterdir())


def test_dropped_connection_is_reopened(x86_bundle, numbered_data, plain_server, local_report, tmp_path, monkeypatch,
                                        capsys):
    """Cut the TCP connection to the board after the first batch (as a network drop would): the
    runner opens a new session, runs the interrupted batch again, and the report equals the local one."""
    import psutil

    def cut() -> None:
        conns = [c for c in psutil.Process().net_connections(kind="tcp")
                 if c.raddr and c.raddr.port == plain_server.port and c.status == psutil.CONN_ESTABLISHED]
        assert conns, "no connection to the board to cut"
        for c in conns:
            s = socket.socket(fileno=os.dup(c.fd))
            s.shutdown(socket.SHUT_RDWR)
            s.close()

    sessions = plain_server.count("connected from")
    _after_first_batch(monkeypatch, cut)
    code, _, err = run_cli(["validate", x86_bundle, "--data", numbered_data, "--device", plain_server.address,
                          "--json", tmp_path / "remote.json"], capsys)
    assert code == 0, err
    assert plain_server.count("connected from") == sessions + 2  # a second session after the cut
    assert _report(tmp_path / "remote.json") == _report(local_report)


def test_wrong_architecture_is_refused_before_upload(tiny_onnx, tmp_path, plain_server):
    from edgeres.backends import get_backend
    from edgeres.backends.tvm import cross
    from edgeres.backends.tvm.rpc import TvmDevice
    from edgeres.targets import get_target

    if cross.host_arch() != "x86_64" or cross.find_cross_cxx("aarch64") is None:
        pytest.skip("needs the aarch64 cross toolchain on an x86-64 host: run tools/setup-aarch64.sh")
    art = get_backend("tvm").compile(tiny_onnx, get_target("rpi5"), tmp_path / "arm", precision="fp32")
    board = TvmDevice(DeviceSpec("box", host="127.0.0.1", port=plain_server.port))
    uploads: list = []
    sess = board.session
    real_upload = sess.upload
    sess.upload = lambda *a, **k: (uploads.append(a), real_upload(*a, **k))[1]
    with pytest.raises(UsageError, match=r"built for aarch64 but box \(127\.0\.0\.1:\d+\) is x86_64.*nothing was "
                                         r"uploaded"):
        board.load(art)
    assert uploads == []
    del sess.upload, sess, real_upload  # no reference cycle may keep the session (and the server) busy
    board.close()


def test_remote_runner_is_a_runner(x86_bundle, plain_server, make_images):
    """The board's runner has the local runner's call (NCHW batch -> logits): selftest and validate take either."""
    from edgeres.backends import get_backend
    from edgeres.bundle import load_bundle

    art = load_bundle(x86_bundle).artifact()
    backend = get_backend("tvm")
    x = make_images(3, 32, seed=5)
    with backend.open_device(resolve_device(plain_server.address)) as board:
        remote = board.load(art)(x)
    np.testing.assert_array_equal(remote, backend.load(art)(x))


def test_unreachable_board_and_bad_options_are_one_line(x86_bundle, numbered_data, capsys):
    from edgeres.backends import get_backend

    port = free_port()
    with pytest.raises(DeviceError, match=rf"cannot reach the TVM RPC server at 127\.0\.0\.1:{port}"):
        with get_backend("tvm").open_device(resolve_device(f"127.0.0.1:{port}")) as board:
            board.describe()
    with pytest.raises(DeviceError, match="cannot reach the TVM RPC tracker"):
        with get_backend("tvm").open_device(resolve_device(tracker=f"127.0.0.1:{port}", key="rpi5")) as board:
            board.describe()
    code, _, err = run_cli(["validate", x86_bundle, "--data", numbered_data, "--tracker", "127.0.0.1:1"], capsys)
    assert code == 2 and "--tracker needs --key" in err
    code, _, err = run_cli(["bench", x86_bundle, "--device", "no-such-board"], capsys)
    assert code == 2 and "unknown device 'no-such-board'" in err and "devices.toml" in err


def test_selftest_on_the_board(x86_bundle, plain_server, tmp_path, capsys):
    """`edgeres selftest --device`: the golden inputs run on the board, checked against the golden outputs."""
    sessions = plain_server.count("load_module")
    code, out, err = run_cli(["selftest", x86_bundle, "--device", plain_server.address, "--json",
                            tmp_path / "s.json"], capsys)
    assert code == 0, err
    assert "PASS selftest" in out and f"on {plain_server.address}" in out
    rec = json.loads((tmp_path / "s.json").read_text())
    assert rec["passed"] and rec["runner"].endswith(f"on {plain_server.address}")
    assert plain_server.count("load_module") > sessions  # the artifact really ran there
