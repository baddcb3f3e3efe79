"""Private files: the home directory's modes, and files created whole or not at all.

sender's home (``.sender`` by default) holds the outbox (names and addresses), the
link key and the capture Maildir, so the directory is 0700 and the files in it 0600.
A home made by an older version, or under a loose umask, is tightened when opened,
if it is ours. A file two processes may create at once (the key, a new outbox) is
written under a temporary name and linked into place, which fails if the name
exists: every process ends up using the one that was linked first.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "create_once",
    "first_time",
    "private_dir",
    "tighten",
    "tighten_home",
]

DIR_MODE = 0o700
FILE_MODE = 0o600


def tighten(path: Path, /) -> None:
    """Take group and other access away from ``path`` if we own it; missing is fine."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_uid != os.getuid() or not stat.S_IMODE(info.st_mode) & 0o077:
        return
    mode = DIR_MODE if stat.S_ISDIR(info.st_mode) else FILE_MODE
    with contextlib.suppress(FileNotFoundError):
        path.chmod(stat.S_IMODE(info.st_mode) & mode)


def tighten_home(home: Path, /) -> None:
    """Tighten the home, the files in it and the directories below it, if ours.

    Mail files inside a Maildir's ``new``, ``cur`` and ``tmp`` are left to the code that
    writes them: those directories are 0700, and listing them on every command would cost
    time in proportion to the mail kept.
    """
    tighten(home)
    _tighten_below(home, depth=3)


def _tighten_below(directory: Path, /, *, depth: int) -> None:
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for entry in entries:
        if entry.is_symlink():
            continue
        path = Path(entry.path)
        tighten(path)
        if depth > 1 and entry.is_dir() and entry.name not in _MAILDIR_LEAVES:
            _tighten_below(path, depth=depth - 1)


_MAILDIR_LEAVES = frozenset({"new", "cur", "tmp"})


def private_dir(path: Path, /) -> Path:
    """Create ``path`` (mode 0700) if missing, or tighten it; return it.

    Parents that have to be made get the default mode: only the home itself is private.
    """
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    tighten(path)
    return path


def create_once(path: Path, write: Callable[[Path], object], /) -> bool:
    """Make ``path`` whole, unless it exists: ``write`` fills a private temporary file.

    Returns True when this call's file was linked into place, False when another
    process (or an earlier run) had made ``path`` first. ``path`` never exists half
    written, so a reader sees either nothing or the complete file.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        os.close(fd)
        write(temporary)
        os.chmod(temporary, FILE_MODE)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def first_time(marker: Path, /) -> bool:
    """True for exactly one caller: the one that creates the empty file ``marker``.

    For notices shown once per home. A marker that cannot be made counts as "not the
    first time" only when it exists; any other failure says True, so a notice is shown
    rather than lost.
    """
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    except OSError:
        return True
    os.close(fd)
    return True
