"""EventBridgePublisher: entries 1:1 from the envelope, raw records kept, request limits,
failed entries resent; over moto server (the bus, rules and queues of ``figstream aws setup``).

The published events are read back from the streams' SQS queues with the drain, so each test
also checks that EventBridge routed them with routing.yaml's patterns as rules.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import orjson
import pytest

from figstream.cli.aws import setup
from figstream.ingest.eventbridge import (
    MAX_REQUEST_BYTES,
    RAW_SOURCE,
    EventBridgePublisher,
    EventBridgePublishError,
    entry_size,
    to_entry,
)
from figstream.ingest.routing import Router
from figstream.ingest.sqs_intake import drain_queue
from figstream.settings import routing_path
from figstream.storage.s3_objects import S3ObjectStore

BUS = "bus"


@pytest.fixture(scope="module")
def router() -> Router:
    return Router.from_file(routing_path())


def envelope(n: int, type_: str = "job.posted", size: int = 0) -> dict:
    return {
        "id": f"evt-{n:05d}",
        "type": type_,
        "source": "board-a",
        "version": 1,
        "time": f"2026-11-01T10:{n % 60:02d}:00.123456Z",
        "data": {"job_id": f"job-{n}", "title": "Engineer é", "pad": "x" * size},
    }


@pytest.fixture
def infra(aws_config, router):
    setup(aws_config, router, tables=False)
    return aws_config


class Recording:
    """The real client, with each PutEvents request recorded and, if asked, some entries failed
    as EventBridge reports them: in the response, never sent on."""

    def __init__(self, client, fail=None):
        self.client = client
        self.requests: list[list[dict]] = []
        self.fail = fail or (lambda call, entry: None)  # -> an error code or None

    def put_events(self, Entries):
        call = len(self.requests)
        self.requests.append(Entries)
        codes = [self.fail(call, entry) for entry in Entries]
        passed = [e for e, code in zip(Entries, codes, strict=True) if code is None]
        results = iter(self.client.put_events(Entries=passed)["Entries"] if passed else [])
        entries = [
            next(results) if code is None else {"ErrorCode": code, "ErrorMessage": "injected"}
            for code in codes
        ]
        failed = sum(code is not None for code in codes)
        return {"FailedEntryCount": failed, "Entries": entries}


def drained(config, stream: str) -> list[bytes]:
    store = S3ObjectStore(config)
    lines: list[bytes] = []
    while True:
        report = drain_queue(config, stream, store, wait_seconds=0, check_dlq=False)
        if report.batch_key is None:
            return lines
        lines += store.get(report.batch_key).splitlines()


# --- the entry forms (no emulator needed) -----------------------------------------------------


def test_an_envelope_maps_one_to_one_onto_an_entry(router):
    record = envelope(7)
    entry = to_entry(orjson.dumps(record), router, BUS)
    assert entry["Source"] == "board-a" and entry["DetailType"] == "job.posted"
    assert entry["Time"] == datetime(2026, 11, 1, 10, 7, 0, 123456, tzinfo=UTC)
    assert entry["EventBusName"] == BUS
    detail = json.loads(entry["Detail"])
    assert list(detail) == ["id", "version", "time", "data"]
    assert detail == {k: record[k] for k in ("id", "version", "time", "data")}
    assert (
        entry_size(entry) == len("board-a") + len("job.posted") + len(entry["Detail"].encode()) + 14
    )


@pytest.mark.parametrize(
    ("line", "streams"),
    [
        (b"not json at all", ["postings"]),
        (b'{"id": "a", "type": "job.pos', ["postings"]),  # truncated
        (b"[1, 2]", ["postings"]),  # not an object
        (orjson.dumps({**envelope(1), "extra": 1}), ["postings"]),  # routed, but not 1:1
        (orjson.dumps(envelope(1, "job.deleted") | {"type": "nope.nothing"}), ["postings"]),
        (orjson.dumps({**envelope(2), "source": RAW_SOURCE}), ["postings"]),
        (orjson.dumps({**envelope(3, "board.merged"), "extra": 1}), ["boards"]),
        (orjson.dumps({**envelope(4), "source": ""}), ["postings"]),
        (orjson.dumps({**envelope(5), "type": 5}), ["postings"]),
    ],
)
def test_records_that_are_not_routable_envelopes_travel_raw(router, line, streams):
    entry = to_entry(line, router, BUS)
    assert entry["Source"] == RAW_SOURCE and "Time" not in entry
    detail = json.loads(entry["Detail"])
    assert detail == {"raw": line.decode(), "streams": streams}


def test_bytes_that_are_not_utf8_travel_as_base64(router):
    line = b'{"id": "\xff\xfe"}'
    detail = json.loads(to_entry(line, router, BUS)["Detail"])
    assert base64.b64decode(detail["raw_b64"]) == line
    assert detail["streams"] == ["postings"]


def test_an_unreadable_time_leaves_time_to_eventbridge(router):
    entry = to_entry(orjson.dumps({**envelope(1), "time": "yesterday"}), router, BUS)
    assert "Time" not in entry and json.loads(entry["Detail"])["time"] == "yesterday"


# --- over the emulator ------------------------------------------------------------------------


def test_eleven_events_make_two_requests_and_land_on_their_streams(infra, router):
    client = Recording(infra.client("events"))
    publisher = EventBridgePublisher(infra, router, client=client)
    records = [envelope(n) for n in range(10)] + [envelope(10, "board.merged")]
    ids = publisher.publish(records)
    assert len(ids) == len(set(ids)) == 11
    assert [len(r) for r in client.requests] == [10, 1]
    assert (publisher.records, publisher.batches, publisher.resent) == (11, 2, 0)
    postings = [orjson.loads(x) for x in drained(infra, "postings")]
    assert sorted(postings, key=lambda r: r["id"]) == records[:10]
    assert [orjson.loads(x) for x in drained(infra, "boards")] == records[10:]


def test_requests_stay_under_256_kb(infra, router):
    client = Recording(infra.client("events"))
    publisher = EventBridgePublisher(infra, router, client=client)
    records = [envelope(n, size=100_000) for n in range(5)]
    publisher.publish(records)
    sizes = [sum(entry_size(e) for e in request) for request in client.requests]
    assert [len(r) for r in client.requests] == [2, 2, 1]
    assert all(size <= MAX_REQUEST_BYTES for size in sizes)
    assert sorted(orjson.loads(x)["id"] for x in drained(infra, "postings")) == [
        r["id"] for r in records
    ]


def test_an_event_over_256_kb_is_refused_naming_it(infra, router):
    client = Recording(infra.client("events"))
    publisher = EventBridgePublisher(infra, router, client=client)
    records = [envelope(n) for n in range(11)] + [envelope(11, size=300_000)]
    with pytest.raises(EventBridgePublishError, match=r"record 11 is 300,\d+ bytes") as info:
        publisher.publish(records)
    assert len(info.value.landed) == 10  # the first full request went; the rest did not
    assert [len(r) for r in client.requests] == [10]
    assert len(drained(infra, "postings")) == 10


def test_raw_records_reach_their_stream_byte_for_byte(infra, router):
    lines = [
        b"not json",
        b'{"id": "\xff"}',
        orjson.dumps({**envelope(1), "extra": True}),
        orjson.dumps(envelope(2, "nope.nothing")),
        orjson.dumps({**envelope(3, "board.merged"), "version": "x", "more": 1}),
    ]
    publisher = EventBridgePublisher(infra, router)
    publisher.publish(lines)
    assert publisher.raw == 5
    assert sorted(drained(infra, "postings")) == sorted(lines[:4])
    assert drained(infra, "boards") == lines[4:]


def test_records_that_cannot_be_a_line_are_refused_as_locally(infra, router):
    publisher = EventBridgePublisher(infra, router)
    with pytest.raises(EventBridgePublishError, match="record 1 contains a raw newline"):
        publisher.publish([orjson.dumps(envelope(0)), b"a\nb"])
    with pytest.raises(EventBridgePublishError, match="record 0 is empty"):
        publisher.publish([b""])
    with pytest.raises(EventBridgePublishError, match="must be bytes or a dict"):
        publisher.publish(["text"])
    assert drained(infra, "postings") == []


def test_entries_failed_in_the_response_are_resent_with_back_off(infra, router):
    failing = {"evt-00001", "evt-00003"}

    def fail(call, entry):
        return (
            "InternalFailure"
            if call == 0 and json.loads(entry["Detail"])["id"] in failing
            else None
        )

    client = Recording(infra.client("events"), fail)
    sleeps: list[float] = []
    publisher = EventBridgePublisher(infra, router, client=client, sleep=sleeps.append)
    records = [envelope(n) for n in range(5)]
    ids = publisher.publish(records)
    assert len(ids) == 5 and publisher.resent == 2 and len(sleeps) == 1
    assert [len(r) for r in client.requests] == [5, 2]
    assert sorted(json.loads(e["Detail"])["id"] for e in client.requests[1]) == sorted(failing)
    landed = sorted(drained(infra, "postings"), key=lambda x: orjson.loads(x)["id"])
    assert [orjson.loads(x) for x in landed] == records  # each exactly once


def test_an_entry_failing_every_time_raises_after_max_attempts(infra, router):
    client = Recording(
        infra.client("events"),
        lambda call, e: "ThrottlingException" if "evt-00000" in e["Detail"] else None,
    )
    publisher = EventBridgePublisher(
        infra, router, client=client, max_attempts=3, sleep=lambda s: None
    )
    with pytest.raises(
        EventBridgePublishError, match=r"1 entr.* after 3 sends.*Throttling"
    ) as info:
        publisher.publish([envelope(0), envelope(1)])
    assert len(info.value.landed) == 1
    assert len(client.requests) == 3
    assert [orjson.loads(x)["id"] for x in drained(infra, "postings")] == ["evt-00001"]


def test_an_envelope_eventbridge_refuses_is_resent_raw(infra, router):
    record = envelope(0)

    def fail(call, entry):
        return "InvalidArgument" if entry["Source"] != RAW_SOURCE and call == 0 else None

    client = Recording(infra.client("events"), fail)
    publisher = EventBridgePublisher(infra, router, client=client, sleep=lambda s: None)
    publisher.publish([record])
    assert [e["Source"] for r in client.requests for e in r] == ["board-a", RAW_SOURCE]
    assert drained(infra, "postings") == [orjson.dumps(record)]


def test_a_final_error_code_raises_at_once(infra, router):
    client = Recording(infra.client("events"), lambda call, e: "AccessDeniedException")
    publisher = EventBridgePublisher(infra, router, client=client, sleep=lambda s: None)
    with pytest.raises(EventBridgePublishError, match=r"refused an entry for good.*AccessDenied"):
        publisher.publish([envelope(0)])
    assert len(client.requests) == 1


def test_max_attempts_must_be_positive(aws_config, router):
    with pytest.raises(ValueError, match="max_attempts"):
        EventBridgePublisher(aws_config, router, max_attempts=0)


def test_figstream_publish_puts_on_the_bus_on_the_aws_profile(infra, tmp_path, capsys):
    from figstream.cli.main import main

    records = [orjson.dumps(envelope(0)), b"{truncated", orjson.dumps(envelope(1, "board.merged"))]
    source = tmp_path / "events.jsonl"
    source.write_bytes(records[0] + b"\n\n" + records[1] + b"\n" + records[2] + b"\n")
    assert main(["publish", str(source)]) == 0  # FIGSTREAM_PROFILE=aws from the fixture
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3  # one EventBridge event id per record
    assert f"3 records in 1 PutEvents requests to bus {infra.event_bus_name}" in err
    assert "skipped 1 blank lines" in err
    assert sorted(drained(infra, "postings")) == sorted(records[:2])
    assert drained(infra, "boards") == records[2:]


def test_figstream_produce_puts_the_live_stream_on_the_bus_on_the_aws_profile(
    infra, tmp_path, capsys, monkeypatch
):
    from figstream.cli.main import main

    monkeypatch.setenv("FIGSTREAM_HOME", str(tmp_path / "home"))
    args = ["produce", "--duration", "1", "--rate", "8", "--seed", "3", "--bad-rate", "0"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"into the EventBridge bus {infra.event_bus_name}" in err
    assert not (tmp_path / "home" / "landing").exists()  # nothing landed locally
    lines = drained(infra, "postings") + drained(infra, "boards")
    assert lines  # the events went through the bus and its rules into the queues
    ids = {orjson.loads(line)["id"] for line in lines}
    assert len(ids) >= 4
