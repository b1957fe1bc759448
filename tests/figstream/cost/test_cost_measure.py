"""Measuring a month of traffic through the store interfaces: the same landed batches and dead
letters measure the same on the local profile (directory, SQLite) and on the aws profile (S3
and DynamoDB on moto server over HTTP); the window's hours; the what-if's arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from figstream.cost.measure import hours, measure, what_if
from figstream.ingest.dataset import generate
from figstream.ingest.landing import LANDING_PREFIX
from figstream.storage.deadletter import DEAD_LETTER_SCHEMA
from figstream.storage.dynamo_state import ensure_tables
from figstream.storage.objects import LocalObjectStore
from figstream.streaming.landing_index import catch_up_index
from figstream.streaming.stores import Stores

FIRST = "2026-11-01-00:00"
START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)


def rejects(partition: str) -> pa.Table:
    row = {"batch_id": "b", "stream": "postings", "partition_key": partition, "code": "x",
           "detail": "d", "payload": b"{"}  # fmt: skip
    return pa.Table.from_pylist(
        [{**row, "line_no": n, "event_id": None, "event_time": None} for n in range(3)],
        schema=DEAD_LETTER_SCHEMA,
    )


def fill(stores: Stores, source: LocalObjectStore) -> None:
    """The generated landing batches into ``stores``, indexed as the sensors index them, and
    three dead letters in one hour."""
    for key in source.list(LANDING_PREFIX):
        stores.objects.put(key, source.get(key))
    for stream in stores.router.streams:
        catch_up_index(stores, stream)
    stores.dead_letters.add(rejects("2026-11-01-05:00"))


def test_the_same_traffic_measures_the_same_on_both_profiles(tmp_path, aws_config):
    generated = tmp_path / "generated"
    generate(generated, start=START.date(), days=1, events_per_day=200, seed=3, progress=False)
    source = LocalObjectStore(generated)
    local = Stores.local(tmp_path / "local", FIRST)
    ensure_tables(aws_config)
    aws_config.client("s3").create_bucket(Bucket=aws_config.bucket_name)
    remote = Stores.aws(aws_config, FIRST)
    measured = []
    for stores in (local, remote):
        fill(stores, source)
        measured.append(measure(stores, START, END, hours_per_month=720))
    on_local, on_aws = measured
    lines = sum(source.get(k).count(b"\n") for k in source.list(LANDING_PREFIX))
    assert on_local.events == lines * 30  # one day of records, x 720 / 24
    assert on_local.bad_rate == 3 / lines
    assert on_local.batches == len(source.list(LANDING_PREFIX)) * 30
    assert on_local == on_aws


def test_a_window_of_no_traffic_measures_nothing_but_what_is_held(tmp_path):
    stores = Stores.local(tmp_path, FIRST)
    stores.objects.put("tables/raw_events/x.parquet", b"12345")
    workload = measure(stores, START, END)
    assert workload.events == workload.batches == workload.bad_rate == 0
    assert workload.stored_bytes == {"landing": 0.0, "archive": 0.0, "tables": 5.0}


@given(
    start=st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)),
    minutes=st.integers(1, 10_000),
)
def test_the_window_is_every_hour_it_overlaps(start, minutes):
    end = start + timedelta(minutes=minutes)
    keys = hours(start, end)
    first = start.replace(minute=0, second=0, microsecond=0)
    assert keys[0] == first.strftime("%Y-%m-%d-%H:00")
    assert len(keys) == -(-(end - first) // timedelta(hours=1))  # ceiling of whole hours
    assert keys == sorted(set(keys))


def test_an_empty_or_naive_window_is_refused():
    with pytest.raises(ValueError, match="is not after"):
        hours(END, START)
    with pytest.raises(ValueError, match="aware"):
        hours(START.replace(tzinfo=None), END)


def test_a_what_if_month():
    # 1,000 events a day of 500 bytes, 730 h = 30.4167 days: fewer events than sensor ticks,
    # so one batch per event; landing holds 3 days, tables half the month's bytes
    month = what_if(1000, 500, 0.1, hours_per_month=730)
    days = 730 / 24
    assert month.events == pytest.approx(1000 * days)
    assert month.batches == month.batch_hours == pytest.approx(1000 * days)
    assert month.stored_bytes["landing"] == 1000 * 500 * 3
    assert month.stored_bytes["tables"] == pytest.approx(1000 * 500 * days * 0.5)
    assert month.state_items["claims"] == 1000 * 14
    # at 2,000 events/s the batches are one per stream and 5 s tick: 86,400 / 5 x 2 a day
    assert what_if(172_800_000, 700).batches == pytest.approx(34_560 * days)
