"""The landing archive: old landed batches, one object per arrival day, each batch readable alone.

A day's batches are packed into ``archive/landing/{YYYY-MM-DD}.batches``::

    zstd(batch 1) zstd(batch 2) ... index-json  index-length (8 bytes, LE)  MAGIC (8 bytes)

The index maps each landing key to ``[offset, compressed length, raw length, sha256]``. A reader
reads the 16-byte footer, then the index, then the one batch's range (:meth:`ObjectStore.open`
reads ranges where the store can), so reading a batch back never reads the whole day. The
archive is per arrival day, not per stream and day: a landed batch holds the records of every
stream (routing splits it record by record) and its line numbers name dead letters, so it is
kept whole, and the landing index (unchanged: keys stay the same) says which streams and hours
each batch touches.

Crash safety: :func:`archive_day` writes the whole new archive (the old one's batches plus the
new) under the day's key atomically, and only then deletes the landing objects it holds, each
after checking its bytes against the archive's digest. A crash in between leaves a batch in
both places, with the same bytes; :func:`read_batch` prefers the landing object, and the next
run deletes it. A batch already archived whose landing bytes differ is an error (batches are
immutable), never silently dropped.

Bad inputs tried (see ``tests/figstream/ingest/test_archive.py``): a key that is not a landing
key, a batch of another day, a key absent from the archive, an archive truncated or with a
wrong magic, a landing object that differs from its archived copy, a crash between the archive
write and the deletes, and a second archive run for a day that gained a late batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson
import pyarrow as pa

from figstream.ingest.landing import LANDING_PREFIX, parse_batch_key
from figstream.storage.objects import ObjectStore

ARCHIVE_PREFIX = "archive/landing/"
SUFFIX = ".batches"
MAGIC = b"FSARCH01"
FOOTER = struct.Struct("<Q8s")  # index length, magic
CODEC = "zstd"


class ArchiveError(ValueError):
    """An archive that cannot be read, or a batch whose copies disagree."""


class Entry(NamedTuple):
    offset: int
    length: int  # compressed bytes in the archive
    size: int  # the batch's own bytes
    sha256: str


def archive_key(day: str) -> str:
    return f"{ARCHIVE_PREFIX}{day}{SUFFIX}"


def day_of(key: str) -> str:
    """The arrival day (``YYYY-MM-DD``) of a landing key; ``ValueError`` if it is not one."""
    return parse_batch_key(key)[0].date().isoformat()


def archived_days(objects: ObjectStore) -> list[str]:
    return [
        k.removeprefix(ARCHIVE_PREFIX).removesuffix(SUFFIX)
        for k in objects.list(ARCHIVE_PREFIX)
        if k.endswith(SUFFIX)
    ]


# Parsed indexes by (store, archive key, size). A rewrite of a day's archive only ever adds
# batches, so its size grows and a cached index is never used for a newer archive.
_INDEXES: dict[tuple[str, str, int], dict[str, Entry]] = {}
_CACHED_INDEXES = 8


def read_index(objects: ObjectStore, day: str) -> dict[str, Entry]:
    """Landing key -> :class:`Entry` of a day's archive; empty if the day has none."""
    key = archive_key(day)
    try:
        size = objects.size(key)
    except FileNotFoundError:
        return {}
    cache_key = (repr(objects), key, size)
    if cache_key in _INDEXES:
        return _INDEXES[cache_key]
    with objects.open(key) as source:
        if size < FOOTER.size:
            raise ArchiveError(f"{key}: {size} bytes, shorter than the footer")
        source.seek(size - FOOTER.size)
        length, magic = FOOTER.unpack(source.read(FOOTER.size))
        if magic != MAGIC or length > size - FOOTER.size:
            raise ArchiveError(f"{key}: not a landing archive (bad footer)")
        source.seek(size - FOOTER.size - length)
        raw = orjson.loads(source.read(length))
    index = {k: Entry(*v) for k, v in raw["batches"].items()}
    if len(_INDEXES) >= _CACHED_INDEXES:
        _INDEXES.pop(next(iter(_INDEXES)))
    _INDEXES[cache_key] = index
    return index


def read_archived(objects: ObjectStore, key: str) -> bytes:
    """A batch's bytes from its day's archive; ``FileNotFoundError`` if it is not there."""
    day = day_of(key)
    entry = read_index(objects, day).get(key)
    if entry is None:
        raise FileNotFoundError(f"no landed batch {key!r}: not in the landing zone or archive")
    with objects.open(archive_key(day)) as source:
        source.seek(entry.offset)
        packed = source.read(entry.length)
    try:
        data = pa.decompress(packed, decompressed_size=entry.size, codec=CODEC, asbytes=True)
    except (OSError, ValueError) as exc:  # a damaged frame: say which batch of which archive
        raise ArchiveError(f"{archive_key(day)}: batch {key} cannot be read: {exc}") from None
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ArchiveError(f"{archive_key(day)}: batch {key} does not match its digest")
    return data


def read_batch(objects: ObjectStore, key: str) -> bytes:
    """A landed batch's bytes: its landing object, or its archived copy once that is gone."""
    try:
        return objects.get(key)
    except FileNotFoundError:
        return read_archived(objects, key)


@dataclass
class ArchiveReport:
    day: str
    archived: int = 0  # batches added to the archive by this run
    deleted: int = 0  # landing objects deleted (held by the archive)
    batches: int = 0  # batches the archive holds
    landed_bytes: int = 0  # landing bytes deleted
    archive_bytes: int = 0  # size of the archive object
    keys: list[str] = field(default_factory=list)  # the landing keys deleted


def archive_day(objects: ObjectStore, day: str, keys: Iterable[str]) -> ArchiveReport:
    """Fold the landing batches ``keys`` of arrival day ``day`` into its archive, then delete
    them from the landing zone (see the module docstring for the order and why)."""
    keys = sorted(set(keys))
    for key in keys:
        if day_of(key) != day:
            raise ValueError(f"batch {key} did not arrive on {day}")
    report = ArchiveReport(day)
    old = read_index(objects, day)
    new = [k for k in keys if k not in old]
    target = archive_key(day)
    if new:
        index: dict[str, list] = {}
        offset = 0
        with contextlib.ExitStack() as stack:
            # The old archive stays readable while the new one is written beside it.
            source = stack.enter_context(objects.open(target)) if old else None
            sink = stack.enter_context(objects.writer(target))
            for key in sorted({*old, *new}):
                if key in old:
                    entry = old[key]
                    source.seek(entry.offset)  # copied as stored: no recompression
                    packed = source.read(entry.length)
                    size, digest = entry.size, entry.sha256
                else:
                    data = objects.get(key)
                    packed = pa.compress(data, codec=CODEC, asbytes=True)
                    size, digest = len(data), hashlib.sha256(data).hexdigest()
                sink.write(packed)
                index[key] = [offset, len(packed), size, digest]
                offset += len(packed)
            body = orjson.dumps({"version": 1, "codec": CODEC, "batches": index})
            sink.write(body)
            sink.write(FOOTER.pack(len(body), MAGIC))
        report.archived = len(new)
    held = read_index(objects, day)
    report.batches = len(held)
    for key in keys:
        try:
            data = objects.get(key)
        except FileNotFoundError:
            continue  # deleted by an earlier run that stopped before its report
        if hashlib.sha256(data).hexdigest() != held[key].sha256:
            raise ArchiveError(
                f"landed batch {key} differs from its copy in {target}: batches are immutable"
            )
        objects.delete(key)
        report.deleted += 1
        report.landed_bytes += len(data)
        report.keys.append(key)
    if held:
        report.archive_bytes = objects.size(target)
    return report


def landed_by_day(objects: ObjectStore, before: str) -> dict[str, list[str]]:
    """Landing keys of the arrival days before ``before`` (``YYYY-MM-DD``), by day; a key that
    is not a batch key is left alone."""
    out: dict[str, list[str]] = {}
    for key in objects.list(LANDING_PREFIX):
        day = key.removeprefix(LANDING_PREFIX).split("/", 1)[0]
        if day >= before:
            break  # keys sort by day
        try:
            out.setdefault(day_of(key), []).append(key)
        except ValueError:
            continue
    return out
