"""The landing zone mirrored into the legacy feed dump.

Bad inputs tried: re-delivered records (same bytes twice), malformed JSON and other bad records
(they land in ``_unattributed.jsonl`` or their board's file, and legacy dies on them), a dump
the mirror did not write (kept as it is), a re-run after more batches landed.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter

import pytest

from figstream.ingest.dataset import generate
from figstream.migration import flaws
from figstream.migration.ledger import parse_ledger
from figstream.migration.mirror import MANIFEST, mirror_day
from figstream.streaming import ingest, landing_index
from figstream.streaming import stores as streaming_stores
from legacy.pipeline import TASKS
from resources.profiles import resources_for

EPOCH = dt.date(2026, 11, 1)
LEDGER = parse_ledger(
    "version: 1\nlegacy_epoch: 2026-11-01\ntasks:\n"
    + "".join(f"  {t.__name__}: {{stage: legacy}}\n" for t in TASKS),
    "test-ledger.yaml",
)


def stores_for(home, monkeypatch):
    monkeypatch.setenv("FIGSTREAM_HOME", str(home))
    return resources_for("local", LEDGER)["streaming"].stores()


def lines_of(directory) -> Counter:
    return Counter(
        (path.name, line)
        for path in directory.glob("*.jsonl")
        for line in path.read_bytes().splitlines()
        if line.strip()
    )


@pytest.mark.parametrize("bad_rate", [0.0, 0.03])
def test_mirror_holds_each_days_records_once(tmp_path, monkeypatch, bad_rate):
    generate(tmp_path, start=EPOCH, days=2, events_per_day=400, seed=9, bad_rate=bad_rate)
    shutil.move(tmp_path / "feeds", tmp_path / "generated")
    stores = stores_for(tmp_path, monkeypatch)
    reports = {d: mirror_day(stores, d) for d in ("2026-11-01", "2026-11-02")}
    assert all(r.written for r in reports.values())
    # The generator delivers ~1% of records twice: the mirror holds them once.
    assert sum(r.redeliveries for r in reports.values()) > 0
    mirrored = sum((lines_of(tmp_path / "feeds" / d) for d in reports), Counter())
    generated = sum((lines_of(tmp_path / "generated" / d) for d in reports), Counter())
    if bad_rate == 0:
        for d in reports:  # every clean record in its own event day and board file
            assert lines_of(tmp_path / "feeds" / d) == lines_of(tmp_path / "generated" / d)
        assert max(mirrored.values()) == 1
    else:
        # Bad records too are all there, once; those without a readable source are set apart.
        assert sorted(line for _, line in mirrored.elements()) == sorted(
            line for _, line in generated.elements()
        )
        assert any(name == "_unattributed.jsonl" for name, _ in mirrored)
    for d in reports:
        assert (tmp_path / "feeds" / d / "_SUCCESS").exists()
        assert (tmp_path / "feeds" / d / MANIFEST).exists()


def test_a_dump_the_mirror_did_not_write_is_kept(tmp_path, monkeypatch):
    generate(tmp_path, start=EPOCH, days=1, events_per_day=200, seed=2, bad_rate=0.0)
    before = lines_of(tmp_path / "feeds" / "2026-11-01")
    report = mirror_day(stores_for(tmp_path, monkeypatch), "2026-11-01")
    assert not report.written and "kept" in report.reason
    assert lines_of(tmp_path / "feeds" / "2026-11-01") == before


def test_a_rerun_picks_up_batches_that_landed_since(tmp_path, monkeypatch):
    generate(tmp_path, start=EPOCH, days=1, events_per_day=300, seed=4, bad_rate=0.0)
    shutil.rmtree(tmp_path / "feeds")
    landing = sorted((tmp_path / "landing").rglob("*.jsonl"))
    held = tmp_path / "held"
    held.mkdir()
    for path in landing[-3:]:  # the last batches have not landed yet
        shutil.move(path, held / path.name)
    stores = stores_for(tmp_path, monkeypatch)
    first = mirror_day(stores, "2026-11-01")
    for path in landing[-3:]:
        shutil.move(held / path.name, path)
    second = mirror_day(stores, "2026-11-01")
    assert second.written and second.records > first.records
    assert second.cutoff > first.cutoff


def test_events_that_landed_after_the_cutoff_are_named_and_explained(tmp_path, monkeypatch):
    import orjson
    import pyarrow as pa

    from figstream.migration.mirror import after_cutoff
    from figstream.migration.parity_report import Differences

    generate(tmp_path, start=EPOCH, days=1, events_per_day=300, seed=4, bad_rate=0.0)
    shutil.rmtree(tmp_path / "feeds")
    landing = sorted((tmp_path / "landing").rglob("*.jsonl"))
    held = landing[-3:]
    moved = [shutil.move(path, tmp_path / path.name) for path in held]
    stores = stores_for(tmp_path, monkeypatch)
    day = "2026-11-01"
    assert after_cutoff(stores, day) is None  # not mirrored yet
    mirror_day(stores, day)
    for path, original in zip(moved, held, strict=True):
        shutil.move(path, original)
    for stream in streaming_stores.INGEST_TABLES:
        landing_index.catch_up_index(stores, stream)
        for hour in streaming_stores.day_partitions(day):
            keys = stores.state.batches_for(stream, hour)
            if keys:
                ingest.ingest(stores, stream, hour, keys)
    late = set(after_cutoff(stores, day)["event_id"].to_pylist())
    in_feed = {
        orjson.loads(line)["id"]
        for path in (tmp_path / "feeds" / day).glob("*.jsonl")
        for line in path.read_bytes().splitlines()
        if line.strip()
    }
    in_held = {orjson.loads(line)["id"] for path in held for line in path.read_bytes().splitlines()}
    assert late and late <= in_held and not late & in_feed
    # The rule explains exactly those rows only in new.
    one_late = sorted(late)[0]
    only_new = pa.table({"event_id": [one_late, "not-late"]})
    empty = pa.table({"event_id": pa.array([], pa.string())})
    explained = flaws.arrived_after_cutoff(
        Differences(empty, only_new, empty), {"after_cutoff": pa.table({"event_id": list(late)})}
    )
    assert explained.only_new.to_pylist() == [True, False]
