"""Building blocks of :func:`edgeres.train.train`: the epoch loop, run state, outputs, progress.

:mod:`edgeres.training.loop` (one epoch, evaluation), :mod:`edgeres.training.state`
(RNG state, output paths, history files), :mod:`edgeres.training.progress` (rich bars),
:mod:`edgeres.training.setup` (data splits, init/resume checks),
:mod:`edgeres.training.finetune` (frozen backbone) and
:mod:`edgeres.training.dist` (torchrun process groups, DDP wrapping, the ``--nproc`` launcher).
"""
