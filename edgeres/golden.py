"""The golden self-test every bundle carries: a few inputs, the outputs they must give, tolerances.

Written at compile time into ``BUNDLE/golden/`` (and recorded, with sha256, in the manifest)::

    inputs.f32      N x 3 x H x W float32, little-endian, preprocessed (validation or calibration
                    images, else deterministic synthetic ones)
    expected.f32    N x classes: what the *deployed* model gives on ONNX Runtime (the Q/DQ model for
                    INT8, the FP32 model otherwise) -- what the artifact is checked against
    reference.f32   N x classes: the FP32 model on ONNX Runtime (reported beside, for information)
    golden.json     shapes, tolerances, where the inputs came from, sha256 of the three files
    selftest.txt    the same facts as ``key value`` lines for the C++ runners' ``--selftest``

A check passes when (1) every logit is within ``atol`` of the expected one, where ``atol`` is
``rtol`` times the expected logits' range (max - min over the golden set), (2) the cosine of
every sample's logits with the expected ones is at least ``min_cosine``, and (3) every sample
whose expected top-1 beats its runner-up by more than ``2 * atol`` keeps its top-1 (near-ties
may flip: rounding alone can swap them, and (1) already bounds how far). ``rtol`` is per precision:
an INT8 artifact and ONNX Runtime's Q/DQ execution round differently (integer kernels, fused
requantization), FP16 differs from FP32 by half-precision rounding, FP32 only by summation order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeres.errors import InputError
from edgeres.fileio import atomic_path, sha256_file, write_json

FORMAT = "edgeres.golden/1"
GOLDEN_DIR = "golden"
INPUTS, EXPECTED, REFERENCE = "inputs.f32", "expected.f32", "reference.f32"
GOLDEN_JSON, SELFTEST_TXT = "golden.json", "selftest.txt"
DEFAULT_COUNT = 8
MAX_INPUT_BYTES = 8 << 20  # at most ~8 MB of golden inputs (8 ImageNet-size images are 4.8 MB)


@dataclass(frozen=True)
class Tolerance:
    """``rtol``: max |artifact - expected| as a fraction of the expected logit range; ``min_cosine``:
    the lowest per-sample cosine similarity allowed."""

    rtol: float
    min_cosine: float


# Measured: TVM FP32 vs ONNX Runtime ~1e-6 of the range; TVM's integer kernels vs ORT's fused Q/DQ up
# to ~1 % (FINDINGS); FP16 rounding through a ResNet ~0.1-0.5 %. The limits leave headroom above those.
TOLERANCES = {
    "fp32": Tolerance(rtol=1e-3, min_cosine=0.99999),
    "fp16": Tolerance(rtol=2e-2, min_cosine=0.999),
    "int8": Tolerance(rtol=5e-2, min_cosine=0.995),
}


def default_tolerance(precision: str) -> Tolerance:
    return TOLERANCES.get(precision, TOLERANCES["fp32"])


@dataclass
class GoldenSet:
    inputs: np.ndarray
    expected: np.ndarray
    reference: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def atol(self) -> float:
        return float(self.meta["tolerance"]["atol"])

    @property
    def min_cosine(self) -> float:
        return float(self.meta["tolerance"]["min_cosine"])


def golden_count(input_chw: tuple[int, ...], count: int = DEFAULT_COUNT) -> int:
    per = int(np.prod(input_chw)) * 4
    return max(2, min(count, MAX_INPUT_BYTES // max(per, 1)))


def synthetic_inputs(pre: Any, count: int, seed: int = 0) -> np.ndarray:
    """Deterministic image-like inputs: smooth random colour fields in [0, 1], normalised with the
    model's mean/std (never plain noise, which gives logits with no clear winner)."""
    h, w = pre.input_size
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 1.0, (count, 3, 4, 4)).astype(np.float32)
    img = np.kron(coarse, np.ones((1, 1, -(-h // 4), -(-w // 4)), np.float32))[:, :, :h, :w]
    img = np.clip(img + rng.normal(0.0, 0.05, img.shape).astype(np.float32), 0.0, 1.0)
    mean = np.asarray(pre.mean, np.float32)[None, :, None, None]
    std = np.asarray(pre.std, np.float32)[None, :, None, None]
    return np.ascontiguousarray((img - mean) / std, dtype=np.float32)


def dataset_inputs(ds: Any, count: int) -> np.ndarray:
    """``count`` samples spread evenly over a data set (so several classes are covered)."""
    n = len(ds)
    idx = np.unique(np.linspace(0, n - 1, num=min(count, n)).round().astype(int))
    return np.ascontiguousarray(np.stack([np.asarray(ds[int(i)][0], np.float32) for i in idx]))


def _stats(actual: np.ndarray, expected: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    err = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    na, ne = np.linalg.norm(actual, axis=1), np.linalg.norm(expected, axis=1)
    cos = np.sum(actual * expected, axis=1) / np.maximum(na * ne, 1e-12)
    same = actual.argmax(1) == expected.argmax(1)
    return err, cos, same


@dataclass(frozen=True)
class GoldenCheck:
    """The numbers of one comparison and the verdict."""

    passed: bool
    samples: int
    max_abs_err: float
    atol: float
    logit_range: float
    top1_agree: int
    decisive: int
    decisive_disagree: int
    min_cosine: float
    limit_cosine: float
    vs_fp32: dict[str, float] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def numbers(self) -> str:
        rel = self.max_abs_err / self.logit_range if self.logit_range else float("nan")
        return (f"{self.samples} golden inputs: max abs err {self.max_abs_err:.3g} (limit {self.atol:.3g}, "
                f"{100 * rel:.2f}% of the logit range), top-1 {self.top1_agree}/{self.samples} agree "
                f"({self.decisive_disagree} decisive flips), min cosine {self.min_cosine:.6f} "
                f"(limit {self.limit_cosine:g}); vs the FP32 reference: top-1 {self.vs_fp32.get('top1_agree', '?')}"
                f"/{self.samples}, max abs err {self.vs_fp32.get('max_abs_err', float('nan')):.3g}")


def check(actual: np.ndarray, golden: GoldenSet) -> GoldenCheck:
    """Compare an artifact's logits on the golden inputs with the expected ones (see the module doc)."""
    expected = golden.expected
    actual = np.asarray(actual, np.float32).reshape(expected.shape[0], -1)
    if actual.shape != expected.shape:
        raise InputError(f"the artifact gave outputs of shape {actual.shape} for the golden inputs, expected "
                         f"{expected.shape}; the bundle's artifact and its golden files do not belong together")
    atol = golden.atol
    reasons = []
    finite = bool(np.isfinite(actual).all())
    err, cos, same = _stats(actual, expected)
    top2 = np.sort(expected, axis=1)[:, -2:] if expected.shape[1] > 1 else np.zeros((len(expected), 2))
    decisive = (top2[:, 1] - top2[:, 0]) > 2 * atol
    flips = int(np.sum(decisive & ~same))
    if not finite:
        reasons.append("the artifact produced NaN/Inf")
    if not err <= atol:
        reasons.append(f"max abs err {err:.3g} > {atol:.3g}")
    if not float(cos.min()) >= golden.min_cosine:
        reasons.append(f"min cosine {float(cos.min()):.6f} < {golden.min_cosine:g}")
    if flips:
        reasons.append(f"{flips} sample(s) changed a clear top-1")
    ref_err, _, ref_same = _stats(actual, golden.reference)
    return GoldenCheck(
        passed=not reasons, samples=int(expected.shape[0]), max_abs_err=err, atol=atol,
        logit_range=float(golden.meta["tolerance"]["logit_range"]), top1_agree=int(same.sum()),
        decisive=int(decisive.sum()), decisive_disagree=flips, min_cosine=float(cos.min()),
        limit_cosine=golden.min_cosine,
        vs_fp32={"max_abs_err": ref_err, "top1_agree": int(ref_same.sum())}, reasons=tuple(reasons))


def _write_f32(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.ascontiguousarray(arr, dtype="<f4").tofile(tmp)


def write_golden(root: Path, inputs: np.ndarray, *, expected_runner: Callable, reference_runner: Callable | None,
                 tolerance: Tolerance, precision: str, source: str, expected_from: str) -> dict[str, Any]:
    """Run the references on ``inputs``, write ``root/golden/``; return the manifest record."""
    inputs = np.ascontiguousarray(inputs, np.float32)
    n = len(inputs)
    # one row per input: logits, or a feature extractor's first output flattened (what every runner returns first)
    expected = np.asarray(expected_runner(inputs), np.float32).reshape(n, -1)
    reference = np.asarray(reference_runner(inputs), np.float32).reshape(n, -1) if reference_runner else expected
    if not (np.isfinite(expected).all() and np.isfinite(reference).all()):
        raise InputError("the model gives NaN/Inf on the golden inputs; check the model and its preprocessing")
    rng = float(expected.max() - expected.min()) or 1.0
    tol = {"rtol": tolerance.rtol, "atol": tolerance.rtol * rng, "min_cosine": tolerance.min_cosine,
           "logit_range": rng, "precision": precision}
    d = root / GOLDEN_DIR
    d.mkdir(parents=True, exist_ok=True)
    for name, arr in ((INPUTS, inputs), (EXPECTED, expected), (REFERENCE, reference)):
        _write_f32(d / name, arr)
    n, c, h, w = inputs.shape
    with atomic_path(d / SELFTEST_TXT) as tmp:
        tmp.write_text("# edgeres golden self-test: read by the C++ runners' --selftest (see golden.json)\n"
                       f"inputs {INPUTS} {n} {c} {h} {w}\nexpected {EXPECTED} {n} {expected.shape[1]}\n"
                       f"atol {tol['atol']:.9g}\nmin_cosine {tol['min_cosine']:.9g}\n")
    meta = {"format": FORMAT, "count": int(n), "input_shape": [int(n), int(c), int(h), int(w)],
            "output_shape": list(expected.shape), "source": source, "precision": precision,
            "expected_from": expected_from, "reference_from": "the FP32 ONNX on ONNX Runtime",
            "tolerance": tol,
            "sha256": {name: sha256_file(d / name) for name in (INPUTS, EXPECTED, REFERENCE, SELFTEST_TXT)}}
    write_json(d / GOLDEN_JSON, meta)
    return {"dir": GOLDEN_DIR, **{k: meta[k] for k in ("count", "source", "expected_from", "tolerance", "sha256")}}


def read_golden(root: Path, record: dict[str, Any] | None) -> GoldenSet:
    """Load ``root/golden`` and check every file against the sha256 in the manifest record."""
    if not record:
        raise InputError(f"bundle {root} has no golden self-test (made by an older edgeres); recompile it "
                         "with `edgeres compile` to add one")
    d = root / record.get("dir", GOLDEN_DIR)
    for name, digest in record.get("sha256", {}).items():
        p = d / name
        if not p.is_file() or sha256_file(p) != digest:
            raise InputError(f"golden file {p} is missing or modified (sha256 mismatch); recompile the bundle")
    try:
        meta = json.loads((d / GOLDEN_JSON).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{d / GOLDEN_JSON} is missing or corrupt ({e}); recompile the bundle") from e
    shape, out = tuple(meta["input_shape"]), tuple(meta["output_shape"])
    try:
        inputs = np.fromfile(d / INPUTS, "<f4").reshape(shape)
        expected = np.fromfile(d / EXPECTED, "<f4").reshape(out)
        reference = np.fromfile(d / REFERENCE, "<f4").reshape(out)
    except ValueError as e:
        raise InputError(f"golden files in {d} do not have the shapes golden.json records ({e}); recompile") from e
    meta["tolerance"] = {**meta["tolerance"], **record.get("tolerance", {})}  # the manifest's copy wins
    return GoldenSet(inputs.astype(np.float32), expected.astype(np.float32), reference.astype(np.float32), meta)


__all__ = ["GOLDEN_DIR", "GoldenCheck", "GoldenSet", "TOLERANCES", "Tolerance", "check", "dataset_inputs",
           "default_tolerance", "golden_count", "read_golden", "synthetic_inputs", "write_golden"]
