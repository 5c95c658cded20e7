"""Write files so that a crash or Ctrl-C never leaves a half-written one: temp file + rename."""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` only if the block succeeds.

    `suffix` defaults to the target's own suffix so writers that pick a format by extension (OpenCV,
    torch.save) behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = None
    try:  # the temp file is removed on any failure, Ctrl-C included, even right after its creation
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix,
                                   dir=path.parent)
        tmp_path = Path(tmp)
        os.close(fd)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; the final file gets the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


# `atomic_path`'s temporary names: "." + final name + "." + mkstemp's 8 random characters + final suffix.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]+)?$")


def _is_temp_name(name: str) -> bool:
    m = _TEMP_NAME.match(name)
    return bool(m) and (m["suffix"] is None or m["name"].endswith(m["suffix"]))


def stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Temporary files `atomic_path` left in `folder` when its process was killed (kill -9 mid-write): only
    names of exactly its pattern, so a user's own dotfiles are never matched."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_temp_name(p.name))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why `folder` cannot take new files (created if missing), or None: checked before long jobs start."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        return f"cannot write to {folder}: {e.strerror or e}"
    return None
