"""The trace index on both stores (SQLite in the state store's file; DynamoDB on moto server):
keyed by (event id, batch, line), replaced on a rewrite, expiring after its horizon.

Bad inputs tried: missing columns, nulls in key columns, an unknown outcome, a naive timestamp,
a non-string id, an empty event id, NUL and non-ASCII text, a horizon that is not a positive
integer.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from figstream.storage.dynamo_state import ensure_tables
from figstream.storage.dynamo_trace import DynamoTraceIndex
from figstream.storage.state import SqliteStateStore, state_path
from figstream.storage.trace import BATCH_SCHEMA, DELIVERY_SCHEMA, SqliteTraceIndex, TraceIndex
from figstream.streaming.trace import index_for

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
NOW = 1_800_000_000_000_000  # µs


def rows(*deliveries: dict, run_id: str | None = "r1") -> tuple[pa.Table, pa.Table]:
    """Deliveries (defaults: materialised, of one partition) and their batches' rows."""
    base = {"partition_key": "2026-11-02-10:00", "outcome": "materialised",
            "counted_batch": None, "reason": None}  # fmt: skip
    table = pa.Table.from_pylist([{**base, **d} for d in deliveries], schema=DELIVERY_SCHEMA)
    batches = sorted({(d["batch_id"], d.get("partition_key", base["partition_key"]))
                      for d in deliveries})  # fmt: skip
    shared = pa.Table.from_pylist(
        [
            {
                "batch_id": b,
                "partition_key": p,
                "batch_key": f"landing/2026-11-02/{b}.jsonl",
                "stream": "postings",
                "run_id": run_id,
                "recorded_at": T0,
            }
            for b, p in batches
        ],
        schema=BATCH_SCHEMA,
    )
    return table, shared


@pytest.fixture(params=["sqlite", "dynamo"])
def new_index(request: pytest.FixtureRequest, tmp_path: Path):
    files = iter(range(1_000_000))
    if request.param == "sqlite":
        return lambda **kw: SqliteTraceIndex(tmp_path / f"t{next(files)}.sqlite", **kw)
    from tests.aws_server import emulator_config

    endpoint = request.getfixturevalue("aws_config").endpoint_url

    def new_dynamo(**kw) -> TraceIndex:
        config = emulator_config(endpoint)  # a fresh prefix: tables of its own
        ensure_tables(config)
        return DynamoTraceIndex(config, **kw)

    return new_dynamo


def test_every_delivery_of_an_event_comes_back_in_batch_and_line_order(new_index):
    index = new_index()
    written = index.record(
        *rows(
            {
                "event_id": "e1",
                "batch_id": "b2",
                "line_no": 1,
                "outcome": "duplicate",
                "counted_batch": "b1",
            },
            {"event_id": "e1", "batch_id": "b1", "line_no": 7},
            {"event_id": "e2", "batch_id": "b1", "line_no": 8},
            {
                "event_id": "e1",
                "batch_id": "b1",
                "line_no": 9,
                "outcome": "duplicate",
                "counted_batch": "b1",
            },
        )
    )
    assert written == 4
    got = index.deliveries("e1").to_pylist()
    assert [(r["batch_id"], r["line_no"], r["outcome"]) for r in got] == [
        ("b1", 7, "materialised"),
        ("b1", 9, "duplicate"),
        ("b2", 1, "duplicate"),
    ]
    assert got[2]["counted_batch"] == "b1" and got[0]["counted_batch"] is None
    assert (got[0]["batch_key"], got[0]["stream"], got[0]["run_id"], got[0]["recorded_at"]) == (
        "landing/2026-11-02/b1.jsonl",
        "postings",
        "r1",
        T0,
    )
    assert index.deliveries("e3").num_rows == 0


def test_a_rewrite_of_a_delivery_replaces_it(new_index):
    index = new_index()
    index.record(*rows({"event_id": "e1", "batch_id": "b1", "line_no": 1}, run_id="r1"))
    index.record(*rows({"event_id": "e1", "batch_id": "b1", "line_no": 1}, run_id="r2"))
    assert index.deliveries("e1")["run_id"].to_pylist() == ["r2"]


def test_rows_expire_after_the_horizon_and_purge_deletes_them(new_index):
    index = new_index(ttl_s=60)
    index.record(*rows({"event_id": "e1", "batch_id": "b1", "line_no": 1}))
    assert index.deliveries("e1").num_rows == 1
    later = datetime.now(UTC).timestamp() * 1_000_000 + 61 * 1_000_000
    assert index.deliveries("e1", now=int(later)).num_rows == 0
    assert index.purge(now=int(later)) == 1
    assert index.deliveries("e1").num_rows == 0


def test_materialised_finds_an_events_materialised_deliveries_within_the_window(new_index):
    index = new_index()
    began = int(datetime.now(UTC).timestamp() * 1_000_000)
    index.record(
        *rows(
            {"event_id": "e1", "batch_id": "b1", "line_no": 3},
            {"event_id": "e1", "batch_id": "b2", "line_no": 1, "outcome": "duplicate",
             "counted_batch": "b1"},
            {"event_id": "e2", "batch_id": "b2", "line_no": 2, "outcome": "dead_lettered",
             "reason": "wrong_type"},
            {"event_id": "e3", "batch_id": "b3", "line_no": 4, "partition_key": "p2"},
        )
    )  # fmt: skip
    got = index.materialised(["e1", "e2", "e3", "e4", "e1"], since=began - 1_000_000)
    assert sorted(got.to_pylist(), key=lambda r: r["event_id"]) == [
        {"event_id": "e1", "stream": "postings", "partition_key": "2026-11-02-10:00",
         "batch_id": "b1", "line_no": 3},
        {"event_id": "e3", "stream": "postings", "partition_key": "p2", "batch_id": "b3",
         "line_no": 4},
    ]  # fmt: skip
    # Rows written before ``since`` are not looked at (the claims' horizon, for ingest).
    later = int(datetime.now(UTC).timestamp() * 1_000_000) + 60_000_000
    assert index.materialised(["e1", "e3"], since=later).num_rows == 0
    assert index.materialised([], since=began).num_rows == 0
    with pytest.raises(TypeError):
        index.materialised("e1", since=began)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d, b: (d.drop_columns(["outcome"]), b), "missing column"),
        (lambda d, b: (d.set_column(0, "event_id", pa.array([None], pa.string())), b), "nulls"),
        (lambda d, b: (d.set_column(4, "outcome", pa.array(["lost"])), b), "unknown outcome"),
        (
            lambda d, b: (d, b.set_column(5, "recorded_at", pa.array([T0.replace(tzinfo=None)]))),
            "naive timestamp",
        ),
        (lambda d, b: (d, b.slice(0, 0)), "not given"),
    ],
)
def test_bad_rows_are_refused_with_a_reason(new_index, change, message):
    index = new_index()
    with pytest.raises(ValueError, match=message):
        index.record(*change(*rows({"event_id": "e1", "batch_id": "b1", "line_no": 1})))
    assert index.deliveries("e1").num_rows == 0


def test_a_lookup_by_something_other_than_a_string_is_refused(new_index):
    with pytest.raises(ValueError, match="must be a string"):
        new_index().deliveries(None)


def test_a_horizon_that_is_not_a_positive_integer_is_refused(tmp_path):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive"):
            SqliteTraceIndex(tmp_path / "t.sqlite", ttl_s=bad)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(event_id=st.text(max_size=40), line=st.integers(1, 10**9))
def test_any_event_id_round_trips_through_the_sqlite_index(tmp_path, event_id, line):
    index = SqliteTraceIndex(tmp_path / "h.sqlite")
    index.record(*rows({"event_id": event_id, "batch_id": "b\x00é", "line_no": line}))
    got = index.deliveries(event_id).to_pylist()
    assert [(r["event_id"], r["batch_id"], r["line_no"]) for r in got if r["line_no"] == line] == [
        (event_id, "b\x00é", line)
    ]


def test_the_dynamo_index_keeps_empty_nul_and_non_ascii_ids(aws_config):
    ensure_tables(aws_config)
    index = DynamoTraceIndex(aws_config)
    for event_id in ("", "e\x00ü", "日本"):
        index.record(*rows({"event_id": event_id, "batch_id": "b1", "line_no": 3}))
        assert index.deliveries(event_id)["event_id"].to_pylist() == [event_id]


def test_the_local_index_lives_in_the_state_store_file(tmp_path):
    state = SqliteStateStore(state_path(tmp_path))
    index = index_for(state)
    assert isinstance(index, SqliteTraceIndex) and index.path == state.path
    assert index_for(state) is index


def test_aws_setup_creates_the_trace_table_with_its_ttl(aws_config):
    ensure_tables(aws_config)
    client = aws_config.client("dynamodb")
    name = f"{aws_config.prefix}-trace"
    keys = client.describe_table(TableName=name)["Table"]["KeySchema"]
    assert [(k["AttributeName"], k["KeyType"]) for k in keys] == [("pk", "HASH"), ("sk", "RANGE")]
    ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_the_daily_snapshot_reaps_expired_deliveries_and_keeps_the_rest(tmp_path):
    from figstream.streaming import index_export
    from figstream.streaming.stores import Stores

    stores = Stores.local(tmp_path, "2026-10-01-00:00")
    index = index_for(stores.state)
    index.record(*rows({"event_id": "old", "batch_id": "b1", "line_no": 1},
                       {"event_id": "new", "batch_id": "b1", "line_no": 2}))  # fmt: skip
    with sqlite3.connect(index.path) as conn:  # "old" was written past the horizon ago
        conn.execute("UPDATE event_trace SET expires_at = 1 WHERE event_id = 'old'")
    report = index_export.export_snapshot(stores, "2026-11-02")
    assert report.trace_purged == 1
    assert index.deliveries("old").num_rows == 0 and index.deliveries("new").num_rows == 1
