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
import mailbox
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "KEY_WARNING",
    "add_private",
    "create_once",
    "first_time",
    "private_dir",
    "private_maildir",
    "tighten",
    "tighten_home",
]

DIR_MODE = 0o700
FILE_MODE = 0o600
KEY_WARNING = "key-warning"  # marker: the generated key's warning was shown in this home


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
    """Tighten the home and what sender keeps in it, if ours; nothing else in it.

    A home may be a folder that holds other things too (``--home .``), so only sender's
    own files and folders are touched, and the home itself only when it holds nothing
    else (a project folder keeps its mode). Mail files inside a Maildir's ``new``,
    ``cur`` and ``tmp`` are left to the code that writes them: those folders are 0700,
    and listing them on every command would cost time in proportion to the mail kept.
    """
    if _only_ours(home):
        tighten(home)
    for name in _OWN_FILES:
        tighten(home / name)
    for folder in _OWN_FOLDERS:
        if not (home / folder).is_symlink():
            tighten(home / folder)


def _only_ours(home: Path) -> bool:
    """True when every entry of ``home`` is sender's (its files, folders, temporary files)."""
    try:
        names = os.listdir(home)
    except OSError:
        return False
    own = {*_OWN_FILES, *(folder.partition("/")[0] for folder in _OWN_FOLDERS)}
    return all(name in own or (name.endswith(".tmp") and name.startswith(".")) for name in names)


_MAILDIR = ("tmp", "new", "cur")
_OWN_FILES = (
    "outbox.sqlite3",
    "outbox.sqlite3-wal",
    "outbox.sqlite3-shm",
    "outbox.sqlite3-journal",
    "secret.key",
    KEY_WARNING,
)
_OWN_FOLDERS = tuple(
    f"{box}/{sub}".rstrip("/")
    for box in ("maildir", "inbound", "inbound/unprocessed", "inbound/for-people")
    for sub in ("", *(_MAILDIR if box != "inbound" else ()))
)


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


def private_maildir(path: Path, /) -> mailbox.Maildir:
    """A Maildir at ``path``, made or tightened to 0700 folders and 0600 files.

    Kept mail holds login links and addresses. Also mends a Maildir that lost a folder.
    """
    private_dir(path)
    for sub in ("tmp", "new", "cur"):
        private_dir(path / sub)
        for entry in os.scandir(path / sub):
            tighten(Path(entry.path))
    return mailbox.Maildir(path, factory=None, create=False)


def add_private(box: mailbox.Maildir, maildir: Path, data: bytes, /) -> str:
    """Add one message to ``box`` (at ``maildir``) as a 0600 file; mailbox follows the umask."""
    key = box.add(data)
    os.chmod(maildir / "new" / key, FILE_MODE)
    return key
