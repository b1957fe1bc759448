"""The landing archive: one object per arrival day, each batch read back alone by its key.

Bad inputs tried: a key that is not a landing key, a batch of another day, a key the archive
does not hold, a truncated archive and one with a wrong magic, a landing object whose bytes
differ from its archived copy, a crash between the archive write and the deletes, and a second
run for a day that gained a late batch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from figstream.ingest import archive
from figstream.ingest.landing import LANDING_PREFIX, batch_key
from figstream.storage.objects import LocalObjectStore

DAY = "2026-11-02"


def land(objects: LocalObjectStore, n: int, start: int = 0) -> dict[str, bytes]:
    out = {}
    for seq in range(start, start + n):
        key = batch_key(datetime(2026, 11, 2, 9, tzinfo=UTC) + timedelta(minutes=seq), "p", seq)
        data = b"\n".join(b'{"id": "e%d-%d", "pad": "%s"}' % (seq, i, b"x" * 40) for i in range(50))
        objects.put(key, data)
        out[key] = data
    return out


class NoWholeReads(LocalObjectStore):
    """A store that refuses to read an archive whole: readers must read ranges."""

    def get(self, key: str) -> bytes:
        assert not key.startswith(archive.ARCHIVE_PREFIX), f"read {key} whole"
        return super().get(key)


def test_a_day_archived_reads_back_batch_by_batch(tmp_path):
    objects = NoWholeReads(tmp_path)
    landed = land(objects, 5)
    report = archive.archive_day(objects, DAY, landed)
    assert (report.archived, report.deleted, report.batches) == (5, 5, 5)
    assert objects.list(LANDING_PREFIX) == []
    assert objects.list(archive.ARCHIVE_PREFIX) == [archive.archive_key(DAY)]
    assert report.archive_bytes < sum(map(len, landed.values())) / 3  # zstd per batch
    for key, data in landed.items():
        assert archive.read_batch(objects, key) == data
    missing = batch_key(datetime(2026, 11, 2, 23, tzinfo=UTC), "p", 99)
    with pytest.raises(FileNotFoundError, match="not in the landing zone or archive"):
        archive.read_batch(objects, missing)
    with pytest.raises(ValueError, match="not a landing batch key"):
        archive.read_batch(objects, "landing/nope.jsonl")


def test_a_late_batch_joins_the_days_archive(tmp_path):
    objects = LocalObjectStore(tmp_path)
    landed = land(objects, 3)
    archive.archive_day(objects, DAY, landed)
    late = land(objects, 2, start=10)
    report = archive.archive_day(objects, DAY, late)
    assert (report.archived, report.batches) == (2, 5)
    for key, data in {**landed, **late}.items():
        assert archive.read_batch(objects, key) == data


def test_a_crash_before_the_deletes_leaves_batches_readable_and_a_rerun_finishes(
    tmp_path, monkeypatch
):
    objects = LocalObjectStore(tmp_path)
    landed = land(objects, 4)
    calls = []

    def crash(key):
        calls.append(key)
        if len(calls) == 2:
            raise OSError("killed")
        LocalObjectStore.delete(objects, key)

    monkeypatch.setattr(objects, "delete", crash)
    with pytest.raises(OSError):
        archive.archive_day(objects, DAY, landed)
    monkeypatch.undo()
    assert len(objects.list(LANDING_PREFIX)) == 3  # in both places now
    assert all(archive.read_batch(objects, k) == d for k, d in landed.items())
    report = archive.archive_day(objects, DAY, objects.list(LANDING_PREFIX))
    assert (report.archived, report.deleted, report.batches) == (0, 3, 4)
    assert objects.list(LANDING_PREFIX) == []


def test_copies_that_differ_are_an_error_and_nothing_is_deleted(tmp_path):
    objects = LocalObjectStore(tmp_path)
    landed = land(objects, 2)
    key = sorted(landed)[0]
    archive.archive_day(objects, DAY, [key])
    objects.put(key, b"changed")
    with pytest.raises(archive.ArchiveError, match="immutable"):
        archive.archive_day(objects, DAY, landed)
    assert objects.get(key) == b"changed"


def test_other_days_and_broken_archives_are_refused(tmp_path):
    objects = LocalObjectStore(tmp_path)
    landed = land(objects, 1)
    with pytest.raises(ValueError, match="did not arrive on 2026-11-03"):
        archive.archive_day(objects, "2026-11-03", landed)
    key = next(iter(landed))
    objects.put(archive.archive_key(DAY), b"short")
    objects.delete(key)
    with pytest.raises(archive.ArchiveError, match="shorter than the footer"):
        archive.read_batch(objects, key)
    objects.put(archive.archive_key(DAY), b"x" * 64)
    with pytest.raises(archive.ArchiveError, match="bad footer"):
        archive.read_batch(objects, key)


def test_landed_by_day_takes_days_before_the_cut_and_skips_foreign_keys(tmp_path):
    objects = LocalObjectStore(tmp_path)
    landed = land(objects, 2)
    objects.put("landing/2026-11-02/README.txt", b"not a batch")
    later = batch_key(datetime(2026, 11, 4, tzinfo=UTC), "p", 1)
    objects.put(later, b"{}")
    assert archive.landed_by_day(objects, "2026-11-04") == {DAY: sorted(landed)}
    assert archive.landed_by_day(objects, "2026-11-02") == {}
