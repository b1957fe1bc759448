"""board_daily_stats from each day's changes against a full replay of every event up to the day's
end, and the state as of a day's end from the store's day rows.

Bad inputs tried: batches that arrive out of event-time order (late events touching days whose
stats are already kept, so the later days are refreshed as the sensor asks), a board merged
twice (the later merger wins only from its day on), jobs re-posted on another board, jobs
posted under a key another board already holds (cross-board duplicates, shadowed and
re-shown as their original expires), an update of a job never posted, a day with no events,
stats asked for a day whose day before was never computed, and a home written by the
previous version (no day rows, daily full copies of the state under ``_end_of_day``).
"""

from __future__ import annotations

import random
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_streaming_state import START, TEXTS, Events, land, make_stores

from figstream.storage.objects import write_parquet
from figstream.storage.state import SqliteStateStore, state_path
from figstream.streaming import cleaning, daily, table_ops, tables
from figstream.streaming import dedupe as streaming_dedupe
from figstream.streaming import jobs as streaming_jobs

EPOCH = START.date().isoformat()
DAYS = [(START.date() + timedelta(days=n)).isoformat() for n in range(5)]
BOARDS = ["alpha", "beta", "gamma", "delta"]
MINUTES_PER_DAY = 24 * 60


def generated(seed: int, jobs: int = 150) -> tuple[Events, list[list[dict]]]:
    """~4 days of events of 150 jobs on four boards (the fifth day quiet), shuffled into
    batches that each hold events of several days."""
    rng = random.Random(seed)
    events = Events()
    span = 4 * MINUTES_PER_DAY
    for n in range(jobs):
        board, job = rng.choice(BOARDS), f"job-{n:04d}"
        posted = rng.uniform(0, span - 60)
        text = rng.randrange(len(TEXTS))
        events.posting(tables.POSTED, posted, board, job, text)
        if rng.random() < 0.4:
            later = posted + rng.uniform(1, 2 * MINUTES_PER_DAY)
            events.posting(tables.UPDATED, later, board, job, rng.randrange(len(TEXTS)))
        if rng.random() < 0.1:  # re-posted on another board
            other = rng.choice(BOARDS)
            events.posting(tables.POSTED, posted + rng.uniform(1, 900), other, job, text)
        if rng.random() < 0.35:
            when = posted + rng.uniform(1, 2 * MINUTES_PER_DAY)
            events.add(tables.EXPIRED, when, board, job_id=job, reason="filled")
    events.posting(tables.UPDATED, 100, "gamma", "never-posted", 2)
    merge = dict(absorbed_board="beta", surviving_board="alpha")
    events.add(tables.MERGED, MINUTES_PER_DAY * 1.5, "alpha", **merge)
    merge = dict(absorbed_board="beta", surviving_board="gamma")
    events.add(tables.MERGED, MINUTES_PER_DAY * 2.7, "gamma", **merge)
    events.add(
        tables.MERGED, MINUTES_PER_DAY * 3.2, "alpha", absorbed_board="delta",
        surviving_board="alpha",
    )  # fmt: skip
    rows = events.rows[:]
    rng.shuffle(rows)
    cuts = sorted(rng.sample(range(1, len(rows)), 5))
    return events, [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]


def replayed_stats(events: pa.Table, day: str) -> pa.Table:
    """The stats of ``day`` from a replay of every event up to its end (the old way)."""
    upto = events.filter(pc.less(events["event_time"], pa.scalar(daily._day_end(day))))
    of_day = upto.filter(pc.greater_equal(upto["event_time"], pa.scalar(daily._day_start(day))))
    state = table_ops.apply_job_state(None, upto)
    duplicates = table_ops.dedupe_postings(table_ops.clean_postings(upto)).duplicates
    return table_ops.board_daily_stats(of_day, state, date.fromisoformat(day), duplicates)


def run(stores, hours: list[str], batch_id: str) -> None:
    """The streaming steps a sensor run does for one batch."""
    cleaning.clean(stores, hours, [batch_id])
    streaming_dedupe.dedupe(stores, hours, [batch_id])
    streaming_jobs.update_job_state(stores, hours, [batch_id])


def every_event(events: Events, seen: list[dict]) -> pa.Table:
    return events.table(seen, "all")


def loaded(home: Path, seed: int, state=None, jobs: int = 150):
    """Stores that ran every batch of :func:`generated`, and every event."""
    stores = make_stores(home, state)
    events, batches = generated(seed, jobs)
    for n, rows in enumerate(batches):
        run(stores, land(stores, events.table(rows, f"b{n:02d}")), f"b{n:02d}")
    return stores, every_event(events, events.rows)


# One seed in make test; the other two (~25 s each on the 2-core machine) in make test-slow.
@pytest.mark.parametrize(
    "seed", [11, pytest.param(12, marks=pytest.mark.slow), pytest.param(13, marks=pytest.mark.slow)]
)
def test_stats_from_changes_equal_a_full_replay(tmp_path: Path, seed: int) -> None:
    stores = make_stores(tmp_path)
    events, batches = generated(seed)
    seen: list[dict] = []
    for n, rows in enumerate(batches):
        batch_id = f"b{n:02d}"
        run(stores, land(stores, events.table(rows, batch_id)), batch_id)
        seen += rows
        # as the sensor asks: from the earliest day the batch touched to the last day
        first = min(r["event_time"] for r in rows).date().isoformat()
        got = daily.board_daily_stats(stores, [d for d in DAYS if d >= first], EPOCH)
        everything = every_event(events, seen)
        for day, stats in got.items():
            assert stats.equals(replayed_stats(everything, day)), (n, day)
    last = got[DAYS[3]]
    assert pc.sum(last["active_jobs"]).as_py() > 0 and last["avg_salary_min"].null_count == 0
    assert not [k for k in stores.objects.written if "_end_of_day" in k]


def test_a_day_without_kept_stats_before_it_is_computed_from_the_epoch(tmp_path: Path) -> None:
    stores, everything = loaded(tmp_path, 21)
    got = daily.board_daily_stats(stores, [DAYS[3]], EPOCH)
    assert list(got) == [DAYS[3]]
    assert got[DAYS[3]].equals(replayed_stats(everything, DAYS[3]))
    for day in DAYS[:3]:  # the days before were computed (and kept) on the way
        assert stores.objects.exists(daily.stats_key(day))
    # a day kept by the previous version (no carries) is recomputed, not trusted
    write_parquet(stores.objects, daily.stats_key(DAYS[3]), tables.empty(tables.STATS_SCHEMA))
    got = daily.board_daily_stats(stores, [DAYS[4]], EPOCH)
    assert got[DAYS[4]].equals(replayed_stats(everything, DAYS[4]))


def test_end_of_day_state_equals_a_replay_up_to_that_day(tmp_path: Path) -> None:
    stores, everything = loaded(tmp_path, 31)
    for day in DAYS:
        state, registry = daily.end_of_day_state(stores, day, EPOCH)
        upto = everything.filter(pc.less(everything["event_time"], pa.scalar(daily._day_end(day))))
        assert state.equals(table_ops.apply_job_state(None, upto)), day
        dedupe = table_ops.dedupe_postings(table_ops.clean_postings(upto))
        assert registry.equals(dedupe.canonical), day
    # batched streaming gives the same state
    state, _ = daily.end_of_day_state(stores, DAYS[2], EPOCH)
    jobs = pa.concat_tables(list(daily.iter_end_of_day_jobs(stores, DAYS[2], EPOCH)))
    assert jobs.equals(state.filter(pc.equal(state["kind"], "job")))


def test_a_home_without_day_rows_is_converted_once(tmp_path: Path) -> None:
    stores, everything = loaded(tmp_path, 41)
    # What the previous version left: no day rows, a full copy of the state per day.
    with sqlite3.connect(state_path(tmp_path)) as conn:
        for table in ("job_days", "merger_days", "store_flags"):
            conn.execute(f"DROP TABLE {table}")
    copies = [
        f"{streaming_jobs.END_OF_DAY_COPIES}{d}/{w}.parquet"
        for d in DAYS
        for w in ("state", "registry")
    ]
    for key in copies:
        write_parquet(stores.objects, key, tables.empty(tables.STATE_SCHEMA))
    stores.state = SqliteStateStore(state_path(tmp_path))
    assert stores.state.day_rows_pending()
    got = daily.board_daily_stats(stores, DAYS, EPOCH)
    for day in DAYS:
        assert got[day].equals(replayed_stats(everything, day)), day
    assert not stores.state.day_rows_pending()
    assert not any(stores.objects.exists(k) for k in copies)
    # once: a second open of the converted file finds nothing to do
    assert not SqliteStateStore(state_path(tmp_path)).day_rows_pending()
    assert streaming_jobs.convert_day_rows(stores) == 0


@pytest.fixture
def dynamo_state(aws_config):
    from figstream.storage.dynamo_state import DynamoStateStore, ensure_tables

    ensure_tables(aws_config)
    return DynamoStateStore(aws_config)


@pytest.mark.slow  # moto server
def test_on_dynamodb_stats_and_end_of_day_state_equal_a_full_replay(
    tmp_path: Path, dynamo_state
) -> None:
    stores, everything = loaded(tmp_path, 51, dynamo_state, jobs=40)
    assert not stores.state.day_rows_pending()
    got = daily.board_daily_stats(stores, DAYS, EPOCH)
    for day in DAYS:
        assert got[day].equals(replayed_stats(everything, day)), day
    day = DAYS[2]
    upto = everything.filter(pc.less(everything["event_time"], pa.scalar(daily._day_end(day))))
    assert daily.end_of_day_state(stores, day, EPOCH)[0].equals(
        table_ops.apply_job_state(None, upto)
    )
