"""MetaSchedule tuning database (edgeres.backends.tvm.tuning): a real tuning run on a tiny 2-conv net.

One module-scoped tuning run (TASKS tasks, 4 trials each) is shared by the tests; the second
run, the twin model (same shapes, other weights) and the compile reuse its database.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgeres.errors import UsageError
from edgeres.targets import get_target

tvm = pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")
torch = pytest.importorskip("torch")
pytest.importorskip("xgboost", reason="MetaSchedule's cost model needs xgboost: pip install xgboost-cpu")
from edgeres.backends.tvm import tuning  # noqa: E402
from edgeres.backends import onnxruntime as ortb  # noqa: E402
from edgeres.backends import tvm as tb  # noqa: E402
from edgeres.backends.tvm import options as tt  # noqa: E402

HW = 32
# MetaSchedule tasks of TwoConv as compile() schedules it: the NCHW->NHWC transpose, two conv-relu,
# the global mean, and the classifier as a 1x1 convolution on the packed kernels (output channels
# padded to the register tile) with its un-padding/bias op and the flattening reshape.
TASKS = 7


class TwoConv(torch.nn.Module):
    """NCHW->NHWC transpose, conv-relu, conv-relu, global mean, linear: TASKS MetaSchedule tasks."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):  # noqa: D102
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(x.mean((2, 3)))


def _export(seed: int, path: Path) -> Path:
    torch.manual_seed(seed)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TwoConv().eval(), (torch.zeros(1, 3, HW, HW),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    return path


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("nets")
    return _export(0, d / "a.onnx"), _export(1, d / "b.onnx")


@pytest.fixture(scope="module")
def tuned(nets, tmp_path_factory):
    db = tmp_path_factory.mktemp("tune") / "db"
    lines: list[str] = []
    res = tuning.tune(nets[0], get_target("x86-64-host"), db, trials=4 * TASKS, trials_per_task=4, progress=False,
                      log=lines.append, seed=0)
    return res, db, lines


def test_first_run_tunes_every_task_and_writes_the_database(tuned):
    res, db, lines = tuned
    assert res.tasks_found == TASKS and res.tasks_skipped == 0 and res.tasks_tuned == TASKS
    assert 3 * TASKS <= res.trials <= 4 * TASKS and res.failed_trials < res.trials  # a tiny task may offer fewer candidates
    for name in tt.TUNING_DB_FILES:
        assert (db / name).is_file()
    workloads = (db / "database_workload.json").read_text().splitlines()
    records = (db / "database_tuning_record.json").read_text().splitlines()
    assert len(workloads) == TASKS and len(records) >= TASKS
    assert {json.loads(r)[0] for r in records} == set(range(TASKS))  # a record for every workload
    state = json.loads((db / tuning.STATE_FILE).read_text())
    assert len(state["complete"]) == TASKS and state["target"]["mcpu"] != "native"
    assert any(f"{TASKS} to tune" in line for line in lines)
    assert any(f"builtin schedule of {TASKS} tasks" in line for line in lines)  # seed records, measured first
    assert res.stopped_by in ("trials", "done")


def test_second_run_and_same_shaped_model_tune_nothing(tuned, nets):
    _, db, _ = tuned
    before = (db / "database_tuning_record.json").read_text()
    for onnx_path in nets:  # the same model again, then other weights with the same shapes
        res = tuning.tune(onnx_path, get_target("x86-64-host"), db, trials=16, progress=False, log=lambda s: None)
        assert (res.tasks_found, res.tasks_skipped, res.tasks_tuned, res.trials) == (TASKS, TASKS, 0, 0)
    assert (db / "database_tuning_record.json").read_text() == before


def test_database_of_another_cpu_is_refused(tuned, nets):
    _, db, _ = tuned
    with pytest.raises(UsageError, match="one --db directory per target"):
        tuning.tune(nets[0], get_target("x86-64"), db, trials=4, progress=False, log=lambda s: None)


def test_compile_applies_the_records_and_matches_onnxruntime(tuned, nets, tmp_path, make_images):
    _, db, _ = tuned
    target = get_target("x86-64-host")
    mod, tvm_target = tb.tuning_module(nets[1], target)
    _, applied = tb.apply_schedules(mod, tvm_target, tt.parse_options(target, {"tuning_db": str(db)}))
    assert applied == TASKS
    art = tb.compile(nets[1], target, tmp_path / "art", precision="fp32", options={"tuning_db": str(db)})
    assert art.info["tuned_functions"] == TASKS
    x = make_images(3, HW, seed=5)
    got, ref = tb.load(art)(x), ortb.make_runner(nets[1])(x)
    assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max()


def test_time_budget_stops_tuning_and_leaves_tasks_unfinished(nets, tmp_path):
    db = tmp_path / "db"
    res = tuning.tune(nets[0], get_target("x86-64-host"), db, trials=64, time_budget_s=0.5, progress=False,
                      log=lambda s: None)
    assert res.stopped_by == "time budget" and res.trials == 0 and res.tasks_tuned == 0
    assert json.loads((db / tuning.STATE_FILE).read_text())["complete"] == []  # the next run tunes them
    records = [json.loads(r) for r in (db / "database_tuning_record.json").read_text().splitlines()]
    valid = [r for r in records if r[1][1] and max(r[1][1]) < 1e9]  # skipped builds are kept as failed records
    assert len(valid) == TASKS  # the builtin seeds


@pytest.mark.parametrize("text,seconds", [("2h", 7200), ("30m", 1800), ("90s", 90), ("1h30m", 5400), ("45", 45)])
def test_parse_duration(text, seconds):
    assert tuning.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "2 days", "h", "0m", "-5m"])
def test_parse_duration_rejects(bad):
    with pytest.raises(UsageError, match="duration"):
        tuning.parse_duration(bad)


def test_bad_budgets_are_usage_errors(nets, tmp_path):
    for kwargs in ({"trials": 0}, {"trials": 4, "time_budget_s": 0}, {"trials": 4, "trials_per_task": 0}):
        with pytest.raises(UsageError):
            tuning.tune(nets[0], get_target("x86-64-host"), tmp_path / "db", progress=False, **kwargs)
    with pytest.raises(UsageError, match="TVM targets"):
        tuning.tune(nets[0], get_target("onnxruntime-cpu"), tmp_path / "db", trials=4, progress=False)


def test_cli_tune_command_reuses_the_database(tuned, nets):
    import typer
    from rich.console import Console
    from typer.testing import CliRunner

    from edgeres.cli_tune import register

    _, db, _ = tuned
    app = typer.Typer()
    register(app, Console(width=200))

    @app.command()
    def _other() -> None:  # a second command, so typer keeps "tune" as a subcommand
        pass

    out = CliRunner().invoke(app, ["tune", str(nets[1]), "--target", "x86-64-host", "--trials", "8", "--db", str(db),
                                   "--time-budget", "5m", "--quiet"])
    assert out.exit_code == 0, out.output
    assert f"tuned 0 of {TASKS} tasks ({TASKS} already in the database), 0 trials" in out.output
    assert f"--tuning-db {db}" in out.output
