"""Run an FP32 ONNX model with ONNX Runtime and stream intermediate tensors into statistics.

The tensors of interest become extra graph outputs of a copy of the model. Batches
are run in chunks of at most ``max_chunk`` images so the activations held at once
stay small, and every chunk goes straight into the :class:`TensorStats`
accumulators: nothing is kept between chunks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from edgeres.errors import InputError
from edgeres.quantize.calibration import DEFAULT_NUM_BINS, TensorStats

MIN_CALIB_IMAGES = 300
RECOMMENDED_CALIB_IMAGES = 500
DEFAULT_MAX_CHUNK = 8
HOLDOUT_EVERY = 4  # every 4th calibration image scores candidates instead of setting ranges
MAX_HOLDOUT = 128
BIAS_IMAGES = 64  # range images on which bias correction is measured (two short passes each)

Batches = Callable[[], Iterable[np.ndarray]]


def _session(model, names: Sequence[str]):
    """An ORT CPU session for ``model`` with ``names`` added as graph outputs."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    present = {o.name for o in m.graph.output}
    for name in names:
        if name not in present:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            present.add(name)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Basic optimizations keep every requested tensor and start quickly.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types
        raise InputError(f"ONNX Runtime cannot load the model ({str(e).splitlines()[0]}); re-export it") from e


def _input_spec(sess) -> tuple[str, list]:
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise InputError(f"the model has {len(inputs)} inputs; edgeres quantizes image classifiers with one NCHW input")
    return inputs[0].name, list(inputs[0].shape)


def _check_batch(batch: object, index: int, input_name: str, shape: list) -> np.ndarray:
    if not isinstance(batch, np.ndarray) or batch.ndim != 4:
        got = getattr(batch, "shape", type(batch).__name__)
        raise InputError(f"calibration batch {index} is {got}, not an NCHW array; check the calibration data loader")
    for axis, (want, have) in enumerate(zip(shape[1:], batch.shape[1:]), start=1):
        if isinstance(want, int) and want != have:
            raise InputError(
                f"calibration batch {index} has shape {tuple(batch.shape)} but the model input {input_name!r} "
                f"expects {shape}; check the preprocessing input size"
            )
    if not np.issubdtype(batch.dtype, np.floating):
        raise InputError(f"calibration batch {index} has dtype {batch.dtype}, not float; normalize the images first")
    x = batch.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise InputError(
            f"calibration batch {index} has NaN/Inf values in model input {input_name!r}; check the calibration images"
        )
    return x


def iter_tensors(
    model, names: Sequence[str], batches: Iterable[np.ndarray], *, max_chunk: int = DEFAULT_MAX_CHUNK
) -> Iterator[tuple[int, np.ndarray, dict[str, np.ndarray]]]:
    """Yield ``(batch index, input chunk, {name: value})`` for chunks of at most ``max_chunk`` images.

    Checks each batch (NCHW, float, finite, fits the model input) and raises
    :class:`InputError` naming the problem. Reusable by sensitivity analysis.
    """
    graph_inputs = {i.name for i in model.graph.input}
    outputs = [n for n in names if n not in graph_inputs]  # a graph input's value is the feed itself
    sess = _session(model, outputs)
    input_name, shape = _input_spec(sess)
    for index, batch in enumerate(batches):
        x = _check_batch(batch, index, input_name, shape)
        for start in range(0, x.shape[0], max_chunk):
            chunk = x[start : start + max_chunk]
            try:
                values = dict(zip(outputs, sess.run(outputs, {input_name: chunk}))) if outputs else {}
            except Exception as e:
                raise InputError(
                    f"ONNX Runtime failed on calibration batch {index} ({str(e).splitlines()[0]}); "
                    "check the batch shape against the model input"
                ) from e
            if input_name in names:
                values[input_name] = chunk
            yield index, chunk, values


@dataclass
class Sample:
    """The images calibration set aside: ``holdout`` (every :data:`HOLDOUT_EVERY`-th image, at most
    :data:`MAX_HOLDOUT`; never used for ranges) scores candidate Q/DQ models, ``bias`` (the first
    :data:`BIAS_IMAGES` range images) measures bias correction."""

    holdout: np.ndarray | None = None
    bias: np.ndarray | None = None
    # FP32 per-image, per-channel means of the tensors ``collect_stats(means_of=...)`` named, on the
    # ``bias`` images, measured during the calibration pass (bias correction's reference, for free)
    reference: dict[str, np.ndarray] | None = None

    @property
    def num_holdout(self) -> int:
        return 0 if self.holdout is None else int(self.holdout.shape[0])


def channel_means(v: np.ndarray) -> np.ndarray:
    """Per image and channel (axis 1): the mean over every other axis, float64, shape (images, channels)."""
    v = v.astype(np.float64)
    return v.reshape(v.shape[0], v.shape[1], -1).mean(axis=2) if v.ndim > 2 else v


def split_holdout(batches: Iterable[np.ndarray], sample: Sample) -> Iterator[np.ndarray]:
    """Yield the range images of ``batches``; keep the held-out and bias images in ``sample``.

    Image ``i`` (counted over all batches) is held out when ``i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1``
    until :data:`MAX_HOLDOUT` are held out: deterministic, so a second pass picks the same images.
    """
    held: list[np.ndarray] = []
    bias: list[np.ndarray] = []
    seen = num_held = num_bias = 0
    for batch in batches:
        if not isinstance(batch, np.ndarray) or batch.ndim != 4:
            yield batch  # iter_tensors reports it
            continue
        idx = np.arange(seen, seen + batch.shape[0])
        seen += batch.shape[0]
        mask = (idx % HOLDOUT_EVERY == HOLDOUT_EVERY - 1) & (num_held + np.cumsum(
            idx % HOLDOUT_EVERY == HOLDOUT_EVERY - 1) <= MAX_HOLDOUT)
        if mask.any():
            held.append(np.asarray(batch[mask], dtype=np.float32))
            num_held += int(mask.sum())
        rest = batch[~mask]
        if num_bias < BIAS_IMAGES and rest.shape[0]:
            take = rest[: BIAS_IMAGES - num_bias]
            bias.append(np.asarray(take, dtype=np.float32))
            num_bias += take.shape[0]
        if rest.shape[0]:
            yield rest
    sample.holdout = np.concatenate(held) if held else None
    sample.bias = np.concatenate(bias) if bias else None


def collect_sample(calib_batches: Batches) -> Sample:
    """Only the held-out and bias images of the calibration batches (no model run)."""
    sample = Sample()
    for _ in split_holdout(calib_batches(), sample):
        pass
    return sample


def collect_stats(
    model,
    names: Sequence[str],
    calib_batches: Batches,
    *,
    num_bins: int = DEFAULT_NUM_BINS,
    max_chunk: int = DEFAULT_MAX_CHUNK,
    sample: Sample | None = None,
    means_of: Sequence[str] = (),
) -> tuple[dict[str, TensorStats], int]:
    """Statistics of every tensor in ``names`` over the calibration batches, and the image count.

    With ``sample``, the held-out images are set aside there (see :func:`split_holdout`) and not
    measured. Zero images raise :class:`InputError`; fewer than :data:`MIN_CALIB_IMAGES` warn.
    NaN/Inf in an input or activation raise :class:`InputError` naming the tensor. ``means_of``
    (with ``sample``): tensors whose per-image channel means on the bias images go to ``sample.reference``.
    """
    stats = {n: TensorStats(num_bins=num_bins) for n in names}
    num_images = 0
    batches = calib_batches() if sample is None else split_holdout(calib_batches(), sample)
    means_of = list(means_of) if sample is not None else []
    means: dict[str, list[np.ndarray]] = {t: [] for t in means_of}
    wanted = list(dict.fromkeys([*names, *means_of]))
    for index, chunk, values in iter_tensors(model, wanted, batches, max_chunk=max_chunk):
        if num_images < BIAS_IMAGES:  # split_holdout's bias images are the first range images
            for t in means_of:
                means[t].append(channel_means(values[t][: BIAS_IMAGES - num_images]))
        num_images += chunk.shape[0]
        for name in names:
            value = values[name]
            try:
                stats[name].update(value, name)
            except InputError as e:
                raise InputError(
                    f"tensor {name!r} became NaN/Inf on calibration batch {index}; "
                    "the FP32 model overflows on this data: check the images' preprocessing and the model"
                ) from e
    if sample is not None and means_of and sample.bias is not None:
        reference = {t: np.concatenate(v) for t, v in means.items()}
        if all(r.shape[0] == sample.bias.shape[0] for r in reference.values()):
            sample.reference = reference
    total = num_images + (sample.num_holdout if sample is not None else 0)
    if num_images == 0:
        raise InputError(
            "no calibration images were given; "
            f"pass a calibration set (>= {RECOMMENDED_CALIB_IMAGES} images recommended)"
        )
    if total < MIN_CALIB_IMAGES:
        msg = (
            f"only {total} calibration images; ranges may be unreliable "
            f"(≥ {RECOMMENDED_CALIB_IMAGES} recommended for CNNs)"
        )
        warnings.warn(msg, UserWarning, stacklevel=2)
    return stats, num_images


def tensor_errors(
    reference, candidate, names: Sequence[str], batches: Iterable[np.ndarray], *, max_chunk: int = DEFAULT_MAX_CHUNK
) -> dict[str, float]:
    """Relative error ``||b - a|| / ||a||`` of each tensor ``names`` of ``candidate`` vs ``reference``.

    Both models must name the tensors alike (Q/DQ insertion keeps producer names), e.g.
    the FP32 model and its INT8 Q/DQ form: per-layer output error for sensitivity analysis.
    """
    batches = [b for b in batches]
    sq_err = dict.fromkeys(names, 0.0)
    sq_ref = dict.fromkeys(names, 0.0)
    ref_iter = iter_tensors(reference, names, batches, max_chunk=max_chunk)
    cand_iter = iter_tensors(candidate, names, batches, max_chunk=max_chunk)
    for (_, _, a), (_, _, b) in zip(ref_iter, cand_iter):
        for n in names:
            d = b[n].astype(np.float64) - a[n]
            sq_err[n] += float(np.sum(d * d))
            sq_ref[n] += float(np.sum(np.square(a[n], dtype=np.float64)))
    return {n: (sq_err[n] / sq_ref[n]) ** 0.5 if sq_ref[n] > 0 else float(sq_err[n] > 0) for n in names}

