"""Atomic, durable writes of local files: the one temp-then-rename writer figstream has.

A file is written to a hidden temporary file beside it (``.{name}.{random}.tmp``: readers that
list or glob never see it), flushed and fsynced, renamed over the target with ``os.replace``,
and then the directory is fsynced, so that a reader sees the old file or the new one, never
part of one, and a crash after the call returns loses neither. If writing fails, the temporary
file is removed and the target is untouched.

:class:`figstream.storage.objects.LocalObjectStore`, the generated dataset
(:mod:`figstream.ingest.dataset`) and the migration ledger all write through it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


def fsync_dir(path: Path | str) -> None:
    """Make entries created, renamed or removed in ``path`` durable."""
    if os.name == "nt":
        return  # Windows cannot open a directory; NTFS journals the rename itself.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems (network, FUSE) refuse fsync on a directory; nothing more to do.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(
    path: Path,
    *,
    buffering: int = -1,
    mode: int | None = None,
    sync_directory: bool = True,
    make_parent: Callable[[Path], None] | None = None,
) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; it replaces ``path`` when the block
    ends, and not at all if the block raises.

    ``mode`` sets the permission bits (else those of a new file under the umask).
    ``sync_directory=False`` leaves the directory fsync to a caller that writes a run of files
    into one directory and fsyncs it once at the end. ``make_parent(directory)`` is called
    before the temporary file is opened, and again (twice at most) if the directory vanished
    meanwhile, as it can in a store that prunes empty directories.
    """
    path = Path(path)
    directory = path.parent
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for attempt in range(3):
        if make_parent is not None:
            make_parent(directory)
        # Unique per writer, hidden, and not ending in the target's suffix: never listed.
        tmp = directory / f".{path.name}.{secrets.token_hex(8)}{TMP_SUFFIX}"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileNotFoundError:
            if make_parent is None or attempt == 2:
                raise
    try:
        with os.fdopen(fd, "wb", buffering) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_directory:
        fsync_dir(directory)


def write_atomic(
    path: Path, chunks: Iterable[bytes], *, mode: int | None = None, sync_directory: bool = True
) -> None:
    """Write ``chunks`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path, mode=mode, sync_directory=sync_directory) as fh:
        fh.writelines(chunks)
