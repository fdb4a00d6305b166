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
DEVICES = ("cpu", "cuda", "dla")
ARCHS = ("x86_64", "aarch64")
_THRESHOLD_KEYS = ("max_drop",)


def _toml_type(value: Any) -> str:
    """The TOML name of ``value``'s type, for error messages."""
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((str, "string"), (int, "integer"), (float, "float"), (Mapping, "table"),
                       ((list, tuple), "array")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


class _Fields:
    """Typed access to one target record; every problem is one line naming the file, the key and
    the expected type or range."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data, self.where = data, where

    def bad(self, key: str, expected: str, value: Any) -> InputError:
        return InputError(f"{self.where}: key '{key}' must be {expected}, got {_toml_type(value)} {value!r}")

    def string(self, key: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or (key == "name" and not value.strip()):
            raise self.bad(key, "a non-empty string" if key == "name" else "a string", value)
        if choices and value not in choices:
            raise InputError(f"{self.where}: {key} {value!r} is not one of {list(choices)}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.data.get(key, list(default))
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise self.bad(key, "an array of non-empty strings (e.g. [\"a\", \"b\"])", value)
        if len(set(value)) != len(value):
            raise InputError(f"{self.where}: key '{key}' lists a value twice: {value!r}")
        return tuple(value)

    def table(self, key: str) -> Mapping[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, Mapping):
            raise self.bad(key, f"a table (a [{key}] section)", value)
        return value


def parse_target(data: Mapping[str, Any], source: str = "<memory>") -> Target:
    """Validate a target record (the parsed TOML) and return a :class:`Target`.

    Every field is checked for its type and range; a problem raises one :class:`InputError`
    line naming the file, the key and what it must be. Backend sections (``[tvm]``,
    ``[tensorrt]``...) must be tables; their contents are checked by the backend.
    """
    where = f"target file {source}"
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise InputError(f"{where} lacks {', '.join(missing)}; add them (see targets/x86-64.toml)")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise InputError(f"{where} has unknown keys {unknown}; allowed: {sorted(_KNOWN)}")
    f = _Fields(data, where)
    name = f.string("name")
    backend = f.string("backend", choices=BACKENDS)
    raw_precisions = data["precisions"]
    if not isinstance(raw_precisions, (list, tuple)) or not raw_precisions or \
            not all(isinstance(p, str) and p in PRECISIONS for p in raw_precisions):
        raise f.bad("precisions", f"a non-empty array, a subset of {list(PRECISIONS)}", raw_precisions)
    precisions = f.strings("precisions")
    default_precision = f.string("default_precision", precisions[0])
    if default_precision not in precisions:
        raise InputError(f"{where}: default_precision {default_precision!r} is not in precisions {list(precisions)}")
    qdq_form = f.string("qdq_form", "tensorrt" if backend == "tensorrt" else "cpu", QDQ_FORMS)
    reduce_range = data.get("reduce_range", False)
    if not isinstance(reduce_range, bool):
        raise f.bad("reduce_range", "true or false", reduce_range)
    batch_size = data.get("batch_size", 1)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise f.bad("batch_size", "a positive integer", batch_size)
    thresholds = f.table("thresholds")
    extra = sorted(set(thresholds) - set(_THRESHOLD_KEYS))
    if extra:
        raise InputError(f"{where}: [thresholds] has unknown keys {extra}; allowed: {list(_THRESHOLD_KEYS)}")
    max_drop = thresholds.get("max_drop", 1.0)
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not 0 <= max_drop <= 100:
        raise f.bad("thresholds.max_drop", "a number of top-1 points from 0 to 100", max_drop)
    for b in BACKENDS:
        f.table(b)
    return Target(
        name=name,
        description=f.string("description", ""),
        backend=backend,
        device=f.string("device", "cuda" if backend == "tensorrt" else "cpu", DEVICES),
        arch=f.string("arch", "x86_64", ARCHS),
        precisions=precisions,
        default_precision=default_precision,
        qdq_form=qdq_form,
        reduce_range=reduce_range,
        batch_size=batch_size,
        max_drop=float(max_drop),
        aliases=f.strings("aliases"),
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


def get_target_from_manifest(b: Any) -> Target:
    """The Target a bundle (anything with ``manifest`` and ``root``) was compiled for, from its manifest."""
    t = dict(b.manifest["target"])
    rec = {k: t[k] for k in ("name", "description", "backend", "device", "arch", "precisions",
                              "default_precision", "qdq_form", "batch_size", "aliases")}
    rec["reduce_range"] = t.get("reduce_range", False)  # absent from bundles made before the option
    rec["thresholds"] = {"max_drop": t["max_drop"]}
    rec[t["backend"]] = t.get("options", {})
    return parse_target(rec, f"{b.root}/manifest.json")
