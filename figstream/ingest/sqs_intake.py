"""The aws profile's intake: a stream's SQS queue drained into one durable landing batch.

EventBridge delivers each event its stream's rule matches to the stream's queue
(``config.queue_name(stream)``, created by ``figstream aws setup``). :func:`drain_queue`, which
the stream sensor calls once per tick before it lists the landing zone:

1. long-polls the queue (``wait_seconds`` for the first receive, then short receives while
   messages keep coming), at most ``max_messages`` messages or ``max_seconds`` of receiving;
2. turns each message back into one figstream envelope line (:func:`message_line`);
3. writes them as ONE landing batch, ``landing/{day}/{stamp}-sqs-{stream}-{seq}.jsonl`` under
   :mod:`figstream.ingest.landing`'s layout, with one atomic ``put`` of the object store;
4. only then deletes the messages (``DeleteMessageBatch``, ten at a time, a few calls at
   once), reporting any entry that failed, or any call that failed after its retries, without
   failing the drain: the batch has landed either way.

A crash between 3 and 4 leaves the messages in flight: they reappear after the queue's
visibility timeout and land again in a new batch (the key is the commit time, so it differs).
The duplicate batch is harmless: both hold the same event ids, and the ingest step's event-id
claims keep each event in the batch that claimed it first. A message whose drains keep failing
(the store refuses the write, the process dies every time) is received again each visibility
timeout, and after ``maxReceiveCount`` receives SQS moves it to the stream's dead-letter
queue (the redrive policy setup installs). The report carries that queue's depth, so a
poison message is seen, not just parked.

Nothing is lost on the way: a message that is not a figstream EventBridge envelope is written
as a line too (its body unchanged, or as a JSON string when the body holds a newline or is
blank, which a JSON-lines batch cannot carry), and the ingest step dead-letters it with a
reason.

Bad inputs tried (see ``tests/figstream/ingest/test_sqs_intake.py``): a body that is not JSON,
JSON that is not an EventBridge event, an EventBridge event from another source whose detail
lacks the envelope keys, a body with a raw newline, a blank body, raw records (invalid UTF-8
included), the same message received twice in one drain, a store whose put fails (nothing
deleted; after ``maxReceiveCount`` drains the message is in the DLQ and reported), deletes
failing for good (reported; the batch stands, the messages come back once), no time left to
receive (``max_seconds=0``), and a stream with no queue.
"""

from __future__ import annotations

import base64
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson

from figstream.ingest.eventbridge import RAW_SOURCE
from figstream.ingest.landing import batch_key
from figstream.storage.aws import AwsConfig
from figstream.storage.objects import ObjectStore

RECEIVE_MAX = 10  # ReceiveMessage and DeleteMessageBatch take at most ten
MAX_MESSAGES = 2000  # per drain: keeps a sensor tick well under a minute
WAIT_SECONDS = 1  # the first receive's long poll; the sensor ticks again soon anyway
PRODUCER_PREFIX = "sqs-"
DELETE_THREADS = 8  # DeleteMessageBatch calls in flight at once
# Receiving stops after this long: far inside the queue's 120 s visibility timeout, so no
# message this drain holds comes back to it before it is deleted, and a tick stays short.
MAX_SECONDS = 20.0


@dataclass
class DrainReport:
    stream: str
    received: int = 0  # messages received (each distinct message once)
    redelivered: int = 0  # of which received before (ApproximateReceiveCount > 1)
    foreign: int = 0  # of which were not figstream envelopes: landed as-is for a dead letter
    batch_key: str | None = None  # the landing batch written, None when the queue was empty
    deleted: int = 0
    delete_failures: list[dict[str, str]] = field(default_factory=list)  # Id, Code, Message
    dlq_depth: int | None = None  # messages in the stream's DLQ (None: not asked)
    full: bool = False  # stopped at max_messages or max_seconds: more are probably waiting

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "received": self.received,
            "redelivered": self.redelivered,
            "foreign": self.foreign,
            "batch_key": self.batch_key,
            "deleted": self.deleted,
            "delete_failures": len(self.delete_failures),
            "dlq_depth": self.dlq_depth,
            "full": self.full,
        }


def producer_name(stream: str) -> str:
    """The landing key's producer of a stream's drained batches (``_`` is not allowed there)."""
    return (PRODUCER_PREFIX + stream.replace("_", "-"))[:64]


def _as_line(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    if b"\n" in data or not data.strip():
        return orjson.dumps(text)  # a JSON string: one line, dead-lettered with the body kept
    return data


def message_line(body: str) -> tuple[bytes, bool]:
    """One message body as a landing line, and whether it was a figstream event."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _as_line(body), False
    if not (isinstance(event, dict) and isinstance(event.get("detail"), dict)):
        return _as_line(body), False
    detail = event["detail"]
    if event.get("source") == RAW_SOURCE:
        if isinstance(detail.get("raw"), str):
            return _as_line(detail["raw"]), True
        if isinstance(detail.get("raw_b64"), str):
            try:
                return base64.b64decode(detail["raw_b64"], validate=True), True
            except ValueError:
                pass
        return _as_line(body), False
    if "detail-type" not in event or "source" not in event:
        return _as_line(body), False
    if not all(k in detail for k in ("id", "version", "time", "data")):
        return _as_line(body), False
    envelope = {
        "id": detail["id"],
        "type": event["detail-type"],
        "source": event["source"],
        "version": detail["version"],
        "time": detail["time"],
        "data": detail["data"],
    }
    return orjson.dumps(envelope), True


@cache
def _queue_url(config: AwsConfig, name: str) -> str:
    sqs = config.client("sqs")
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        raise LookupError(
            f"no SQS queue {name!r}: run 'figstream aws setup' to create the streams' queues"
        ) from None


def queue_url(config: AwsConfig, stream: str, dlq: bool = False) -> str:
    return _queue_url(config, config.queue_name(stream, dlq=dlq))


def dlq_depth(config: AwsConfig, stream: str) -> int:
    """Messages waiting in the stream's dead-letter queue (SQS's approximate count)."""
    attributes = config.client("sqs").get_queue_attributes(
        QueueUrl=queue_url(config, stream, dlq=True),
        AttributeNames=["ApproximateNumberOfMessages"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def _seq(message_ids: list[str]) -> int:
    # From the messages, not a counter: two drains of one stream (two processes) committing in
    # the same microsecond still name their batches apart.
    digest = hashlib.sha256("\n".join(message_ids).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 1_000_000


def drain_queue(
    config: AwsConfig,
    stream: str,
    objects: ObjectStore,
    max_messages: int = MAX_MESSAGES,
    wait_seconds: int = WAIT_SECONDS,
    visibility_timeout: int | None = None,
    check_dlq: bool = True,
    max_seconds: float = MAX_SECONDS,
) -> DrainReport:
    """Drain up to ``max_messages`` of ``stream``'s queue into one landing batch in
    ``objects``, then delete them (see the module docstring). ``visibility_timeout``: seconds
    the received messages stay hidden (default: the queue's own setting). ``max_seconds``:
    no receive starts after this long, so the messages received first are written and deleted
    well inside their visibility timeout (and a sensor tick stays short)."""
    if not isinstance(max_messages, int) or max_messages < 1:
        raise ValueError(f"max_messages must be an int >= 1, got {max_messages!r}")
    if not isinstance(wait_seconds, int) or not 0 <= wait_seconds <= 20:
        raise ValueError(f"wait_seconds must be an int within 0..20 (SQS), got {wait_seconds!r}")
    sqs = config.client("sqs")
    url = queue_url(config, stream)
    report = DrainReport(stream)
    messages: dict[str, dict[str, Any]] = {}  # by MessageId: a repeat keeps the newest handle
    wait = wait_seconds
    deadline = time.monotonic() + max_seconds
    while len(messages) < max_messages and time.monotonic() < deadline:
        args: dict[str, Any] = {
            "QueueUrl": url,
            "MaxNumberOfMessages": min(RECEIVE_MAX, max_messages - len(messages)),
            "WaitTimeSeconds": wait,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if visibility_timeout is not None:
            args["VisibilityTimeout"] = visibility_timeout
        received = sqs.receive_message(**args).get("Messages", [])
        before = len(messages)
        for message in received:
            messages[message["MessageId"]] = message
        if len(messages) == before:
            break  # the queue is empty, or hands back only what this drain holds already
        wait = 0
    report.full = len(messages) >= max_messages or time.monotonic() >= deadline
    if messages:
        lines = []
        for message in messages.values():
            line, ours = message_line(message["Body"])
            lines.append(line)
            report.foreign += not ours
            count = message.get("Attributes", {}).get("ApproximateReceiveCount", "1")
            report.redelivered += int(count) > 1
        report.received = len(messages)
        key = batch_key(datetime.now(UTC), producer_name(stream), _seq(list(messages)))
        objects.put(key, b"\n".join(lines) + b"\n")  # durable before any message is deleted
        report.batch_key = key
        _delete(sqs, url, list(messages.values()), report)
    if check_dlq:
        report.dlq_depth = dlq_depth(config, stream)
    return report


def _delete(sqs: Any, url: str, messages: list[dict[str, Any]], report: DrainReport) -> None:
    """Delete in chunks of ten, a few chunks at a time. A chunk that fails as a whole (retries
    spent) is reported like the entries SQS refuses: the batch has landed, so the tick goes on,
    and the messages come back after the visibility timeout as harmless duplicates."""
    from botocore.exceptions import BotoCoreError, ClientError

    def one(chunk: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
        try:
            return chunk, sqs.delete_message_batch(QueueUrl=url, Entries=entries)
        except (BotoCoreError, ClientError) as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
            failed = [{"Id": e["Id"], "Code": code, "Message": str(exc)} for e in entries]
            return chunk, {"Failed": failed}

    chunks = [messages[i : i + RECEIVE_MAX] for i in range(0, len(messages), RECEIVE_MAX)]
    with ThreadPoolExecutor(min(DELETE_THREADS, len(chunks))) as pool:
        for chunk, response in pool.map(one, chunks):
            report.deleted += len(response.get("Successful", []))
            for failure in response.get("Failed", []):
                report.delete_failures.append(
                    {
                        "MessageId": chunk[int(failure["Id"])]["MessageId"],
                        "Code": failure.get("Code", ""),
                        "Message": failure.get("Message", ""),
                    }
                )
