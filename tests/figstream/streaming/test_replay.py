"""Replay: a time range re-fed from the landing zone or its archive, with no duplicates.

Bad inputs tried: an end at or before the start, naive times, an unknown stream, a range that
ends before the first partition.
"""

from __future__ import annotations

import datetime as dt
from datetime import UTC, datetime

import pyarrow.compute as pc
import pytest

from figstream.ingest import archive
from figstream.ingest.dataset import generate
from figstream.ingest.landing import LANDING_PREFIX
from figstream.streaming import compaction, fragments, index_export, replay, tables
from figstream.streaming.stores import Stores, day_partitions

EPOCH = "2026-11-01"
HOURS = day_partitions("2026-11-01") + day_partitions("2026-11-02")
T1, T2 = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)


def books(stores: Stores) -> dict:
    """What a replay must not change: every table's rows and the search index."""
    out = {
        table: fragments.read_fragments(stores.objects, table, HOURS, None, schema)
        for table, schema in [
            ("raw_events", tables.EVENTS_SCHEMA), ("board_mergers", tables.EVENTS_SCHEMA),
            ("clean_postings", tables.POSTINGS_SCHEMA),
            ("deduped_postings", tables.POSTINGS_SCHEMA),
        ]
    }  # fmt: skip
    out["dead_letters"] = stores.dead_letters.count()
    out["index"] = index_export.current_index(stores.objects)
    out["state"] = stores.state.get_jobs(stores.state.jobs()["job_id"].to_pylist())
    return out


@pytest.mark.slow  # ~30-40 s on the 2-core machine: runs in make test-slow (CI runs both)
def test_replay_is_idempotent_from_landing_and_from_the_archive(tmp_path):
    home = tmp_path / "home"
    generate(home, dt.date.fromisoformat(EPOCH), 2, 300, seed=7, bad_rate=0.05, progress=False)
    stores = Stores.local(home, f"{EPOCH}-00:00")
    first = replay.replay(stores, T1, T2)
    assert first.partitions == HOURS
    postings = first.streams[0]
    assert postings.materialised > 400 and postings.dead_lettered > 0
    before = books(stores)
    assert before["raw_events"].num_rows == postings.materialised
    # No duplicates: every event id once, however often the range is replayed.
    ids = before["raw_events"]["event_id"]
    assert pc.count_distinct(ids).as_py() == len(ids)

    again = replay.replay(stores, T1, T2)
    assert again.streams[0].materialised == postings.materialised  # its own claims back
    assert books(stores) == before  # ... and not one row more, dead letters included

    compaction.compact(stores, compaction.StreamingSettings(), datetime(2026, 12, 2, tzinfo=UTC))
    assert stores.objects.list(LANDING_PREFIX) == [] and archive.archived_days(stores.objects)
    from_archive = replay.replay(stores, T1, T2)
    assert from_archive.streams[0].records == first.streams[0].records
    assert books(stores) == before

    one_hour = replay.replay(
        stores, datetime(2026, 11, 1, 10, 15, tzinfo=UTC),
        datetime(2026, 11, 1, 10, 45, tzinfo=UTC), ["boards"],
    )  # fmt: skip
    assert one_hour.partitions == ["2026-11-01-10:00"]
    assert [s.stream for s in one_hour.streams] == ["boards"]
    assert one_hour.clean_rows == 0 and books(stores) == before


@pytest.mark.parametrize(
    ("start", "end", "streams", "message"),
    [
        (T2, T1, None, "is not after the start"),
        (T1, T1, None, "is not after the start"),
        (datetime(2026, 11, 1), T2, None, "naive"),
        (T1, T2, ["jobs"], "unknown stream 'jobs'"),
        (datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC), None,
         "ends before the first partition"),
    ],
)  # fmt: skip
def test_bad_ranges_are_refused_before_any_work(tmp_path, start, end, streams, message):
    stores = Stores.local(tmp_path, f"{EPOCH}-00:00")
    with pytest.raises(replay.ReplayError, match=message):
        replay.replay(stores, start, end, streams)
    assert stores.objects.list("tables/") == stores.objects.list("landing/") == []
