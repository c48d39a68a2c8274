"""Files and directories that hold state are readable by their owner only.

What lumos writes under ``LUMOS_HOME`` (the run store, logs, job results, the serve
state file) holds prompts, model outputs, tool arguments and sometimes credentials.
With the usual umask (022) a plain ``open(..., "w")`` or ``mkdir`` makes them readable
by every user of the machine, so state files are created ``0600`` and state
directories ``0700`` here, whatever the umask. A file or directory that already exists
with looser bits (written by an older release) is tightened when lumos opens it again,
if this user owns it; what belongs to someone else is left alone (chmod would fail, and
it is theirs to decide).

Directories that already existed *above* the one asked for (``/srv`` above
``/srv/lumos/runs.db``) are never changed: lumos tightens only what it created or what
is its own state directory.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "is_lumos_home",
    "open_private_append",
    "private_dir",
    "private_file",
    "tighten",
    "write_private_text",
]

#: Mode of every state file lumos creates (owner read/write).
FILE_MODE = 0o600
#: Mode of every state directory lumos creates (owner only).
DIR_MODE = 0o700


def is_lumos_home(path: str | Path) -> bool:
    """Whether ``path`` is this process's ``LUMOS_HOME`` (default ``.lumos``): lumos's
    own state directory, which is always tightened to ``0700``."""
    home = Path(os.environ.get("LUMOS_HOME") or ".lumos").expanduser().resolve()
    return Path(path).expanduser().resolve() == home


def tighten(path: str | Path, mode: int) -> None:
    """Drop every permission bit of ``path`` outside ``mode`` (never adds one), if this
    user owns it. Missing paths and other users' paths are left as they are."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    current = stat.S_IMODE(st.st_mode)
    if st.st_uid == os.getuid() and current & ~mode:
        os.chmod(path, current & mode)


def private_dir(path: str | Path, *, tighten_existing: bool = True) -> Path:
    """Create ``path`` and its missing parents as ``0700`` directories.

    ``tighten_existing``: also drop group/other bits of ``path`` itself when it already
    existed (right for lumos's own directories such as ``LUMOS_HOME``; wrong for a
    directory the user chose to share, e.g. the folder a store file lives in)."""
    target = Path(path).expanduser()
    missing: list[Path] = []
    cur = target
    while not cur.exists() and cur != cur.parent:
        missing.append(cur)
        cur = cur.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue  # made by another process meanwhile: its creator chose the mode
        os.chmod(d, DIR_MODE)  # mkdir's mode is reduced by the umask, never widened
    if not missing and tighten_existing:
        tighten(target, DIR_MODE)
    return target


def private_file(path: str | Path) -> Path:
    """Make sure ``path`` exists as a ``0600`` file (created empty when missing, never
    truncated); an existing file of this user is tightened to ``0600``.

    An existing file is never opened here, only stat'ed and chmod'ed. Why: closing any
    descriptor of a file drops *every* POSIX advisory lock this process holds on it,
    and SQLite locks its database with them (SQLite's "How To Corrupt Your Database
    Files" lists this). A process that opens a second store or platform object on the
    same file while another of its connections holds a lock must not touch the file."""
    p = Path(path).expanduser()
    if not p.exists():
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:  # made by someone else just now: only tighten it
            pass
        else:
            os.close(fd)
    tighten(p, FILE_MODE)
    return p


def write_private_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file + rename) as a ``0600`` file:
    a reader never sees half a file, and the content is never readable by others,
    not even for a moment (the temp file is created ``0600``)."""
    target = Path(path).expanduser()
    # a name of its own per write (O_EXCL): concurrent writers never share a temp file
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def open_private_append(path: str | Path) -> BinaryIO:
    """``open(path, "ab")``, but a new file is ``0600`` and an existing one is tightened
    (logs hold what the processes printed: prompts, errors, sometimes request bodies)."""
    p = Path(path).expanduser()
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    tighten(p, FILE_MODE)
    return os.fdopen(fd, "ab")
