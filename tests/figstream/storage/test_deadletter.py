"""The dead-letter stores, SQLite and DynamoDB (over moto server) from one suite, and replay:
idempotent adds, exact bytes, filters, fixes. DynamoDB-only cases (payloads over its item
limit) are in ``test_dynamo_deadletter.py``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from figstream.events.envelope import Envelope
from figstream.events.validation import Rejection, validate
from figstream.storage.deadletter import (
    CONFLICTING_REDELIVERY,
    DEAD_LETTER_SCHEMA,
    DeadLetterStore,
    ReplayReport,
    SqliteDeadLetterStore,
    UnknownDeadLetterError,
    deadletter_path,
    replay,
)

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def envelope(**changes) -> dict:
    record = {
        "id": "evt-1",
        "type": "job.posted",
        "source": "hireloop",
        "version": 1,
        "time": "2025-03-01T10:00:00Z",
        "data": {
            "job_id": "j1",
            "title": "Dev",
            "company": "Acme",
            "location": "Oslo",
            "employment_type": "full_time",
            "remote": True,
            "salary_min": 100,
            "url": "https://x.example/j1",
        },
    }
    data = changes.pop("data", {})
    record.update(changes)
    record["data"] = {**record["data"], **data}
    return record


GOOD = orjson.dumps(envelope(id="good"))
WRONG_TYPE = orjson.dumps(envelope(id="wrong", data={"salary_min": "100"}))
UNKNOWN_VERSION = orjson.dumps(envelope(id="future", version=9))
NOT_UTF8 = b'{"id":"bad\xff\xfe","type":"job.posted"}\x00\xc3'


def rejected(batch_id: str, line_no: int, payload: bytes, **extra) -> dict:
    reason = validate(payload)
    assert isinstance(reason, Rejection)
    return {
        "batch_id": batch_id,
        "line_no": line_no,
        "stream": "jobs",
        "partition_key": "2025-03-01-10:00",
        "event_id": None,
        "event_time": None,
        "code": reason.code,
        "detail": reason.detail,
        "payload": payload,
        **extra,
    }


def as_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=DEAD_LETTER_SCHEMA)


class FakePublisher:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[bytes]] = []
        self.fail = fail

    def publish(self, records) -> list[str]:
        if self.fail:
            raise OSError("landing zone unavailable")
        self.batches.append(list(records))
        return [f"landing/2025-03-01/replay-{len(self.batches)}.jsonl"]


@pytest.fixture(params=["sqlite", "dynamo"])
def dlq(request: pytest.FixtureRequest, tmp_path: Path) -> DeadLetterStore:
    if request.param == "sqlite":
        return SqliteDeadLetterStore(tmp_path / "state" / "deadletter.sqlite")
    from figstream.storage.dynamo_deadletter import DynamoDeadLetterStore
    from figstream.storage.dynamo_state import ensure_tables

    config = request.getfixturevalue("aws_config")
    ensure_tables(config)
    config.client("s3").create_bucket(Bucket=config.bucket_name)
    return DynamoDeadLetterStore(config)


def test_add_is_idempotent_and_not_double_counted(dlq):
    rows = [rejected("b1", 1, WRONG_TYPE), rejected("b1", 2, UNKNOWN_VERSION)]
    assert dlq.add(as_table(rows)) == 2
    first = dlq.get("b1:1")
    assert dlq.add(as_table(rows)) == 0
    # A second run of another partition over the same batch, plus one new record.
    again = [rejected("b1", 1, WRONG_TYPE, partition_key="2025-03-01-11:00")]
    again.append(rejected("b2", 1, NOT_UTF8))
    again.append(rejected("b2", 1, NOT_UTF8))  # repeated within one table
    assert dlq.add(as_table(again)) == 1
    assert dlq.count() == 3
    assert dlq.get("b1:1") == first  # first add's partition and time stay
    assert dlq.add(as_table([])) == 0


def test_payload_bytes_round_trip_exactly(dlq):
    dlq.add(as_table([rejected("b2", 7, NOT_UTF8)]))
    record = dlq.get("b2:7")
    assert record.payload == NOT_UTF8
    assert record.payload_text() is None
    assert record.code == "bad_encoding"
    assert (record.batch_id, record.line_no, record.event_id) == ("b2", 7, None)


def test_event_fields_and_times_round_trip(dlq):
    when = datetime(2025, 3, 1, 10, 0, 0, 123_456, tzinfo=UTC)
    dlq.add(as_table([rejected("b1", 3, WRONG_TYPE, event_id="wrong", event_time=when)]))
    record = dlq.get("b1:3")
    assert (record.event_id, record.event_time) == ("wrong", when)
    assert record.dead_lettered_at.tzinfo == UTC
    assert record.replayed_at is None and not record.replayed


def test_add_fills_stream_and_partition_and_accepts_transform_rejections(dlq):
    transform = pytest.importorskip("figstream.streaming.parse")
    batch = b"\n".join([GOOD, WRONG_TYPE, NOT_UTF8, b"", UNKNOWN_VERSION])
    parsed = transform.parse_batch(batch, "landing/2025-03-01/b9")
    added = dlq.add(parsed.rejected, stream="jobs", partition_key="2025-03-01-10:00")
    assert added == parsed.rejected.num_rows == 3
    assert dlq.counts_by_code() == {"bad_encoding": 1, "unknown_version": 1, "wrong_type": 1}
    assert dlq.get("landing/2025-03-01/b9:3").payload == NOT_UTF8
    assert dlq.get("landing/2025-03-01/b9:2").event_id == "wrong"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["code"]), "missing column"),
        (lambda t: t.drop_columns(["stream"]), "missing column"),
        (lambda t: t.set_column(8, "payload", pa.array([None], pa.binary())), "'payload'"),
        (lambda t: t.set_column(1, "line_no", pa.array(["x"])), "x"),
    ],
)
def test_bad_rows_are_refused(dlq, change, message):
    with pytest.raises(ValueError, match=message):
        dlq.add(change(as_table([rejected("b1", 1, WRONG_TYPE)])))
    assert dlq.count() == 0


def test_list_filters_and_counts(dlq):
    dlq.add(
        as_table(
            [
                rejected("b1", 1, WRONG_TYPE),
                rejected("b1", 2, UNKNOWN_VERSION),
                rejected("b1", 10, NOT_UTF8, partition_key="2025-03-01-11:00"),
                rejected("b3", 1, WRONG_TYPE, stream="boards"),
            ]
        )
    )
    ids = lambda records: [r.id for r in records]  # noqa: E731
    assert ids(dlq.list()) == ["b1:1", "b1:2", "b1:10", "b3:1"]  # by batch, then line number
    assert ids(dlq.list(code="wrong_type")) == ["b1:1", "b3:1"]
    assert ids(dlq.list(stream="jobs", code="wrong_type")) == ["b1:1"]
    assert ids(dlq.list(partition_key="2025-03-01-11:00")) == ["b1:10"]
    assert ids(dlq.list(limit=2)) == ["b1:1", "b1:2"]
    assert ids(dlq.list(limit=2, newest_first=True)) == ["b3:1", "b1:10"]
    assert ids(dlq.list(limit=None)) == ids(dlq.list())
    assert dlq.list(code="nope") == []
    with pytest.raises(ValueError):
        dlq.list(limit=-1)

    assert dlq.mark_replayed(["b1:2", "b1:2"], "landing/x.jsonl") == 1
    assert dlq.mark_replayed(["b1:2", "nope"], "landing/y.jsonl") == 0
    assert dlq.get("b1:2").replay_key == "landing/x.jsonl"
    assert ids(dlq.list()) == ["b1:1", "b1:10", "b3:1"]
    assert ids(dlq.list(include_replayed=True)) == ["b1:1", "b1:2", "b1:10", "b3:1"]
    assert dlq.count() == 4
    assert dlq.count(include_replayed=False) == 3
    assert dlq.count(stream="jobs", partition_key="2025-03-01-10:00") == 2
    assert dlq.counts_by_code(stream="jobs") == {
        "bad_encoding": 1,
        "unknown_version": 1,
        "wrong_type": 1,
    }
    assert dlq.counts_by_code(stream="jobs", include_replayed=False) == {
        "bad_encoding": 1,
        "wrong_type": 1,
    }
    assert dlq.get("nope") is None
    with pytest.raises(TypeError):
        dlq.mark_replayed("b1:1", "k")


def test_replay_fixes_republishes_once_and_keeps_what_still_fails(dlq):
    dlq.add(as_table([rejected("b1", 1, WRONG_TYPE), rejected("b1", 2, UNKNOWN_VERSION)]))
    fixed = orjson.dumps(envelope(id="wrong"), option=orjson.OPT_INDENT_2)  # pretty-printed
    publisher = FakePublisher()

    report = replay(dlq, publisher, ids=["b1:2"], fixes={"b1:1": fixed})

    assert report.published == ("b1:1",)
    assert report.landing_keys == ("landing/2025-03-01/replay-1.jsonl",)
    assert list(report.still_failing) == ["b1:2"]
    assert report.still_failing["b1:2"].code == "unknown_version"
    (batch,) = publisher.batches
    assert batch == [orjson.dumps(envelope(id="wrong"))]  # one line per record
    assert isinstance(validate(batch[0]), Envelope)
    assert dlq.get("b1:1").replay_key == "landing/2025-03-01/replay-1.jsonl"
    assert dlq.get("b1:1").payload == WRONG_TYPE  # the original bytes are kept
    assert not dlq.get("b1:2").replayed
    assert [r.id for r in dlq.list()] == ["b1:2"]

    second = replay(dlq, publisher, ids=["b1:1", "b1:2"], fixes={"b1:1": fixed})
    assert second.published == () and second.already_replayed == ("b1:1",)
    assert list(second.still_failing) == ["b1:2"]
    assert len(publisher.batches) == 1  # nothing republished


def conflicting(batch_id: str, line_no: int, **changes) -> dict:
    """A valid second version of event ``good``, dead-lettered as the ingest step does."""
    payload = orjson.dumps(envelope(id="good", **changes))
    assert isinstance(validate(payload), Envelope)
    return {**rejected("b1", 1, WRONG_TYPE), "batch_id": batch_id, "line_no": line_no,
            "event_id": "good", "code": CONFLICTING_REDELIVERY, "payload": payload,
            "detail": "event id good was delivered before with other content"}  # fmt: skip


def test_replay_refuses_a_conflicting_redelivery_unless_a_fix_gives_it_a_new_id(dlq):
    dlq.add(as_table([conflicting("b7", 1, data={"title": "Other"}),
                      conflicting("b7", 2, data={"title": "Third"}),
                      rejected("b1", 1, WRONG_TYPE)]))  # fmt: skip
    publisher = FakePublisher()
    # Everything outstanding: the conflicting versions are refused and stay; the rest goes on.
    report = replay(dlq, publisher)
    assert sorted(report.refused) == ["b7:1", "b7:2"]
    assert "first version stays materialised" in report.refused["b7:1"]
    assert list(report.still_failing) == ["b1:1"] and publisher.batches == []
    assert report.selected == 3
    assert {r.id for r in dlq.list()} == {"b1:1", "b7:1", "b7:2"}
    # A fix that keeps the event id would only conflict again: refused too.
    same_id = orjson.dumps(envelope(id="good", data={"title": "Fixed"}))
    report = replay(dlq, publisher, fixes={"b7:1": same_id})
    assert list(report.refused) == ["b7:1"] and "keeps event id good" in report.refused["b7:1"]
    assert publisher.batches == [] and not dlq.get("b7:1").replayed
    # A fix that makes it another event (a new id) lands, once.
    new_id = orjson.dumps(envelope(id="good-2", data={"title": "Other"}))
    report = replay(dlq, publisher, fixes={"b7:1": new_id})
    assert report.published == ("b7:1",) and report.refused == {}
    assert publisher.batches == [[new_id]]
    assert dlq.get("b7:1").replayed and not dlq.get("b7:2").replayed
    # By code: the other version is refused again, and stays.
    report = replay(dlq, publisher, code=CONFLICTING_REDELIVERY)
    assert list(report.refused) == ["b7:2"] and report.published == ()


def test_replay_selects_by_code_or_everything_outstanding(dlq):
    dlq.add(
        as_table(
            [
                rejected("b1", 1, WRONG_TYPE),
                rejected("b1", 2, UNKNOWN_VERSION),
                rejected("b1", 3, NOT_UTF8),
            ]
        )
    )

    def accept_future(payload: bytes):
        """As if version 9 had been registered since."""
        result = validate(payload)
        if isinstance(result, Rejection) and result.code == "unknown_version":
            return validate(payload.replace(b'"version":9', b'"version":1'))
        return result

    publisher = FakePublisher()
    by_code = replay(dlq, publisher, accept_future, code="unknown_version")
    assert by_code.published == ("b1:2",) and by_code.still_failing == {}
    assert publisher.batches == [[UNKNOWN_VERSION]]  # the original bytes, untouched

    everything = replay(dlq, publisher)
    assert everything.published == ()
    assert sorted(everything.still_failing) == ["b1:1", "b1:3"]
    assert everything.already_replayed == ()  # only outstanding records are selected
    assert len(publisher.batches) == 1


def test_replay_refuses_unknown_ids_before_publishing(dlq):
    dlq.add(as_table([rejected("b1", 1, WRONG_TYPE)]))
    publisher = FakePublisher()
    with pytest.raises(UnknownDeadLetterError, match="'nope'"):
        replay(dlq, publisher, ids=["b1:1"], fixes={"nope": GOOD, "b1:1": GOOD})
    assert publisher.batches == []
    assert not dlq.get("b1:1").replayed


def test_a_failed_publish_marks_nothing(dlq):
    dlq.add(as_table([rejected("b1", 1, WRONG_TYPE)]))
    fix = {"b1:1": orjson.dumps(envelope(id="wrong"))}
    with pytest.raises(OSError):
        replay(dlq, FakePublisher(fail=True), fixes=fix)
    assert not dlq.get("b1:1").replayed
    report = replay(dlq, FakePublisher(), fixes=fix)
    assert report == ReplayReport(
        published=("b1:1",), landing_keys=("landing/2025-03-01/replay-1.jsonl",)
    )


def test_replay_through_the_real_publisher(dlq, tmp_path):
    objectstore = pytest.importorskip("figstream.storage.objects")
    publish = pytest.importorskip("figstream.ingest.publish")
    dlq.add(as_table([rejected("b1", 1, WRONG_TYPE)]))
    store = objectstore.LocalObjectStore(tmp_path / "home")
    publisher = publish.Publisher(store, producer="dlq-replay")
    fixed = orjson.dumps(envelope(id="wrong"))
    report = replay(dlq, publisher, fixes={"b1:1": fixed})
    assert report.published == ("b1:1",)
    (key,) = report.landing_keys
    assert store.get(key) == fixed + b"\n"
    assert dlq.get("b1:1").replay_key == key


def test_deadletter_path_is_under_figstream_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FIGSTREAM_HOME", str(tmp_path))
    assert deadletter_path() == tmp_path.resolve() / "state" / "deadletter.sqlite"
