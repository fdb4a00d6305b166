"""Calibration cache: per-tensor statistics (and ranges derived from them) as JSON.

A cache belongs to one FP32 model file (its sha256), one calibration data set (the
caller's fingerprint), one histogram resolution (``num_bins``) and one graph (``graph``:
BatchNormalization folded, and cross-layer equalized or not). Inside, ``ranges`` holds
the ranges already computed per method/form/settings (any other method can be computed
from the stored histograms without running a single image), and ``choices`` what
``--method auto`` and bias correction decided per setting, with the scores that decided it
(the ``why``) and the bias corrections: a cache hit needs no images for them either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeres.errors import InputError
from edgeres.fileio import write_json
from edgeres.quantize.calibration import TensorStats

CACHE_FORMAT = "edgeres.calib-cache/2"

Range = tuple[float, float]


@dataclass
class CalibCache:
    """What one calibration run measured, plus ranges computed from it."""

    model_sha256: str
    data_fingerprint: str
    num_bins: int
    num_calib: int
    stats: dict[str, TensorStats]
    ranges: dict[str, dict[str, Range]] = field(default_factory=dict)
    num_holdout: int = 0  # of num_calib: images held out of the statistics to score candidates
    graph: str = "bn-folded"
    choices: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "format": CACHE_FORMAT,
            "model_sha256": self.model_sha256,
            "data_fingerprint": self.data_fingerprint,
            "num_bins": self.num_bins,
            "num_calib": self.num_calib,
            "num_holdout": self.num_holdout,
            "graph": self.graph,
            "choices": self.choices,
            "ranges": {k: {t: list(r) for t, r in v.items()} for k, v in self.ranges.items()},
            "tensors": {name: s.to_dict() for name, s in self.stats.items()},
        }


def ranges_key(method: str, form: str, percentile: float) -> str:
    """The key of one method's ranges inside a cache (settings that change the result only)."""
    key = f"{method}/{form}"
    return f"{key}/p={percentile:g}" if method == "percentile" else key


def _fix() -> str:
    return "delete it or pass --calib-cache to a new file"


def load_cache(path: Path, *, model_sha256: str, data_fingerprint: str | None, num_bins: int,
               graph: str = "bn-folded") -> CalibCache | None:
    """The cache at ``path`` (None if there is no file).

    ``data_fingerprint=None`` means no calibration data was given: the cache's data is accepted.

    Raises :class:`InputError` when the file is corrupt or was made for another model,
    data set or histogram resolution.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
        if not isinstance(d, dict) or d.get("format") != CACHE_FORMAT:
            raise ValueError(f"not an {CACHE_FORMAT} file")
        cache = CalibCache(
            model_sha256=str(d["model_sha256"]),
            data_fingerprint=str(d["data_fingerprint"]),
            num_bins=int(d["num_bins"]),
            num_calib=int(d["num_calib"]),
            stats={str(n): TensorStats.from_dict(s) for n, s in d["tensors"].items()},
            num_holdout=int(d.get("num_holdout", 0)),
            graph=str(d.get("graph", "bn-folded")),
            choices={str(k): dict(v) for k, v in d.get("choices", {}).items()},
            ranges={
                str(k): {str(t): (float(r[0]), float(r[1])) for t, r in v.items()}
                for k, v in d.get("ranges", {}).items()
            },
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise InputError(f"calibration cache {path} is unreadable ({e}); {_fix()}") from e
    why = []
    if cache.model_sha256 != model_sha256:
        why.append(f"model sha256 {cache.model_sha256[:12]}… is not {model_sha256[:12]}…")
    if data_fingerprint is not None and cache.data_fingerprint != data_fingerprint:
        why.append(f"data fingerprint {cache.data_fingerprint!r} is not {data_fingerprint!r}")
    if why:
        raise InputError(f"calibration cache {path} was made for another model/data ({'; '.join(why)}); {_fix()}")
    if cache.num_bins != num_bins:
        raise InputError(f"calibration cache {path} was made with num_bins={cache.num_bins}, not {num_bins}; {_fix()}")
    if cache.graph != graph:
        raise InputError(f"calibration cache {path} was measured on the {cache.graph} graph, not {graph} "
                         f"(--equalize changes the activations); {_fix()}")
    return cache


def save_cache(path: Path, cache: CalibCache) -> Path:
    """Write ``cache`` as JSON, atomically."""
    return write_json(path, cache.to_dict())
