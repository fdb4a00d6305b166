"""The board side: TVM's own RPC server plus three functions edgeres asks it (``edgeres serve-device``).

``serve`` starts ``tvm.rpc.Server`` — the server ``python -m tvm.exec.rpc_server`` starts, same
protocol, same tracker registration — with a ``server_init_callback`` that registers:

``edgeres.device_info``         JSON: arch, CPU, cores, memory, OS, whether it is emulated (qemu)
``edgeres.profile``             JSON: per-operator profile of an uploaded library
                                (:mod:`edgeres.backends.tvm.profile`), run on the board
``edgeres.onnxruntime_latency`` JSON: ONNX Runtime latency of an uploaded ONNX file, when the
                                board has ``onnxruntime``

A plain TVM server runs validate and bench too; these add the board's description, ONNX
Runtime on the board and ``edgeres profile --device``. TVM RPC is unauthenticated: whoever
reaches the port can run code on the board. The server binds only to the host it is given.

Runs with ``python -m edgeres.backends.tvm.device_server`` as well (no CLI dependencies).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

DEVICE_INFO_FN = "edgeres.device_info"
PROFILE_FN = "edgeres.profile"
ORT_FN = "edgeres.onnxruntime_latency"
SERVER_KIND = "edgeres serve-device"
# ARM's CPU part numbers (/proc/cpuinfo "CPU part", implementer 0x41) for the cores boards use.
_ARM_PARTS = {
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57", 0xD08: "Cortex-A72",
    0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76", 0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77",
    0xD40: "Neoverse-V1", 0xD41: "Cortex-A78", 0xD42: "Cortex-A78AE", 0xD44: "Cortex-X1", 0xD46: "Cortex-A510",
    0xD47: "Cortex-A710", 0xD49: "Neoverse-N2", 0xD4B: "Cortex-A78C",
}
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _cpuinfo_fields(text: str) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields.setdefault(k.strip().lower(), []).append(v.strip())
    return fields


def _cpu_name(fields: dict[str, list[str]]) -> str:
    if fields.get("model name"):
        return fields["model name"][0]
    parts = []
    for impl, part in zip(fields.get("cpu implementer", []), fields.get("cpu part", [])):
        try:
            name = _ARM_PARTS.get(int(part, 16), part) if int(impl, 16) == 0x41 else f"{impl}/{part}"
        except ValueError:
            name = part
        parts.append(name)
    counts = {p: parts.count(p) for p in dict.fromkeys(parts)}
    return " + ".join(f"{n}x {p}" for p, n in counts.items()) or platform.processor() or "unknown CPU"


def describe_machine() -> dict[str, Any]:
    """This machine as a board description (read from /proc and platform; Linux first)."""
    machine = platform.machine()
    arch = _ARCH.get(machine.lower(), machine.lower())
    fields = _cpuinfo_fields(_read("/proc/cpuinfo"))
    features = (fields.get("features") or fields.get("flags") or [""])[0].split()
    # qemu-user passes the host's /proc/cpuinfo through: an x86 one under an aarch64 Python.
    x86_info = "vendor_id" in fields or "flags" in fields
    arm_info = "cpu implementer" in fields or "features" in fields
    emulated = bool((arch == "aarch64" and x86_info and not arm_info) or (arch == "x86_64" and arm_info))
    mem = next((int(v.split()[0]) * 1024 for v in _cpuinfo_fields(_read("/proc/meminfo")).get("memtotal", [])
                if v.split() and v.split()[0].isdigit()), None)
    info: dict[str, Any] = {
        "server": SERVER_KIND, "arch": arch, "machine": machine, "cpu": _cpu_name(fields),
        "cores": os.cpu_count(), "memory_bytes": mem, "features": features, "emulated": emulated,
        "model": _read("/proc/device-tree/model").strip("\x00\n ") or None,
        "system": f"{platform.system()} {platform.release()}", "hostname": platform.node(),
        "python": platform.python_version(),
    }
    try:
        import tvm

        info["tvm"] = str(tvm.__version__)
    except ImportError:
        info["tvm"] = None
    try:
        from importlib import metadata

        info["onnxruntime"] = metadata.version("onnxruntime")
    except Exception:  # noqa: BLE001 - not installed
        info["onnxruntime"] = None
    return info


def _workpath(name: str) -> str:
    import tvm

    return str(tvm.get_global_func("tvm.rpc.server.workpath")(name))


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in str(text).split(","))


def _profile(name: str, shape: str, repeats: int, layout: str, threads: int) -> str:
    from edgeres.backends.tvm.profile import profile_library

    res = profile_library(_workpath(name), _shape(shape), repeats=int(repeats), layout=str(layout),
                          threads=int(threads) or os.cpu_count())
    return json.dumps(res)


def _onnxruntime_latency(name: str, shape: str, repeats: int, threads: int) -> str:
    import time

    import numpy as np

    try:
        import onnxruntime as ort
    except ImportError:
        return json.dumps({"error": "onnxruntime is not installed on the board (pip install onnxruntime)"})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads) or (os.cpu_count() or 1)
    sess = ort.InferenceSession(_workpath(name), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal(_shape(shape)).astype(np.float32)}
    for _ in range(2):
        sess.run(None, feed)
    times = []
    for _ in range(int(repeats)):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(1000.0 * (time.perf_counter() - t))
    return json.dumps({"times_ms": times, "version": ort.__version__})


def register_functions() -> None:
    """Register edgeres' board functions in this process (the RPC server's ``server_init_callback``)."""
    import tvm_ffi

    tvm_ffi.register_global_func(DEVICE_INFO_FN, _device_info, override=True)
    tvm_ffi.register_global_func(PROFILE_FN, _profile, override=True)
    tvm_ffi.register_global_func(ORT_FN, _onnxruntime_latency, override=True)


def _device_info() -> str:
    return json.dumps(describe_machine())


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def serve(host: str = "127.0.0.1", port: int = 9090, *, port_end: int | None = None, tracker: str | None = None,
          key: str = "", custom_addr: str | None = None, silent: bool = False, log: Any = print) -> None:
    """Run TVM's RPC server with edgeres' functions until interrupted. Binds to ``host`` only."""
    import tvm.rpc

    # By its importable name, so that the server's worker process can unpickle the callback
    # (under ``python -m`` this module is ``__main__``).
    from edgeres.backends.tvm.device_server import register_functions as init

    tracker_addr = None
    if tracker:
        th, _, tp = tracker.rpartition(":")
        tracker_addr = (th, int(tp))
    info = describe_machine()
    log(f"board: {summary_line(info)}")
    if not is_loopback(host):
        log(f"warning: TVM RPC is unauthenticated: anyone who can reach {host}:{port} can run code on this "
            "machine; use a trusted network, or bind 127.0.0.1 and reach it through an SSH tunnel (ssh -L)")
    try:
        server = tvm.rpc.Server(host, port, port_end or port + 1, key=key, tracker_addr=tracker_addr,
                                custom_addr=custom_addr, silent=silent, server_init_callback=init)
    except (ValueError, OSError, RuntimeError) as e:
        from edgeres.errors import UsageError

        raise UsageError(f"cannot listen on {host}:{port} ({str(e).strip().splitlines()[-1]}); "
                         "pick another --port (or a --port-end to search up to), or stop what uses it") from e
    where = f"{host}:{server.port}"
    log(f"listening on {where}" + (f", registered with tracker {tracker} under key {key!r}" if tracker else ""))
    sys.stdout.flush()
    try:
        server.proc.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()


def summary_line(info: dict[str, Any]) -> str:
    """``Raspberry Pi 5 Model B · 4x Cortex-A76 · 4 cores · 7.9 GiB · aarch64`` (``EMULATED`` under qemu)."""
    parts = [p for p in (info.get("model"), info.get("cpu")) if p]
    if info.get("cores"):
        parts.append(f"{info['cores']} cores")
    if info.get("memory_bytes"):
        parts.append(f"{info['memory_bytes'] / 2**30:.1f} GiB")
    parts.append(str(info.get("arch", "?")))
    line = " · ".join(parts)
    return f"EMULATED {info.get('arch')} (qemu on {info.get('cpu')}) · " + line if info.get("emulated") else line


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m edgeres.backends.tvm.device_server", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--port-end", type=int, default=None, help="search ports up to this one (default: --port only)")
    p.add_argument("--tracker", default=None, help="register with this tracker, HOST:PORT")
    p.add_argument("--key", default="", help="the key to register under (e.g. rpi5)")
    p.add_argument("--custom-addr", default=None, help="the address the tracker tells clients")
    a = p.parse_args(argv)
    if a.tracker and not a.key:
        p.error("--tracker needs --key")
    from edgeres.devices import parse_address
    from edgeres.errors import EdgeresError

    try:
        if a.tracker:
            parse_address(a.tracker, "--tracker")
        serve(a.host, a.port, port_end=a.port_end, tracker=a.tracker, key=a.key, custom_addr=a.custom_addr,
              log=lambda s: print(s, flush=True))
    except EdgeresError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
