"""Compaction of output fragments per hour and of landed batches per day: every reader gives
the rows it gave before, a backfill included.

Bad inputs tried: a naive ``now``; hours inside the lateness window (left alone); a batch
re-run after its hour was compacted (its fragment must override, not add to, its compacted
rows); a late batch landing in a compacted hour; a crash after the compacted object is
written and before the fragments are deleted; a fragment rewritten while it is compacted; a
bound of one hour per call; landed batches the landing index never saw, archived.
"""

from __future__ import annotations

import datetime as dt
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from figstream.ingest import archive
from figstream.ingest.dataset import generate
from figstream.ingest.landing import LANDING_PREFIX, parse_batch_key
from figstream.settings import StreamingSettings
from figstream.streaming import (
    compaction,
    fragments,
    index_export,
    ingest,
    landing_index,
    replay,
    tables,
)
from figstream.streaming.stores import INGEST_TABLES, Stores, day_partitions

EPOCH = "2026-11-01"
DAYS = ["2026-11-01", "2026-11-02"]
HOURS = [h for d in DAYS for h in day_partitions(d)]
LATER = datetime(2026, 12, 2, tzinfo=UTC)  # every hour and day above is past every window
SCHEMAS = {
    "raw_events": tables.EVENTS_SCHEMA,
    "board_mergers": tables.EVENTS_SCHEMA,
    "clean_postings": tables.POSTINGS_SCHEMA,
    "deduped_postings": tables.POSTINGS_SCHEMA,
    "touched_by_job_state": tables.TOUCHED_SCHEMA,
    "touched_by_dedupe": tables.TOUCHED_SCHEMA,
    "search_index": index_export.CHANGE_SCHEMA,
}


def make_world(home: Path) -> Stores:
    generate(home, dt.date.fromisoformat(EPOCH), 2, 300, seed=5, bad_rate=0.05, progress=False)
    stores = Stores.local(home, f"{EPOCH}-00:00")
    replay.replay(stores, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC))
    return stores


def picks(stores: Stores, table: str, hour: str) -> list[list[str] | None]:
    """Batch selections to read an hour with: all (a backfill), each batch, pairs, none."""
    ids = fragments.batch_ids_in(stores.objects, table, hour)
    return [None, [], *([b] for b in ids), ids[::2], [*ids[1::2], "no-such-batch"]]


def snapshot(stores: Stores) -> dict:
    out = {}
    for table, schema in SCHEMAS.items():
        for hour in HOURS:
            for pick in picks(stores, table, hour):
                key = (table, hour, None if pick is None else tuple(pick))
                out[key] = fragments.read_fragments(stores.objects, table, [hour], pick, schema)
        out[(table, "all")] = fragments.read_fragments(stores.objects, table, HOURS, None, schema)
    return out


def assert_same(before: dict, after: dict, rerun: bool = False) -> None:
    assert before.keys() == after.keys()
    for key, rows in before.items():
        if rerun and key[0] == "search_index":
            # A re-run's index changes are the store's verdicts when it ran again (later
            # events may have changed a job since): the index they make is checked instead.
            continue
        assert after[key].equals(rows), key


def loose(stores: Stores) -> list[str]:
    return [k for k in stores.objects.list("tables/") if k.endswith(".parquet")
            and not k.endswith(fragments.COMPACTED) and k.split("/")[1] in SCHEMAS]  # fmt: skip


@pytest.fixture(scope="module")
def world_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("world")


def copy_world(world_home: Path, tmp_path: Path) -> Stores:
    import shutil

    if not (world_home / "landing").exists():
        make_world(world_home)
    shutil.copytree(world_home, tmp_path / "home")
    return Stores.local(tmp_path / "home", f"{EPOCH}-00:00")


@pytest.mark.slow  # ~30-40 s on the 2-core machine: runs in make test-slow (CI runs both)
def test_readers_give_the_same_rows_after_compaction(world_home, tmp_path):
    stores = copy_world(world_home, tmp_path)
    before = snapshot(stores)
    assert before[("raw_events", "all")].num_rows > 500  # a world worth compacting
    hours_with_fragments = {tuple(k.split("/")[1:3]) for k in loose(stores)}
    report = compaction.compact_fragments(stores, LATER, 21_600)
    assert len(report.hours) == len(hours_with_fragments) and report.fragments > 0
    assert loose(stores) == []
    assert_same(before, snapshot(stores))
    # Idempotent: a second run finds nothing to do.
    assert compaction.compact_fragments(stores, LATER, 21_600).hours == []


def test_hours_inside_the_lateness_window_are_left_alone(world_home, tmp_path):
    stores = copy_world(world_home, tmp_path)
    # At 2026-11-02T18:30 with a 6 h window, hours up to 11:00 (ending 12:00) are due.
    now = datetime(2026, 11, 2, 18, 30, tzinfo=UTC)
    report = compaction.compact_fragments(stores, now, 6 * 3600)
    done = {h.partition for h in report.hours}
    assert max(done) == "2026-11-02-11:00"
    assert all(k.split("/")[2] >= "2026-11-02-12:00" for k in loose(stores))
    with pytest.raises(ValueError, match="naive"):
        compaction.compact_fragments(stores, datetime(2026, 11, 3), 3600)


@pytest.mark.slow  # ~30-40 s on the 2-core machine: runs in make test-slow (CI runs both)
def test_a_batch_re_run_after_compaction_is_not_counted_twice(world_home, tmp_path):
    stores = copy_world(world_home, tmp_path)
    before = snapshot(stores)
    index = index_export.current_index(stores.objects)
    compaction.compact_fragments(stores, LATER, 21_600)
    assert index_export.current_index(stores.objects).equals(index)
    # A backfill of every hour of both days re-ingests and re-cleans every batch: per-batch
    # fragments come back beside the compacted objects.
    replay.replay(stores, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC))
    assert loose(stores)
    assert_same(before, snapshot(stores), rerun=True)
    assert index_export.current_index(stores.objects).equals(index)
    compaction.compact_fragments(stores, LATER, 21_600)  # folds them in
    assert loose(stores) == []
    assert_same(before, snapshot(stores), rerun=True)
    assert index_export.current_index(stores.objects).equals(index)


def test_a_fragment_overrides_its_batchs_compacted_rows(tmp_path):
    from figstream.storage.objects import LocalObjectStore, write_parquet

    objects = LocalObjectStore(tmp_path)
    hour = "2026-11-02-10:00"
    schema = pa.schema([("event_id", pa.string()), ("batch_id", pa.string())])

    def put(batch_id: str, ids: list[str]) -> None:
        rows = pa.table({"event_id": ids, "batch_id": [batch_id] * len(ids)}, schema=schema)
        write_parquet(objects, f"tables/t/{hour}/{batch_id}.parquet", rows)

    def read(pick):
        return fragments.read_fragments(objects, "t", [hour], pick, schema)["event_id"].to_pylist()

    put("b1", ["a", "b"]), put("b2", ["c"]), put("b3", [])
    fragments.compact_hour(objects, "t", hour)
    assert objects.list(f"tables/t/{hour}/") == [fragments.compacted_key("t", hour)]
    assert fragments.batch_ids_in(objects, "t", hour) == ["b1", "b2", "b3"]
    put("b1", ["a"])  # a re-run that now keeps fewer rows
    put("b0", ["z"])  # a late batch
    assert read(None) == ["z", "a", "c"]
    assert read(["b1"]) == ["a"] and read(["b2", "b3"]) == ["c"] and read(["b9"]) == []
    fragments.compact_hour(objects, "t", hour)
    assert read(None) == ["z", "a", "c"]
    assert fragments.batch_ids_in(objects, "t", hour) == ["b0", "b1", "b2", "b3"]


def test_a_crash_between_the_compacted_write_and_the_deletes_changes_no_read(
    world_home, tmp_path, monkeypatch
):
    stores = copy_world(world_home, tmp_path)
    before = snapshot(stores)
    deletes = []

    def crash(key: str) -> None:
        deletes.append(key)
        if len(deletes) == 3:
            raise OSError("killed")
        type(stores.objects).delete(stores.objects, key)

    monkeypatch.setattr(stores.objects, "delete", crash)
    with pytest.raises(OSError):
        compaction.compact_fragments(stores, LATER, 21_600)
    monkeypatch.undo()
    left = loose(stores)
    assert any(stores.objects.exists(fragments.compacted_key(*k.split("/")[1:3])) for k in left)
    assert_same(before, snapshot(stores))  # fragments and compacted rows, not both counted
    compaction.compact_fragments(stores, LATER, 21_600)
    assert loose(stores) == []
    assert_same(before, snapshot(stores))


def test_a_fragment_rewritten_while_compacted_is_kept(tmp_path, monkeypatch):
    from figstream.storage.objects import LocalObjectStore, write_parquet

    objects = LocalObjectStore(tmp_path)
    hour = "2026-11-02-10:00"
    key = f"tables/t/{hour}/b1.parquet"
    write_parquet(objects, key, pa.table({"event_id": ["a"], "batch_id": ["b1"]}))
    real_write = fragments.write_parquet

    def racing_write(store, target, rows, **options):  # a re-run lands as compaction writes
        size = real_write(store, target, rows, **options)
        write_parquet(objects, key, pa.table({"event_id": ["a2"], "batch_id": ["b1"]}))
        return size

    monkeypatch.setattr(fragments, "write_parquet", racing_write)
    report = fragments.compact_hour(objects, "t", hour)
    assert (report.fragments, report.kept) == (0, 1) and objects.exists(key)
    schema = pa.schema([("event_id", pa.string())])
    rows = fragments.read_fragments(objects, "t", [hour], None, schema)
    assert rows["event_id"].to_pylist() == ["a2"]


def test_a_bound_stops_a_call_and_the_next_resumes(world_home, tmp_path):
    stores = copy_world(world_home, tmp_path)
    first = compaction.compact_fragments(stores, LATER, 21_600, max_hours=1)
    assert len(first.hours) == 1 and first.more
    rest = compaction.compact_fragments(stores, LATER, 21_600)
    assert not rest.more and loose(stores) == []
    assert first.hours[0].partition not in {h.partition for h in rest.hours if h.table ==
                                            first.hours[0].table}  # fmt: skip


def test_archived_landing_reads_back_and_a_backfill_gives_the_same_rows(world_home, tmp_path):
    stores = copy_world(world_home, tmp_path)
    landed = {k: stores.objects.get(k) for k in stores.objects.list(LANDING_PREFIX)}
    # A batch the landing index has not seen yet (it landed after the last sensor tick).
    late = sorted(landed)[5]
    stores.state = type(stores.state)(tmp_path / "fresh-state.sqlite")
    for stream in INGEST_TABLES:
        landing_index.index_landing(stores, stream, [k for k in landed if k != late])
    before = {(s, h): stores.state.batch_counts(s, h) for s in INGEST_TABLES for h in ["", *HOURS]}
    report = compaction.archive_landing(stores, LATER, 3)
    assert report.indexed == len(INGEST_TABLES)  # the late batch, once per stream
    assert stores.objects.list(LANDING_PREFIX) == []
    assert report.batches_archived == len(landed)
    assert sum(d.archive_bytes for d in report.days) < sum(map(len, landed.values())) / 3
    for key, data in landed.items():
        assert archive.read_batch(stores.objects, key) == data
    after = {(s, h): stores.state.batch_counts(s, h) for s in INGEST_TABLES for h in ["", *HOURS]}
    late_hours = {k for k, counts in after.items() if late in counts}
    assert late_hours and all(after[k] == before[k] for k in after if k not in late_hours)
    # A backfill after the archive: the same fragments as the ingest from the landing zone.
    raw_before = fragments.read_fragments(stores.objects, "raw_events", HOURS, None,
                                          tables.EVENTS_SCHEMA)  # fmt: skip
    ingest.ingest_range(stores, "postings", HOURS, None)
    assert landing_index.catch_up_index(stores, "postings") == 0
    raw_after = fragments.read_fragments(stores.objects, "raw_events", HOURS, None,
                                         tables.EVENTS_SCHEMA)  # fmt: skip
    assert raw_after.equals(raw_before)


def test_only_days_older_than_the_age_are_archived(world_home, tmp_path):
    stores = copy_world(world_home, tmp_path)
    # On 2026-11-05 with an age of 3 days, days before 2026-11-02 are archived.
    report = compaction.archive_landing(stores, datetime(2026, 11, 5, 12, tzinfo=UTC), 3)
    assert [d.day for d in report.days] == ["2026-11-01"]
    assert {parse_batch_key(k)[0].date().isoformat()
            for k in stores.objects.list(LANDING_PREFIX)} == {"2026-11-02"}  # fmt: skip
    both = compaction.compact(stores, StreamingSettings(), datetime(2026, 11, 5, 12, tzinfo=UTC))
    assert both.days == [] and both.hours  # fragments of both days are past 6 h
    later = compaction.compact(stores, StreamingSettings(), LATER, max_days=1)
    assert [d.day for d in later.days] == ["2026-11-02"]
    assert archive.archived_days(stores.objects) == DAYS


def test_a_late_hour_after_the_window_is_compacted_again(world_home, tmp_path):
    stores = copy_world(world_home, tmp_path)
    compaction.compact_fragments(stores, LATER, 21_600)
    hour = "2026-11-01-05:00"
    batch = "20261120T000000000000Z-late-000001"
    row = {name: None for name in tables.EVENTS_SCHEMA.names}
    extra = pa.Table.from_pylist(
        [{**row, "event_id": "late-1", "batch_id": batch}], schema=tables.EVENTS_SCHEMA
    )
    from figstream.storage.objects import write_parquet

    write_parquet(stores.objects, f"tables/raw_events/{hour}/{batch}.parquet", extra)
    rows = fragments.read_fragments(stores.objects, "raw_events", [hour], None,
                                    tables.EVENTS_SCHEMA)  # fmt: skip
    assert rows["batch_id"].to_pylist()[-1] == batch
    report = compaction.compact_fragments(stores, LATER + timedelta(hours=1), 21_600)
    assert [(h.table, h.partition, h.fragments) for h in report.hours] == [("raw_events", hour, 1)]
    again = fragments.read_fragments(stores.objects, "raw_events", [hour], None,
                                     tables.EVENTS_SCHEMA)  # fmt: skip
    assert again.equals(rows)
