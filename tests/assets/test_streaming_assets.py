"""The streaming assets, driven by their real sensors and jobs on a generated day, on both
profiles: ``local`` (a directory, SQLite) and ``aws`` (S3, DynamoDB, EventBridge and SQS on moto
server over HTTP, the records put on the event bus and drained by the sensors).

Bad inputs here come from the generator's bad-record kinds (malformed JSON, missing and
mistyped fields, unknown type and version, absurd values, bad encodings) plus duplicate
deliveries, late and out-of-order events, and a record whose fix is replayed.
"""

import contextlib
import datetime as dt
import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from streaming_harness import EPOCH, Harness

from figstream.ingest.dataset import generate
from figstream.ingest.publish import Publisher
from figstream.storage.deadletter import CONFLICTING_REDELIVERY, replay
from figstream.storage.objects import LocalObjectStore
from figstream.streaming import books, daily, table_ops, tables
from tests.aws_server import aws_environ, emulator_config


def manifest(home):
    return json.loads((home / "generate-manifest.json").read_text())


def landed_lines(home) -> list[bytes]:
    """The generated landing zone's records, in landing order (duplicates and bad ones too)."""
    lines = []
    for path in sorted((home / "landing").rglob("*.jsonl")):
        lines += path.read_bytes().splitlines()
    return lines


# moto server answers a PutEvents, ReceiveMessage or DynamoDB call in milliseconds to a
# second (under load): the aws day is smaller, with more of it bad (every kind of the
# generator's bad records, a duplicate delivery and late hours are still in it).
DAY = {
    "local": {"events_per_day": 800, "bad_rate": 0.02},
    "aws": {"events_per_day": 400, "bad_rate": 0.06},
}


EPOCH_TIME = dt.datetime.combine(EPOCH, dt.time(), dt.UTC)


def when(record: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(record["time"])


def generated_day(home, profile: str) -> None:
    generate(home, start=EPOCH, days=1, seed=21, **DAY[profile])


# The aws day goes through EventBridge, SQS and DynamoDB on moto server: `make test-slow`.
@pytest.fixture(scope="module", params=["local", pytest.param("aws", marks=pytest.mark.slow)])
def streamed(request, tmp_path_factory):
    """One streamed day per profile, shared by the tests below (the replay test, which adds
    an event, runs last)."""
    home = tmp_path_factory.mktemp(f"streamed-{request.param}")
    with pytest.MonkeyPatch.context() as monkeypatch:
        if request.param == "aws":
            endpoint = request.getfixturevalue("moto_endpoint")
            for key, value in aws_environ(emulator_config(endpoint)).items():
                monkeypatch.setenv(key, value)
        generated_day(home, request.param)
        harness = Harness(home, monkeypatch, profile=request.param, max_runs_per_tick=1000)
        if request.param == "aws":
            harness.publish(landed_lines(home), producer="gen")
        harness.drain()
        yield harness


def partitions_of(harness: Harness, table: str) -> list[str]:
    return sorted({k.split("/")[2] for k in harness.objects.list(f"tables/{table}/")})


def test_conservation_events_in_equal_materialised_plus_dead_lettered(streamed):
    m = manifest(streamed.home)
    assert m["duplicates_delivered"] > 0 and m["late_hours"] > 0 and m["bad_total"] > 0
    raw, mergers = streamed.table("raw_events"), streamed.table("board_mergers")
    materialised = raw.num_rows + mergers.num_rows
    # Every event exactly once, however often it was delivered.
    assert len(set(raw["event_id"].to_pylist())) == raw.num_rows
    dead = streamed.dead_letters().count()
    assert materialised + dead == m["events"]
    assert dead == m["bad_total"]


def test_every_rejection_has_a_reason_and_the_original_bytes(streamed):
    landed = b"\n".join(streamed.objects.get(k) for k in streamed.objects.list("landing/"))
    letters = streamed.dead_letters().list(limit=10_000)
    assert letters
    for letter in letters:
        assert letter.code and letter.detail and letter.partition_key and letter.stream
        assert letter.payload in landed


def test_sensor_path_and_backfill_give_the_same_result(
    streamed, tmp_path_factory, monkeypatch, request
):
    other = tmp_path_factory.mktemp("backfill")
    generated_day(other, streamed.profile)
    if streamed.profile == "aws":
        request.getfixturevalue("aws_config")  # a prefix of its own: other tables and queues
    backfilled = Harness(other, monkeypatch, profile=streamed.profile)
    if streamed.profile == "aws":
        # The same landed batches as the sensor path took (what SQS delivered, in its
        # order), in this harness's own bucket; nothing is indexed.
        for key in streamed.objects.list("landing/"):
            backfilled.objects.put(key, streamed.objects.get(key))
    # No sensor has run here: the backfill indexes the landing zone itself.
    backfilled.backfill("postings_job", partitions_of(streamed, "raw_events"))
    backfilled.backfill("boards_job", partitions_of(streamed, "board_mergers"))
    for table in ("raw_events", "clean_postings", "deduped_postings"):
        a = streamed.table(table).sort_by([("event_id", "ascending")])
        b = backfilled.table(table).sort_by([("event_id", "ascending")])
        assert a.equals(b), table
    assert streamed.index().equals(backfilled.index())
    jobs = streamed.state().jobs()
    assert jobs.num_rows > 50 and jobs.equals(backfilled.state().jobs())
    assert streamed.duplicates().equals(backfilled.duplicates())
    assert streamed.dead_letters().count() == backfilled.dead_letters().count()


def test_search_index_holds_active_unduplicated_jobs(streamed):
    index = streamed.index()
    assert index.num_rows > 50
    assert len(set(index["job_id"].to_pylist())) == index.num_rows
    duplicates = streamed.duplicates()
    assert duplicates.num_rows > 0
    shadowed = set(duplicates["job_id"].to_pylist()) & set(index["job_id"].to_pylist())
    originals = set(duplicates["duplicate_of_job_id"].to_pylist())
    # A duplicate only shows while the job it duplicates is gone from the index.
    for job in shadowed:
        of = duplicates.filter(pc.equal(duplicates["job_id"], job))["duplicate_of_job_id"][
            0
        ].as_py()
        assert of not in set(index["job_id"].to_pylist()) and of in originals


def test_replayed_fix_lands_once(streamed):
    letters = streamed.dead_letters()
    wrong_type = [
        d
        for d in letters.list(code="wrong_type", limit=1000)
        # the fix below keeps the string fields: the job's id must be one of them
        if d.event_id and isinstance(json.loads(d.payload).get("data", {}).get("job_id"), str)
    ]
    assert wrong_type
    target = wrong_type[0]
    record = json.loads(target.payload)
    fixed = dict(record)
    fixed["version"] = 1
    fixed["data"] = {
        k: v
        for k, v in record["data"].items()
        if not isinstance(v, str)
        or k
        in {
            "job_id",
            "title",
            "company",
            "location",
            "employment_type",
            "currency",
            "url",
            "reason",
            "absorbed_board",
            "surviving_board",
        }
    }
    for key in ("salary_min", "salary_max"):
        fixed["data"][key] = None
    publisher = streamed.publisher("dlq-replay")
    report = replay(
        letters, publisher, ids=[target.id], fixes={target.id: json.dumps(fixed).encode()}
    )
    assert report.published == (target.id,), report
    streamed.drain()
    raw = streamed.table("raw_events")
    assert raw.filter(pc.equal(raw["event_id"], target.event_id)).num_rows == 1
    # A second replay publishes nothing, and re-running the sensor adds no duplicate.
    again = replay(letters, publisher, ids=[target.id])
    assert again.published == ()
    streamed.drain()
    assert streamed.table("raw_events").num_rows == raw.num_rows


# ~40 s locally on the 2-core machine, minutes on aws: both in make test-slow (CI runs both)
@pytest.mark.slow
@pytest.mark.parametrize("profile", ["local", "aws"])
def test_conservation_holds_with_conflicting_redeliveries_in_the_mix(
    profile, tmp_path, monkeypatch, request
):
    """A generated day (bad records, duplicate deliveries, late hours), then second versions
    of three of its postings: one with other content in its hour, one whose event time moved
    an hour on, each delivered twice, beside a true duplicate. Each second version is
    dead-lettered once, the first stays materialised, and every hour's books balance."""
    if profile == "aws":
        request.getfixturevalue("aws_config")
    generate(tmp_path, start=EPOCH, days=1, seed=23, events_per_day=150, bad_rate=0.05)
    m = manifest(tmp_path)
    harness = Harness(tmp_path, monkeypatch, profile=profile, max_runs_per_tick=1000)
    lines = landed_lines(tmp_path)
    if profile == "aws":
        harness.publish(lines, producer="gen")
    harness.drain()
    postings = {}
    for line in lines:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("type") == "job.posted":
                postings.setdefault(record.get("id"), record)
    raw = harness.table("raw_events")
    first, moved, same = [postings[i] for i in raw["event_id"].to_pylist() if i in postings][:3]
    other = {**first, "data": {**first["data"], "title": "A Different Title"}}
    hour_on = {**moved, "time": (dt.datetime.fromisoformat(moved["time"])
                                 + dt.timedelta(hours=1)).isoformat()}  # fmt: skip
    harness.publish([other, hour_on, same, other, hour_on], producer="redelivery")
    harness.drain()

    raw = harness.table("raw_events")
    assert len(set(raw["event_id"].to_pylist())) == raw.num_rows  # still each event once
    kept = raw.filter(pc.is_in(raw["event_id"], pa.array([first["id"], moved["id"]])))
    assert sorted(zip(kept["event_id"].to_pylist(), kept["title"].to_pylist(),
                      strict=True)) == sorted(
        [(first["id"], first["data"]["title"]), (moved["id"], moved["data"]["title"])]
    )  # fmt: skip
    # Each second version kept whole, once: its own content in its payload.
    conflicts = harness.dead_letters().list(code=CONFLICTING_REDELIVERY, limit=100)
    kept_whole = [(d.event_id, d.event_time, json.loads(d.payload)["data"]["title"])
                  for d in conflicts]  # fmt: skip
    assert sorted(kept_whole) == sorted(
        [(first["id"], when(first), "A Different Title"),
         (moved["id"], when(hour_on), moved["data"]["title"])]
    )  # fmt: skip
    materialised = raw.num_rows + harness.table("board_mergers").num_rows
    dead = harness.dead_letters().count()
    assert dead == m["bad_total"] + 2
    assert materialised + dead == m["events"] + 2  # every event once, each second version once
    hours = books.hours_between(EPOCH_TIME, EPOCH_TIME + dt.timedelta(days=3))
    booked = books.books(harness.stores, ["postings", "boards"], hours)
    assert booked and all(h.balanced and h.status == "balanced" for h in booked), [
        books.describe(h) for h in booked if not h.balanced
    ]
    assert sum(h.landed for h in booked) == sum(
        h.materialised + h.dead_lettered + h.duplicates for h in booked
    )
    assert sum(h.by_reason.get(CONFLICTING_REDELIVERY, 0) for h in booked) == 2


@pytest.mark.slow  # ~30-40 s on the 2-core machine: runs in make test-slow (CI runs both)
def test_daily_stats_carried_day_to_day_equal_a_rebuild_from_scratch(tmp_path, monkeypatch):
    import datetime as dt

    generate(tmp_path, start=EPOCH, days=3, events_per_day=300, seed=8, bad_rate=0.0)
    harness = Harness(tmp_path, monkeypatch)
    harness.drain()
    stores = harness.resources["streaming"].stores()
    # Recompute only the last day: it starts from the kept stats of the day before.
    carried = daily.board_daily_stats(stores, ["2026-11-03"], "2026-11-01")["2026-11-03"]
    events = pa.concat_tables([harness.table("raw_events"), harness.table("board_mergers")])
    of_day = events.filter(
        pc.equal(pc.strftime(events["event_time"], format="%Y-%m-%d"), "2026-11-03")
    )
    until = events.filter(
        pc.less(events["event_time"], pa.scalar(dt.datetime(2026, 11, 4, tzinfo=dt.UTC), tables.TS))
    )
    state = table_ops.apply_job_state(None, until)
    duplicates = table_ops.dedupe_postings(table_ops.clean_postings(until)).duplicates
    scratch = table_ops.board_daily_stats(of_day, state, dt.date(2026, 11, 3), duplicates)
    assert carried.equals(scratch)
    assert pc.sum(carried["active_jobs"]).as_py() > 0


def test_a_bad_record_delivered_twice_is_dead_lettered_once(tmp_path, monkeypatch):
    harness = Harness(tmp_path, monkeypatch)
    publisher = Publisher(LocalObjectStore(tmp_path), producer="test")
    good = {
        "id": "e-1",
        "type": "job.expired",
        "source": "hireloop",
        "version": 1,
        "time": "2026-11-01T10:00:00Z",
        "data": {"job_id": "hireloop-0000001", "reason": "filled"},
    }
    bad = b'{"id": "e-2", "type": "job.expired", "source": "hireloop", "vers'
    publisher.publish([good, bad])
    publisher.publish([bad, good, good])  # redeliveries, and one repeated inside a batch
    harness.drain()
    assert harness.table("raw_events")["event_id"].to_pylist() == ["e-1"]
    letters = harness.dead_letters().list(limit=10)
    assert [(d.code, d.payload) for d in letters] == [("malformed_json", bad)]
