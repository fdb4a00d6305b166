"""Quantization-aware fine-tuning, when post-training quantization cannot meet ``--max-drop``.

PyTorch's own FX tooling (``torch.ao.quantization.quantize_fx.prepare_qat_fx``; deprecated in
favour of torchao's PT2E, which is not installed here, but present and working in torch 2.13):

1. the checkpoint's model with BatchNormalization folded into the convolutions
   (``torch.fx.experimental.optimization.fuse``), as edgeres's quantizer folds it in ONNX;
2. fake quantization set to edgeres's Q/DQ form: weights symmetric per output channel with
   edgeres's levels (-127..127, or -63..63 with ``reduce_range``: the scale is ``amax / levels``
   exactly as :func:`edgeres.quantize.qdq.quantize_weight` computes it), activations per tensor,
   uint8 asymmetric (``cpu`` form) or int8 symmetric (``tensorrt`` form);
3. a few epochs of Adam (small learning rate, cosine decay) on the training images with fake
   quantization in the loop;
4. the fine-tuned float weights exported to ONNX, then quantized by edgeres's quantizer (same
   form, integer weights and fallback as post-training quantization), so every backend compiles
   it exactly as any other Q/DQ model, with the activation ranges the fake-quant modules learned
   (:mod:`edgeres.training.qat_ranges`; tensors without a match are calibrated with minmax).
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeres.errors import UsageError

DEFAULT_EPOCHS = 1
DEFAULT_LR = 1e-4  # Adam: small steps, a fine-tune of an already trained model
DEFAULT_BATCH = 64
MAX_PTQ_FALLBACK = 3  # QAT starts when more than this many float layers would be needed


@dataclass(frozen=True)
class QatOptions:
    data: str  # training images (edgeres data spec)
    epochs: int = DEFAULT_EPOCHS
    lr: float = DEFAULT_LR
    batch_size: int = DEFAULT_BATCH
    limit: int | None = None  # training images per epoch (class-balanced subset)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"--qat-epochs must be at least 1, got {self.epochs}")
        if not self.lr > 0:
            raise UsageError(f"the QAT learning rate must be positive, got {self.lr}")


@dataclass(frozen=True)
class QatResult:
    onnx: Path  # the fine-tuned FP32 model
    epochs: int
    steps: int
    images: int
    seconds: float
    last_loss: float
    ranges: dict = field(default_factory=dict)  # {ONNX tensor: (lo, hi)} learned by the fake-quant modules
    model: Any = field(default=None, repr=False)  # the FX fake-quant model (eval mode), e.g. to compare with


def qconfig(form: str, reduce_range: bool, per_channel: bool = True) -> Any:
    """PyTorch QConfig matching edgeres's Q/DQ ``form``, weight width and weight scales."""
    import torch
    from torch.ao.quantization import (
        FakeQuantize,
        MinMaxObserver,
        MovingAverageMinMaxObserver,
        PerChannelMinMaxObserver,
        QConfig,
    )

    levels = 63 if reduce_range else 127
    if per_channel:
        weight = FakeQuantize.with_args(observer=PerChannelMinMaxObserver, quant_min=-levels, quant_max=levels,
                                        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    else:
        weight = FakeQuantize.with_args(observer=MinMaxObserver, quant_min=-levels, quant_max=levels,
                                        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    if form == "tensorrt":
        act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
                                     dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    else:
        act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                     dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    return QConfig(activation=act, weight=weight)


def finetune(loaded: Any, qat: QatOptions, *, form: str, reduce_range: bool, out_onnx: Path,
             per_channel: bool = True, log: Callable[[str], None] = lambda s: None) -> QatResult:
    """Fine-tune ``loaded`` (an edgeres checkpoint's LoadedModel) with fake quantization; export to ``out_onnx``."""
    import torch
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    from torch.fx.experimental.optimization import fuse
    from torch.nn import functional as F

    from edgeres.checkpoint import LoadedModel
    from edgeres.data import iter_batches, open_dataset
    from edgeres.export import export_onnx

    t0 = time.perf_counter()
    pre = loaded.preprocessing
    ds = open_dataset(qat.data, "train", pre, class_names=pre.class_names or None, augment=True,
                      limit=qat.limit)
    if len(ds) == 0:
        raise UsageError(f"no training images in {qat.data} for quantization-aware training")
    folded = fuse(copy.deepcopy(loaded.model).eval())  # BN folded into the convolutions
    h, w = pre.input_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        model = prepare_qat_fx(copy.deepcopy(folded).train(), QConfigMapping().set_global(qconfig(form, reduce_range, per_channel)),
                               (torch.zeros(1, 3, h, w),))
    steps_per_epoch = max(1, len(ds) // qat.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=qat.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, qat.epochs * steps_per_epoch)
    steps, loss_value = 0, float("nan")
    for epoch in range(qat.epochs):
        ds.set_epoch(epoch)
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(epoch)).numpy()
        shuffled = ds.subset(order)
        total, n = 0.0, 0
        for x, y in iter_batches(shuffled, qat.batch_size):
            if len(y) < 2:
                continue
            loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
            total += float(loss.detach()) * len(y)
            n += len(y)
        loss_value = total / max(n, 1)
        log(f"QAT epoch {epoch + 1}/{qat.epochs}: training loss {loss_value:.4f} ({time.perf_counter() - t0:.0f} s)")
    # The QAT modules keep the folded model's module names: copy the trained weights back.
    trained = model.state_dict()
    state = {k: trained[k] for k in folded.state_dict() if k in trained}
    folded.load_state_dict(state, strict=True)
    export_onnx(LoadedModel(folded.eval(), loaded.name, pre, loaded.model_kwargs, {**loaded.meta, "qat": True},
                            f"{loaded.source} (QAT)"), out_onnx)
    from edgeres.training.qat_ranges import learned_ranges

    probe = next(iter(iter_batches(ds.subset(list(range(min(16, len(ds))))), 16)))[0]
    try:
        ranges = learned_ranges(model, Path(out_onnx), probe, form)
        log(f"QAT: {len(ranges)} activation ranges learned by the fake-quant modules kept")
    except Exception as e:  # noqa: BLE001 - matching is an improvement; never lose the fine-tune over it
        ranges = {}
        log(f"QAT: the learned activation ranges could not be matched to the ONNX model "
            f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); calibrating them with minmax instead")
    return QatResult(Path(out_onnx), qat.epochs, steps, len(ds), time.perf_counter() - t0, loss_value, ranges,
                     model.eval())
