"""PyTorch -> ONNX export, checked with onnx.checker and parity-tested on ONNX Runtime.

Also resolves a *model source* (what ``export`` and ``compile`` accept): an edgeres
checkpoint, an existing ONNX file, or a zoo name with ``--weights FILE|random``.
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeres import __version__
from edgeres.checkpoint import LoadedModel, load_checkpoint
from edgeres.errors import InputError, ParityError, UsageError
from edgeres.fileio import atomic_path, sha256_file
from edgeres.preprocessing import Preprocessing, read_onnx_preprocessing, write_onnx_preprocessing
from edgeres.task import CLASSIFY, FEATURES, Task, check_task, read_onnx_task, write_onnx_task

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MODEL_METADATA_KEY = "edgeres.model"
DEFAULT_OPSET = 17
PARITY_RTOL = 1e-4  # max |torch - ort| relative to the logit scale


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    max_abs_diff: float
    logit_scale: float
    seconds: float
    preprocessing: Preprocessing
    model_name: str
    task: Task = Task()


@dataclass(frozen=True)
class OnnxSource:
    """An existing ONNX file given as the model source."""

    path: Path
    preprocessing: Preprocessing
    model_name: str
    task: Task = Task()
    random_weights: bool = False  # exported from ``--weights random`` (edgeres metadata says so)


def resolve_onnx_task(model: Any, path: str | os.PathLike, task: str | None) -> Task:
    """The task of an ONNX file: its metadata's, unless ``task`` says otherwise (where that can hold)."""
    from edgeres.task import features_from_graph

    kind = None if task is None else check_task(task)
    recorded = read_onnx_task(model)
    if recorded is not None and kind is not None and recorded.kind != kind:
        if recorded.is_features:
            raise UsageError(f"{path} is a feature extractor ({recorded.describe()}); pass --task features "
                             "(or export a classifier)")
        raise UsageError(f"{path} is an edgeres classifier; for a backbone, export its checkpoint with "
                         "`edgeres export CHECKPOINT --task features`")
    if recorded is not None:
        return recorded
    return features_from_graph(model, str(path)) if kind == FEATURES else Task(CLASSIFY)


def load_onnx(path: str | os.PathLike, task: str | None = None) -> Any:
    """Load and check an ONNX file for ``task`` (None: the file's own record, else classify); one-line
    InputError when missing, corrupt or not one (a classifier: one NCHW image input, one (N, classes)
    output)."""
    from edgeres.onnx_io import load_model

    model = load_model(path, check=True)
    check_onnx_task(model, path, resolve_onnx_task(model, path, task).kind)
    return model


def check_onnx_task(model: Any, path: str | os.PathLike, kind: str) -> None:
    """InputError when the graph's inputs/outputs do not fit ``kind``."""
    from edgeres.onnx_io import check_outputs, graph_io

    io = graph_io(model)
    if kind == FEATURES:
        if len(io.inputs) != 1 or not io.outputs:
            raise InputError(f"{path} must have one image input and at least one feature output; it has "
                             f"{len(io.inputs)} inputs and {len(io.outputs)} outputs")
        return
    if len(io.inputs) != 1:
        raise InputError(f"{path} must have one image input; it has {len(io.inputs)} inputs "
                         f"{[i.name for i in io.inputs]}")
    if len(io.outputs) > 1:
        raise InputError(f"{path} has {len(io.outputs)} outputs {[o.name for o in io.outputs]}; an image "
                         "classifier has one, the (N, classes) logits — for a feature extractor pass --task features")
    check_outputs(model, str(path), CLASSIFY)


def onnx_input_info(model: Any) -> tuple[str, list[int | str]]:
    """(name, shape) of the model's image input; symbolic dims are strings."""
    from edgeres.onnx_io import image_input

    inp = image_input(model)
    if inp.dims[1] != 3:
        raise InputError(f"input {inp.name!r} has shape {list(inp.dims)}; edgeres needs an NCHW RGB image input "
                         "(N,3,H,W)")
    return inp.name, list(inp.dims)


def onnx_source(path: str | os.PathLike, preprocessing: Preprocessing | None = None,
                task: str | None = None) -> OnnxSource:
    """An existing ONNX file as a model source. Without edgeres metadata, ImageNet
    preprocessing at the file's input size is assumed (with a warning) unless given.
    ``task``: None (the file's own record, else classify), ``classify`` or ``features``."""
    from edgeres.onnx_io import load_model

    model = load_model(path, check=True)
    tsk = resolve_onnx_task(model, path, task)
    check_onnx_task(model, path, tsk.kind)
    _, dims = onnx_input_info(model)
    pre = preprocessing or read_onnx_preprocessing(model)
    if pre is None:
        h, w = dims[2], dims[3]
        if not isinstance(h, int) or not isinstance(w, int):
            raise InputError(f"{path} has a dynamic image size and no edgeres metadata; export it with a fixed "
                             "input height and width")
        from edgeres.preprocessing import imagenet_preprocessing

        pre = imagenet_preprocessing(h)
        if h != w:
            pre = Preprocessing(input_size=(h, w), resize=pre.resize, mean=pre.mean, std=pre.std)
        out_dim = model.graph.output[0].type.tensor_type.shape.dim
        n = out_dim[-1].dim_value if out_dim and out_dim[-1].HasField("dim_value") else 0
        n = 0 if tsk.is_features else n  # a backbone has no classes
        pre = pre.with_classes([str(i) for i in range(n)])
        classes = f" and class names 0..{n - 1}" if n else ""
        warnings.warn(
            f"{path} carries no edgeres preprocessing; assuming ImageNet mean/std at {h}x{w}{classes}. If that is "
            "wrong, record the model's preprocessing in the file with "
            "edgeres.preprocessing.write_onnx_preprocessing (README: Preprocessing travels with the model).",
            stacklevel=2,
        )
    name, random_weights = "onnx", False
    for prop in model.metadata_props:
        if prop.key == MODEL_METADATA_KEY:
            try:
                record = json.loads(prop.value)
            except ValueError:
                continue
            if isinstance(record, dict):
                name = str(record.get("name", name))
                random_weights = record.get("weights") == "random"
    return OnnxSource(Path(path), pre, name, tsk, random_weights)


def resolve_source(source: str, weights: str | None = None, *, task: str | None = None,
                   **model_kwargs: Any) -> LoadedModel | OnnxSource:
    """Turn what the user typed into a loaded model or an ONNX source.

    ``source`` is an edgeres checkpoint (.pt), an ONNX file, or a zoo name; a zoo
    name needs ``weights`` (a torchvision/timm-format file, or ``"random"``). ``task``
    only matters for an ONNX file here (a checkpoint's task is chosen at export).
    """
    from edgeres.compat import require_torch

    p = Path(source)
    if p.suffix.lower() == ".onnx":
        if weights:
            raise UsageError("--weights applies to a zoo name, not to an ONNX file")
        return onnx_source(p, task=task)
    if p.exists() or any(s in source for s in ("/", os.sep)) or p.suffix.lower() in (".pt", ".pth", ".bin", ".ckpt"):
        if weights:
            raise UsageError("--weights applies to a zoo name; a checkpoint already holds its weights")
        require_torch(f"loading the checkpoint {p.name}")
        return load_checkpoint(p)
    require_torch(f"the zoo model {source!r}")
    from edgeres.models import get_model_info

    info = get_model_info(source)  # raises ModelNotFound with suggestions
    if weights is None:
        raise UsageError(
            f"{source} needs weights (edgeres downloads nothing): pass a torchvision/timm-format file with --weights "
            f"FILE.pth, train them (edgeres train {source} --data builtin --out runs/{source}.pt, or --data a folder "
            f"from `edgeres make-data data/shapes`), or --weights random to measure latency only"
        )
    if weights == "random":
        from edgeres.models import create_model

        model = create_model(source, **model_kwargs)
        pre = info.default_preprocessing([str(i) for i in range(info.default_num_classes)])
        meta = {"weights": "random"}
    else:
        from edgeres.models.weights import load_pretrained

        model = load_pretrained(source, Path(weights), **model_kwargs)
        fc = getattr(model, "fc", None)
        n = fc.out_features if fc is not None else info.default_num_classes
        names_ = [str(i) for i in range(n)]
        pre = info.default_preprocessing(names_)
        meta = {"weights": str(weights)}
    model.eval()
    return LoadedModel(model, source, pre, dict(model_kwargs), meta, source)


def _task_module(loaded: LoadedModel, task: str | None, features: Any) -> tuple[Any, Task, Preprocessing]:
    """(module to export, its Task, its preprocessing): the model itself, or its stage outputs."""
    kind = check_task(task)
    if features is not None and kind != FEATURES:
        raise UsageError("--features needs --task features")
    if kind != FEATURES:
        return loaded.model.eval(), Task(CLASSIFY), loaded.preprocessing
    from edgeres.models.features import feature_extractor, feature_names
    from edgeres.task import parse_feature_names

    names = parse_feature_names(features, feature_names(loaded.model, loaded.name))
    module, rec = feature_extractor(loaded.model.eval(), names, loaded.preprocessing.input_size)
    return module, rec, loaded.preprocessing.with_classes([])  # a backbone has no classes


def export_onnx(
    loaded: LoadedModel,
    out: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    parity_batch: int = 2,
    seed: int = 0,
    task: str | None = None,
    features: str | Sequence[str] | None = None,
) -> ExportResult:
    """Export to ONNX (dynamic batch), check it, and compare with PyTorch on ONNX Runtime.

    ``task="features"`` exports the backbone's stage outputs ``features`` (default: all,
    ``c2..c5``) instead of the logits (see :mod:`edgeres.task`). Raises ParityError when ONNX
    Runtime and PyTorch disagree by more than ``PARITY_RTOL`` relative to an output's scale;
    nothing is written then.
    """
    import onnx
    import torch

    if opset < 17:
        raise UsageError(f"opset {opset} is too old; edgeres exports opset >= 17")
    t0 = time.perf_counter()
    model, task_rec, pre = _task_module(loaded, task, features)
    out_names = list(task_rec.output_names) if task_rec.is_features else [OUTPUT_NAME]
    h, w = pre.input_size
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(parity_batch, 3, h, w, generator=gen)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buf,
            input_names=[INPUT_NAME],
            output_names=out_names,
            dynamic_axes={INPUT_NAME: {0: "N"}, **{n: {0: "N"} for n in out_names}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
        expected = model(example)
        expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    proto = onnx.load_from_string(buf.getvalue())
    write_onnx_preprocessing(proto, pre)
    write_onnx_task(proto, task_rec)
    entry = proto.metadata_props.add()
    entry.key = MODEL_METADATA_KEY
    record = {"name": loaded.name, "model_kwargs": loaded.model_kwargs, "source": loaded.source}
    if loaded.meta.get("weights") == "random":
        record["weights"] = "random"  # marked, so that bundles and users know its outputs mean nothing
    entry.value = json.dumps(record)
    proto.producer_name = "edgeres"
    proto.producer_version = __version__
    onnx.checker.check_model(proto)

    from edgeres.backends.onnxruntime import session

    sess = session(proto.SerializeToString())
    got = sess.run(out_names, {INPUT_NAME: example.numpy()})
    diffs = [float(np.max(np.abs(g - e))) for g, e in zip(got, expected)]
    scales = [float(np.max(np.abs(e))) for e in expected]
    for name, diff, scale in zip(out_names, diffs, scales):
        if not np.isfinite(diff) or diff > PARITY_RTOL * max(scale, 1.0):
            raise ParityError(
                f"ONNX export of {loaded.name} disagrees with PyTorch on {name}: max |diff| {diff:.3g} at scale "
                f"{scale:.3g} (limit {PARITY_RTOL:g} relative); report this model to edgeres"
            )
    out = Path(out)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    return ExportResult(out, opset, max(diffs), max(scales), time.perf_counter() - t0, pre, loaded.name, task_rec)


def export_stage(source: Any, dest: Path, preprocessing: Preprocessing | None = None, *, task: str | None = None,
                 features: Any = None) -> tuple[Preprocessing, str, dict, Task]:
    """Write the FP32 ONNX for ``source`` (a LoadedModel or OnnxSource) to ``dest``; a checkpoint is
    exported as ``task`` (``features``: the stage outputs ``features``)."""

    if isinstance(source, OnnxSource):
        import onnx

        from edgeres.onnx_io import load_model
        from edgeres.preprocessing import write_onnx_preprocessing

        if features is not None:
            raise UsageError("--features selects stages of a checkpoint or zoo model; an ONNX file's outputs are "
                             "already fixed (pass the file with --task features)")
        proto = load_model(source.path)
        write_onnx_preprocessing(proto, source.preprocessing)
        write_onnx_task(proto, source.task)
        onnx.save(proto, str(dest))
        info = {"source": str(source.path), "sha256": sha256_file(source.path),
                "random_weights": source.random_weights}
        return source.preprocessing, source.model_name, info, source.task
    res = export_onnx(source, dest, task=task, features=features)
    info = {"source": source.source, "max_abs_diff": res.max_abs_diff, "logit_scale": res.logit_scale,
            "opset": res.opset, "seconds": round(res.seconds, 3),
            "random_weights": source.meta.get("weights") == "random"}
    if source.source and Path(source.source).is_file():
        info["sha256"] = sha256_file(source.source)
    return res.preprocessing, res.model_name, info, res.task
