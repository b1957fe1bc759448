"""Tables kept out of core as hash buckets, so that a step holds one bucket at a time.

A row's bucket is ``crc32(key) % buckets`` of its UTF-8 key: stable across processes, Python
versions and machines (unlike ``hash``). Each bucket is one Parquet object under a prefix. A
table's ``manifest.json`` beside them names the bucket count, a token that changes whenever a
bucket is rewritten (so readers of derived data can tell whether they are stale), and
per-bucket counts the steps report without reading every bucket.

A table starts as one bucket and is split into :data:`BUCKETS` when it grows past
:data:`SPLIT_ROWS` (``streaming.bucket_state._grown``): a small state is one object a run rewrites,
not the dozens of small ones its few events would touch. Each count has its own object names
(``<prefix>017.parquet`` for :data:`BUCKETS`, ``<prefix>000-of-001.parquet`` for one), so
the layout the manifest names is never overwritten by a split in progress: a crash leaves it
whole, and the split is redone.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from figstream.storage.objects import ObjectStore, write_parquet

# 2.5M jobs (a 5M-event day) make ~40k jobs, ~20 MiB of Arrow, a bucket: a run's memory is its
# events plus one bucket, with room for the state to grow tenfold; more buckets would only add
# files, since a run of a few thousand events touches nearly every bucket anyway.
BUCKETS = 64
# Rows past which a one-bucket table is split into BUCKETS. Below it a run rewrites the whole
# table (a few MiB) in one object; a run of ~100 events would otherwise rewrite ~50 of 64
# buckets, and the per-object cost (a few ms to read, encode, write and fsync each) made up most
# of a small run (state steps 0.4-0.6 s each with 64 buckets, 0.09-0.15 s with one).
SPLIT_ROWS = 50_000
# How bucket objects are written. They are rewritten by nearly every run and read by the next,
# so they are stored plain: no dictionary pages, no compression. On a 7k-row job bucket that
# writes in 4 ms instead of 12 and reads in 3 instead of 5, for twice the bytes (2.8 MB); the
# state is a few hundred MB at most, and only its current objects are kept.
WRITE_OPTIONS = {"compression": "none", "use_dictionary": False}


def bucket_of(values: pa.Array | pa.ChunkedArray, buckets: int = BUCKETS) -> np.ndarray:
    """The bucket of each string (a null counts as the empty string)."""
    return np.fromiter(
        (zlib.crc32((v or "").encode()) % buckets for v in values.to_pylist()),
        dtype=np.int64,
        count=len(values),
    )


def split(table: pa.Table, bucket: np.ndarray) -> dict[int, pa.Table]:
    """bucket -> the rows of ``table`` in it, in their order in ``table``."""
    if not len(bucket):
        return {}
    order = np.argsort(bucket, kind="stable")
    ids, starts = np.unique(bucket[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    ordered = table.take(pa.array(order))  # one gather; each bucket is then a zero-copy slice
    return {int(b): ordered.slice(s, e - s) for b, s, e in zip(ids, starts, ends, strict=True)}


def write_bucket(objects: ObjectStore, key: str, table: pa.Table, **options: object) -> int:
    """Store one bucket (or another object of the state) as Parquet, :data:`WRITE_OPTIONS`."""
    return write_parquet(objects, key, table, **WRITE_OPTIONS, **options)


def bucket_key(prefix: str, bucket: int, buckets: int = BUCKETS) -> str:
    """The object of ``bucket`` of a ``buckets``-bucket layout under ``prefix``."""
    if buckets == BUCKETS:  # the names of the versions that had no other layout
        return f"{prefix}{bucket:03d}.parquet"
    return f"{prefix}{bucket:03d}-of-{buckets:03d}.parquet"


@dataclass
class Manifest:
    """What a bucketed table holds: ``counts[name][bucket]``, and a token that changes with it.

    A step calls :meth:`changing` before it rewrites a bucket and :meth:`save` at its end: the
    token changes before the first bucket does, so even a crash in between tells readers of
    derived data (the search index) that they may be stale.
    """

    key: str
    buckets: int = 1
    token: str = ""
    counts: dict[str, list[int]] = field(default_factory=dict)
    _saved: str = ""
    _changing: bool = False

    @classmethod
    def read(cls, objects: ObjectStore, key: str) -> Manifest | None:
        if not objects.exists(key):
            return None
        data = json.loads(objects.get(key))
        if not isinstance(data.get("buckets"), int) or data["buckets"] < 1:
            raise ValueError(f"{key} names no bucket count: {data.get('buckets')!r}")
        counts = data["counts"]
        return cls(key, data["buckets"], data["token"], counts, json.dumps(counts, sort_keys=True))

    def of(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The bucket of each value in this table's layout."""
        return bucket_of(values, self.buckets)

    def bucket_key(self, prefix: str, bucket: int) -> str:
        return bucket_key(prefix, bucket, self.buckets)

    def keys(self, prefix: str) -> list[str]:
        """Every bucket's object under ``prefix`` (an empty bucket's may not exist)."""
        return [self.bucket_key(prefix, b) for b in range(self.buckets)]

    def count(self, name: str) -> list[int]:
        return self.counts.setdefault(name, [0] * self.buckets)

    def total(self, name: str) -> int:
        return sum(self.count(name))

    def changing(self, objects: ObjectStore) -> None:
        if not self._changing and self.token:  # a new table has no readers to warn yet
            self.write(objects)
        self._changing = True

    def save(self, objects: ObjectStore) -> None:
        """Write the manifest if a bucket or a count changed since it was read."""
        if self._changing or json.dumps(self.counts, sort_keys=True) != self._saved:
            self.write(objects)
        self._changing = False

    def write(self, objects: ObjectStore) -> None:
        self.token = uuid.uuid4().hex
        data = {"buckets": self.buckets, "token": self.token, "counts": self.counts}
        objects.put(self.key, json.dumps(data, sort_keys=True).encode())
        self._saved = json.dumps(self.counts, sort_keys=True)


def merge_sorted(parts: Iterable[Iterator[pa.RecordBatch]], key: str) -> Iterator[pa.Table]:
    """K-way merge of record-batch streams each sorted by ``key`` (unique across streams):
    tables sorted by ``key`` whose concatenation is sorted. Holds one batch per stream.

    Each round emits every buffered row up to the smallest last key among the streams not yet
    exhausted (no stream can still yield a row before it), so at least one buffer empties.
    """
    streams = [iter(p) for p in parts]
    pending: list[pa.Table | None] = [None] * len(streams)
    live = set(range(len(streams)))
    while True:
        for i in sorted(live):
            while pending[i] is None or pending[i].num_rows == 0:
                batch = next(streams[i], None)
                if batch is None:
                    live.discard(i)
                    break
                pending[i] = pa.Table.from_batches([batch])
        held = [i for i, t in enumerate(pending) if t is not None and t.num_rows]
        if not held:
            return
        bounds = [pending[i][key][-1] for i in live]
        bound = min(bounds, key=lambda s: s.as_py()) if bounds else None
        out = []
        for i in held:
            table = pending[i]
            n = table.num_rows if bound is None else pc.sum(pc.less_equal(table[key], bound))
            n = n if isinstance(n, int) else n.as_py() or 0
            out.append(table.slice(0, n))
            pending[i] = table.slice(n)
        yield pa.concat_tables(out).sort_by(key)
