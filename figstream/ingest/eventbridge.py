"""The aws profile's producer: records into ``PutEvents`` on the figstream event bus.

:class:`EventBridgePublisher` has the local :class:`figstream.ingest.publish.Publisher`'s
interface (``publish(records) -> list[str]``, ``records``, ``batches``), so the bus commands
pick one by profile (``figstream.cli.bus``: ``publish`` does; ``produce`` will once
``publish.produce`` takes the publisher to use). It returns the event ids EventBridge
assigned, one per record, in order; ``batches`` counts ``PutEvents`` requests.

A record takes one of two forms on the bus:

* **envelope**: a JSON object with exactly the envelope's keys (``id``, ``type``, ``source``,
  ``version``, ``time``, ``data``), a non-empty string ``source`` and ``type``, that matches
  some stream's pattern. It maps 1:1 onto an entry: ``Source`` = source, ``DetailType`` =
  type, ``Time`` = time (when it parses), ``Detail`` = ``{id, version, time, data}`` with the
  values as given (``platform/routing.yaml``'s header), so the stream rules, which are the
  routing file's patterns as-is, route it. Nothing is validated here: validation is the
  ingest step's, which dead-letters with a reason.
* **raw**: anything else (not JSON, not an object, other keys, a pattern no stream matches,
  ``source`` = :data:`RAW_SOURCE`) travels unchanged as ``Source`` = :data:`RAW_SOURCE`,
  ``Detail`` = ``{"raw": <the line>, "streams": [...]}`` (``raw_b64`` for bytes that are not
  UTF-8), where ``streams`` is what the local router says (the default stream for anything
  unreadable or unmatched). Each stream has a second rule matching its name in ``streams``
  (:func:`raw_pattern`), and the drain lands the line byte for byte. Locally such a record
  lands unchanged and is dead-lettered by the default stream; here it must be too, or it would
  vanish at the bus.

Limits, checked before sending: at most :data:`MAX_ENTRIES` entries and
:data:`MAX_REQUEST_BYTES` per request, sized as AWS sizes them (``Source`` + ``DetailType`` +
``Detail`` in UTF-8 bytes, plus 14 for ``Time``). A record whose entry alone is over
:data:`MAX_EVENT_BYTES` (the request limit less 1 KiB that EventBridge's own fields take when
it delivers the event to SQS, whose messages are at most 256 KiB) is refused with
:class:`EventBridgePublishError` naming its index and size: EventBridge (or SQS) would refuse
it, and a dead letter needs a store the producer does not have. As locally, the records of
the request holding it are not sent; earlier requests have been and are listed on the error.

Entries the response reports failed (``FailedEntryCount`` > 0) are resent, only those, with a
jittered exponential back-off: ``InternalFailure``, ``ThrottlingException`` and any code AWS
does not call final, up to ``max_attempts`` sends. ``InvalidArgument`` and ``MalformedDetail``
(EventBridge would not take the envelope form) are resent once in the raw form, so they reach
the default stream and its dead letters. The other final codes (access denied, not authorised
for the source) raise: they are a deployment's error, not a record's. Throttling and 5xx of a
whole request are botocore's to retry (``AwsConfig.client``).

Bad inputs tried (see ``tests/figstream/ingest/test_eventbridge.py``): invalid UTF-8, truncated
JSON, JSON that is not an object, an envelope with an extra key, an unmatched type, a record
claiming the raw source, raw newlines and empty records (refused as locally), an event of
300 KB (refused), 11 events (two requests), entries failed once with ``InternalFailure``, one
failing for good, and an envelope EventBridge refuses as ``InvalidArgument``.
"""

from __future__ import annotations

import base64
import contextlib
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from figstream.events.envelope import parse_time
from figstream.ingest.publish import PublishError, _to_line
from figstream.ingest.routing import Router, to_eventbridge_event
from figstream.storage.aws import AwsConfig

RAW_SOURCE = "figstream.raw"
RAW_DETAIL_TYPE = "figstream.raw"
ENVELOPE_KEYS = frozenset(("id", "type", "source", "version", "time", "data"))
MAX_ENTRIES = 10
MAX_REQUEST_BYTES = 256 * 1024
# Delivered to SQS (256 KiB a message), an event carries EventBridge's own fields too (version,
# id, account, time, region, resources: under 300 bytes): a single event keeps 1 KiB for them.
DELIVERY_OVERHEAD = 1024
MAX_EVENT_BYTES = MAX_REQUEST_BYTES - DELIVERY_OVERHEAD
TIME_BYTES = 14  # what AWS counts for an entry's Time
RETRY_DELAY, MAX_RETRY_DELAY = 0.1, 5.0  # seconds, doubled per resend
# Final per-entry codes (PutEventsResultEntry): resending the same entry cannot succeed.
REFUSED_FORM = frozenset(("InvalidArgument", "MalformedDetail"))
FINAL = REFUSED_FORM | frozenset(
    (
        "AccessDeniedException",
        "InvalidAccountIdException",
        "RedactionFailure",
        "NotAuthorizedForSourceException",
        "NotAuthorizedForDetailTypeException",
    )
)


class EventBridgePublishError(PublishError):
    """A record cannot be put on the bus; ``landed`` lists the event ids put before it."""

    def __init__(self, message: str, landed: list[str]) -> None:
        if landed:
            message += (
                f" ({len(landed)} earlier event(s) of this call had already been put, "
                f"the last as event id {landed[-1]})"
            )
        ValueError.__init__(self, message)
        self.landed = landed


def entry_size(entry: dict[str, Any]) -> int:
    """An entry's size as AWS counts it against the 256 KB limit."""
    size = sum(len(entry.get(k, "").encode("utf-8")) for k in ("Source", "DetailType", "Detail"))
    size += sum(len(r.encode("utf-8")) for r in entry.get("Resources", ()))
    return size + (TIME_BYTES if "Time" in entry else 0)


def raw_pattern(stream: str) -> dict[str, Any]:
    """The event pattern of a stream's second rule: raw records routed to it."""
    return {"source": [RAW_SOURCE], "detail": {"streams": [stream]}}


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def _parse(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def raw_entry(line: bytes, streams: list[str], bus: str) -> dict[str, Any]:
    try:
        detail: dict[str, Any] = {"raw": line.decode("utf-8")}
    except UnicodeDecodeError:
        detail = {"raw_b64": base64.b64encode(line).decode("ascii")}
    detail["streams"] = streams
    return {
        "Source": RAW_SOURCE,
        "DetailType": RAW_DETAIL_TYPE,
        "Detail": _dumps(detail),
        "EventBusName": bus,
    }


def envelope_entry(record: dict[str, Any], bus: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Source": record["source"],
        "DetailType": record["type"],
        "Detail": _dumps({k: record[k] for k in ("id", "version", "time", "data")}),
        "EventBusName": bus,
    }
    # An unreadable time: EventBridge stamps the entry, and the time as given travels in Detail.
    with contextlib.suppress(TypeError, ValueError):
        entry["Time"] = parse_time(record["time"])
    return entry


def to_entry(line: bytes, router: Router, bus: str) -> dict[str, Any]:
    """The ``PutEvents`` entry of one record line (see the module docstring for the forms)."""
    record = _parse(line)
    if (
        isinstance(record, dict)
        and record.keys() == ENVELOPE_KEYS
        and isinstance(record["source"], str)
        and isinstance(record["type"], str)
        and record["source"]
        and record["type"]
        and record["source"] != RAW_SOURCE
    ):
        event = to_eventbridge_event(record)
        if any(stream.pattern.matches(event) for stream in router.streams.values()):
            return envelope_entry(record, bus)
    return raw_entry(line, router.route_record(record), bus)


def _sleep_for(attempt: int) -> float:
    return random.uniform(0, min(MAX_RETRY_DELAY, RETRY_DELAY * 2**attempt))


class EventBridgePublisher:
    """Puts records on ``config.event_bus_name`` (see the module docstring)."""

    def __init__(
        self,
        config: AwsConfig,
        router: Router | None = None,
        producer: str = "cli",
        client: Any = None,
        max_attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        if router is None:
            from figstream.settings import routing_path

            router = Router.from_file(routing_path())
        self.config = config
        self.router = router
        self.producer = producer
        self.bus = config.event_bus_name
        self._client = client
        self.max_attempts = max_attempts
        self._sleep = sleep
        self.records = 0  # records put by this publisher, over all calls
        self.batches = 0  # PutEvents requests that carried them (resends not counted)
        self.resent = 0  # entries sent again after a failure reported in a response
        self.raw = 0  # records that travelled in the raw form

    @property
    def client(self) -> Any:
        return self._client or self.config.client("events")

    def publish(self, records: Iterable[bytes | dict[str, Any]]) -> list[str]:
        """Put ``records`` in order, at most 10 and 256 KB per request; return the event ids."""
        ids: list[str] = []
        request: list[tuple[bytes, dict[str, Any]]] = []
        size = 0
        for index, record in enumerate(records):
            try:
                line = _to_line(index, record)
            except (TypeError, ValueError) as exc:
                raise EventBridgePublishError(str(exc), ids) from None
            entry = to_entry(line, self.router, self.bus)
            entry_bytes = entry_size(entry)
            if entry_bytes > MAX_EVENT_BYTES:
                raise EventBridgePublishError(
                    f"record {index} is {entry_bytes:,} bytes as an EventBridge entry, over "
                    f"the {MAX_EVENT_BYTES:,}-byte limit of an event (256 KB, less 1 KiB for "
                    "the fields EventBridge adds on delivery to SQS); split its data or store "
                    "it elsewhere and send a reference",
                    ids,
                )
            if len(request) >= MAX_ENTRIES or size + entry_bytes > MAX_REQUEST_BYTES:
                ids += self._send(request, ids)
                request, size = [], 0
            request.append((line, entry))
            size += entry_bytes
        if request:
            ids += self._send(request, ids)
        return ids

    def _send(self, request: list[tuple[bytes, dict[str, Any]]], before: list[str]) -> list[str]:
        """One request's entries put, failed ones resent; ``before``: this call's ids so far."""
        entries = [entry for _, entry in request]
        ids: list[str | None] = [None] * len(entries)
        pending = list(range(len(entries)))
        reasons: dict[int, str] = {}
        for attempt in range(self.max_attempts):
            if attempt:
                self._sleep(_sleep_for(attempt))
                self.resent += len(pending)
            response = self.client.put_events(Entries=[entries[i] for i in pending])
            failed: list[int] = []
            for i, result in zip(pending, response["Entries"], strict=True):
                code = result.get("ErrorCode")
                if not code:
                    ids[i] = result["EventId"]
                    continue
                reasons[i] = f"{code}: {result.get('ErrorMessage', '')}".rstrip(": ")
                if code in REFUSED_FORM and entries[i]["Source"] != RAW_SOURCE:
                    line = request[i][0]
                    entries[i] = raw_entry(line, self.router.route_record(_parse(line)), self.bus)
                elif code in FINAL:
                    raise EventBridgePublishError(
                        f"EventBridge refused an entry for good ({reasons[i]})",
                        before + [x for x in ids if x is not None],
                    )
                failed.append(i)
            pending = failed
            if not pending:
                break
        if pending:
            raise EventBridgePublishError(
                f"{len(pending)} entr(y/ies) still failing after {self.max_attempts} sends "
                f"(last: {reasons[pending[0]]})",
                before + [x for x in ids if x is not None],
            )
        self.raw += sum(entry["Source"] == RAW_SOURCE for entry in entries)
        self.records += len(entries)
        self.batches += 1
        return [x for x in ids if x is not None]
