"""The host side of running TVM artifacts on a board, over TVM's own RPC (server, tracker).

:class:`TvmDevice` is the TVM backend's :class:`~edgeres.backends.base.DeviceSession`: it
connects with ``tvm.rpc.connect`` (one server) or ``tvm.rpc.connect_tracker(...).request(key)``
(any free board registered under ``key``), asks the board what it is, refuses an artifact the
board cannot run before uploading it, uploads it (``session.upload``), loads it into a Relax VM
on the board and runs it there. Works with a plain ``python -m tvm.exec.rpc_server``; with
``edgeres serve-device`` (:mod:`edgeres.backends.tvm.device_server`) it also gets the board's
description, ONNX Runtime on the board and per-operator profiles.

A connection that drops mid-run is re-opened (``retries`` times; through a tracker, possibly to
another board of the same key) and the interrupted batch is run again; after that the run
stops with a :class:`~edgeres.errors.DeviceError` saying how far it got.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeres.backends.base import Artifact, DeviceSession, run_in_chunks
from edgeres.backends.tvm import cross as tvm_cross
from edgeres.backends.tvm import device_server as ds
from edgeres.backends.tvm.importer import first_line
from edgeres.errors import DeviceError, EdgeresError, InputError, UsageError

CONNECT_TIMEOUT_S = 10.0
HANDSHAKE_TIMEOUT_S = 30.0
REMOTE_SO = "edgeres-model.so"
SERVER_HINT = ("start it on the board (python -m tvm.exec.rpc_server --host ADDR --port PORT, or edgeres "
               "serve-device), or check the address and the SSH tunnel")


def _probe(host: str, port: int, what: str, hint: str) -> None:
    """Fail in seconds with a clear message when nothing listens (TVM's own connect retries for a minute)."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise DeviceError(f"cannot reach {what} at {host}:{port} ({e.strerror or e}); {hint}") from e


def _bounded(fn: Any, seconds: float, what: str) -> Any:
    """``fn()`` in a daemon thread, given up after ``seconds``: TVM's RPC handshake has no timeout, and a
    TVM Python server whose session process crashed keeps its port open but never answers again."""
    import threading

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True, name="edgeres-rpc-connect")
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise DeviceError(f"{what} accepted the connection but did not answer in {seconds:.0f} s: it serves one "
                          "client at a time and may be busy with another, or hung (a TVM RPC server whose session "
                          "process crashed stops answering); try again, or restart it")
    if "error" in box:
        raise box["error"]
    return box["value"]


def tracker_keys(summary: dict[str, Any]) -> dict[str, int]:
    """Servers registered per key in a tracker summary (``{"rpi5": 2}``)."""
    keys: dict[str, int] = {}
    for item in summary.get("server_info", []):
        key = str(item.get("key", "")).split(":", 1)[-1]
        keys[key] = keys.get(key, 0) + 1
    return keys


def open_rpc_session(spec: Any) -> Any:
    """An RPC session to the board ``spec`` (a DeviceSpec) names; DeviceError when it cannot be had."""
    from tvm import rpc

    if spec.via_tracker:
        _probe(spec.tracker_host, spec.tracker_port, "the TVM RPC tracker",
               "start it: python -m tvm.exec.rpc_tracker --host ADDR --port PORT")
        try:
            tracker = rpc.connect_tracker(spec.tracker_host, spec.tracker_port)
            keys = tracker_keys(tracker.summary())
        except Exception as e:  # noqa: BLE001 - TVM raises RuntimeError/OSError variants
            raise DeviceError(f"{spec.tracker_host}:{spec.tracker_port} is not a TVM RPC tracker ({first_line(e)})") from e
        if not keys.get(spec.key):
            tracker.close()
            raise DeviceError(f"no board is registered under key {spec.key!r} at {spec.address} "
                              f"(registered: {keys or 'none'}); on the board run: python -m tvm.exec.rpc_server "
                              f"--tracker {spec.tracker_host}:{spec.tracker_port} --key {spec.key}")
        try:
            return tracker.request(spec.key, priority=1, session_timeout=spec.session_timeout, max_retry=2)
        except DeviceError:
            raise
        except Exception as e:  # noqa: BLE001
            raise DeviceError(f"the tracker gave no session for key {spec.key!r} ({first_line(e)})") from e
        finally:
            tracker.close()
    _probe(spec.host, spec.port, "the TVM RPC server" + ("" if spec.name == spec.address else f" {spec.name}"),
           SERVER_HINT)
    try:
        return _bounded(lambda: rpc.connect(spec.host, spec.port, session_timeout=spec.session_timeout),
                        HANDSHAKE_TIMEOUT_S, spec.label)
    except DeviceError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DeviceError(f"{spec.label} accepted the connection but no TVM RPC session started "
                          f"({first_line(e)}); is it a TVM RPC server (tracker addresses go to --tracker)?") from e


def _call(sess: Any, name: str, *args: Any) -> Any:
    """A remote global function's result, or None when the server does not have it."""
    try:
        fn = sess.get_function(name)
    except Exception:  # noqa: BLE001 - "Module has no function"
        return None
    return fn(*args)


def plain_description(sess: Any) -> dict[str, Any]:
    """What a plain TVM RPC server can say about its machine (the full TVM wheel knows its LLVM triple)."""
    info: dict[str, Any] = {"server": "tvm", "arch": None, "cpu": None, "cores": None, "memory_bytes": None,
                            "emulated": None}
    try:
        triple = _call(sess, "target.llvm_get_system_triple")
        if triple:
            info["arch"] = tvm_cross.normalize_arch(str(triple).split("-")[0])
            info["cpu"] = str(_call(sess, "target.llvm_get_system_cpu") or "") or None
        info["tvm_threads"] = _call(sess, "runtime.NumThreads")
        info["memory_bytes"] = _call(sess, "runtime.GetDeviceAttr", 1, 0, 14)  # kTotalGlobalMemory
    except EdgeresError:
        pass  # an architecture LLVM names oddly: unknown
    except Exception as e:  # noqa: BLE001
        raise DeviceError(f"the server stopped answering while describing itself ({first_line(e)})") from e
    return info


class TvmDevice(DeviceSession):
    """One board (or a tracker's pool of boards under one key) for TVM artifacts."""

    def __init__(self, spec: Any, *, retries: int = 2) -> None:
        self.spec, self.retries = spec, int(retries)
        self._sess: Any = None
        self._info: dict[str, Any] | None = None
        self._libs: dict[str, Any] = {}
        self._features: list[str] = []
        self.reconnects = 0

    # -- connection --------------------------------------------------------------------------
    @property
    def session(self) -> Any:
        if self._sess is None:
            self._sess = open_rpc_session(self.spec)
            self._libs = {}
        return self._sess

    def reconnect(self) -> Any:
        self.close()
        self._info = None
        self.reconnects += 1
        return self.session

    def close(self) -> None:
        self._libs = {}
        self._sess = None  # TVM closes the socket when the session object goes

    def describe(self) -> dict[str, Any]:
        if self._info is None:
            sess = self.session
            try:
                text = _call(sess, ds.DEVICE_INFO_FN)
            except Exception as e:  # noqa: BLE001
                raise DeviceError(f"{self.spec.label} stopped answering ({first_line(e)})") from e
            info = json.loads(text) if text else plain_description(sess)
            self._features = list(info.pop("features", None) or [])  # for check(); long, so not in reports
            info["device"] = self.spec.label
            self._info = info
        return self._info

    # -- artifacts -----------------------------------------------------------------------------
    def check(self, artifact: Artifact) -> None:
        """UsageError, before anything is uploaded, when the board cannot run ``artifact``."""
        from edgeres.backends.tvm import options as tt

        info = self.describe()
        arch = artifact.info.get("arch") or tvm_cross.elf_arch(artifact.path)
        board = info.get("arch")
        fix = f"compile for the board's target (edgeres compile MODEL --target {self.spec.target or 'rpi5'} ...)"
        if arch and board and arch != board:
            raise UsageError(f"{artifact.path} is built for {arch} but {self.spec.label} is {board}; {fix} "
                             "(nothing was uploaded)")
        if not info.get("emulated"):
            missing = tt.missing_cpu_features(artifact.info.get("tvm_target") or {}, self._features)
            if missing:
                raise UsageError(f"{artifact.path} uses {', '.join(missing)}, which the CPU of {self.spec.label} "
                                 f"({info.get('cpu')}) lacks; {fix} (nothing was uploaded)")

    def board_artifact(self, artifact: Artifact) -> Artifact:
        """``artifact``, or for a portable one the variant the board's CPU runs (its flags as the board reports
        them; the most portable variant when it does not, or under emulation)."""
        if not artifact.info.get("variants"):
            return artifact
        from edgeres.backends.tvm.runner import pick_variant

        info = self.describe()
        flags = None if info.get("emulated") or not self._features else self._features
        return pick_variant(artifact, flags)[0]

    def library(self, artifact: Artifact) -> tuple[Any, Any]:
        """(remote module, remote device) for ``artifact`` (a portable one: the board's variant), uploaded once
        per session."""
        artifact = self.board_artifact(artifact)
        key = str(artifact.path)
        if key not in self._libs:
            self.check(artifact)
            sess = self.session
            try:
                sess.upload(str(artifact.path), REMOTE_SO)
                lib = sess.load_module(REMOTE_SO)
            except Exception as e:  # noqa: BLE001
                raise DeviceError(f"{self.spec.label} could not load {artifact.path.name} ({first_line(e)}); "
                                  f"was it compiled with this TVM for this board?") from e
            threads = artifact.info.get("threads") or self.describe().get("cores")
            if threads:
                _call(sess, "runtime.config_threadpool", 1, int(threads))
            self._libs = {key: (lib, sess.cpu())}
        return self._libs[key]

    def vm(self, artifact: Artifact) -> tuple[Any, Any]:
        from tvm.runtime.vm import VirtualMachine

        lib, dev = self.library(artifact)
        return VirtualMachine(lib, dev), dev

    def load(self, artifact: Artifact) -> "TvmRemoteRunner":
        runner = TvmRemoteRunner(self, artifact)
        runner.connect()
        return runner

    def latency(self, artifact: Artifact, *, repeats: int = 50, max_seconds: float = 60.0) -> list[float]:
        """Milliseconds per run, timed on the board by TVM's ``time_evaluator`` (samples of one run each)."""
        vm, dev = self.vm(artifact)
        import tvm

        x = np.random.default_rng(0).standard_normal(tuple(artifact.input_shape)).astype(np.float32)
        times: list[float] = []
        try:
            vm.set_input("main", tvm.runtime.tensor(x, dev))
            start = time.perf_counter()
            while len(times) < repeats:
                n = min(10, repeats - len(times))
                res = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=n)("main")
                times += [1000.0 * float(v) for v in res.results]
                if time.perf_counter() - start > max_seconds and len(times) >= 3:
                    break
        except Exception as e:  # noqa: BLE001
            raise DeviceError(f"timing on {self.spec.label} failed after {len(times)} runs ({first_line(e)})") from e
        return times

    def profile(self, artifact: Artifact, *, repeats: int = 10) -> dict[str, Any]:
        self.library(artifact)  # checked and uploaded
        sess = self.session
        shape = ",".join(str(int(d)) for d in artifact.input_shape)
        try:
            text = _call(sess, ds.PROFILE_FN, REMOTE_SO, shape, int(repeats), str(artifact.info.get("layout") or "NHWC"),
                         int(artifact.info.get("threads") or 0))
        except Exception as e:  # noqa: BLE001
            raise DeviceError(f"profiling on {self.spec.label} failed ({first_line(e)})") from e
        if text is None:
            raise UsageError(f"{self.spec.label} is a plain TVM RPC server; per-operator profiles run on the board, "
                             "so start it with edgeres serve-device (README 'Measure on your board')")
        return json.loads(text)

    def onnx_latency(self, onnx_path: Path, input_shape: tuple[int, ...], *, repeats: int = 50) -> list[float] | str:
        sess = self.session
        if self.describe().get("server") != ds.SERVER_KIND:
            return "not measured: a plain TVM RPC server cannot run ONNX Runtime (start edgeres serve-device)"
        name = "edgeres-" + Path(onnx_path).name
        try:
            sess.upload(str(onnx_path), name)
            res = json.loads(_call(sess, ds.ORT_FN, name, ",".join(map(str, input_shape)), int(repeats), 0))
        except Exception as e:  # noqa: BLE001
            raise DeviceError(f"ONNX Runtime on {self.spec.label} failed ({first_line(e)})") from e
        return res.get("error") or res["times_ms"]


class TvmRemoteRunner:
    """A Runner (NCHW float32 batch -> logits) computed on the board; same call as the local runner.

    ``images_done`` counts the images classified so far (what a DeviceError reports).
    """

    def __init__(self, device: TvmDevice, artifact: Artifact) -> None:
        self.device, self.artifact = device, artifact
        self.input_shape = tuple(artifact.input_shape)
        out = artifact.info.get("output_shape") or []
        self.num_classes: int | None = int(out[-1]) if out else None
        self.images_done = 0
        self._vm: Any = None
        self._dev: Any = None

    def connect(self) -> None:
        self._vm, self._dev = self.device.vm(self.artifact)

    def _run(self, x: np.ndarray) -> np.ndarray:
        import tvm

        last: Exception | None = None
        for attempt in range(self.device.retries + 1):
            try:
                if self._vm is None:
                    time.sleep(min(2.0, 0.5 * attempt))
                    self.device.reconnect()
                    self.connect()
                out = self._vm["main"](tvm.runtime.tensor(x, self._dev))
                if not hasattr(out, "numpy"):
                    out = out[0]
                logits = np.asarray(out.numpy(), dtype=np.float32)
                self.images_done += x.shape[0]
                return logits
            except UsageError:  # e.g. the tracker handed out a board of another architecture
                raise
            except Exception as e:  # noqa: BLE001 - a dropped connection surfaces as TVMError/RPCError/DeviceError
                last, self._vm = e, None
        why = str(last) if isinstance(last, EdgeresError) else first_line(last)
        raise DeviceError(f"lost {self.device.spec.label} after {self.images_done} images had been run on it "
                          f"({self.device.retries} reconnects failed; last error: {why}); the run was stopped "
                          "and nothing was written")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape[1:]:
            raise InputError(f"input batch has shape {tuple(x.shape)} but {self.artifact.path.name} expects "
                             f"(N, {', '.join(map(str, self.input_shape[1:]))})")
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes or 0), dtype=np.float32)
        return run_in_chunks(self._run, x, self.input_shape[0])
