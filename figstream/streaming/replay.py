"""Replay: re-feed an event-time range into its hourly partitions from the landing zone or the
landing archive, running the steps the streaming assets run, in their order (ingest, then
clean and dedupe for postings, then job state and the search index).

A replay is a backfill of the hours that overlap ``[start, end)``: every batch the landing index
holds for an hour, read from its landing object or, once archived, from the day's archive.
Event-id claims make it idempotent: an event is materialised by the batch that first claimed
it, so replaying a range that was already ingested writes the same fragments again and adds no
row, and conservation still holds.

Bad inputs tried (see ``tests/figstream/streaming/test_replay.py``): an end at or before the
start, naive times, an unknown stream, a range before the first partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from figstream.ingest import archive
from figstream.streaming import cleaning, dedupe, index_export, ingest, jobs
from figstream.streaming.landing_index import catch_up_index, index_landing
from figstream.streaming.stores import HOUR_FORMAT, INGEST_TABLES, Stores, hour_key


class ReplayError(ValueError):
    """A replay that cannot run as asked; the message says why."""


@dataclass
class StreamReplay:
    stream: str
    batches: int = 0
    records: int = 0
    materialised: int = 0
    duplicates: int = 0
    dead_lettered: int = 0


@dataclass
class ReplayReport:
    partitions: list[str]
    streams: list[StreamReplay] = field(default_factory=list)
    clean_rows: int = 0
    deduped_kept: int = 0
    job_events: int = 0
    index_upserts: int = 0
    index_deletes: int = 0
    indexed: int = 0  # batches the landing index saw first here (landing or archive)

    def lines(self) -> list[str]:
        first, last = self.partitions[0], self.partitions[-1]
        out = [f"replayed {len(self.partitions)} hours, {first} .. {last}"]
        if self.indexed:
            out.append(f"  indexed {self.indexed} landed or archived batches first")
        for s in self.streams:
            out.append(
                f"  {s.stream}: {s.batches} batch reads, {s.records} records, "
                f"{s.materialised} materialised, {s.duplicates} duplicates dropped, "
                f"{s.dead_lettered} dead-lettered"
            )
        out.append(
            f"  clean_postings {self.clean_rows} rows, deduped_postings {self.deduped_kept} "
            f"kept, job_state {self.job_events} events applied, search_index "
            f"{self.index_upserts} upserts and {self.index_deletes} deletes"
        )
        return out


def hours_between(start: datetime, end: datetime) -> list[str]:
    """Hourly partition keys of the hours that overlap ``[start, end)``."""
    for name, moment in (("start", start), ("end", end)):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ReplayError(f"{name} {moment.isoformat()} is naive; give it a UTC offset")
    if end <= start:
        raise ReplayError(f"the end {end.isoformat()} is not after the start {start.isoformat()}")
    hour = datetime.strptime(hour_key(start), HOUR_FORMAT).replace(tzinfo=UTC)
    out = []
    while hour < end:
        out.append(hour.strftime(HOUR_FORMAT))
        hour += timedelta(hours=1)
    return out


def _index_archived(stores: Stores, stream: str, from_day: str) -> int:
    """Index archived batches of arrival days from ``from_day`` the index has not seen (an
    index lost or rebuilt after the archive was written). A batch holds events of its arrival
    time or earlier, so earlier days hold none of the range."""
    seen = stores.state.indexed_batches(stream)
    missing = [
        key
        for day in archive.archived_days(stores.objects)
        if day >= from_day
        for key in archive.read_index(stores.objects, day)
        if key not in seen
    ]
    if missing:
        index_landing(stores, stream, missing)
    return len(missing)


def replay(
    stores: Stores, start: datetime, end: datetime, streams: Sequence[str] | None = None
) -> ReplayReport:
    """Re-feed the hours overlapping ``[start, end)`` of ``streams`` (default: every stream)."""
    streams = list(INGEST_TABLES) if streams is None else list(streams)
    for stream in streams:
        if stream not in INGEST_TABLES:
            raise ReplayError(f"unknown stream {stream!r} (known: {', '.join(INGEST_TABLES)})")
    partitions = hours_between(start, end)
    if partitions[-1] < stores.first_partition:
        raise ReplayError(
            f"the range ends before the first partition {stores.first_partition}: nothing to do"
        )
    partitions = [p for p in partitions if p >= stores.first_partition]
    report = ReplayReport(partitions)
    for stream in streams:
        report.indexed += catch_up_index(stores, stream)
        report.indexed += _index_archived(stores, stream, partitions[0][:10])
        totals = ingest.ingest_range(stores, stream, partitions, None).totals
        counts = (totals.batches, totals.records, totals.materialised, totals.duplicates)
        report.streams.append(StreamReplay(stream, *counts, totals.dead_lettered))
    if "postings" in streams:
        report.clean_rows = cleaning.clean(stores, partitions, None)
        report.deduped_kept = dedupe.dedupe(stores, partitions, None).kept
    report.job_events = jobs.update_job_state(stores, partitions, None).events
    changes = index_export.export_changes(stores, partitions, None)
    report.index_upserts, report.index_deletes = changes.upserts, changes.deletes
    return report
