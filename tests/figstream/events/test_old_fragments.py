"""Fragments written before the v2 columns existed stay readable: zero downtime for the tables.

An hour holds a fragment in the old events shape (no ``salary_period``, ``city``, ``region``,
``country_code``) beside one in the new shape; reading, compacting, and reading a compacted
old hour with a new fragment after it all give the new shape, old rows with those columns null.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from figstream.storage.objects import LocalObjectStore, write_parquet
from figstream.streaming import fragments
from figstream.streaming.stores import fragment_key
from figstream.streaming.tables import EVENTS_SCHEMA

NEW_COLUMNS = ("salary_period", "city", "region", "country_code")
OLD_SCHEMA = pa.schema([f for f in EVENTS_SCHEMA if f.name not in NEW_COLUMNS])
HOUR = "2026-11-20-10:00"


def _rows(schema: pa.Schema, event_id: str, batch_id: str) -> pa.Table:
    row = {name: None for name in schema.names}
    row.update(
        event_id=event_id,
        event_type="job.posted",
        source="hireloop",
        version=1 if schema is OLD_SCHEMA else 2,
        event_time=dt.datetime(2026, 11, 20, 10, 5, tzinfo=dt.UTC),
        location="Austin, TX",
        batch_id=batch_id,
        line_no=1,
    )
    if schema is EVENTS_SCHEMA:
        row.update(city="Austin", region="TX", country_code="US")
    return pa.Table.from_pylist([row], schema=schema)


def _read(objects) -> list[dict]:
    table = fragments.read_fragments(objects, "raw_events", [HOUR], None, EVENTS_SCHEMA)
    assert table.schema == EVENTS_SCHEMA
    return sorted(table.to_pylist(), key=lambda r: r["batch_id"])


def test_old_and_new_fragments_read_and_compact_as_the_new_shape(tmp_path):
    objects = LocalObjectStore(tmp_path)
    write_parquet(objects, fragment_key("raw_events", HOUR, "b-1"), _rows(OLD_SCHEMA, "old", "b-1"))
    write_parquet(
        objects, fragment_key("raw_events", HOUR, "b-2"), _rows(EVENTS_SCHEMA, "new", "b-2")
    )
    old, new = _read(objects)
    assert (old["event_id"], old["city"], old["location"]) == ("old", None, "Austin, TX")
    assert (new["event_id"], new["city"], new["country_code"]) == ("new", "Austin", "US")
    report = fragments.compact_hour(objects, "raw_events", HOUR)
    assert report.rows == 2 and report.fragments == 2
    assert _read(objects) == [old, new]


def test_a_compacted_old_hour_takes_a_late_new_fragment(tmp_path):
    objects = LocalObjectStore(tmp_path)
    write_parquet(objects, fragment_key("raw_events", HOUR, "b-1"), _rows(OLD_SCHEMA, "old", "b-1"))
    fragments.compact_hour(objects, "raw_events", HOUR)  # compacted in the old shape
    write_parquet(
        objects, fragment_key("raw_events", HOUR, "b-2"), _rows(EVENTS_SCHEMA, "new", "b-2")
    )
    old, new = _read(objects)
    assert old["city"] is None and new["city"] == "Austin"
    fragments.compact_hour(objects, "raw_events", HOUR)
    assert [r["event_id"] for r in _read(objects)] == ["old", "new"]
