"""Boards reachable over the network, as data: ``--device lab-pi5`` -> a :class:`DeviceSpec`.

A device is either one RPC server (``host`` + ``port``) or a pool of boards behind a tracker
(``tracker = "HOST:PORT"`` + ``key``; several servers under one key form a farm). Devices
files are TOML, one table per device::

    [lab-pi5]
    host = "192.168.1.50"       # or "localhost" through an SSH tunnel (README "Measure on your board")
    port = 9090
    target = "rpi5"             # the edgeres target its bundles are compiled for (optional)

    [pi-farm]
    tracker = "10.0.0.2:9190"
    key = "rpi5"
    target = "rpi5"
    session_timeout = 600       # seconds the server grants one session (0: no limit)

Files searched, first match wins: ``--devices FILE``, then ``$EDGERES_DEVICES`` (one path or
several separated by ``os.pathsep``), then ``./devices.toml``. ``--device HOST:PORT`` needs no file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from edgeres.errors import InputError, UsageError

DEVICES_ENV = "EDGERES_DEVICES"
DEVICES_FILE = "devices.toml"
_KEYS = {"host", "port", "tracker", "key", "target", "session_timeout", "description"}


@dataclass(frozen=True)
class DeviceSpec:
    """Where a board is: one server (``host``/``port``) or a tracker and a key."""

    name: str
    host: str | None = None
    port: int | None = None
    tracker_host: str | None = None
    tracker_port: int | None = None
    key: str | None = None
    target: str | None = None  # the edgeres target name the board runs
    session_timeout: float = 0.0
    source: str = "command line"

    @property
    def via_tracker(self) -> bool:
        return self.tracker_host is not None

    @property
    def address(self) -> str:
        if self.via_tracker:
            return f"tracker {_join(self.tracker_host, self.tracker_port)} key {self.key!r}"
        return _join(self.host, self.port)

    @property
    def label(self) -> str:
        """How messages name it: ``lab-pi5 (192.168.1.50:9090)`` or just the address."""
        return self.address if self.name == self.address else f"{self.name} ({self.address})"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "address": self.address}
        if self.target:
            d["target"] = self.target
        return d


def _join(host: str | None, port: int | None) -> str:
    return f"[{host}]:{port}" if host and ":" in host else f"{host}:{port}"


def parse_address(text: str, what: str = "--device") -> tuple[str, int]:
    """``"HOST:PORT"`` (or ``"[IPv6]:PORT"``) -> ``(host, port)``; UsageError otherwise."""
    s = str(text).strip()
    host, sep, port = s.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{what} {text!r} is not HOST:PORT (e.g. 192.168.1.50:9090)")
    return host, int(port)


def looks_like_address(text: str) -> bool:
    head, sep, port = str(text).rpartition(":")
    return bool(sep and head and port.isdigit())


def devices_files(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The devices files to search, in order (existing or not)."""
    files = [Path(p) for p in extra]
    env = os.environ.get(DEVICES_ENV, "")
    files += [Path(p) for p in env.split(os.pathsep) if p]
    files.append(Path.cwd() / DEVICES_FILE)
    return files


def load_devices(path: str | os.PathLike) -> dict[str, DeviceSpec]:
    """Every device in one devices file (InputError for a file that is not valid TOML)."""
    from edgeres.compat import tomllib

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise InputError(f"cannot read devices file {p} ({e.strerror or e})") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"devices file {p} is not valid TOML ({e}); see README 'Measure on your board'") from e
    out = {}
    for name, rec in data.items():
        if not isinstance(rec, Mapping):
            raise InputError(f"{p}: {name!r} must be a table such as [{name}] host = \"...\" port = 9090")
        out[name] = _spec(name, rec, str(p))
    return out


def _spec(name: str, rec: Mapping[str, Any], source: str) -> DeviceSpec:
    where = f"device {name!r} in {source}"
    unknown = sorted(set(rec) - _KEYS)
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown}; allowed: {sorted(_KEYS)}")
    timeout = rec.get("session_timeout", 0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise InputError(f"{where}: session_timeout must be a number of seconds >= 0, got {timeout!r}")
    target = str(rec["target"]) if rec.get("target") else None
    if rec.get("tracker"):
        if rec.get("host") or rec.get("port"):
            raise InputError(f"{where}: give either host + port or tracker + key, not both")
        if not rec.get("key"):
            raise InputError(f"{where}: a tracker device needs a key (the --key its servers registered with)")
        th, tp = parse_address(str(rec["tracker"]), f"{where}: tracker")
        return DeviceSpec(name, tracker_host=th, tracker_port=tp, key=str(rec["key"]), target=target,
                          session_timeout=float(timeout), source=source)
    port = rec.get("port")
    if not rec.get("host") or isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InputError(f"{where}: needs host = \"...\" and port = 1..65535 (or tracker + key)")
    return DeviceSpec(name, host=str(rec["host"]), port=port, target=target, session_timeout=float(timeout),
                      source=source)


def resolve_device(device: str | None = None, *, tracker: str | None = None, key: str | None = None,
                   devices: Iterable[str | os.PathLike] = ()) -> DeviceSpec | None:
    """The board the options name, or None when they name none.

    ``device`` is ``HOST:PORT`` or a name from a devices file; ``tracker`` (``HOST:PORT``)
    with ``key`` asks a tracker for any free board registered under ``key``.
    """
    if device and tracker:
        raise UsageError("give either --device or --tracker/--key, not both")
    if tracker:
        if not key:
            raise UsageError("--tracker needs --key: the key the boards' servers registered with (e.g. rpi5)")
        th, tp = parse_address(tracker, "--tracker")
        return DeviceSpec(f"{key}@{_join(th, tp)}", tracker_host=th, tracker_port=tp, key=key)
    if key:
        raise UsageError("--key needs --tracker HOST:PORT")
    if not device:
        return None
    files = devices_files(devices)
    for f in files:
        if f.is_file():
            found = load_devices(f).get(device)
            if found is not None:
                return found
    if looks_like_address(device):
        host, port = parse_address(device)
        return DeviceSpec(_join(host, port), host=host, port=port)
    searched = ", ".join(str(f) for f in files)
    raise UsageError(f"unknown device {device!r}: not HOST:PORT and not in a devices file (searched {searched}); "
                     f"add [{device}] with host/port or tracker/key to ./{DEVICES_FILE}, or pass --devices FILE")
