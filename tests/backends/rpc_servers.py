"""Real TVM RPC servers and trackers for the tests, started as processes a user would start.

Every one binds 127.0.0.1 on a free port (the port a process reports is parsed from its
output), waits a bounded time to come up, and is stopped with its whole process group (TVM's
server runs its listener in a worker process, and each session in a forked child).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[2]
_PORT = re.compile(r"(?:bind to|listening on) \S*?:(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A server or tracker process; ``port`` once it reported listening (``wait=False``: the first
    use of ``port``/``address`` waits, so that several can start at once)."""

    def __init__(self, cmd: Sequence[str], *, env: dict | None = None, timeout: float = 120.0,
                 wait: bool = True) -> None:
        self.cmd = [str(c) for c in cmd]
        self.lines: list[str] = []
        self.timeout = timeout
        self._port: int | None = None
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, cwd=ROOT, env={**os.environ, **(env or {})})
        threading.Thread(target=self._read, daemon=True).start()
        if wait:
            self._port = self._wait_port(timeout)

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = self._wait_port(self.timeout)
        return self._port

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _wait_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = _PORT.search(line)
                if m:
                    return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{' '.join(self.cmd)} did not start listening in {timeout:.0f} s:\n" + "\n".join(self.lines))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # the group may outlive its leader (the listener's worker): end it too
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def edgeres_server(*, python: str | Path = sys.executable, env: dict | None = None, tracker: str | None = None,
                   key: str | None = None, timeout: float = 120.0, module: bool = False, wait: bool = True) -> Proc:
    """``edgeres serve-device`` (or ``python -m edgeres.backends.tvm.device_server`` with ``module``)."""
    port = free_port()
    head = ["-m", "edgeres.backends.tvm.device_server"] if module else ["-m", "edgeres", "serve-device"]
    cmd = [python, *head, "--host", "127.0.0.1", "--port", port, "--port-end", port + 50]
    if tracker:
        cmd += ["--tracker", tracker, "--key", key]
    return Proc(cmd, env=env, timeout=timeout, wait=wait)


def tvm_server(*, tracker: str | None = None, key: str | None = None, timeout: float = 120.0,
               wait: bool = True) -> Proc:
    """TVM's own ``python -m tvm.exec.rpc_server`` (what the README's one-liner starts)."""
    port = free_port()
    cmd = [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", port, "--port-end", port + 50]
    if tracker:
        cmd += ["--tracker", tracker, "--key", key]
    return Proc(cmd, timeout=timeout, wait=wait)


def tvm_tracker(timeout: float = 60.0) -> Proc:
    """TVM's own ``python -m tvm.exec.rpc_tracker``."""
    port = free_port()
    return Proc([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", port,
                 "--port-end", port + 50], timeout=timeout)


def wait_for_key(tracker: Proc, key: str, n: int, timeout: float = 60.0) -> None:
    """Wait until ``n`` servers are registered under ``key`` at ``tracker``."""
    from tvm import rpc

    from edgeres.backends.tvm.rpc import tracker_keys

    deadline = time.monotonic() + timeout
    have = 0
    while time.monotonic() < deadline:
        t = rpc.connect_tracker("127.0.0.1", tracker.port)
        have = tracker_keys(t.summary()).get(key, 0)
        t.close()
        if have >= n:
            return
        time.sleep(0.5)
    raise RuntimeError(f"only {have} of {n} servers registered under {key!r} in {timeout:.0f} s")


def run_cli(args: list, capsys) -> tuple[int, str, str]:  # noqa: ANN001 - pytest's capsys
    """``edgeres ARGS`` in this process (TVM imported once): (exit code, stdout, stderr)."""
    from edgeres.cli import main

    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
