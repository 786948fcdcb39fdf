"""Atomic output: a file is written to a temporary file in the same folder, fsynced, then renamed over the
target (:func:`atomic_path`); a folder (a build) is written as a temporary sibling folder and swapped in as a
whole (:func:`atomic_dir`). A crash or error never leaves a half-written artifact or build. Output locations are
checked before any work (:func:`check_out_file`, :func:`check_out_dir`), so a long run does not fail at its end."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgesp.errors import DataError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system or kernel cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` as a whole (an existing
    folder is swapped out in one atomic rename where the kernel supports it, else moved aside and back on
    failure), on error it is removed and an existing ``path`` is left exactly as it was."""
    import shutil

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(20, "not a folder", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700; give the folder ordinary permissions
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if not path.exists():
            os.rename(tmp, path)
        elif not _exchange(tmp, path):  # fallback: old aside, new in, old back if that fails
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.rename(path, aside / "old")
            try:
                os.rename(tmp, path)
            except OSError:
                os.rename(aside / "old", path)
                raise
            shutil.rmtree(aside, ignore_errors=True)
        # after an exchange, tmp holds the old build: removed below
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- output locations, checked before work
def probe_folder(folder: Path, what: str) -> None:
    """``folder`` (or its nearest existing ancestor, where it would be created) must be a writable folder."""
    anc = folder
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise DataError(f"cannot write {what}: {anc} is a file, not a folder: choose another location")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgesp-write-probe.", dir=anc)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DataError(f"cannot write {what}: {anc} is not writable ({e.strerror}): choose another location") from None


def check_out_dir(path: str | Path, flag: str) -> None:
    """Before any work: an output folder must be a folder (or creatable) in a writable place."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DataError(f"{flag} {p} is a file, not a folder: pass a folder path")
    probe_folder(p, f"{flag} {p}")


def check_out_file(path: str | Path, flag: str) -> None:
    """Before any work: an output file must not be a folder, and its folder must be writable (or creatable)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{flag} {p} is a folder: pass a file name, e.g. {p / 'out'}")
    probe_folder(p.parent if str(p.parent) else Path("."), f"{flag} {p}")
