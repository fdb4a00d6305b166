"""Hardware targets: data, not code.

One TOML file per target under ``targets/`` (shipped in the wheel as the package
``edgeres._targets``). Extra directories come from ``EDGERES_TARGETS_PATH``
(``os.pathsep``-separated) or the ``--targets-dir`` CLI option; a path to a
``.toml`` file is accepted wherever a target name is.
"""

from __future__ import annotations

import difflib
import os
from edgeres.compat import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from edgeres.errors import InputError, TargetNotFound

BACKENDS = ("tvm", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
QDQ_FORMS = ("cpu", "tensorrt")
ENV_PATH = "EDGERES_TARGETS_PATH"


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxy({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


class MappingProxy(dict):
    """A read-only dict (hashable by identity) so a frozen Target stays frozen."""

    def _ro(self, *a: Any, **k: Any) -> None:
        raise TypeError("target options are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _ro  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return id(self)


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Target:
    """A validated hardware target. ``options`` holds the backend's section verbatim."""

    name: str
    description: str
    backend: str
    device: str  # "cpu" | "cuda" | "dla"
    arch: str  # "x86_64" | "aarch64"
    precisions: tuple[str, ...]
    default_precision: str
    qdq_form: str
    batch_size: int = 1
    max_drop: float = 1.0
    aliases: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    reduce_range: bool = False  # 7-bit INT8 weights (x86 integer kernels without VNNI)

    @property
    def fallback_precision(self) -> str:
        """The precision a layer kept out of INT8 runs in: FP16 on GPU targets that have it, else FP32."""
        return "fp16" if self.device != "cpu" and "fp16" in self.precisions else "fp32"

    def options_dict(self) -> dict[str, Any]:
        """A mutable deep copy of the backend options."""
        return _thaw(self.options)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "backend": self.backend,
            "device": self.device,
            "arch": self.arch,
            "precisions": list(self.precisions),
            "default_precision": self.default_precision,
            "qdq_form": self.qdq_form,
            "reduce_range": self.reduce_range,
            "batch_size": self.batch_size,
            "max_drop": self.max_drop,
            "aliases": list(self.aliases),
            "options": self.options_dict(),
        }


_REQUIRED = ("name", "backend", "precisions")
_KNOWN = set(_REQUIRED) | {
    "description", "device", "arch", "default_precision", "qdq_form", "reduce_range", "batch_size",
    "aliases", "thresholds", *BACKENDS,
}


def parse_target(data: Mapping[str, Any], source: str = "<memory>") -> Target:
    """Validate a target record (the parsed TOML) and return a :class:`Target`."""
    where = f"target file {source}"
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise InputError(f"{where} lacks {', '.join(missing)}; add them (see targets/x86-64.toml)")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise InputError(f"{where} has unknown keys {unknown}; allowed: {sorted(_KNOWN)}")
    backend = data["backend"]
    if backend not in BACKENDS:
        raise InputError(f"{where}: backend {backend!r} is not one of {list(BACKENDS)}")
    precisions = tuple(data["precisions"])
    bad = [p for p in precisions if p not in PRECISIONS]
    if not precisions or bad:
        raise InputError(f"{where}: precisions must be a non-empty subset of {list(PRECISIONS)}, got {list(precisions)}")
    default_precision = data.get("default_precision", precisions[0])
    if default_precision not in precisions:
        raise InputError(f"{where}: default_precision {default_precision!r} is not in precisions {list(precisions)}")
    qdq_form = data.get("qdq_form", "tensorrt" if backend == "tensorrt" else "cpu")
    if qdq_form not in QDQ_FORMS:
        raise InputError(f"{where}: qdq_form must be one of {list(QDQ_FORMS)}, got {qdq_form!r}")
    reduce_range = data.get("reduce_range", False)
    if not isinstance(reduce_range, bool):
        raise InputError(f"{where}: reduce_range must be true or false, got {reduce_range!r}")
    batch_size = data.get("batch_size", 1)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"{where}: batch_size must be a positive integer, got {batch_size!r}")
    thresholds = data.get("thresholds", {})
    max_drop = thresholds.get("max_drop", 1.0)
    if not isinstance(max_drop, (int, float)) or max_drop < 0:
        raise InputError(f"{where}: thresholds.max_drop must be a number >= 0, got {max_drop!r}")
    return Target(
        name=str(data["name"]),
        description=str(data.get("description", "")),
        backend=backend,
        device=str(data.get("device", "cuda" if backend == "tensorrt" else "cpu")),
        arch=str(data.get("arch", "x86_64")),
        precisions=precisions,
        default_precision=default_precision,
        qdq_form=qdq_form,
        reduce_range=reduce_range,
        batch_size=batch_size,
        max_drop=float(max_drop),
        aliases=tuple(str(a) for a in data.get("aliases", ())),
        options=_freeze(data.get(backend, {})),
        source=source,
    )


def load_target_file(path: str | os.PathLike) -> Target:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as e:
        raise InputError(f"target file {path} does not exist") from e
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"target file {path} is not valid TOML: {e}") from e
    return parse_target(data, str(path))


def _search_dirs(extra_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    dirs = [Path(d) for d in extra_dirs]
    env = os.environ.get(ENV_PATH, "")
    dirs += [Path(d) for d in env.split(os.pathsep) if d]
    return dirs


def builtin_targets_dir() -> Path:
    """``edgeres/_targets`` in an installed wheel; the checkout's ``targets/`` otherwise."""
    here = Path(__file__).resolve().parent
    packaged = here / "_targets"
    return packaged if packaged.is_dir() else here.parent / "targets"


def _builtin_files() -> list[Path]:
    return sorted(builtin_targets_dir().glob("*.toml"))


def list_targets(extra_dirs: Iterable[str | os.PathLike] = ()) -> list[Target]:
    """All targets: user directories first (they override built-ins of the same name)."""
    found: dict[str, Target] = {}
    files: list[Path] = []
    for d in _search_dirs(extra_dirs):
        if not d.is_dir():
            raise InputError(f"targets directory {d} does not exist; fix --targets-dir or ${ENV_PATH}")
        files += sorted(d.glob("*.toml"))
    files += _builtin_files()
    for f in files:
        t = load_target_file(f)
        found.setdefault(t.name, t)
    return sorted(found.values(), key=lambda t: t.name)


def get_target(name_or_path: str | os.PathLike, extra_dirs: Iterable[str | os.PathLike] = ()) -> Target:
    """Resolve a target by name, alias, or path to a ``.toml`` file."""
    s = str(name_or_path)
    if s.endswith(".toml"):
        return load_target_file(s)
    targets = list_targets(extra_dirs)
    for t in targets:
        if t.name == s or s in t.aliases:
            return t
    names = [t.name for t in targets] + [a for t in targets for a in t.aliases]
    close = difflib.get_close_matches(s, names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise TargetNotFound(f"unknown target {s!r}.{hint} Run `edgeres targets` to list them, or pass a .toml file.")
