"""Training: :func:`train` (``edgeres train``) and its building blocks.

:mod:`edgeres.training.trainer` (:func:`train`, the epoch loop's outer steps, checkpoints),
:mod:`edgeres.training.options` (the frozen options record of a call),
:mod:`edgeres.training.plan` (recipe, overrides, init/resume before any data is read),
:mod:`edgeres.training.session` (a set-up run: data, model, optimizer, loaders, restored progress),
:mod:`edgeres.training.loop` (one epoch, evaluation), :mod:`edgeres.training.state`
(RNG state, output paths, history files), :mod:`edgeres.training.progress` (rich bars),
:mod:`edgeres.training.setup` (data splits, init/resume checkpoint checks, devices),
:mod:`edgeres.training.finetune` (frozen backbone) and
:mod:`edgeres.training.dist` (torchrun process groups, DDP wrapping, the ``--nproc`` launcher).
Recipes (the hyper-parameters as data) are :mod:`edgeres.recipes`.
"""

from edgeres.training.options import TrainOptions
from edgeres.training.setup import resolve_device
from edgeres.training.state import EpochRecord
from edgeres.training.trainer import TrainResult, train

__all__ = ["EpochRecord", "TrainOptions", "TrainResult", "resolve_device", "train"]
