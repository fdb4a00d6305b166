"""Recipes: the paper schedules at exact iterations, overrides, TOML recipe files, validation."""

from __future__ import annotations

import math

import pytest

from edgeres.errors import InputError, UsageError
from edgeres.recipes import TrainConfig, get_recipe, list_recipes, lr_at, resolve_config


def test_builtin_recipes_listed():
    assert {"quick", "cifar-paper", "imagenet-paper", "finetune"} <= set(list_recipes())
    assert get_recipe("quick").config.schedule == "cosine"


def test_cifar_paper_schedule_exact():
    cfg = get_recipe("cifar-paper").config
    ipe = 391  # 50k images / batch 128; irrelevant for an iteration-unit schedule
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert lr_at(cfg, 0, ipe) == pytest.approx(0.1)
    assert lr_at(cfg, 31_999, ipe) == pytest.approx(0.1)
    assert lr_at(cfg, 32_000, ipe) == pytest.approx(0.01)
    assert lr_at(cfg, 47_999, ipe) == pytest.approx(0.01)
    assert lr_at(cfg, 48_000, ipe) == pytest.approx(0.001)
    assert lr_at(cfg, 63_999, ipe) == pytest.approx(0.001)
    assert cfg.total_iterations(ipe) == 64_000
    assert cfg.total_epochs(ipe) == math.ceil(64_000 / ipe)


def test_imagenet_paper_milestones_in_epochs():
    cfg = get_recipe("imagenet-paper").config
    ipe = 5005
    assert cfg.total_iterations(ipe) == 90 * ipe
    assert lr_at(cfg, 30 * ipe - 1, ipe) == pytest.approx(0.1)
    assert lr_at(cfg, 30 * ipe, ipe) == pytest.approx(0.01)
    assert lr_at(cfg, 60 * ipe - 1, ipe) == pytest.approx(0.01)
    assert lr_at(cfg, 60 * ipe, ipe) == pytest.approx(0.001)


def test_step_schedule_and_warmup():
    cfg = TrainConfig(epochs=10, lr=0.2, schedule="step", step_size=3, gamma=0.5, warmup=1, unit="epoch")
    ipe = 10
    assert lr_at(cfg, 0, ipe) == pytest.approx(0.2 / 10)  # linear warmup over the first epoch
    assert lr_at(cfg, 9, ipe) == pytest.approx(0.2)
    assert lr_at(cfg, 29, ipe) == pytest.approx(0.2)
    assert lr_at(cfg, 30, ipe) == pytest.approx(0.1)
    assert lr_at(cfg, 60, ipe) == pytest.approx(0.05)


def test_cosine_schedule_endpoints_and_midpoint():
    cfg = TrainConfig(epochs=4, lr=0.1, schedule="cosine", min_lr=0.0)
    ipe = 25  # 100 steps in all
    assert lr_at(cfg, 0, ipe) == pytest.approx(0.1)
    assert lr_at(cfg, 50, ipe) == pytest.approx(0.05)
    assert lr_at(cfg, 99, ipe) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    lrs = [lr_at(cfg, i, ipe) for i in range(100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_cosine_with_warmup_peaks_after_warmup():
    cfg = TrainConfig(epochs=5, lr=0.1, schedule="cosine", warmup=1)
    ipe = 20
    assert lr_at(cfg, 0, ipe) == pytest.approx(0.1 / 20)
    assert lr_at(cfg, 19, ipe) == pytest.approx(0.1)
    assert lr_at(cfg, 20, ipe) == pytest.approx(0.1)  # cosine starts at the peak
    assert lr_at(cfg, 99, ipe) < 0.001


def test_resolve_config_overrides_and_none_keeps():
    base = get_recipe("cifar-paper").config
    cfg = resolve_config("cifar-paper", lr=0.05, batch_size=None, milestones=(10, 20))
    assert cfg.lr == 0.05 and cfg.batch_size == base.batch_size and cfg.milestones == (10, 20)
    assert resolve_config("cifar-paper") == base
    # epochs on an iteration-counted recipe switches it to counting epochs
    assert resolve_config("cifar-paper", epochs=3).total_iterations(100) == 300


def test_resolve_config_unknown_field():
    with pytest.raises(UsageError, match="unknown training option.*learning_rate"):
        resolve_config("quick", learning_rate=0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": 0}, "lr must be > 0"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"schedule": "multistep", "milestones": ()}, "needs milestones"),
        ({"milestones": (20, 10)}, "increasing"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"batch_size": 2.5}, "batch_size"),
    ],
)
def test_bad_values_raise_usage_error(kwargs, match):
    with pytest.raises(UsageError, match=match):
        resolve_config("quick", **kwargs)


def test_unknown_recipe():
    with pytest.raises(UsageError, match="unknown recipe 'fast'.*quick"):
        get_recipe("fast")


def test_toml_recipe_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[train]\nbase = "cifar-paper"\nlr = 0.2\nmilestones = [100, 200]\niterations = 300\n')
    cfg = resolve_config(str(path), batch_size=32)
    assert (cfg.lr, cfg.milestones, cfg.iterations, cfg.batch_size) == (0.2, (100, 200), 300, 32)
    assert cfg.weight_decay == 1e-4  # from the base recipe
    assert lr_at(cfg, 150, 10) == pytest.approx(0.02)
    round_trip = TrainConfig.from_dict(cfg.to_dict())
    assert round_trip == cfg

    bad = tmp_path / "bad.toml"
    bad.write_text("lr = 0.1\nwarmup_epochs = 2\n")
    with pytest.raises(UsageError, match="warmup_epochs"):
        get_recipe(str(bad))
    broken = tmp_path / "broken.toml"
    broken.write_text("lr = = 1\n")
    with pytest.raises(InputError, match="not valid TOML"):
        get_recipe(str(broken))
