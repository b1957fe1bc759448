"""A schema rollout on a real ``dagster dev``: a producer switches to v2 mid-stream.

The sensors run throughout; nothing is paused or redeployed. Wave 1 lands v1 postings of one
event-time hour; once the sensors have taken it, wave 2 lands the same producer's next events
as v2 into the same hour, with a v1 straggler batch (an old producer still running) and one
future v3 event. Then: the books balance by event id (every event materialised once, the v3
dead-lettered as ``unknown_version`` naming its version); every streaming run succeeded, on
both sides of the switch; the hour's raw_events fragments, from v1-only and v2 batches alike,
have one schema, and every posting row is v2 with its v1 columns derived the same way; the
platform's feed mirror hands legacy those postings as v1. Legacy parity across the switch is
checked in process (``tests/figstream/events/test_rollout_parity.py``): legacy's night dies on
the v3 line here, as on any bad record (its known no_validation flaw).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from daemon_harness import (
    EPOCH,
    STREAMS,
    DagsterDev,
    Producer,
    assert_books_balance,
    batch_ids_of,
    describe_runs,
    diagnostics,
    generated,
    posting,
    settle,
)

from figstream.events.geo import render_location
from figstream.events.postings import upcast_record
from figstream.ingest.landing import parse_batch_key
from figstream.migration import mirror
from figstream.storage.deadletter import SqliteDeadLetterStore, deadletter_path
from figstream.streaming import stores
from figstream.streaming import tables as streaming_tables

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def test_a_producer_switches_to_v2_while_the_sensors_run(spawn, figstream_env, tmp_path):
    now = dt.datetime.now(dt.UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    if hour < EPOCH:
        pytest.skip("the clock is less than 2 h past the ledger epoch: no partitions to stream")
    home = Path(figstream_env["FIGSTREAM_HOME"])
    producer = Producer(home)
    ledger = producer.ledger
    partition = stores.hour_key(hour)
    bulk = generated(240, seed=23, start=hour, end=hour + dt.timedelta(minutes=59))
    v1_events, later = bulk[:120], bulk[120:]
    v2_events = [upcast_record(e) for e in later[:100]]
    stragglers = later[100:]  # still v1: an old producer instance, after the switch
    assert {e["version"] for e in v2_events if e["type"] != "job.expired"} == {2}
    future = posting("e2e-v3", "workwave", hour + dt.timedelta(minutes=30), "Data Engineer")
    v3 = orjson.dumps(upcast_record(future) | {"version": 3})

    devs: list[DagsterDev] = []
    with diagnostics(devs, home, ledger):
        dev = DagsterDev(spawn, figstream_env, tmp_path / "dagster-dev.log")
        devs.append(dev)
        dev.wait_up()

        for i in range(0, 120, 40):
            producer.batch(v1_events[i : i + 40])
        seen = settle(dev, home, ledger, timeout=150)
        assert seen.balanced(ledger), seen.describe(ledger)
        before = {r["runId"] for r in dev.runs()}

        wave2 = [producer.batch(v2_events[i : i + 25]) for i in range(0, 100, 25)]
        wave2.append(producer.batch([*stragglers, (v3, "unknown_version", "postings")]))
        seen = settle(dev, home, ledger, timeout=150)

        # Nothing lost, nothing twice, the v3 dead-lettered with its reason.
        assert_books_balance(home, ledger)
        (letter,) = [
            d for d in SqliteDeadLetterStore(deadletter_path(home)).list(limit=None)
            if d.code == "unknown_version"
        ]  # fmt: skip
        assert "version 3" in letter.detail and letter.partition_key == partition

        # Nothing paused: every streaming run succeeded, and runs took the v2 batches.
        runs = [r for r in dev.runs() if r["jobName"] in STREAMS]
        assert runs and all(r["status"] == "SUCCESS" for r in runs), describe_runs(runs)
        after = [r for r in runs if r["runId"] not in before]
        taken = set().union(*(batch_ids_of(r) for r in after)) if after else set()
        wave2_ids = {parse_batch_key(key)[1] for key in wave2}
        assert wave2_ids <= taken, (wave2_ids - taken, describe_runs(after))

        # One hour, one shape: the stored fragments of v1-only and of v2 batches alike (or the
        # hour's compacted object, should compaction have folded them).
        files = sorted((home / "tables" / "raw_events" / partition).glob("*.parquet"))
        schemas = {pq.read_schema(f).remove_metadata() for f in files}
        assert files and schemas == {streaming_tables.EVENTS_SCHEMA}, schemas
        hour_rows = pa.concat_tables([pq.read_table(f) for f in files])
        rows = hour_rows.to_pylist()
        postings = [r for r in rows if r["event_type"] in streaming_tables.POSTING_TYPES]
        sent_as = {e["id"]: e["version"] for e in [*v1_events, *v2_events, *stragglers]}
        assert {sent_as[r["event_id"]] for r in postings} == {1, 2}
        assert {r["version"] for r in postings} == {2}
        for row in postings:
            structured = {k: row[k] for k in ("city", "region", "country_code")}
            assert render_location(structured) == row["location"], row
            has_salary = row["salary_min"] is not None or row["salary_max"] is not None
            assert row["salary_period"] == ("year" if has_salary else None), row
        assert pc.sum(pc.equal(hour_rows["country_code"], "US")).as_py() > 0

        # Legacy gets v1: the feed mirror downcasts the v2 postings of the day.
        day = hour.date().isoformat()
        assert mirror.mirror_day(stores.Stores.local(home, f"{EPOCH:%Y-%m-%d}-00:00"), day).written
        fed = [
            orjson.loads(line)
            for path in (home / "feeds" / day).glob("*.jsonl")
            for line in path.read_bytes().splitlines()
        ]
        by_id = {r["id"]: r for r in fed}
        for event in v2_events:
            if event["type"] in streaming_tables.POSTING_TYPES:
                assert by_id[event["id"]]["version"] == 1
                assert isinstance(by_id[event["id"]]["data"]["location"], str)
        assert by_id[future["id"]]["version"] == 3  # unknown to every version: as it came
