"""Producers that emit v2: ``figstream produce --schema-version 2`` and the generator's switch.

What lands is parsed as the streaming side parses it: v2 postings are valid and materialise,
the bad records keep their reasons, and an unknown ``--schema-version`` is an argparse error.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import orjson
import pyarrow.compute as pc
import pytest

from figstream.cli.main import main
from figstream.ingest.generate import EventStream
from figstream.streaming.parse import parse_batches


def _landed(home) -> list[tuple[str, bytes]]:
    return [(p.stem, p.read_bytes()) for p in sorted((home / "landing").rglob("*.jsonl"))]


def _versions(batches) -> Counter:
    counts = Counter()
    for _, data in batches:
        for line in data.splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                counts[(record.get("type"), record.get("version"))] += 1
    return counts


def test_produce_schema_version_2_lands_v2_postings(tmp_path, capsys):
    args = ["produce", "--home", str(tmp_path), "--rate", "400", "--duration", "1", "--seed", "5"]
    assert main([*args, "--schema-version", "2", "--bad-rate", "0.05"]) == 0
    assert "postings v2" in capsys.readouterr().err
    batches = _landed(tmp_path)
    versions = _versions(batches)
    assert versions[("job.posted", 2)] > 0 and versions[("job.updated", 2)] > 0
    assert versions[("job.expired", 1)] > 0  # only the postings have a v2
    parsed = parse_batches(batches)
    assert parsed.records == parsed.valid.num_rows + parsed.rejected.num_rows
    assert parsed.valid.num_rows > 0.9 * parsed.records
    postings = parsed.valid.filter(pc.not_equal(parsed.valid["event_type"], "job.expired"))
    assert set(postings["version"].to_pylist()) <= {2}
    assert postings["city"].null_count == 0


def test_produce_refuses_an_unknown_schema_version(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["produce", "--home", str(tmp_path), "--duration", "1", "--schema-version", "3"])
    assert exit_.value.code == 2


def test_the_generator_switches_on_its_day_and_keeps_the_content():
    start = dt.date(2026, 11, 1)
    v1 = list(EventStream(start, 2, 300, seed=9, bad_rate=0.02))
    v2 = list(
        EventStream(start, 2, 300, seed=9, bad_rate=0.02, schema_version=2, schema_from_day=1)
    )
    assert [r.event_id for r in v1] == [r.event_id for r in v2]  # the same stream, re-versioned
    switch = dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp() * 1_000_000
    for old, new in zip(v1, v2, strict=True):
        if old.bad_kind is not None or old.type not in ("job.posted", "job.updated"):
            assert old.line == new.line
            continue
        version = orjson.loads(new.line)["version"]
        assert version == (2 if new.time_us >= switch else 1)
    with pytest.raises(ValueError, match="schema_version"):
        EventStream(start, 1, 10, schema_version=3)
