"""Ingest and the fragment writer, at the level of the streaming steps: what the faster paths
(claims a group of batches at a time, the event-hour shortcut, one sort per fragment write)
give must be what the plain paths give.

Bad inputs tried: an event delivered twice in one batch and again in a later batch, a bad
record delivered twice, malformed JSON, times with offsets, fractions the shortcut does not
take, impossible dates and hours, times outside the accepted window, non-ASCII digits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from figstream.events.envelope import format_time
from figstream.ingest.landing import batch_key
from figstream.storage.objects import LocalObjectStore, read_parquet
from figstream.streaming import fragments, ingest, landing_index
from figstream.streaming import fragments as streaming_fragments
from figstream.streaming import stores as streaming_stores

ARRIVAL = datetime(2026, 11, 2, 10, 30, tzinfo=UTC)
HOUR = "2026-11-02-10:00"


def make_stores(home: Path) -> streaming_stores.Stores:
    return streaming_stores.Stores.local(home, "2026-10-01-00:00")


def posting(n: int, minute: int) -> bytes:
    record = {
        "id": f"e{n}", "type": "job.posted", "source": "alpha", "version": 1,
        "time": format_time(ARRIVAL.replace(minute=minute)),
        "data": {
            "job_id": f"j{n}", "board": "alpha", "title": "Engineer", "company": "Acme",
            "location": "Berlin", "employment_type": "full_time", "remote": False,
            "salary_min": 50000, "salary_max": 60000, "currency": "USD",
            "url": f"https://alpha.example/{n}",
        },
    }  # fmt: skip
    return orjson.dumps(record)


def land(stores: streaming_stores.Stores) -> list[str]:
    """Three batches: duplicates within and across batches, bad records, one twice."""
    bad = b'{"id": "x", "type": "job.posted"'
    batches = [
        [posting(1, 1), posting(2, 2), posting(1, 1), bad],
        [posting(3, 3), posting(2, 2), b"not json", bad],
        [posting(4, 4), posting(5, 5), posting(3, 3)],
    ]
    keys = []
    for seq, lines in enumerate(batches):
        key = batch_key(ARRIVAL + timedelta(seconds=seq), "test", seq)
        stores.objects.put(key, b"\n".join(lines))
        keys.append(key)
    return keys


def outcome(home: Path, stores: streaming_stores.Stores, keys: list[str]) -> tuple:
    report = ingest.ingest(stores, "postings", HOUR, keys)
    fragments = {
        key: read_parquet(stores.objects, key)["event_id"].to_pylist()
        for key in stores.objects.list(f"tables/raw_events/{HOUR}/")
    }
    letters = sorted((d.batch_id, d.line_no, d.code) for d in stores.dead_letters.list(limit=None))
    counts = (report.records, report.valid, report.duplicates, report.dead_lettered)
    return counts, fragments, letters


@pytest.mark.parametrize("group_rows", [1, 3, 10_000])
def test_ingest_claims_a_group_at_a_time_as_it_would_one_batch_at_a_time(
    tmp_path: Path, monkeypatch, group_rows: int
) -> None:
    one = make_stores(tmp_path / "one")
    keys = land(one)
    monkeypatch.setattr(ingest, "CLAIM_GROUP_ROWS", 1)
    expected = outcome(tmp_path / "one", one, keys)
    grouped = make_stores(tmp_path / "grouped")
    land(grouped)
    monkeypatch.setattr(ingest, "CLAIM_GROUP_ROWS", group_rows)
    assert outcome(tmp_path / "grouped", grouped, keys) == expected
    counts, fragments, letters = expected
    # 8 valid lines, 3 of them repeats (e1, e2, e3); 3 bad lines, one of them a repeat.
    assert counts == (11, 8, 4, 2)
    assert sorted(e for ids in fragments.values() for e in ids) == ["e1", "e2", "e3", "e4", "e5"]
    assert [code for _, _, code in letters] == ["malformed_json", "malformed_json"]
    # A replay of the same batches (a retry, a backfill) gives each batch its own claims back.
    assert outcome(tmp_path / "grouped", grouped, keys)[1:] == expected[1:]


@pytest.mark.parametrize("window", [1, 3, 20_000])
def test_fragments_are_one_per_hour_and_batch_in_the_rows_order(
    tmp_path: Path, monkeypatch, window: int
) -> None:
    monkeypatch.setattr(fragments, "WRITE_WINDOW", window)  # rows gathered at once
    objects = LocalObjectStore(tmp_path)
    base = datetime(2026, 11, 2, 9, tzinfo=UTC)
    times = [base + timedelta(minutes=40 * i) for i in range(9)]  # 09:00 .. 14:20
    rows = pa.table(
        {
            "event_id": [f"e{i}" for i in range(9)],
            "batch_id": ["b2", "b1", "b2", "b1", "b1", "b2", "b1", "b2", "b2"],
            "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
        }
    )
    rows = rows.take([8, 3, 0, 5, 1, 7, 2, 6, 4])  # not sorted by anything
    assert streaming_fragments.write_each(objects, "t", rows) == 9
    expected: dict[str, list[str]] = {}
    for row in rows.to_pylist():
        key = streaming_stores.fragment_key(
            "t", streaming_stores.hour_key(row["event_time"]), row["batch_id"]
        )
        expected.setdefault(key, []).append(row["event_id"])
    written = {k: read_parquet(objects, k)["event_id"].to_pylist() for k in objects.list("tables/")}
    assert written == expected
    assert streaming_fragments.write_each(objects, "t", rows.slice(0, 0)) == 0


EDGE_TIMES = [
    "2026-11-20T15:04:05Z", "2026-11-20T15:04:05.123Z", "2026-11-20T15:04:05.123456Z",
    "2026-02-30T10:00:00Z", "2026-11-20T24:00:00Z", "2026-11-20T15:04:60Z",
    "1999-12-31T23:59:59Z", "2000-01-01T00:00:00Z", "2099-12-31T23:59:59.999999Z",
    "2100-01-01T00:00:00Z", "2026-11-20T15:04:05+02:00", "2026-11-20T00:30:00-01:00",
    "\u0662\u0660\u0662\u0666-11-20T15:04:05Z", "2026-11-20T15:04:05.1Z", "2026-11-20 15:04:05Z",
    "2026-11-20T15:04Z", "2026-11-20T15:04:05z", "", "2026-11-20T15:04:05",
]  # fmt: skip


@pytest.mark.parametrize("value", EDGE_TIMES)
def test_event_hour_shortcut_agrees_with_a_full_parse_on_edge_times(value: str) -> None:
    assert landing_index._event_hour({"time": value}) == landing_index._hour_of_time(value)


@given(
    moment=st.datetimes(datetime(1990, 1, 1), datetime(2110, 1, 1)),
    digits=st.sampled_from(["", ".000", ".5", ".123", ".123456", ".1234567"]),
    suffix=st.sampled_from(["Z", "+00:00", "+05:30", "-11:00", "z", ""]),
)
def test_event_hour_shortcut_agrees_with_a_full_parse(moment, digits, suffix) -> None:
    value = moment.strftime("%Y-%m-%dT%H:%M:%S") + digits + suffix
    assert landing_index._event_hour({"time": value}) == landing_index._hour_of_time(value)


def test_ingest_range_takes_the_named_batches_each_hour_holds_and_reports_its_worst_hour(
    tmp_path: Path,
) -> None:
    alone, ranged = make_stores(tmp_path / "alone"), make_stores(tmp_path / "ranged")
    keys, _ = land(alone), land(ranged)
    landing_index.index_landing(ranged, "postings", keys)
    other = "2026-11-02-11:00"
    # A sensor run over two hours names the first two batches: the third is left for later.
    report = ingest.ingest_range(ranged, "postings", [HOUR, other], keys[:2])
    expected = ingest.ingest(alone, "postings", HOUR, keys[:2])
    counts = ("batches", "records", "valid", "duplicates", "dead_lettered")
    assert [getattr(report.totals, c) for c in counts] == [getattr(expected, c) for c in counts]
    assert report.totals.records == 8
    # Its worst hour is the one holding records: its dead letters over all the index counts.
    dead = ranged.dead_letters.count(stream="postings", partition_key=HOUR)
    assert dead > 0
    assert report.worst_partition == HOUR
    assert report.worst_dead_letter_rate == pytest.approx(dead / 11)
    # A backfill (no batch keys) takes every batch the index holds; the claims keep it exact.
    again = ingest.ingest_range(ranged, "postings", [HOUR], None)
    assert again.totals.records == 11
    ids = [
        event_id
        for key in ranged.objects.list(f"tables/raw_events/{HOUR}/")
        for event_id in read_parquet(ranged.objects, key)["event_id"].to_pylist()
    ]
    assert sorted(ids) == ["e1", "e2", "e3", "e4", "e5"]  # each once


def test_lag_seconds_are_from_event_time_to_now() -> None:
    report = ingest.IngestReport()
    assert report.lag_seconds() == {}
    us = 1_000_000
    report.add(ingest.IngestReport(event_times=[pa.array([0, 10 * us], pa.int64())]))
    report.add(ingest.IngestReport(event_times=[pa.array([20 * us], pa.int64())]))
    lag = report.lag_seconds(now_us=30 * us)
    assert lag == {"lag_seconds_p50": 20.0, "lag_seconds_p95": 29.0, "lag_seconds_max": 30.0}


def test_lag_quantiles_equal_those_of_each_events_lag() -> None:
    """The lag's quantiles come from the event times' (no per-event lag array is built):
    the same figures as computing every event's lag, over timestamp chunks of any size."""
    import numpy as np

    rng = np.random.default_rng(5)
    now_us = 1_800_000_000 * 1_000_000
    chunks = [
        pa.array(now_us - rng.integers(0, 86_400 * 10**6, n), pa.timestamp("us", tz="UTC"))
        for n in (1, 997, 10_000, 3)
    ]
    lag = pa.chunked_array(
        [pc.divide(pc.subtract(now_us, c.cast(pa.int64())).cast(pa.float64()), 1e6) for c in chunks]
    )
    p50, p95 = pc.quantile(lag, q=[0.5, 0.95]).to_pylist()
    expected = {
        "lag_seconds_p50": round(p50, 3),
        "lag_seconds_p95": round(p95, 3),
        "lag_seconds_max": round(pc.max(lag).as_py(), 3),
    }
    assert ingest.lag_seconds(chunks, now_us=now_us) == expected


def test_events_timed_outside_the_window_get_their_own_code_and_the_books_balance(
    tmp_path: Path,
) -> None:
    from figstream.events.validation import REASONS
    from figstream.streaming import books

    stores = make_stores(tmp_path)  # history starts 2026-10-01-00:00; batches arrive 10:30

    def at(n: int, when: datetime) -> dict:
        return orjson.loads(posting(n, 0)) | {"time": format_time(when)}

    ahead = at(10, ARRIVAL + timedelta(hours=2))  # another hour, after the batch arrived
    far_ahead = at(11, datetime(2099, 1, 1, tzinfo=UTC))
    before = at(12, datetime(2026, 9, 30, 23, 0, tzinfo=UTC))  # before the first partition
    late = at(13, ARRIVAL - timedelta(hours=2))  # late but inside the window: its own hour
    lines = [posting(1, 1), ahead, far_ahead, before, late]
    first = [orjson.dumps(r) if isinstance(r, dict) else r for r in lines]
    keys = []
    for seq, batch in enumerate([first, [orjson.dumps(ahead), posting(2, 2)]]):
        key = batch_key(ARRIVAL + timedelta(seconds=seq), "test", seq)
        stores.objects.put(key, b"\n".join(batch))
        keys.append(key)
    touched = landing_index.index_landing(stores, "postings", keys)
    late_hour = "2026-11-02-08:00"
    assert sorted(touched) == [late_hour, HOUR]  # the outside ones are placed by arrival

    ingest.ingest_range(stores, "postings", sorted(touched), keys)

    assert "time_outside_window" in REASONS
    letters = sorted(
        (d.event_id, d.code, d.detail, d.partition_key, d.payload)
        for d in stores.dead_letters.list(limit=None)
    )
    assert [(e, c, p) for e, c, _, p, _ in letters] == [
        ("e10", "time_outside_window", HOUR),
        ("e11", "time_outside_window", HOUR),
        ("e12", "time_outside_window", HOUR),
    ]
    details = {e: d for e, _, d, _, _ in letters}
    assert details["e10"].startswith("event time in an hour after its batch arrived (")
    assert details["e11"].startswith("event time in an hour after its batch arrived (")
    assert details["e12"].startswith("event time before the first partition")
    assert all(f"placed in {HOUR}" in d for d in details.values())
    assert {e: p for e, _, _, _, p in letters} == {"e10": first[1], "e11": first[2],
                                                    "e12": first[3]}  # fmt: skip
    hour = books.hour_books(stores, "postings", HOUR)
    assert hour.balanced and hour.difference == 0, books.describe(hour)
    # Landed 6 (4 + 2), e1 and e2 materialised, 3 dead letters, e10 again a duplicate.
    assert (hour.landed, hour.materialised, hour.dead_lettered, hour.duplicates) == (6, 2, 3, 1)
    assert hour.by_reason == {"time_outside_window": 3}
    earlier = books.hour_books(stores, "postings", late_hour)
    assert earlier.balanced and (earlier.landed, earlier.materialised) == (1, 1)
