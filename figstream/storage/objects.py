"""Object storage behind one small interface, with a local-directory implementation.

Keys are ``/``-separated strings, as in S3. :class:`ObjectStore` is what the rest of figstream
(and the Dagster resources that wrap it) depend on; :class:`LocalObjectStore` implements it over
a directory for the ``local`` profile. An S3 implementation (pyarrow ``S3FileSystem`` with an
``endpoint_override``) only has to provide the five abstract methods.

Guarantees of :class:`LocalObjectStore`:

* ``put`` is atomic and durable before it returns: it writes through
  :func:`figstream.storage.files.atomic_file` (a hidden temporary file in the destination
  directory, fsynced, renamed over the key, the directory fsynced), and fsyncs the parents of
  any directory it had to create. A reader sees the old object or the new one, never a
  partial one.
* ``list`` returns full keys in lexicographic (code point, hence UTF-8 byte) order, like S3. It
  never lists the hidden temporary files, and it does not descend into directories whose keys
  all sort at or before ``start_after``, so a cursor over ``landing/{date}/`` stays cheap as
  days accumulate.

Keys are restricted to a portable subset: no empty, ``.`` or ``..`` segments, no segment that
starts with ``.`` (reserved for temporary files), no backslash, NUL or other control character
(a newline in a key would forge lines in logs and listings), at most 1024 UTF-8 bytes and 200
per segment. ``/`` is the only separator and nothing is decoded, so ``%2e%2e`` is a literal
name, never a parent directory. A key cannot also be a prefix of other keys (``a/b`` and
``a/b/c``), which S3 allows but a directory tree does not; ``put`` refuses that with
``FileExistsError``.

Bad inputs tried (see ``tests/figstream/storage/test_objectstore.py``): invalid keys (empty,
``/a``, ``a/``, ``a//b``, ``..``, hidden segments, backslash, NUL, over-long;
``tests/test_security.py`` adds newlines, tabs, ``%2e%2e`` and other hostile identifiers),
reading a missing key or a prefix, putting under an existing object, a crash between writing
and renaming (a stale temporary file stays invisible), concurrent puts of one key,
``start_after`` inside, before and after date directories, and ``limit`` of 0 and below.
"""

from __future__ import annotations

import contextlib
import io
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from figstream.storage.files import atomic_file, fsync_dir

if TYPE_CHECKING:
    import pyarrow as pa

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 200
_BAD_CHARS = ("\\", "\x00")


def _control(text: str) -> str | None:
    """The first control character (C0, DEL, C1) in ``text``, if any."""
    return next((c for c in text if c < " " or "\x7f" <= c <= "\x9f"), None)


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise ``ValueError`` saying why."""
    if not isinstance(key, str):
        raise TypeError(f"object key must be a str, got {type(key).__name__}")
    if not key:
        raise ValueError("object key is empty")
    _check_segments(key, key.split("/"), what="object key")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: any string whose complete segments would be valid in a key."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if prefix:
        # The last segment may be partial ("landing/2026-11-0") or empty ("landing/").
        *whole, last = prefix.split("/")
        _check_segments(prefix, whole, what="prefix")
        if any(c in last for c in _BAD_CHARS) or _control(last) or last.startswith("."):
            raise ValueError(f"prefix {prefix!r}: invalid last segment {last!r}")
    return prefix


def _check_segments(text: str, segments: list[str], what: str) -> None:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError(f"{what} {text[:60]!r}...: longer than {MAX_KEY_BYTES} bytes")
    for segment in segments:
        if not segment:
            raise ValueError(f"{what} {text!r}: empty path segment (leading, trailing or '//')")
        if segment.startswith("."):
            raise ValueError(
                f"{what} {text!r}: segment {segment!r} starts with '.' "
                "(reserved for temporary files; '.' and '..' are never keys)"
            )
        if any(c in segment for c in _BAD_CHARS):
            raise ValueError(f"{what} {text!r}: backslash and NUL are not allowed")
        if (control := _control(segment)) is not None:
            raise ValueError(f"{what} {text!r}: control character {control!r} is not allowed")
        try:
            size = len(segment.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"{what} {text!r}: not valid Unicode text") from None
        if size > MAX_SEGMENT_BYTES:
            raise ValueError(f"{what} {text!r}: segment longer than {MAX_SEGMENT_BYTES} bytes")


class ObjectStore(ABC):
    """Immutable-by-convention blobs under ``/``-separated keys."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically; durable once this returns."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` if there is none."""

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        """A file to write the object into, for an object made a piece at a time (a Parquet
        file row group by row group). It is stored under ``key`` as :meth:`put` stores, atomic
        and durable, when the block ends, and not at all if the block raises. This default
        holds the bytes until then: a store that can stream them (a local file, an S3
        multipart upload) overrides it."""
        buffer = io.BytesIO()
        yield buffer
        self.put(key, buffer.getbuffer())

    def size(self, key: str) -> int:
        """The object's size in bytes; ``FileNotFoundError`` if there is none. This default
        reads it: a store that lists sizes (S3 does) overrides it."""
        return len(self.get(key))

    def open(self, key: str) -> pa.NativeFile:
        """A seekable reader of the object as it is now, so that part of it (a Parquet row
        group) can be read without holding all of its bytes; ``FileNotFoundError`` if there is
        none. This default holds them: a store that can read ranges overrides it."""
        import pyarrow as pa

        return pa.BufferReader(self.get(key))

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "", start_after: str = "", limit: int | None = None) -> list[str]:
        """Keys starting with ``prefix`` and sorting after ``start_after``, sorted, at most
        ``limit`` of them (all when ``None``)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error (as in S3)."""


class LocalObjectStore(ObjectStore):
    """An :class:`ObjectStore` over a local directory (created on the first ``put``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _ensure_dir(self, directory: Path, key: str) -> None:
        if directory.is_dir():
            return
        missing: list[Path] = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise FileExistsError(
                f"cannot put {key!r} in {self}: {probe} is an object, not a prefix"
            )
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                if not path.is_dir():
                    raise FileExistsError(
                        f"cannot put {key!r} in {self}: {path} is an object, not a prefix"
                    ) from None
                continue
            # The new directory entry lives in its parent: make that durable too.
            fsync_dir(path.parent)

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        with self.writer(key) as fh:
            fh.write(data)

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        try:
            with atomic_file(path, make_parent=lambda d: self._ensure_dir(d, key)) as fh:
                yield fh
        except BaseException:
            if path.is_dir():
                raise FileExistsError(
                    f"cannot put {key!r} in {self}: it is a prefix of other keys"
                ) from None
            raise

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(f"no object {key!r} in {self}") from None

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no object {key!r} in {self}")
        return path.stat().st_size

    def open(self, key: str) -> pa.NativeFile:
        """The object's file, read as needed. ``put`` renames a new file over the key, so an
        open reader keeps the object it opened."""
        import pyarrow as pa

        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no object {key!r} in {self}")
        return pa.OSFile(str(path), "r")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "", start_after: str = "", limit: int | None = None) -> list[str]:
        check_prefix(prefix)
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        if limit == 0:
            return []
        dir_key, _, name_prefix = prefix.rpartition("/")
        base = self.root.joinpath(*dir_key.split("/")) if dir_key else self.root
        keys: list[str] = []
        for key in self._walk(base, f"{dir_key}/" if dir_key else "", name_prefix, start_after):
            keys.append(key)
            if limit is not None and len(keys) >= limit:
                break
        return keys

    def _walk(
        self, directory: Path | str, key_prefix: str, name_prefix: str, start_after: str
    ) -> Iterator[str]:
        try:
            scan = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        entries: list[tuple[str, Any]] = []
        with scan:
            for entry in scan:
                name = entry.name
                if name.startswith(".") or not name.startswith(name_prefix):
                    continue
                # Sorting a directory as "name/" puts "b-c" before "b/x", as full keys sort.
                if entry.is_dir(follow_symlinks=False):
                    entries.append((name + "/", entry))
                elif entry.is_file(follow_symlinks=False):
                    entries.append((name, entry))
        entries.sort(key=lambda item: item[0])
        for sort_name, entry in entries:
            key = key_prefix + sort_name
            if sort_name.endswith("/"):
                # Every key under `key` sorts at or before start_after: skip the whole subtree.
                if start_after > key and not start_after.startswith(key):
                    continue
                yield from self._walk(entry.path, key, "", start_after)
            elif key > start_after:
                yield key

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return  # no such object (a prefix is not one)
        fsync_dir(path.parent)
        self._prune(path.parent)

    def _prune(self, directory: Path) -> None:
        """Remove now-empty directories up to (not including) the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def write_parquet(store: ObjectStore, key: str, table: pa.Table, **options: Any) -> int:
    """Write ``table`` as one Parquet object; return its size in bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    buffer = sink.getvalue()
    store.put(key, memoryview(buffer))
    return buffer.size


def read_parquet(store: ObjectStore, key: str, columns: list[str] | None = None) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(store.get(key)), columns=columns)
