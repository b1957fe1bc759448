"""What only the DynamoDB dead-letter store has, over moto server: payloads and details past
DynamoDB's 400 KB item limit kept whole in S3, and the calls it makes. The semantics both
stores share are tested in ``test_deadletter.py``."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from figstream.storage import dynamo_deadletter
from figstream.storage.deadletter import DEAD_LETTER_SCHEMA
from figstream.storage.dynamo_deadletter import BLOB_PREFIX, INLINE_BYTES, DynamoDeadLetterStore
from figstream.storage.dynamo_state import ensure_tables


@pytest.fixture
def dlq(aws_config) -> DynamoDeadLetterStore:
    ensure_tables(aws_config)
    aws_config.client("s3").create_bucket(Bucket=aws_config.bucket_name)
    return DynamoDeadLetterStore(aws_config)


def rows(*records: tuple[str, int, bytes, str]) -> pa.Table:
    fixed = {"stream": "postings", "partition_key": "2025-03-01-10:00", "code": "too_large"}
    return pa.Table.from_pylist(
        [
            {**fixed, "batch_id": b, "line_no": n, "detail": detail, "payload": payload}
            for b, n, payload, detail in records
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


def test_a_payload_past_the_item_limit_is_kept_whole_in_s3(dlq, aws_config):
    huge = os.urandom(600 * 1024)  # not UTF-8, and over DynamoDB's 400 KB item limit
    long_detail = "détail\x00 " * 30_000  # ~270 KB of text
    small = b'{"id": "x"}'
    assert dlq.add(rows(("b1", 1, huge, "too big"), ("b1", 2, small, long_detail))) == 2
    assert dlq.add(rows(("b1", 1, huge, "too big"))) == 0  # idempotent, as ever
    assert dlq.get("b1:1").payload == huge
    assert dlq.get("b1:2").detail == long_detail and dlq.get("b1:2").payload == small
    listed = {r.id: r for r in dlq.list()}
    assert listed["b1:1"].payload == huge and listed["b1:2"].detail == long_detail
    objects = aws_config.client("s3").list_objects_v2(
        Bucket=aws_config.bucket_name, Prefix=BLOB_PREFIX
    )
    assert objects["KeyCount"] == 2  # the payload and the detail, each once
    assert dlq.count() == 2 and dlq.counts_by_code() == {"too_large": 2}


def test_the_inline_limit_is_exact(dlq, aws_config, monkeypatch):
    monkeypatch.setattr(dynamo_deadletter, "INLINE_BYTES", 10)
    dlq.add(rows(("b", 1, b"x" * 10, "d"), ("b", 2, b"x" * 11, "d")))
    objects = aws_config.client("s3").list_objects_v2(
        Bucket=aws_config.bucket_name, Prefix=BLOB_PREFIX
    )
    assert objects["KeyCount"] == 1
    assert [dlq.get(i).payload for i in ("b:1", "b:2")] == [b"x" * 10, b"x" * 11]
    assert INLINE_BYTES < 400 * 1024


def test_calls_are_counted_and_replay_marks_are_conditional(dlq):
    dlq.add(rows(("b", 1, b"p", "d"), ("b", 2, b"q", "d")))
    assert dlq.mark_replayed(["b:1", "b:1", "nope"], "landing/k") == 1
    assert dlq.mark_replayed(["b:1", "b:2"], "landing/k2") == 1
    assert dlq.get("b:1").replay_key == "landing/k"
    counts = dlq.request_counts()
    assert counts["put_item"] == 2 and counts["update_item"] == 4 and counts["get_item"] == 1
