"""Output paths: edgeres replaces only what it wrote itself, and says so before any work starts.

Every command that writes a file or a folder checks its output path first:

* a path that does not exist is fine if it can be created (no file in the way of its folders, and
  the folder it goes into is writable);
* an existing file is replaced only when edgeres wrote it (an edgeres ONNX, checkpoint, report,
  calibration cache, plot...) or it is empty; any other file — or a symlink — needs ``--force``;
* an existing folder is replaced only when it is empty or holds nothing but what edgeres wrote
  there (a bundle's files as its manifest lists them, the ``make-data`` tree). A folder holding
  anything else is refused even with ``--force``: edgeres never deletes what it did not write.

The checks raise :class:`~edgeres.errors.UsageError` (exit code 2) with one line that names the
option, the path and the way out.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from edgeres.errors import InputError, UsageError

#: What kinds of folder outputs edgeres knows how to recognise as its own.
DIR_KINDS = ("bundle", "data", "tuning-db")


def _parent_problem(path: Path) -> str | None:
    """Why ``path`` cannot be created (a file where a folder must be, an unwritable folder), or None."""
    for parent in path.parents:
        if parent.is_dir():
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"edgeres cannot write in {parent} (permission denied)"
            return None
        if parent.exists() or parent.is_symlink():
            return f"{parent} is a file, not a folder"
    return None


def _check_creatable(path: Path, option: str) -> None:
    why = _parent_problem(path)
    if why:
        raise UsageError(f"{option} {path}: {why}; choose another path")


# -- files -----------------------------------------------------------------------------------

def _json_is_ours(path: Path) -> bool:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(d, dict):
        return False
    if str(d.get("format", "")).startswith("edgeres"):
        return True
    signatures = ({"reference", "artifact", "drop_top1", "agreement_top1"},  # AccuracyReport
                  {"rows", "mode", "int8_drop_top1"},  # SensitivityReport
                  {"model", "epochs"})  # training history
    return any(sig <= d.keys() for sig in signatures)


def _onnx_is_ours(path: Path) -> bool:
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
    return model.producer_name == "edgeres" or any(p.key.startswith("edgeres.") for p in model.metadata_props)


def _checkpoint_is_ours(path: Path) -> bool:
    from edgeres.checkpoint import FORMAT

    try:
        with zipfile.ZipFile(path) as z:
            pickles = [n for n in z.namelist() if n.endswith("data.pkl")]
            return bool(pickles) and FORMAT.encode() in z.read(pickles[0])
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        return False


def _png_is_ours(path: Path) -> bool:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return str(im.info.get("Software", "")).startswith("edgeres")
    except Exception:  # noqa: BLE001 - not an image, or unreadable
        return False


def _csv_is_ours(path: Path) -> bool:
    from dataclasses import fields

    from edgeres.training.state import EpochRecord

    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return False
    return first == ",".join(f.name for f in fields(EpochRecord))


def _head(path: Path, size: int = 4096) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(size)
    except OSError:
        return ""


def _xml_is_ours(path: Path) -> bool:
    """JUnit XML from ``validate --junit``."""
    return '<testsuites name="edgeres"' in _head(path)


def _html_is_ours(path: Path) -> bool:
    """The page of ``edgeres report --html``."""
    return '<meta name="generator" content="edgeres">' in _head(path)


def _md_is_ours(path: Path) -> bool:
    """A ``validate --summary`` file (not the step summary, which is appended to, never replaced)."""
    return _head(path, 256).startswith("### edgeres ")


_SNIFFERS: dict[str, Callable[[Path], bool]] = {
    ".json": _json_is_ours, ".onnx": _onnx_is_ours, ".pt": _checkpoint_is_ours, ".png": _png_is_ours,
    ".csv": _csv_is_ours, ".xml": _xml_is_ours, ".html": _html_is_ours, ".htm": _html_is_ours, ".md": _md_is_ours,
}


def written_by_edgeres(path: str | os.PathLike) -> bool:
    """Whether the regular file ``path`` is one edgeres writes (recognised by its content)."""
    path = Path(path)
    sniff = _SNIFFERS.get(path.suffix.lower())
    return bool(path.is_file() and sniff is not None and sniff(path))


def check_file_output(path: str | os.PathLike, option: str = "--out", *, force: bool = False) -> Path:
    """Check, before any work, that a file output may be written at ``path``; returns it as a Path.

    An existing file must be empty or written by edgeres unless ``force``; a folder is never replaced.
    """
    path = Path(path)
    if path.is_symlink():
        if not force:
            raise UsageError(f"{option} {path} is a symlink (to {os.readlink(path)}); edgeres will not write "
                             "through it: pass --force to replace the link itself, or choose another path")
        return path
    if path.is_dir():
        raise UsageError(f"{option} {path} is an existing folder; name a file in it or elsewhere")
    if path.exists():
        if not path.is_file():
            raise UsageError(f"{option} {path} exists and is not a regular file; choose another path")
        if not force and path.stat().st_size > 0 and not written_by_edgeres(path):
            raise UsageError(f"{option} {path} exists and was not written by edgeres; pass --force to replace "
                             "it, or choose another path")
        return path
    _check_creatable(path, option)
    return path


def check_file_outputs(paths: Iterable[str | os.PathLike], option: str = "--out", *, force: bool = False) -> None:
    for p in paths:
        check_file_output(p, option, force=force)


def check_option_outputs(outputs: Iterable[tuple[str | os.PathLike | None, str]], *, force: bool = False) -> None:
    """:func:`check_file_output` for each ``(path, option)`` given (None: the option was not used)."""
    for path, option in outputs:
        if path is not None:
            check_file_output(path, option, force=force)


def check_calib_cache(path: str | os.PathLike, option: str = "--calib-cache") -> Path:
    """Before any work: an existing ``--calib-cache`` must be an edgeres calibration cache (it is read
    and extended); a new one must be creatable (it is written there, atomically)."""
    from edgeres.quantize.cache import CACHE_FORMAT

    p = Path(path)
    if p.is_file() and not p.is_symlink():
        try:
            fmt = str(json.loads(p.read_text()).get("format"))
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            fmt = ""
        if fmt != CACHE_FORMAT and fmt.startswith(CACHE_FORMAT.rsplit("/", 1)[0] + "/"):
            raise InputError(f"{option} {p} is a calibration cache of another edgeres version ({fmt}, this one "
                             f"reads {CACHE_FORMAT}); name a new file, or delete it to calibrate again")
        if fmt != CACHE_FORMAT:
            raise InputError(f"{option} {p} is not an edgeres calibration cache; name a new file (edgeres "
                             "writes the cache there) or a cache edgeres wrote")
        return p
    return check_file_output(p, option)


# -- folders ---------------------------------------------------------------------------------

def _files_under(root: Path) -> list[Path]:
    """Every non-folder entry under ``root`` (files and symlinks), as paths relative to it, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        out += [(d / n).relative_to(root) for n in filenames]
        out += [(d / n).relative_to(root) for n in dirnames if (d / n).is_symlink()]
    return sorted(out)


def _bundle_owned(root: Path) -> set[str] | None:
    """POSIX paths of the files of the bundle at ``root`` (its manifest included), or None if not a bundle."""
    from edgeres.bundle import FORMAT, MANIFEST

    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    if not isinstance(manifest.get("files"), dict):
        return None
    return {MANIFEST, *manifest["files"]}


def _data_tree_file(rel: Path) -> bool:
    """Whether ``rel`` is a file ``edgeres make-data`` writes: ``train|val/<class>/<class>_NNNNN.png``."""
    from edgeres.data.builtin import BUILTIN_CLASSES

    parts = rel.parts
    return (len(parts) == 3 and parts[0] in ("train", "val") and parts[1] in BUILTIN_CLASSES
            and re.fullmatch(rf"{re.escape(parts[1])}_\d{{5}}\.png", parts[2]) is not None)


def foreign_files(root: str | os.PathLike, kind: str) -> list[Path] | None:
    """Files under the folder ``root`` that edgeres did not write as a ``kind`` output; None when the
    folder is not such an output at all. An empty folder gives []."""
    root = Path(root)
    files = _files_under(root)
    if not files:
        return []
    if kind == "bundle":
        owned = _bundle_owned(root)
        return None if owned is None else [f for f in files if f.as_posix() not in owned or (root / f).is_symlink()]
    if kind == "data":
        mine = [f for f in files if _data_tree_file(f) and not (root / f).is_symlink()]
        return None if not mine else [f for f in files if f not in mine]
    if kind == "tuning-db":
        # ours when it holds edgeres's tuning state (a top-level JSON with an edgeres format); tune only adds
        state = [f for f in files if len(f.parts) == 1 and f.suffix == ".json" and written_by_edgeres(root / f)]
        return [] if state else None
    raise ValueError(f"unknown output kind {kind!r}; one of {DIR_KINDS}")


_WHAT = {"bundle": "an edgeres bundle", "data": "a folder written by `edgeres make-data`",
         "tuning-db": "an edgeres tuning database"}


def check_dir_output(path: str | os.PathLike, option: str = "--out", *, kind: str = "bundle",
                     force: bool = False, adds: bool = False) -> Path:
    """Check, before any work, that the folder output ``path`` (a ``kind`` in :data:`DIR_KINDS`) may
    be (re)written: absent, empty, or holding only what edgeres wrote there. A file or symlink in the
    way needs ``force``; a folder with anything else is refused even then — unless ``adds`` (the
    command only adds files to the folder, e.g. a tuning database), where ``force`` allows it."""
    path = Path(path)
    if adds and path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is an existing file, not a folder; choose a folder path")
    if not adds and (path.is_symlink() or (path.exists() and not path.is_dir())):
        what = f"a symlink (to {os.readlink(path)})" if path.is_symlink() else "an existing file"
        if not force:
            raise UsageError(f"{option} {path} is {what}, not {_WHAT[kind]}; pass --force to replace it, "
                             "or choose another path")
        return path
    if not path.exists():
        _check_creatable(path, option)
        return path
    foreign = foreign_files(path, kind)
    if adds and foreign is None:
        if not force:
            raise UsageError(f"{option} {path} is a folder that is not {_WHAT[kind]}; pass --force to add to it, "
                             "or choose a new path or an empty folder")
        foreign = []
    if foreign is None:
        raise UsageError(f"{option} {path} is a folder that is not {_WHAT[kind]}; edgeres will not replace it "
                         "(even with --force): choose a new path or an empty folder")
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        shown = ", ".join(f.as_posix() for f in foreign[:3]) + more
        raise UsageError(f"{option} {path} is {_WHAT[kind]} that also holds files edgeres did not write ({shown}); "
                         "move them out or choose another path (even --force never deletes them)")
    if not os.access(path, os.W_OK | os.X_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: edgeres cannot write there (permission denied); choose another path")
    return path
