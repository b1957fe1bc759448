"""The streaming path on the aws profile with injected faults over real HTTP (issue 15): every
S3, SQS and DynamoDB call goes through ``tests/fault_proxy.py``, which answers 10% of them
with the service's throttling or 5xx error before forwarding, and 3% with a 500 after moto
acted (the answer lost: the retried conditional write then finds its own write, the retried
``ReceiveMessage`` leaves the first answer's messages in flight, the retried
``DeleteMessageBatch`` finds them deleted). A generated day goes publish -> EventBridge -> SQS
-> landing -> ingest -> clean -> dedupe -> job_state / search index through the real sensors
and jobs, and must end exactly as the same day streamed on the local profile with no faults:
the same event ids materialised once each, the same dead letters (reason and bytes), the same
job state and search index, and every hour's books balanced.

A poison message (one whose drain fails every time) ends in its queue's DLQ after
``maxReceiveCount`` receives, and ``figstream aws status`` reports it.

Bad inputs: the generator's bad records (every kind) and duplicate deliveries, plus the
duplicates the lost answers make.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

import pytest
from fault_proxy import FaultProxy
from streaming_harness import EPOCH, Harness

from figstream.cli.aws import MAX_RECEIVE_COUNT, queue_status
from figstream.cli.main import main
from figstream.ingest.dataset import generate
from figstream.ingest.sqs_intake import queue_url
from figstream.streaming import books
from tests.aws_server import aws_environ, emulator_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STREAMS = ("postings", "boards")
# Small: each fault costs botocore's back-off (up to 2**n s), and the machine is shared.
DAY = {"events_per_day": 150, "bad_rate": 0.08, "seed": 21}
# The daily rollup recomputes every day since the epoch (a month of S3 reads and writes): not
# the path under test, and minutes under faults. Its first request waits this long.
NO_ROLLUP = {"daily_stats_every_seconds": 10**10, "max_runs_per_tick": 1000}
# Seconds a received message stays hidden: short, so a ReceiveMessage whose answer was lost
# gives its messages back within the test (the setup's 120 s stays the deployed value).
VISIBILITY = "4"


def landed_lines(home) -> list[bytes]:
    lines = []
    for path in sorted((home / "landing").rglob("*.jsonl")):
        lines += path.read_bytes().splitlines()
    return lines


def settled(harness: Harness, direct, timeout: float) -> dict[str, dict[str, int]]:
    """Tick and run until every stream's queue is empty (none waiting, none in flight)."""
    deadline = time.monotonic() + timeout
    while True:
        harness.drain()
        status = {s: queue_status(direct, s) for s in STREAMS}
        if all(row["waiting"] == row["in_flight"] == 0 for row in status.values()):
            harness.drain()
            return status
        assert time.monotonic() < deadline, f"queues never emptied: {status}"
        time.sleep(1)


def outcome(harness: Harness) -> dict[str, object]:
    raw, mergers = harness.table("raw_events"), harness.table("board_mergers")
    letters = harness.dead_letters().list(limit=100_000)
    jobs = harness.state().jobs()
    return {
        "raw": Counter(raw["event_id"].to_pylist()),
        "mergers": Counter(mergers["event_id"].to_pylist()),
        "dead": Counter((d.code, d.payload) for d in letters),
        "jobs": jobs.sort_by("job_id"),
        "index": harness.index().sort_by("job_id"),
    }


def test_faults_on_s3_sqs_and_dynamodb_lose_nothing_and_double_nothing(
    moto_endpoint, tmp_path, monkeypatch
):
    local_home, aws_home = tmp_path / "local", tmp_path / "aws"
    generate(local_home, start=EPOCH, days=1, **DAY)
    generate(aws_home, start=EPOCH, days=1, **DAY)
    with monkeypatch.context() as local_env:
        local = Harness(local_home, local_env, **NO_ROLLUP)
        local.drain()
        want = outcome(local)
    assert want["dead"] and sum(want["raw"].values()) > 100 and want["mergers"]

    proxy = FaultProxy(moto_endpoint, rate=0.10, after_rate=0.03, seed=15)
    with proxy.serving() as endpoint:
        # The product's default budget of tries (the other aws tests use 5).
        config = dataclasses.replace(emulator_config(endpoint), max_attempts=10)
        for key, value in aws_environ(config).items():
            monkeypatch.setenv(key, value)
        direct = dataclasses.replace(config, endpoint_url=moto_endpoint)  # to observe, unfaulted
        harness = Harness(aws_home, monkeypatch, profile="aws", **NO_ROLLUP)
        for stream in STREAMS:
            direct.client("sqs").set_queue_attributes(
                QueueUrl=queue_url(direct, stream), Attributes={"VisibilityTimeout": VISIBILITY}
            )
        proxy.enable()
        harness.publish(landed_lines(aws_home), producer="gen")
        started = time.monotonic()
        status = settled(harness, direct, timeout=600)
        print(f"streamed under faults in {time.monotonic() - started:.0f} s")
        proxy.enable(False)
        print("fault proxy:", proxy.summary())
        for service in ("s3", "sqs", "dynamodb"):
            assert proxy.injected(service, "before") > 0, proxy.summary()
            assert proxy.injected(service, "after") > 0, proxy.summary()
        assert all(row["dead_letters"] == 0 for row in status.values()), status

        got = outcome(harness)
        doubled = [i for i, n in (got["raw"] + got["mergers"]).items() if n > 1]
        assert not doubled, f"materialised more than once: {doubled[:5]}"
        assert set(got["raw"]) == set(want["raw"]), (
            f"lost {len(set(want['raw']) - set(got['raw']))}, "
            f"extra {len(set(got['raw']) - set(want['raw']))}"
        )
        assert set(got["mergers"]) == set(want["mergers"])
        assert got["dead"] == want["dead"]
        assert got["jobs"].equals(want["jobs"].cast(got["jobs"].schema))
        assert got["index"].equals(want["index"].cast(got["index"].schema))

        stores = harness.stores
        partitions = sorted({k.split("/")[2] for k in stores.objects.list("tables/raw_events/")})
        hours = books.books(stores, STREAMS, partitions)
        unbalanced = [books.describe(h) for h in hours if not h.balanced or h.pending]
        assert not unbalanced, unbalanced
        landed = sum(h.landed for h in hours)
        assert landed >= sum(want["raw"].values()) + sum(want["mergers"].values())


def test_a_poison_message_ends_in_its_dlq_and_is_reported(
    moto_endpoint, tmp_path, monkeypatch, capsys
):
    """The sensor's drain fails on every receive (the landing write is refused each time): after
    maxReceiveCount receives SQS parks the message in the DLQ, the stream goes on, and both
    the sensor's drain report and ``figstream aws status`` say so."""
    proxy = FaultProxy(moto_endpoint, rate=0.0)
    with proxy.serving() as endpoint:
        config = dataclasses.replace(emulator_config(endpoint), max_attempts=2)
        for key, value in aws_environ(config).items():
            monkeypatch.setenv(key, value)
        direct = dataclasses.replace(config, endpoint_url=moto_endpoint)
        harness = Harness(tmp_path, monkeypatch, profile="aws")
        url = queue_url(direct, "postings")
        sqs = direct.client("sqs")
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "1"})
        sqs.send_message(QueueUrl=url, MessageBody="poison: the drain never gets it written")
        proxy.rate, proxy.services = 1.0, ("s3",)
        proxy.spare = frozenset(
            ("s3", op) for op in ("GetObject", "HeadObject", "ListObjects", "DeleteObject")
        )
        proxy.enable()
        for _ in range(MAX_RECEIVE_COUNT):
            with pytest.raises(Exception, match=r"SlowDown|InternalError|reached max retries"):
                harness.tick("postings")
            time.sleep(1.2)  # its visibility timeout: received again by the next tick
        proxy.enable(False)
        drained = harness.resources["streaming"].drain("postings", harness.objects)
        assert (drained.received, drained.batch_key, drained.dlq_depth) == (0, None, 1)
        assert queue_status(direct, "postings") == {"waiting": 0, "in_flight": 0,
                                                    "dead_letters": 1}  # fmt: skip
        assert proxy.injected("s3", "before") >= MAX_RECEIVE_COUNT
        # The stream goes on: a good event after the poison lands and is materialised.
        harness.publish(
            [
                {
                    "id": "after-poison",
                    "type": "job.expired",
                    "source": "hireloop",
                    "version": 1,
                    "time": "2026-11-01T10:00:00Z",
                    "data": {"job_id": "j-1", "reason": "filled"},
                }
            ]
        )
        harness.drain()
        assert harness.table("raw_events")["event_id"].to_pylist() == ["after-poison"]
        capsys.readouterr()
        assert main(["aws", "status"]) == 3
        out, err = capsys.readouterr()
        assert "dead-letter queue(s) of postings" in err
        [row] = [line.split() for line in out.splitlines() if line.startswith("postings")]
        assert row == ["postings", "0", "0", "1"]
