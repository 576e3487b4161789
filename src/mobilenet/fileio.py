"""Atomic file writes: a checkpoint or export is either the old file or the complete new one, never half."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mobilenet.errors import MobilenetError

# Errors that say where the file goes is unusable, not that our code is wrong.
_LOCATION_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is fsynced and renamed over ``path``."""
    target = Path(path)
    refuse_folder(target)
    tmp = _temporary_beside(target)
    try:
        with _location_errors(target):
            yield tmp
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            tmp.chmod(0o666 & ~_umask())  # mkstemp makes files private; a saved model should read like any file
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def refuse_folder(target: Path) -> None:
    """A file is about to be written at ``target``: a folder there is the user's mistake, said in one line."""
    if target.is_dir():
        raise MobilenetError(f"cannot write {target}: it is a folder; pass a file path")


@contextlib.contextmanager
def _location_errors(path: Path) -> Iterator[None]:
    """OSErrors that say the location is unusable become one-line errors naming ``path``; others stay bugs."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _LOCATION_ERRORS:
            raise unwritable(path, exc) from None
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def make_output_folder(path: str | os.PathLike[str]) -> Path:
    """Create an output folder (and its parents), or say in one line why it cannot be one."""
    folder = Path(path)
    with _location_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise MobilenetError(f"cannot write into {folder}: permission denied; choose another output folder")
    return folder


def unwritable(path: Path, exc: OSError) -> MobilenetError:
    reason = "a file is in the way" if exc.errno in (errno.EEXIST, errno.ENOTDIR) else exc.strerror
    return MobilenetError(f"cannot write {path}: {reason}; choose another output location")


def _temporary_beside(target: Path) -> Path:
    """An empty file beside ``target``, with its suffix: some writers (torch.export) check the extension."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    except OSError as exc:  # nothing was written yet: whatever the cause, it is the location
        raise unwritable(target, exc) from None
    os.close(fd)
    return Path(name)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def read_label_file(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored), or a one-line error saying what is wrong."""
    file = Path(path)
    expected = "a text file with one class name per line"
    if file.is_dir():
        raise MobilenetError(f"labels file {file} is a folder; pass {expected}")
    if not file.is_file():
        raise MobilenetError(f"labels file not found: {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MobilenetError(f"labels file {file} is not UTF-8 text; pass {expected}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise MobilenetError(f"labels file {file} is empty; pass {expected}")
    return names


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None: JSON has no NaN, and strict parsers reject the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def dump_json(value: Any) -> str:
    """Indented, strict JSON (non-finite numbers as null) for reports, on screen or on disk."""
    return json.dumps(json_safe(value), indent=2, allow_nan=False)


def as_path(value: Any, what: str) -> Path:
    """``value`` as a Path, or a one-line error naming the argument: pathlib's TypeError names neither."""
    if isinstance(value, (str, os.PathLike)) and str(value):
        return Path(value)
    raise MobilenetError(f"{what} must be a path (a string or pathlib.Path), got {value!r}")
