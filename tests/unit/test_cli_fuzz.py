"""No traceback from any CLI command on any input a user can type: hostile inputs (missing files, folders
where files go, empty files, bad option values) end in exit code 2 and one ``error:`` line.

Runs ``edgeres.cli.main`` in this process (what the console script runs) so that ~60 cases stay fast.
"""

import signal

import pytest

from edgeres.cli import main


@pytest.fixture(scope="module")
def junk(tmp_path_factory):
    d = tmp_path_factory.mktemp("junk")
    (d / "empty.pt").touch()
    (d / "empty.onnx").touch()
    (d / "empty.png").touch()
    (d / "empty.toml").touch()
    (d / "bad.toml").write_text('epochs = "many"\n')
    (d / "text.onnx").write_text("not a model")
    (d / "folder.onnx").mkdir()
    (d / "folder.pt").mkdir()
    (d / "afile").write_text("x")
    (d / "dir").mkdir()
    (d / "dir" / "notes.txt").write_text("x")
    return d


def cases(d):
    missing = d / "missing"
    return [
        ("export", missing / "x.pt", "--out", d / "o.onnx"),
        ("export", d / "empty.pt", "--out", d / "o.onnx"),
        ("export", d / "folder.pt", "--out", d / "o.onnx"),
        ("export", "resnet20", "--weights", d / "empty.pt", "--out", d / "o.onnx"),
        ("export", "resnet20", "--weights", d / "dir", "--out", d / "o.onnx"),
        ("export", "resnet20", "--weights", "random", "--out", d / "dir"),
        ("export", "resnet20", "--weights", "random", "--opset", "abc", "--out", d / "o.onnx"),
        ("export", "resnet20", "--weights", "random", "--opset", "5", "--out", d / "o.onnx"),
        ("export", d / "text.onnx", "--out", d / "o.onnx"),
        ("compile", d / "empty.onnx", "--target", "x86-64", "--out", d / "b"),
        ("compile", d / "folder.onnx", "--target", "x86-64", "--out", d / "b"),
        ("compile", d / "text.onnx", "--target", "onnxruntime-cpu", "--out", d / "b"),
        ("compile", "resnet20", "--weights", "random", "--target", "", "--out", d / "b"),
        ("compile", "resnet20", "--weights", "random", "--target", d / "empty.toml", "--out", d / "b"),
        ("compile", "resnet20", "--weights", "random", "--target", d / "missing.toml", "--out", d / "b"),
        ("compile", "resnet20", "--weights", "random", "--target", "x86-64", "--precision", "int3"),
        ("compile", "resnet20", "--weights", "random", "--target", "x86-64", "--num-calib", "many"),
        ("compile", "resnet20", "--weights", "random", "--target", "x86-64", "--num-calib", "0", "--calib", "builtin",
         "--out", d / "b"),
        ("compile", "resnet20", "--weights", "random", "--target", "x86-64", "--option", "noequals", "--out", d / "b"),
        ("compile", "resnet20", "--weights", "random", "--target", "x86-64", "--tuning-db", d / "afile",
         "--out", d / "b"),
        ("compile", "resnet20", "--weights", "random", "--target", "x86-64", "--calib-cache", d / "dir",
         "--calib", "builtin", "--out", d / "b"),
        ("compile", "resnet20", "--weights", "random", "--target", "x86-64", "--out", d / "afile" / "b"),
        ("compile", "resnet20", "--weights", "random", "--target", "x86-64", "--targets-dir", missing),
        ("compile", "resnet20", "--bogus-option"),
        ("compile",),
        ("quantize", d / "empty.onnx", "--calib", "builtin", "--out", d / "q.onnx"),
        ("quantize", d / "folder.onnx", "--calib", "builtin", "--out", d / "q.onnx"),
        ("quantize", missing / "m.onnx", "--calib", "builtin", "--out", d / "q.onnx"),
        ("quantize", d / "text.onnx", "--out", d / "q.onnx"),
        ("sensitivity", d / "empty.onnx", "--calib", "builtin", "--val", "builtin"),
        ("validate", missing, "--data", "builtin"),
        ("validate", d / "afile", "--data", "builtin"),
        ("validate", d / "dir", "--data", "builtin"),
        ("validate", d / "dir", "--data", "builtin", "--limit", "x"),
        ("run", missing, d / "empty.png"),
        ("run", d / "dir", d / "empty.png"),
        ("bench", missing),
        ("bench", d / "dir", "--vs", "tensorflow"),
        ("bench", d / "dir", "--repeats", "0"),
        ("train", "resnet20", "--data", missing, "--out", d / "r.pt"),
        ("train", "resnet20", "--data", d / "dir", "--out", d / "r.pt"),
        ("train", "resnet20", "--data", d / "afile", "--out", d / "r.pt"),
        ("train", "resnet21", "--data", "builtin", "--out", d / "r.pt"),
        ("train", "resnet20", "--data", "builtin", "--epochs", "lots", "--out", d / "r.pt"),
        ("train", "resnet20", "--data", "builtin", "--recipe", "nonsense", "--out", d / "r.pt"),
        ("train", "resnet20", "--data", "builtin", "--recipe", d / "bad.toml", "--out", d / "r.pt"),
        ("train", "resnet20", "--data", "builtin", "--resume", d / "empty.pt", "--out", d / "r.pt"),
        ("train", "resnet20", "--data", "builtin", "--out", d / "afile"),
        ("make-data", d / "afile"),
        ("make-data", d / "dir"),
        ("make-data", d / "new", "--train-per-class", "0"),
        ("targets", "no-such-board"),
        ("targets", "--targets-dir", missing),
        ("targets", "--targets-dir", d / "afile"),
        ("models", "--bogus"),
        ("quickstart", "--workdir", d / "afile"),
        ("quickstart", "--target", "no-such-board", "--workdir", d / "qs"),
        ("tune", "resnet20", "--target", "x86-64", "--trials", "1", "--db", d / "afile"),
        ("tune", "resnet20", "--target", "x86-64", "--trials", "1", "--db", d / "dir"),
        ("tune", "resnet20", "--target", "x86-64", "--trials", "1", "--time-budget", "forever", "--db", d / "db"),
        ("build-engine", missing),
        ("check-qdq", d / "empty.onnx"),
        ("check-qdq", d / "folder.onnx"),
        ("no-such-command",),
    ]


class _TookTooLong(Exception):
    pass


def _alarm(signum, frame):  # noqa: ANN001
    raise _TookTooLong("no error within 60 s: the input was not checked before work started")


def test_hostile_inputs_give_one_line_and_exit_2(junk, capsys, monkeypatch):
    monkeypatch.chdir(junk)  # a command that falls back to a default output path writes here, not in the repo
    failures = []
    old = signal.signal(signal.SIGALRM, _alarm)
    for args in cases(junk):
        argv = [str(a) for a in args]
        signal.alarm(60)
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code
        except Exception as e:  # noqa: BLE001 - any other exception is the bug this test is for
            code = f"{type(e).__name__}: {e}"
        finally:
            signal.alarm(0)
        out, err = capsys.readouterr()
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
        if code != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or "Traceback" in out + err:
            failures.append(f"edgeres {' '.join(argv)} -> exit {code}: {err.strip()[-400:]!r}")
    signal.signal(signal.SIGALRM, old)
    assert not failures, "\n".join(failures)
