"""The SQS drain: publish -> EventBridge rule -> SQS -> one landing batch on S3, deletes only
after the write, a crash between the two, a poison message into the DLQ; over moto server."""

from __future__ import annotations

import time

import orjson
import pytest

from figstream.cli.aws import MAX_RECEIVE_COUNT, setup
from figstream.ingest.eventbridge import EventBridgePublisher, raw_entry
from figstream.ingest.landing import LANDING_PREFIX, parse_batch_id
from figstream.ingest.routing import Router
from figstream.ingest.sqs_intake import (
    DrainReport,
    drain_queue,
    message_line,
    producer_name,
    queue_url,
)
from figstream.settings import routing_path
from figstream.storage.objects import ObjectStore
from figstream.storage.s3_objects import S3ObjectStore


@pytest.fixture(scope="module")
def router() -> Router:
    return Router.from_file(routing_path())


@pytest.fixture
def infra(aws_config, router):
    setup(aws_config, router, tables=False)
    return aws_config


def envelope(n: int, type_: str = "job.posted") -> dict:
    return {
        "id": f"evt-{n:05d}",
        "type": type_,
        "source": f"board-{n % 3}",
        "version": 1,
        "time": f"2026-11-01T{n % 24:02d}:00:00Z",
        "data": {"job_id": f"job-{n}", "salary": n * 1.5, "remote": n % 2 == 0, "tags": None},
    }


def lines_of(store: ObjectStore, key: str) -> list[bytes]:
    body = store.get(key)
    assert body.endswith(b"\n")
    return body[:-1].split(b"\n")


def queue_depth(config, stream: str, dlq: bool = False) -> int:
    attributes = config.client("sqs").get_queue_attributes(
        QueueUrl=queue_url(config, stream, dlq=dlq),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


# --- message bodies to lines (no emulator needed) ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "line", "ours"),
    [
        ("plain text", b"plain text", False),
        ('{"a": 1}', b'{"a": 1}', False),  # JSON, not an EventBridge event
        ('[{"detail": {}}]', b'[{"detail": {}}]', False),
        # An EventBridge event from elsewhere: its detail is no envelope.
        ('{"source": "aws.s3", "detail-type": "x", "detail": {"bucket": "b"}}',
         b'{"source": "aws.s3", "detail-type": "x", "detail": {"bucket": "b"}}', False),
        ("two\nlines", b'"two\\nlines"', False),  # a JSON string: one line, body kept
        ("   ", b'"   "', False),  # blank lines are skipped by readers: kept as a string
        ('{"source": "figstream.raw", "detail": {"raw_b64": "!!"}}',
         b'{"source": "figstream.raw", "detail": {"raw_b64": "!!"}}', False),
    ],
)  # fmt: skip
def test_a_body_that_is_not_a_figstream_event_is_kept_as_a_line(body, line, ours):
    assert message_line(body) == (line, ours)


def test_an_eventbridge_envelope_becomes_the_envelope_line():
    record = envelope(3)
    delivered = {
        "version": "0",
        "id": "eb-id",
        "detail-type": record["type"],
        "source": record["source"],
        "account": "123456789012",
        "time": "2026-11-01T03:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {k: record[k] for k in ("id", "version", "time", "data")},
    }
    line, ours = message_line(orjson.dumps(delivered).decode())
    assert ours and orjson.loads(line) == record
    assert list(orjson.loads(line)) == ["id", "type", "source", "version", "time", "data"]


def test_raw_entries_come_back_byte_for_byte():
    for raw in (b"not json", b'{"id": "\xff"}', b'{"x": 1}'):
        detail = raw_entry(raw, ["postings"], "bus")["Detail"]
        body = orjson.dumps({"source": "figstream.raw", "detail-type": "figstream.raw",
                             "detail": orjson.loads(detail)}).decode()  # fmt: skip
        assert message_line(body) == (raw, True)


def test_producer_names_are_valid_landing_producers():
    assert producer_name("postings") == "sqs-postings"
    assert producer_name("board_events") == "sqs-board-events"
    assert len(producer_name("s" * 63)) == 64


# --- over the emulator ------------------------------------------------------------------------


def test_publish_to_landing_end_to_end(infra, router):
    store = S3ObjectStore(infra)
    records = [envelope(n) for n in range(25)] + [envelope(25, "board.merged")]
    bad = [b"{broken", orjson.dumps({**envelope(26), "extra": 1})]
    EventBridgePublisher(infra, router).publish([*records, *bad])
    report = drain_queue(infra, "postings", store, wait_seconds=1)
    assert isinstance(report, DrainReport)
    assert (report.received, report.deleted, report.delete_failures) == (27, 27, [])
    assert (report.redelivered, report.foreign, report.dlq_depth, report.full) == (0, 0, 0, False)
    assert store.list(LANDING_PREFIX) == [report.batch_key]
    parsed = parse_batch_id(report.batch_key)
    assert parsed.producer == "sqs-postings"
    landed = lines_of(store, report.batch_key)
    assert sorted(orjson.loads(x)["id"] for x in landed if x not in bad) == [
        r["id"] for r in records[:25]
    ]
    assert {orjson.loads(x)["id"]: orjson.loads(x) for x in landed if x not in bad} == {
        r["id"]: r for r in records[:25]
    }
    assert sorted(x for x in landed if x in bad) == sorted(bad)
    boards = drain_queue(infra, "boards", store, wait_seconds=0)
    assert [orjson.loads(x) for x in lines_of(store, boards.batch_key)] == records[25:]
    assert queue_depth(infra, "postings") == queue_depth(infra, "boards") == 0
    empty = drain_queue(infra, "postings", store, wait_seconds=0)
    assert (empty.received, empty.batch_key) == (0, None)
    assert len(store.list(LANDING_PREFIX)) == 2


def test_max_messages_and_max_seconds_bound_a_drain(infra, router):
    store = S3ObjectStore(infra)
    EventBridgePublisher(infra, router).publish([envelope(n) for n in range(23)])
    out_of_time = drain_queue(infra, "postings", store, wait_seconds=0, max_seconds=0)
    assert (out_of_time.received, out_of_time.batch_key, out_of_time.full) == (0, None, True)
    first = drain_queue(infra, "postings", store, max_messages=15, wait_seconds=0)
    assert (first.received, first.full) == (15, True)
    second = drain_queue(infra, "postings", store, wait_seconds=0)
    assert (second.received, second.full) == (8, False)
    ids = [orjson.loads(x)["id"] for k in (first.batch_key, second.batch_key)
           for x in lines_of(store, k)]  # fmt: skip
    assert sorted(ids) == [f"evt-{n:05d}" for n in range(23)]


def test_a_crash_between_write_and_delete_lands_a_harmless_duplicate(infra, router, monkeypatch):
    from figstream.ingest import sqs_intake

    store = S3ObjectStore(infra)
    records = [envelope(n) for n in range(12)]
    EventBridgePublisher(infra, router).publish(records)

    def crash(*args, **kwargs):
        raise SystemExit("killed between the write and the delete")

    monkeypatch.setattr(sqs_intake, "_delete", crash)
    with pytest.raises(SystemExit):
        drain_queue(infra, "postings", store, wait_seconds=0, visibility_timeout=1)
    monkeypatch.undo()
    [first] = store.list(LANDING_PREFIX)  # durable before the crash
    assert drain_queue(infra, "postings", store, wait_seconds=0).received == 0  # in flight
    time.sleep(1.5)  # the visibility timeout passes: SQS delivers them again
    again = drain_queue(infra, "postings", store, wait_seconds=0)
    assert (again.received, again.redelivered, again.deleted) == (12, 12, 12)
    assert store.list(LANDING_PREFIX) == [first, again.batch_key]

    def ids(key):
        return sorted(orjson.loads(x)["id"] for x in lines_of(store, key))

    assert ids(first) == ids(again.batch_key) == [r["id"] for r in records]
    assert queue_depth(infra, "postings") == 0


class RefusingStore(S3ObjectStore):
    def put(self, key, data):
        raise OSError("the bucket refuses writes")


def test_a_poison_message_ends_in_the_dlq_and_is_reported(infra):
    sqs = infra.client("sqs")
    sqs.send_message(QueueUrl=queue_url(infra, "postings"), MessageBody="poison")
    refusing = RefusingStore(infra)
    for _ in range(MAX_RECEIVE_COUNT):
        with pytest.raises(OSError, match="refuses"):
            drain_queue(infra, "postings", refusing, wait_seconds=0, visibility_timeout=1)
        time.sleep(1.1)  # hidden for the visibility timeout, then received again
    store = S3ObjectStore(infra)
    report = drain_queue(infra, "postings", store, wait_seconds=0)
    assert (report.received, report.batch_key, report.dlq_depth) == (0, None, 1)
    assert store.list(LANDING_PREFIX) == []
    [parked] = sqs.receive_message(QueueUrl=queue_url(infra, "postings", dlq=True))["Messages"]
    assert parked["Body"] == "poison"


def test_a_message_seen_twice_in_one_drain_lands_once(infra):
    sqs = infra.client("sqs")
    sqs.send_message(QueueUrl=queue_url(infra, "postings"), MessageBody='{"a": 1}')
    store = S3ObjectStore(infra)
    report = drain_queue(infra, "postings", store, wait_seconds=0, visibility_timeout=0)
    assert (report.received, report.deleted, report.foreign) == (1, 1, 1)
    assert lines_of(store, report.batch_key) == [b'{"a": 1}']
    assert queue_depth(infra, "postings") == 0


def test_bad_arguments_and_a_missing_queue(aws_config):
    store = S3ObjectStore(aws_config)
    with pytest.raises(ValueError, match="max_messages"):
        drain_queue(aws_config, "postings", store, max_messages=0)
    with pytest.raises(ValueError, match="wait_seconds"):
        drain_queue(aws_config, "postings", store, wait_seconds=21)
    with pytest.raises(LookupError, match="figstream aws setup"):
        drain_queue(aws_config, "postings", store)


class Faults:
    """Every call of the hooked clients fails with a 5xx or S3's SlowDown (503) at ``rate``,
    before it reaches the server; botocore's retry mode must carry every one of them."""

    def __init__(self, rate: float, seed: int = 7) -> None:
        import random

        self.rate, self.random, self.injected = rate, random.Random(seed), 0

    def __call__(self, request, **kwargs):
        from botocore.awsrequest import AWSResponse

        if self.random.random() >= self.rate:
            return None
        self.injected += 1
        status, body = self.random.choice(
            [(500, b"<Error><Code>InternalError</Code></Error>"),
             (503, b"<Error><Code>SlowDown</Code><Message>Reduce</Message></Error>"),
             (503, b"<Error><Code>ServiceUnavailable</Code></Error>")]
        )  # fmt: skip

        class Raw:
            def stream(self, **kwargs):
                yield body

        return AWSResponse(request.url, status, {}, Raw())


def test_injected_5xx_and_throttling_are_retried_nothing_lost_nothing_doubled(infra, router):
    faults = Faults(rate=0.1)
    clients = [infra.client(service) for service in ("s3", "sqs", "events")]
    for client in clients:
        client.meta.events.register_first("before-send", faults)
    try:
        store = S3ObjectStore(infra)
        records = [envelope(n) for n in range(60)]
        EventBridgePublisher(infra, router).publish(records)
        keys = []
        while (report := drain_queue(infra, "postings", store, wait_seconds=0)).received:
            assert report.delete_failures == []
            keys.append(report.batch_key)
        landed = [orjson.loads(x) for key in keys for x in lines_of(store, key)]
    finally:
        for client in clients:
            client.meta.events.unregister("before-send", faults)
    assert faults.injected >= 3
    assert sorted(landed, key=lambda r: r["id"]) == records  # each once
    assert queue_depth(infra, "postings") == queue_depth(infra, "postings", dlq=True) == 0


def test_deletes_that_fail_are_reported_and_the_drain_still_returns_its_batch(infra, router):
    store = S3ObjectStore(infra)
    records = [envelope(n) for n in range(14)]
    EventBridgePublisher(infra, router).publish(records)
    sqs = infra.client("sqs")
    failing = Faults(rate=1.0)
    sqs.meta.events.register_first("before-send.sqs.DeleteMessageBatch", failing)
    try:
        report = drain_queue(infra, "postings", store, wait_seconds=0, visibility_timeout=1)
    finally:
        sqs.meta.events.unregister("before-send.sqs.DeleteMessageBatch", failing)
    assert (report.received, report.deleted, len(report.delete_failures)) == (14, 0, 14)
    # SQS speaks JSON: the injected XML bodies leave the HTTP status as the code.
    assert {f["Code"] for f in report.delete_failures} <= {"500", "503"}
    # Two calls, each retried to the end (botocore's retries={"max_attempts": n} makes n
    # retries after the first try; "total_max_attempts" would make n tries in all).
    assert failing.injected in (2 * infra.max_attempts, 2 * (infra.max_attempts + 1))
    assert len(lines_of(store, report.batch_key)) == 14
    time.sleep(1.5)
    again = drain_queue(infra, "postings", store, wait_seconds=0)
    assert (again.received, again.redelivered, again.deleted) == (14, 14, 14)
