"""Devices as data (edgeres.devices): devices.toml files, --device / --tracker / --key resolution."""

from __future__ import annotations

import pytest

from edgeres.devices import DEVICES_ENV, DeviceSpec, load_devices, parse_address, resolve_device
from edgeres.errors import InputError, UsageError

LAB = """
[lab-pi5]
host = "192.168.1.50"
port = 9090
target = "rpi5"

[pi-farm]
tracker = "10.0.0.2:9190"
key = "rpi5"
target = "rpi5"
session_timeout = 600
"""


def test_devices_file_both_kinds(tmp_path):
    (tmp_path / "devices.toml").write_text(LAB)
    devs = load_devices(tmp_path / "devices.toml")
    pi = devs["lab-pi5"]
    assert (pi.host, pi.port, pi.target, pi.via_tracker) == ("192.168.1.50", 9090, "rpi5", False)
    assert pi.label == "lab-pi5 (192.168.1.50:9090)"
    farm = devs["pi-farm"]
    assert (farm.tracker_host, farm.tracker_port, farm.key, farm.session_timeout) == ("10.0.0.2", 9190, "rpi5", 600.0)
    assert farm.label == "pi-farm (tracker 10.0.0.2:9190 key 'rpi5')"


def test_search_order_option_env_cwd(tmp_path, monkeypatch):
    cwd, env, opt = tmp_path / "cwd", tmp_path / "env.toml", tmp_path / "opt.toml"
    cwd.mkdir()
    (cwd / "devices.toml").write_text('[b]\nhost = "cwd"\nport = 1\n')
    env.write_text('[b]\nhost = "env"\nport = 2\n[c]\nhost = "env"\nport = 3\n')
    opt.write_text('[b]\nhost = "opt"\nport = 4\n')
    monkeypatch.chdir(cwd)
    assert resolve_device("b").host == "cwd"
    monkeypatch.setenv(DEVICES_ENV, str(env))
    assert resolve_device("b").host == "env" and resolve_device("c").port == 3
    assert resolve_device("b", devices=[opt]).host == "opt"


def test_address_tracker_and_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DEVICES_ENV, raising=False)
    assert resolve_device(None) is None
    d = resolve_device("127.0.0.1:9090")
    assert (d.host, d.port, d.label) == ("127.0.0.1", 9090, "127.0.0.1:9090")
    assert parse_address("[::1]:9090") == ("::1", 9090)
    t = resolve_device(tracker="h:9190", key="rpi5")
    assert isinstance(t, DeviceSpec) and t.via_tracker and t.key == "rpi5"
    with pytest.raises(UsageError, match="--tracker needs --key"):
        resolve_device(tracker="h:9190")
    with pytest.raises(UsageError, match="--key needs --tracker"):
        resolve_device(key="rpi5")
    with pytest.raises(UsageError, match="either --device or --tracker"):
        resolve_device("h:1", tracker="h:9190", key="k")
    with pytest.raises(UsageError, match="unknown device 'lab-pi5'.*devices.toml"):
        resolve_device("lab-pi5")
    with pytest.raises(UsageError, match="is not HOST:PORT"):
        resolve_device(tracker="nohost", key="k")


@pytest.mark.parametrize("text, message", [
    ('[x]\nhost = "h"\n', "needs host"),
    ('[x]\nhost = "h"\nport = 70000\n', "needs host"),
    ('[x]\ntracker = "t:1"\n', "needs a key"),
    ('[x]\ntracker = "t:1"\nkey = "k"\nhost = "h"\n', "not both"),
    ('[x]\nhost = "h"\nport = 1\ncolour = "red"\n', "unknown keys"),
    ('[x]\nhost = "h"\nport = 1\nsession_timeout = -1\n', "session_timeout"),
    ("[x\nhost=", "not valid TOML"),
    ('x = 1\n', "must be a table"),
])
def test_bad_devices_file(tmp_path, text, message):
    p = tmp_path / "devices.toml"
    p.write_text(text)
    with pytest.raises(InputError, match=message):
        load_devices(p)


def _cli(args: list, capsys) -> tuple[int, str]:
    """``edgeres ARGS`` in this process: (exit code, stderr)."""
    from edgeres.cli import main

    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command", ["bench", "validate", "profile"])
def test_cli_device_errors_are_one_line_with_a_fix(command, tmp_path, monkeypatch, capsys):
    """A bad devices file and an unknown device name end the command in one line, exit 2, before any
    bundle is read (the bundle here does not exist)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DEVICES_ENV, raising=False)
    extra = ["--data", tmp_path] if command == "validate" else []
    bad = tmp_path / "bad.toml"
    bad.write_text('[lab-pi5]\nhost = "h"\nport = "9090"\n')  # a port as a string
    cases = [(["--device", "lab-pi5", "--devices", bad], ["lab-pi5", "port = 1..65535"]),
             (["--device", "lab-pi6"], ["unknown device 'lab-pi6'", "add [lab-pi6]", "devices.toml"]),
             (["--tracker", "10.0.0.2:9190"], ["--tracker needs --key"])]
    for opts, needles in cases:
        code, err = _cli([command, tmp_path / "no-bundle", *extra, *opts], capsys)
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in err and all(n in lines[0] for n in needles), lines[0]
