"""A busy hour cut into chunks of whole batches gives what one pass over the hour gives.

Tried: a backfill (no batch ids) and a sensor run (named batches) of the same shuffled day, with
chunks of one batch up to the whole hour; batches with late events, re-posts, a merger, an
update of a job never posted; a batch the landing index does not count (it still runs).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from figstream.ingest.landing import batch_key
from figstream.storage.objects import read_parquet
from figstream.streaming import chunks, cleaning, index_export
from figstream.streaming import dedupe as streaming_dedupe
from figstream.streaming import jobs as streaming_jobs
from tests.figstream.streaming.test_streaming_state import (
    assert_equals_recompute,
    land,
    make_stores,
    random_day,
)

ARRIVAL = datetime(2026, 11, 2, tzinfo=UTC)


def landed_day(home: Path, seed: int):
    """A shuffled day landed and indexed (each batch's records per hour); its hours, batch ids."""
    stores = make_stores(home)
    events, batches = random_day(seed)
    hours, ids = set(), []
    for n, rows in enumerate(batches):
        key = batch_key(ARRIVAL + timedelta(seconds=n), None, n)
        batch_id = key.rsplit("/", 1)[1].removesuffix(".jsonl")
        table = events.table(rows, batch_id)
        hours.update(land(stores, table))
        ids.append(batch_id)
        per_hour: dict[str, int] = {}
        for row in rows:
            hour = row["event_time"].strftime("%Y-%m-%d-%H:00")
            per_hour[hour] = per_hour.get(hour, 0) + 1
        for stream in ("postings", "boards"):
            stores.state.index_batches(stream, [(h, key, c) for h, c in per_hour.items()])
    return stores, sorted(hours), ids


def steps(stores, hours, ids) -> None:
    cleaning.clean(stores, hours, ids)
    streaming_dedupe.dedupe(stores, hours, ids)
    streaming_jobs.update_job_state(stores, hours, ids)
    index_export.export_changes(stores, hours, ids)


def outputs(stores) -> dict[str, pa.Table]:
    """Every per-batch fragment of the row-wise step, by key. (A batch's deduped postings
    depend on what was registered before it, on the sensor path as in chunks: the registry,
    compared above, is what must agree.)"""
    return {
        key: read_parquet(stores.objects, key)
        for key in stores.objects.list("tables/clean_postings/")
    }


@pytest.mark.parametrize(
    ("named", "chunk_records"), [(False, 25), (True, 10)], ids=["backfill", "sensor run"]
)
def test_chunked_hours_equal_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: bool, chunk_records: int
) -> None:
    whole, hours, ids = landed_day(tmp_path / "whole", seed=11)
    steps(whole, hours, ids if named else None)

    calls: list[list[str] | None] = []
    real = chunks.chunks

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.extend(out)
        return out

    monkeypatch.setattr(chunks, "CHUNK_RECORDS", chunk_records)
    monkeypatch.setattr(chunks, "chunks", spy)
    cut, hours, ids = landed_day(tmp_path / "cut", seed=11)
    steps(cut, hours, ids if named else None)

    assert_equals_recompute(cut)
    assert streaming_jobs.read_state(cut.state).equals(streaming_jobs.read_state(whole.state))
    assert cut.state.registry().equals(whole.state.registry())
    assert outputs(cut) == outputs(whole)
    assert [c for c in calls if c is not None and 0 < len(c) < len(ids)], "no hour was cut"


def test_chunks_keep_whole_batches_under_the_bound(tmp_path: Path) -> None:
    stores, hours, ids = landed_day(tmp_path, seed=12)
    counts = {h: chunks.record_counts(stores, h) for h in hours}
    busiest = max(hours, key=lambda h: sum(counts[h].values()))
    groups = chunks.chunks(stores, busiest, None, ["raw_events", "board_mergers"], 30)
    flat = [b for g in groups for b in g]
    assert flat == sorted(flat) and len(flat) == len(set(flat))
    assert set(flat) >= set(counts[busiest])  # every counted batch, each once
    for group in groups:
        sizes = [counts[busiest].get(b, 0) for b in group]
        assert sum(sizes) <= 30 or len(group) == 1
    # Under the bound, one call with exactly what was named (None for a backfill).
    assert chunks.chunks(stores, busiest, ids[:1], ["raw_events"], 10**9) == [ids[:1]]
    assert chunks.chunks(stores, busiest, None, ["raw_events"], 10**9) == [None]
