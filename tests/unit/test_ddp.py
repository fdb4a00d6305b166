"""DistributedDataParallel: 2 CPU ranks (gloo, launched by torch.distributed.run) reach the
same weights as one process with the same global batch; resume works under DDP; the
``edgeres train --nproc`` command line.

The model here has no BatchNorm: PyTorch's SyncBatchNorm runs only on GPUs, and with
plain BatchNorm each rank would normalise over its own half batch, so a BN model is
only approximately equal across world sizes on CPU (on CUDA edgeres converts BN to
SyncBatchNorm). Without BN, DDP's gradient averaging makes the runs equal up to float
summation order.

Run as a script (``python -m torch.distributed.run ... test_ddp.py OUT``) this file is the
worker of each rank.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

TINY_MODEL = "ddp-test-convnet"
DATA = "builtin:4"  # 40 train / 40 val images, 10 classes
ARGS = dict(batch_size=8, lr=0.05, overrides={"augment": False, "schedule": "constant", "warmup": 0,
                                                  "momentum": 0.9, "weight_decay": 1e-4},
            progress=False, plot=False)


class TinyConvNet(nn.Module):
    """Two strided convolutions and a linear head; no BatchNorm (see the module docstring)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def register_tiny_model() -> None:
    from edgeres.models.registry import register_model

    @register_model(TINY_MODEL, family="cifar", depth=3, block="basic", residual=False, shortcut_default=None,
                    default_num_classes=10, default_input_size=32, description="test-only conv net without BN")
    def factory(num_classes: int) -> nn.Module:
        return TinyConvNet(num_classes)


@pytest.fixture(scope="module")
def tiny_model():
    from edgeres.models import registry

    register_tiny_model()
    yield TINY_MODEL
    registry._REGISTRY.pop(TINY_MODEL, None)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from edgeres.checkpoint import read_checkpoint_file

    return read_checkpoint_file(path)["state_dict"]


def test_two_gloo_ranks_match_one_process(tiny_model, tmp_path):
    from edgeres.training import train

    single = train(tiny_model, DATA, tmp_path / "single", epochs=2, **ARGS)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), __file__, str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # The same steps (global batch 8 = 2 ranks x 4), the same per-epoch metrics ...
    hist = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert hist["world_size"] == 2 and hist["resumed_from"]  # epoch 2 came from a resume under DDP
    assert [r["iteration"] for r in hist["epochs"]] == [r.iteration for r in single.history] == [5, 10]
    for got, want in zip(hist["epochs"], single.history):
        assert got["train_loss"] == pytest.approx(want.train_loss, abs=1e-5)
        assert got["train_top1"] == pytest.approx(want.train_top1, abs=1e-9)
        assert got["val_loss"] == pytest.approx(want.val_loss, abs=1e-5)
        assert got["val_top1"] == pytest.approx(want.val_top1, abs=1e-9)  # sharded val counts every image once
    # ... and the same final weights, which really moved away from the initial ones.
    w_single, w_ddp = _weights(single.last_checkpoint), _weights(tmp_path / "ddp" / "last.pt")
    torch.manual_seed(0)
    w_init = TinyConvNet(10).state_dict()
    for key, value in w_single.items():
        assert torch.allclose(value, w_ddp[key], atol=1e-5), (key, (value - w_ddp[key]).abs().max())
    assert max((w_single[k] - w_init[k]).abs().max().item() for k in w_init) > 1e-2
    # Only rank 0 wrote: no stray per-rank files.
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["best.pt", "history.csv", "history.json",
                                                                     "last.pt"]
    assert proc.stdout.count("rank-0 done") == 1 and proc.stdout.count("rank-1 done") == 1


def test_torchrun_command_forwards_options_but_not_nproc():
    from edgeres.errors import UsageError
    from edgeres.training.dist import torchrun_command

    cmd = torchrun_command(4, "resnet56", {"--data": "cifar10/", "--out": Path("runs/r56"), "--epochs": 3,
                                           "--lr": None, "--freeze-backbone": True, "--replace-head": False,
                                           "--nproc": 4, "--no-plot": True}, python="/py")
    assert cmd == ["/py", "-m", "torch.distributed.run", "--nproc-per-node", "4", "-m", "edgeres", "train",
                   "resnet56", "--data", "cifar10/", "--out", "runs/r56", "--epochs", "3", "--freeze-backbone",
                   "--no-plot"]
    with pytest.raises(UsageError, match="--nproc must be a positive integer"):
        torchrun_command(0, "resnet20", {})


def test_global_batch_must_split_over_ranks(tiny_model, tmp_path, monkeypatch):
    from edgeres.errors import UsageError
    from edgeres.training import train
    from edgeres.training import dist

    monkeypatch.setattr(dist, "start", lambda info, device: False)  # no process group: fail before any collective
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(UsageError, match="batch size 9 does not split over 2 processes"):
        train(tiny_model, DATA, tmp_path / "x", epochs=1, **{**ARGS, "batch_size": 9})


def _worker(out: str) -> None:
    """One rank: epoch 1, then a resume to epoch 2 (one process group for both calls)."""
    import torch.distributed as dist

    from edgeres.training import train

    torch.set_num_threads(1)
    register_tiny_model()
    dist.init_process_group("gloo")
    try:
        train(TINY_MODEL, DATA, out, epochs=1, **ARGS)
        train(TINY_MODEL, DATA, out, epochs=2, resume=Path(out) / "last.pt",
              **{k: v for k, v in ARGS.items() if k != "overrides"})
        print(f"rank-{dist.get_rank()} done", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])
