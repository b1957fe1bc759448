"""Faults at the ingest and sensor level, each ending with the books exact: every landed record
materialised once, dead-lettered once with its reason, or dropped as a duplicate.

* Corrupt and partial batch files in the landing zone: a truncated last line, a batch-named
  gzip and zstd file, a Parquet file, a zero-byte batch, objects under ``landing/`` that are
  not batches at all, and a batch whose bytes change after the sensor indexed it. The good
  batches of the same tick and run land; nothing crashes a tick or a run.
* A full disk: a store that answers writes under a prefix with ``OSError(ENOSPC)`` once its
  room is used up (a wrapper of the local store that writes half the bytes then fails, as a
  full file system does; no product code is mocked), in the landing zone and in the middle of a
  run. The run fails cleanly; nothing half-written is read as done; once the disk frees, the
  stream sensor re-requests the failed run by itself and everything lands once.
* A batch that becomes visible long after its neighbours: within the sensor's reconciliation
  window it is taken and run; beyond it, the compaction indexes it, the books report it
  pending for its hour, and ``figstream replay`` lands it once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import gzip
import io
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from daemon_harness import posting
from streaming_harness import Harness

from figstream.ingest import archive
from figstream.ingest.landing import batch_key, parse_batch_key
from figstream.storage.objects import LocalObjectStore, ObjectStore
from figstream.streaming import books, compaction, landing_index, replay
from figstream.streaming.books import HourBooks
from resources.stores import ObjectStoreResource

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
# Every event of these tests is timed in the hour before the clock's, at 10 past.
HOUR_START = NOW.replace(minute=0, second=0) - dt.timedelta(hours=1)
HOUR = HOUR_START.strftime("%Y-%m-%d-%H:00")
RETRIES = {"run_retries": {"enabled": True, "max_retries": 3}}  # as platform/local/dagster.yaml


def event(name: str, at: dt.datetime = HOUR_START + dt.timedelta(minutes=10)) -> dict:
    return posting(f"faults-{name}", "workwave", at, "Data Engineer")


def line(record: dict) -> bytes:
    return orjson.dumps(record)


def requests(result) -> list[dg.RunRequest]:
    return [] if isinstance(result, dg.SkipReason) else list(result.run_requests or [])


def stream_runs(result) -> list[dg.RunRequest]:
    return [r for r in requests(result) if r.job_name in ("postings_job", "boards_job")]


def hour_books(harness: Harness, partition: str = HOUR) -> HourBooks:
    return books.hour_books(harness.stores, "postings", partition)


def assert_exact(harness: Harness, good: set[str], bad: dict[tuple[str, int], str | None]) -> None:
    """Every good event once in raw_events, every bad (batch id, line) dead-lettered once with
    its reason (None: any reason), and nothing else; every hour's books balanced, none pending."""
    ids = harness.table("raw_events")["event_id"].to_pylist()
    assert not [i for i, n in Counter(ids).items() if n > 1], "materialised twice"
    assert set(ids) == good
    letters = harness.dead_letters().list(limit=None)
    dead = {(d.batch_id, d.line_no): d.code for d in letters}
    assert len(dead) == len(letters), "dead-lettered twice"
    assert dead.keys() == bad.keys()
    for where, code in bad.items():
        assert code is None or dead[where] == code, (where, dead[where])
    assert all(d.code and d.detail for d in letters)
    hours = books.books(harness.stores, ["postings", "boards"], books.hours_between(
        HOUR_START - dt.timedelta(days=7), NOW + dt.timedelta(hours=1)))  # fmt: skip
    assert hours, "no hour has books"
    for hour in hours:
        assert hour.status == "balanced", books.describe(hour)
    landed = sum(h.landed for h in hours)
    accounted = sum(h.materialised + h.dead_lettered + h.duplicates for h in hours)
    assert landed == accounted == len(good) + len(bad) + sum(h.duplicates for h in hours)


# --- corrupt and partial batch files ----------------------------------------------------------


def _parquet_bytes() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": ["faults-parquet"], "type": ["job.posted"]}), sink)
    return sink.getvalue()


def _lines(data: bytes, seen: set[bytes]) -> list[int]:
    """The 1-based numbers of the non-blank lines of ``data`` (what ingest counts as records)
    whose bytes are not in ``seen`` (added): a bad record twice is one bad event."""
    out = []
    for n, text in enumerate(data.split(b"\n"), start=1):
        if text.strip() and text not in seen:
            seen.add(text)
            out.append(n)
    return out


def _hours_of(request, partitions_def: dg.PartitionsDefinition) -> list[str]:
    """The hourly partitions a run request covers: its partition, or its range's hours."""
    if request.partition_key:
        return [request.partition_key]
    span = dg.PartitionKeyRange(
        request.tags["dagster/asset_partition_range_start"],
        request.tags["dagster/asset_partition_range_end"],
    )
    return list(partitions_def.get_partition_keys_in_range(span))


def test_corrupt_and_partial_batches_are_dead_lettered_and_the_good_ones_land(
    tmp_path, monkeypatch
):
    harness = Harness(tmp_path, monkeypatch)
    objects = harness.objects
    good = [event(f"good-{n}") for n in range(6)]
    [first] = harness.publish([line(r) for r in good[:3]], producer="good")
    # A producer that died mid-write of its last line, with no newline after it.
    cut = line(event("cut"))
    truncated = b"\n".join([line(good[3]), line(good[4]), cut[: len(cut) // 2]])
    inner = b"\n".join(line(event(f"packed-{n}")) for n in range(40)) + b"\n"
    arrival = NOW - dt.timedelta(seconds=30)
    landed = {
        "truncated": truncated,
        "gzip": gzip.compress(inner),  # a compressed batch under a batch's name
        "zstd": pa.compress(inner, codec="zstd", asbytes=True),
        "parquet": _parquet_bytes(),  # not the batch format at all
        "empty": b"",  # zero bytes
        "blank": b"\n\n  \n",  # nothing but blank lines
    }
    keys = {
        name: batch_key(arrival + dt.timedelta(microseconds=n), "corrupt", n)
        for n, name in enumerate(landed)
    }
    for name, data in landed.items():
        objects.put(keys[name], data)
    [last] = harness.publish([line(good[5])], producer="good")
    # Objects under landing/ that are not batches: the sensors leave them unread, and say so.
    day = f"landing/{NOW:%Y-%m-%d}/"
    strays = [f"{day}README.txt", f"{keys['truncated'][:-6]}.jsonl.gz", "landing/zz-marker"]
    for key in strays:
        objects.put(key, gzip.compress(line(event("stray"))))

    done = [r for r in harness.drain() if r.job_name == "postings_job"]
    # A record with no usable time goes to the hour its batch arrived in (dead-lettered there).
    arrived = arrival.strftime("%Y-%m-%d-%H:00")
    # Both are live hours: a tick's live hours share one run over their range.
    hourly = harness.defs.get_assets_def("raw_events").partitions_def
    covered = [_hours_of(r, hourly) for r in done]
    assert sorted(h for hours in covered for h in hours) == sorted({HOUR, arrived})
    taken = {k for r in done for k in r.run_config["ops"]["raw_events"]["config"]["batch_keys"]}
    # The blank batches hold no record: seen (indexed as holding none), never run.
    assert taken == {first, last, *(keys[n] for n in landed if n not in ("empty", "blank"))}
    state = harness.state()
    for name in ("empty", "blank"):
        assert state.partitions_for("postings", keys[name]) == [landing_index.NO_PARTITION]
    for key in strays:
        assert not state.partitions_for("postings", key)
        assert not state.partitions_for("boards", key)

    bad: dict[tuple[str, int], str | None] = {}
    ids = {name: parse_batch_key(keys[name])[1] for name in keys}
    bad[(ids["truncated"], 3)] = "malformed_json"
    seen: set[bytes] = set()
    for name in ("gzip", "zstd", "parquet"):  # in key order, as their claims are made
        numbers = _lines(landed[name], seen)
        assert numbers, name
        for n in numbers:
            bad[(ids[name], n)] = None  # bad_encoding or malformed_json, by the bytes
    assert_exact(harness, {r["id"] for r in good}, bad)

    # A backfill or replay of the hour lists the whole landing zone: strays change nothing.
    assert landing_index.catch_up_index(harness.stores, "postings") == 0
    replay.replay(harness.stores, HOUR_START, HOUR_START + dt.timedelta(hours=1))
    assert_exact(harness, {r["id"] for r in good}, bad)
    # Later ticks still tick, and take nothing (the strays are still listed).
    for stream in ("postings", "boards"):
        assert not stream_runs(harness.tick(stream))


def test_a_reconciliation_sweep_passes_over_objects_that_are_not_batches(tmp_path, monkeypatch):
    harness = Harness(tmp_path, monkeypatch)
    [key] = harness.publish([line(event("swept"))], producer="good")
    harness.drain()
    # Below the listing start, where only a sweep looks: a stray, then a late batch.
    arrival, _ = parse_batch_key(key)
    late = batch_key(arrival - dt.timedelta(minutes=30), "slow-clock", 0)
    harness.objects.put(f"{late.rsplit('/', 1)[0]}/0-notes.txt", b"not a batch")
    harness.objects.put(late, line(event("late", arrival - dt.timedelta(minutes=31))))
    sweep = landing_index.reconcile_slice(
        harness.stores, "postings", "", key, limit=100, max_found=50
    )
    assert sweep.found == [late]


@pytest.mark.parametrize("damage", ["content", "frame"])
def test_a_damaged_archived_batch_fails_its_replay_naming_it_and_changes_nothing(
    tmp_path, monkeypatch, damage
):
    """Landed batches are compressed only in the archive (zstd, one frame each). A damaged
    frame, or one that decompresses to other bytes, stops a replay of its hour with an error
    that names the archive and the batch; what the hour holds stays as it was, balanced."""
    harness = Harness(tmp_path, monkeypatch)
    first = [event(f"archived-{n}") for n in range(2)]
    [key] = harness.publish([line(r) for r in first], producer="first")
    harness.publish([line(event("archived-beside"))], producer="second")
    harness.drain()
    later = NOW + dt.timedelta(days=harness.settings.archive_landing_after_days + 2)
    assert compaction.compact(harness.stores, harness.settings, later).days
    day = f"{NOW:%Y-%m-%d}"
    entry = archive.read_index(harness.objects, day)[key]
    packed = bytearray(harness.objects.get(archive.archive_key(day)))
    if damage == "content":
        packed[entry.offset + entry.length // 2] ^= 0xFF
    else:
        packed[entry.offset : entry.offset + 4] = bytes(4)  # no zstd frame there any more
    harness.objects.put(archive.archive_key(day), bytes(packed))
    before = harness.table("raw_events")["event_id"].to_pylist()
    with pytest.raises(archive.ArchiveError) as error:
        replay.replay(harness.stores, HOUR_START, HOUR_START + dt.timedelta(hours=1))
    assert key in str(error.value) and archive.archive_key(day) in str(error.value)
    assert harness.table("raw_events")["event_id"].to_pylist() == before
    assert hour_books(harness).status == "balanced", books.describe(hour_books(harness))


@pytest.mark.parametrize("change", ["grown", "shrunk", "moved"])
def test_a_batch_whose_bytes_change_after_it_was_indexed_is_reported(tmp_path, monkeypatch, change):
    """Batches are immutable; one rewritten between the sensor's index and the run is a
    producer's bug the books must name, batch by batch, rather than call balanced or pending."""
    harness = Harness(tmp_path, monkeypatch)
    records = [event(f"{change}-{n}") for n in range(3)]
    steady_event = event(f"steady-{change}")
    [steady] = harness.publish([line(steady_event)], producer="steady")
    [key] = harness.publish([line(r) for r in records], producer="rewriter")
    [run] = stream_runs(harness.tick("postings"))
    assert sorted(run.run_config["ops"]["raw_events"]["config"]["batch_keys"]) == [steady, key]
    rewritten = {
        "grown": [*records, event(f"{change}-extra")],
        "shrunk": records[:1],
        # Every record now of the hour before: none left in the hour it was indexed for.
        "moved": [event(f"{change}-{n}", HOUR_START - dt.timedelta(minutes=50)) for n in range(3)],
    }[change]
    harness.objects.put(key, b"\n".join(line(r) for r in rewritten) + b"\n")
    result = harness.run(run)
    batch_id = parse_batch_key(key)[1]
    hour = hour_books(harness)
    # "moved": the run's batch now holds none of the hour's records; ingest books it as read
    # with nothing in it, so the books name it (they called the hour pending for ever, 7d1fa3e).
    assert not hour.balanced, f"{change}: {books.describe(hour)}"
    assert hour.status == "UNBALANCED" and batch_id in "; ".join(hour.problems), hour.problems
    # The run's books check fails (error severity) naming the batch; the run itself succeeded.
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "books"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert batch_id in (check.description or ""), check.description
    # The steady batch of the same run landed; the hour's problems name only the rewritten one.
    raw = harness.table("raw_events")["event_id"].to_pylist()
    assert steady_event["id"] in raw
    assert all(batch_id in p for p in hour.problems), hour.problems


# --- a full disk -------------------------------------------------------------------------------


class _FullFile:
    """A file on a full file system: the first write gets half its bytes in, then ENOSPC."""

    def __init__(self, fh, key: str) -> None:
        self._fh, self._key = fh, key

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._fh.write(view[: len(view) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._key)

    def __getattr__(self, name: str):
        return getattr(self._fh, name)


class FillingStore(LocalObjectStore):
    """The local store on a disk that fills up: ``disk`` (JSON) holds a key prefix and how many
    more writes under it fit (``room``); once they are used up every further write under it
    fails with ENOSPC, half-written, until ``room`` is raised (the disk freed) or the file is
    gone. Writes elsewhere go through. What was refused is counted in the file."""

    def __init__(self, root: Path | str, disk: Path | str) -> None:
        super().__init__(root)
        self.disk = Path(disk)

    def _refuse(self, key: str) -> bool:
        if not self.disk.exists():
            return False
        state = json.loads(self.disk.read_text())
        if not key.startswith(state["prefix"]):
            return False
        if state["room"] > 0:
            state["room"] -= 1
            refuse = False
        else:
            state["refused"] = [*state.get("refused", []), key]
            refuse = True
        self.disk.write_text(json.dumps(state))
        return refuse

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator:
        refuse = self._refuse(key)
        with super().writer(key) as fh:
            yield _FullFile(fh, key) if refuse else fh


class FillingObjectStoreResource(ObjectStoreResource):
    root: str
    disk: str

    def store(self) -> ObjectStore:
        return FillingStore(self.root, self.disk)


def fill(disk: Path, prefix: str, room: int) -> None:
    disk.write_text(json.dumps({"prefix": prefix, "room": room}))


def refused(disk: Path) -> list[str]:
    return json.loads(disk.read_text()).get("refused", [])


def _temporary_files(home: Path) -> list[Path]:
    return [p for p in home.rglob(".*.tmp")]


def _fragments_read_whole(harness: Harness) -> None:
    """Every object under tables/ is a whole Parquet file: nothing half-written is listed."""
    for key in harness.objects.list("tables/"):
        if key.endswith(".parquet"):
            pq.read_metadata(pa.BufferReader(harness.objects.get(key)))


def _filling_harness(tmp_path, monkeypatch) -> tuple[Harness, Path]:
    disk = tmp_path / "disk.json"
    home = tmp_path / "home"
    resource = FillingObjectStoreResource(root=str(home), disk=str(disk))
    harness = Harness(home, monkeypatch, objects=resource, resume_failed_after_seconds=1)
    harness.instance = dg.DagsterInstance.ephemeral(settings=RETRIES)
    return harness, disk


def _three_batches(harness: Harness, tag: str) -> tuple[set[str], dict]:
    """Three batches of the hour, each with good events, a redelivery and a bad record."""
    good, bad = set(), {}
    redelivered = event(f"{tag}-again")
    for b in range(3):
        records = [event(f"{tag}-{b}-{n}") for n in range(4)]
        unknown = {**event(f"{tag}-{b}-bad"), "version": 99}  # timed in the hour too
        lines = [line(r) for r in [*records, redelivered, unknown]]
        [key] = harness.publish(lines, producer=f"disk{b}")
        good |= {r["id"] for r in records}
        bad[(parse_batch_key(key)[1], len(lines))] = "unknown_version"
    good.add(redelivered["id"])
    return good, bad


@pytest.mark.parametrize(
    "prefix, room",
    [
        ("tables/raw_events/", 1),  # mid-ingest: one batch's fragment in, the next refused
        ("tables/clean_postings/", 0),  # ingest done and booked, the next step refused
        ("tables/search_index/", 0),  # the last step, written through a streamed writer
    ],
)
def test_a_full_disk_mid_run_fails_it_cleanly_and_the_resumed_run_lands_everything_once(
    tmp_path, monkeypatch, prefix, room
):
    harness, disk = _filling_harness(tmp_path, monkeypatch)
    good, bad = _three_batches(harness, "disk")
    [run] = stream_runs(harness.tick("postings"))
    fill(disk, prefix, room)
    failed = harness.attempt(run)
    assert not failed.success
    assert refused(disk), "the disk never filled"
    errors = [
        e.step_failure_data.error for e in failed.all_events if e.is_step_failure
    ]  # the step's own error says what happened
    assert errors and "No space left on device" in str(errors[0]), errors
    assert not _temporary_files(harness.home), "a half-written temporary file was left behind"
    _fragments_read_whole(harness)
    hour = hour_books(harness)
    assert hour.balanced, books.describe(hour)  # never an imbalance, and never a lie:
    if prefix == "tables/raw_events/":
        # No batch is booked without its fragment; none of the hour reads as done.
        assert hour.status == "pending" and hour.pending_batches == 3, books.describe(hour)
        refused_ids = {k.rsplit("/", 1)[1].removesuffix(".parquet") for k in refused(disk)}
        written = {
            k.rsplit("/", 1)[1].removesuffix(".parquet")
            for k in harness.objects.list(f"tables/raw_events/{HOUR}/")
        }
        assert refused_ids and not refused_ids & written
    else:
        assert hour.status == "balanced", books.describe(hour)
        assert not harness.objects.list(f"{prefix}{HOUR}/")

    # Still full: the sensor waits (backpressure does not count a failed run) and asks for
    # the failed run again only after resume_failed_after_seconds; the retry fails cleanly too.
    time.sleep(1.2)
    [again] = [r for r in requests(harness.tick("postings")) if r.run_key.startswith("resume:")]
    assert again.run_config == run.run_config and again.partition_key == HOUR
    assert not harness.attempt(again).success
    _fragments_read_whole(harness)
    # The disk frees; the sensor resumes the second failure too, and this time it lands.
    disk.unlink()
    time.sleep(1.2)
    [resumed] = [r for r in requests(harness.tick("postings")) if r.run_key.startswith("resume:")]
    assert resumed.run_config == run.run_config and resumed.run_key != again.run_key
    harness.run(resumed)
    harness.drain()
    assert_exact(harness, good, bad)
    assert hour_books(harness).duplicates == 2  # the redelivery, in two of the three batches
    assert harness.objects.list(f"{prefix}{HOUR}/")
    assert not _temporary_files(harness.home)


def test_a_full_landing_zone_refuses_the_batch_whole_and_a_retry_lands_it_once(
    tmp_path, monkeypatch
):
    harness, disk = _filling_harness(tmp_path, monkeypatch)
    [before] = harness.publish([line(event("before-full"))], producer="steady")
    fill(disk, "landing/", 0)
    records = [line(event(f"full-{n}")) for n in range(5)]
    publisher = harness.publisher("full")
    with pytest.raises(OSError) as refusal:
        publisher.publish(records)
    assert refusal.value.errno == errno.ENOSPC
    # Nothing of it is visible: no batch, no fragment of one, no temporary file.
    assert harness.objects.list("landing/") == [before]
    assert not _temporary_files(harness.home)
    harness.drain()
    # The disk frees; the producer publishes again (the same publisher, a new key).
    disk.unlink()
    [after] = publisher.publish(records)
    assert after != before and harness.objects.list("landing/") == [before, after]
    harness.drain()
    good = {orjson.loads(r)["id"] for r in records} | {orjson.loads(harness.objects.get(before))[
        "id"]}  # fmt: skip
    assert_exact(harness, good, {})


# --- a batch that becomes visible long after its neighbours ------------------------------------


def _age_reconciliation(harness: Harness) -> None:
    """As if reconcile_every_seconds had passed since the last sweep began."""
    from dataclasses import replace

    from figstream.ingest.cursor import LandingCursor

    cursor = LandingCursor.loads(harness.cursors["postings"])
    earlier = cursor.reconciled_at - harness.settings.reconcile_every_seconds
    harness.cursors["postings"] = replace(cursor, reconciled_at=earlier).dumps()


def _land_late(harness: Harness, days: float, name: str) -> tuple[str, dict, str]:
    """A batch keyed ``days`` before the watermark (its producer's put stuck that long),
    holding one event timed a minute before its key. Returns its key, event and hour."""
    arrival = NOW - dt.timedelta(days=days)
    record = event(name, arrival - dt.timedelta(minutes=1))
    key = batch_key(arrival, "stuck", 0)
    harness.objects.put(key, line(record) + b"\n")
    hour = (arrival - dt.timedelta(minutes=1)).strftime("%Y-%m-%d-%H:00")
    return key, record, hour


def _streamed_neighbours(tmp_path, monkeypatch) -> tuple[Harness, list[dict]]:
    """A harness whose sensors took and ran three events: the late batch's neighbours."""
    harness = Harness(tmp_path, monkeypatch)
    good = [event(f"neighbour-{n}") for n in range(3)]
    harness.publish([line(r) for r in good], producer="steady")
    harness.drain()
    return harness, good


def test_a_batch_late_within_the_reconciliation_window_is_taken_and_the_books_balance(
    tmp_path, monkeypatch
):
    harness, good = _streamed_neighbours(tmp_path, monkeypatch)
    # A day late: far below the look-back, inside the two arrival days the sweep covers.
    key, record, hour = _land_late(harness, 1, "a-day-late")
    assert not stream_runs(harness.tick("postings"))
    _age_reconciliation(harness)
    harness.tick("postings")  # the sweep finds it ...
    [run] = stream_runs(harness.tick("postings"))  # ... and the next tick takes it
    assert run.partition_key == hour
    assert run.run_config["ops"]["raw_events"]["config"]["batch_keys"] == [key]
    harness.run(run)
    harness.drain()
    assert_exact(harness, {r["id"] for r in [*good, record]}, {})


def test_a_batch_late_beyond_the_window_is_reported_pending_and_a_replay_lands_it_once(
    tmp_path, monkeypatch
):
    harness, good = _streamed_neighbours(tmp_path, monkeypatch)
    key, record, hour = _land_late(harness, 5, "five-days-late")
    _age_reconciliation(harness)
    for _ in range(3):  # sweeps included: beyond reconcile_days, the sensor never sees it
        assert not stream_runs(harness.tick("postings"))
    assert not harness.state().partitions_for("postings", key)
    # The hourly compaction indexes every batch it archives that the index never saw: from
    # then on the books report the batch as pending in its hour.
    report = compaction.compact(harness.stores, harness.settings, NOW)
    assert report.indexed >= 1
    late_hour = hour_books(harness, hour)
    assert late_hour.status == "pending" and late_hour.pending_batches == 1
    assert "pending 1" in books.describe(late_hour)
    # Replayable: the hour is replayed from the archive, once, however often it is asked for.
    start = dt.datetime.strptime(hour, "%Y-%m-%d-%H:00").replace(tzinfo=dt.UTC)
    for _ in range(2):
        replay.replay(harness.stores, start, start + dt.timedelta(hours=1))
    assert not harness.objects.exists(key)  # archived
    assert_exact(harness, {r["id"] for r in [*good, record]}, {})
