"""A producer switches to v2 mid-stream: one row shape, and parity with legacy still holds.

Two generated days, the postings of the second emitted as v2. The new side ingests the landing
zone as a backfill does. Legacy Luigi runs on the feed dump: the first day's as generated (v1),
the second's written by the platform's feed mirror from the landing zone, which hands legacy
every v2 posting downcast to v1. Every legacy task's parity with the new side is then checked
with the ledger's specs, in process (the daemon scenario is tests/test_schema_rollout_e2e.py).
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from figstream.events.geo import LOCATION_TYPE, render_locations
from figstream.ingest.dataset import generate
from figstream.migration import flaws, legacy_files, mirror, views
from figstream.migration.ledger import load_ledger
from figstream.migration.parity import compare
from figstream.streaming import fragments, tables
from figstream.streaming import stores as streaming_stores
from legacy import pipeline

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "figstream" / "migration"))
from test_views import make_stores, run_legacy, run_streaming  # noqa: E402

LEDGER = load_ledger(ROOT / "platform" / "migration_ledger.yaml")
EPOCH = "2026-11-01"
DAYS = ["2026-11-01", "2026-11-02"]
V2_DAY = DAYS[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("rollout")
    generate(
        home, dt.date.fromisoformat(EPOCH), len(DAYS), 600, seed=11, clean_days=len(DAYS),
        progress=False, schema_version=2, schema_from_day=1,
    )  # fmt: skip
    stores = make_stores(home)
    shutil.rmtree(home / "feeds" / V2_DAY)  # the platform mirrors this day's feed for legacy
    run_streaming(stores, DAYS)
    report = mirror.mirror_day(stores, V2_DAY)
    assert report.written and report.records > 0
    run_legacy(
        home,
        [pipeline.BoardStats(date=dt.date.fromisoformat(d)) for d in DAYS]
        + [pipeline.SeoRedirects(date=dt.date.fromisoformat(d)) for d in DAYS],
    )
    return home, stores


def _landed_versions(home: Path, day: str) -> set[int]:
    versions = set()
    for path in (home / "landing").rglob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            if record["type"].startswith("job.p") and record["time"].startswith(day):
                versions.add(record["version"])
    return versions


def test_the_second_day_landed_as_v2_and_legacy_received_v1(world):
    home, _ = world
    assert _landed_versions(home, DAYS[0]) == {1}
    assert _landed_versions(home, V2_DAY) == {2}
    fed = [
        orjson.loads(line)
        for path in (home / "feeds" / V2_DAY).glob("*.jsonl")
        for line in path.read_bytes().splitlines()
    ]
    postings = [r for r in fed if r["type"] in ("job.posted", "job.updated")]
    assert postings and {r["version"] for r in postings} == {1}
    assert all(isinstance(r["data"]["location"], str) for r in postings)


def test_v1_and_v2_events_materialise_as_rows_of_one_shape(world):
    _, stores = world
    hours = [h for day in DAYS for h in streaming_stores.day_partitions(day)]
    raw = fragments.read_fragments(stores.objects, "raw_events", hours, None, tables.EVENTS_SCHEMA)
    postings = raw.filter(pc.is_in(raw["event_type"], tables_posting_types()))
    assert postings.schema == tables.EVENTS_SCHEMA
    days = pc.strftime(postings["event_time"], format="%Y-%m-%d").to_pylist()
    assert set(days) == set(DAYS)
    assert set(postings["version"].to_pylist()) == {2}
    # every posting of either day has the v2 columns, derived the same way
    for name in ("location", "city", "currency"):
        assert postings[name].null_count == 0, name
    assert postings.filter(pc.equal(postings["country_code"], "US")).num_rows > 0
    structured = pa.StructArray.from_arrays(
        [postings[n].combine_chunks() for n in ("city", "region", "country_code")],
        fields=list(LOCATION_TYPE),
    )
    assert render_locations(structured).equals(postings["location"].combine_chunks())


def tables_posting_types() -> pa.Array:
    return pa.array(list(tables.POSTING_TYPES))


@pytest.mark.parametrize("day", DAYS)
def test_every_legacy_task_is_in_parity_across_the_switch(world, day):
    home, stores = world
    for task in views.LEGACY_OUTPUTS:
        legacy = legacy_files.read_legacy(task, day, home)
        assert legacy is not None, f"legacy {task} wrote nothing for {day}"
        new = views.render_new(task, day, stores, EPOCH)
        report = compare(legacy, new, LEDGER.tasks[task].parity, flaws.KNOWN_FLAWS)
        assert report.passed, f"{task} {day}:\n{report.to_markdown()}"
        if task in ("ExtractFeeds", "CleanPostings"):
            assert report.verdict == "clean", f"{task} {day}:\n{report.to_markdown()}"
