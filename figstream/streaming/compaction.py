"""Storage that does not grow without bound: the maintenance the ``compact`` command and the
hourly ``storage_compaction_schedule`` run.

- Output fragments: every hour of the :data:`FRAGMENT_TABLES` that ended at least the lateness
  window ago (``compact_fragments_after_seconds``) and still has per-batch fragments is
  compacted into one object (``fragments.compact_hour``; readers give the same rows).
- Day rows: the rows of the days more than ``day_rows_keep_days`` ago are folded into one per
  job (:mod:`figstream.streaming.day_fold`); the end-of-day state of those days can no
  longer be read after it.
- Landing batches: every arrival day that ended at least ``archive_landing_after_days`` ago is
  folded into its archive (``figstream.ingest.archive``), after the landing index has seen
  every one of its batches for every stream, so no reader ever needs to list the landing zone
  to find an archived batch.

Both are idempotent and crash-safe (each writes its new object before it deletes what it
holds), and both take a bound on the work of one call, so a scheduled run stays short and the
next one resumes where it stopped.

Bad inputs tried (see ``tests/figstream/streaming/test_compaction.py``): a naive ``now``, an
hour inside the lateness window, a late fragment of a compacted hour, a re-run batch whose
fragment overrides its compacted rows, a crash between the compacted write and the deletes,
a landed batch the landing index has not seen, and a bound of one hour per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from figstream.ingest import archive
from figstream.settings import StreamingSettings
from figstream.streaming.day_fold import FoldReport, fold_day_rows
from figstream.streaming.fragments import COMPACTED, HourCompaction, compact_hour
from figstream.streaming.landing_index import index_landing
from figstream.streaming.stores import HOUR_FORMAT, INGEST_TABLES, Stores

# The tables whose outputs are per-(hour, batch) fragments: the one list compaction covers.
FRAGMENT_TABLES = (
    "raw_events",
    "board_mergers",
    "clean_postings",
    "deduped_postings",
    "touched_by_job_state",
    "touched_by_dedupe",
    "search_index",  # the hourly index changes
)


@dataclass
class CompactionReport:
    hours: list[HourCompaction] = field(default_factory=list)
    days: list[archive.ArchiveReport] = field(default_factory=list)
    indexed: int = 0  # landed batches the landing index saw first, here
    day_rows: FoldReport = field(default_factory=FoldReport)
    more: bool = False  # the bound stopped it: another call has work to do

    @property
    def fragments(self) -> int:
        return sum(h.fragments for h in self.hours)

    @property
    def batches_archived(self) -> int:
        return sum(d.deleted for d in self.days)

    def summary(self) -> str:
        saved = sum(h.bytes_before - h.bytes_after for h in self.hours)
        landed = sum(d.landed_bytes for d in self.days)
        packed = sum(d.archive_bytes for d in self.days)
        return (
            f"compacted {self.fragments} fragments into {len(self.hours)} hourly objects "
            f"({saved:+,} bytes saved); archived {self.batches_archived} landed batches "
            f"({landed:,} bytes) into {len(self.days)} daily archives ({packed:,} bytes)"
            + (f"; indexed {self.indexed} batches first" if self.indexed else "")
            + f"; {self.day_rows.summary()}"
            + ("; more to do" if self.more else "")
        )


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now={now.isoformat()} is naive; give it a UTC offset")
    return now.astimezone(UTC)


def due_hours(stores: Stores, table: str, before: str) -> list[str]:
    """Hours of ``table`` before ``before`` (an hour key) that still hold per-batch fragments."""
    hours = set()
    for key in stores.objects.list(f"tables/{table}/"):
        hour, _, name = key.removeprefix(f"tables/{table}/").partition("/")
        if name and "/" not in name and name != COMPACTED and hour < before:
            hours.add(hour)
    return sorted(hours)


def compact_fragments(
    stores: Stores, now: datetime, lateness_seconds: int, max_hours: int | None = None
) -> CompactionReport:
    """Compact every (table, hour) past the lateness window at ``now``, at most ``max_hours``."""
    before = (_aware(now) - timedelta(seconds=lateness_seconds)).strftime(HOUR_FORMAT)
    report = CompactionReport()
    # An hour that starts before `before` ended at least the window ago (hours are whole).
    for table in FRAGMENT_TABLES:
        for hour in due_hours(stores, table, before):
            if max_hours is not None and len(report.hours) >= max_hours:
                report.more = True
                return report
            report.hours.append(compact_hour(stores.objects, table, hour))
    return report


def archive_landing(
    stores: Stores, now: datetime, age_days: int, max_days: int | None = None
) -> CompactionReport:
    """Fold each arrival day that ended ``age_days`` or more before ``now`` into its archive,
    at most ``max_days`` days, indexing for every stream any batch the index has not seen."""
    first_kept = (_aware(now) - timedelta(days=age_days)).date().isoformat()
    report = CompactionReport()
    for day, keys in sorted(archive.landed_by_day(stores.objects, first_kept).items()):
        if max_days is not None and len(report.days) >= max_days:
            report.more = True
            break
        for stream in INGEST_TABLES:
            unseen = [k for k in keys if not stores.state.partitions_for(stream, k)]
            if unseen:
                index_landing(stores, stream, unseen)
                report.indexed += len(unseen)
        report.days.append(archive.archive_day(stores.objects, day, keys))
    return report


def fold_old_day_rows(
    stores: Stores, now: datetime, keep_days: int, max_jobs: int | None = None
) -> FoldReport:
    """Fold the day rows of every day ``keep_days`` or more before ``now``'s day (from the
    stores' first partition, the epoch), stopping at the end of the day in which ``max_jobs``
    jobs' rows were read."""
    through = (_aware(now).date() - timedelta(days=keep_days)).isoformat()
    return fold_day_rows(stores.state, through, stores.first_partition[:10], max_jobs)


def compact(
    stores: Stores,
    settings: StreamingSettings,
    now: datetime,
    max_hours: int | None = None,
    max_days: int | None = None,
    max_fold_jobs: int | None = None,
) -> CompactionReport:
    """The three kinds of compaction, with the settings' windows."""
    report = compact_fragments(stores, now, settings.compact_fragments_after_seconds, max_hours)
    landing = archive_landing(stores, now, settings.archive_landing_after_days, max_days)
    report.days, report.indexed = landing.days, landing.indexed
    report.day_rows = fold_old_day_rows(stores, now, settings.day_rows_keep_days, max_fold_jobs)
    report.more = report.more or landing.more or report.day_rows.more
    return report
