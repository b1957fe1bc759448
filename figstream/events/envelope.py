"""The event envelope and its lossless mapping to and from EventBridge.

An envelope is what every producer emits and every consumer reads:
``id`` (globally unique), ``type``, ``source`` (the board), ``version`` (schema version of
``data``), ``time`` (event time, UTC) and ``data``.

EventBridge owns ``source``, ``detail-type`` and ``time`` of an entry; ``time`` there has
one-second resolution and EventBridge assigns its own ``id``. So the envelope's ``id``,
``version`` and exact ``time`` travel inside ``detail`` as well, which makes the mapping
lossless in both directions (PutEvents entry and delivered event alike).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EVENT_TYPES = ("job.posted", "job.updated", "job.expired", "board.merged")
DETAIL_KEYS = ("id", "version", "time", "data")


class NaiveTimeError(ValueError):
    """An ISO-8601 time without a UTC offset: which instant it means is anyone's guess."""


def parse_time(value: str) -> datetime:
    """Parse an ISO-8601 timestamp that carries a UTC offset; naive times are refused
    (:class:`NaiveTimeError`, a ``ValueError``)."""
    if not isinstance(value, str):
        raise TypeError(f"time must be an ISO-8601 string, got {type(value).__name__}")
    parsed = datetime.fromisoformat(
        value.replace("Z", "+00:00", 1) if value.endswith("Z") else value
    )
    if parsed.tzinfo is None:
        raise NaiveTimeError(f"time {value!r} has no UTC offset")
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """Canonical wire form: UTC, microseconds only when present, ``Z`` suffix."""
    value = value.astimezone(UTC)
    spec = "microseconds" if value.microsecond else "seconds"
    return value.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    type: str
    source: str
    version: int
    time: datetime
    data: dict[str, Any] = field(hash=False, compare=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "version": self.version,
            "time": format_time(self.time),
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Envelope:
        """Build from an already-validated record (see ``figstream.events.validation``)."""
        return cls(
            id=record["id"],
            type=record["type"],
            source=record["source"],
            version=record["version"],
            time=parse_time(record["time"]),
            data=record["data"],
        )

    def to_eventbridge_entry(self, event_bus_name: str = "default") -> dict[str, Any]:
        """A ``PutEvents`` entry (boto3 shape)."""
        return {
            "Source": self.source,
            "DetailType": self.type,
            "Time": self.time,
            "Detail": json.dumps(
                {
                    "id": self.id,
                    "version": self.version,
                    "time": format_time(self.time),
                    "data": self.data,
                },
                separators=(",", ":"),
                ensure_ascii=False,
            ),
            "EventBusName": event_bus_name,
        }

    @classmethod
    def from_eventbridge(cls, entry: dict[str, Any]) -> Envelope:
        """Accept either a PutEvents entry or an event as EventBridge delivers it."""
        if "DetailType" in entry:
            source, detail_type, detail = entry["Source"], entry["DetailType"], entry["Detail"]
        else:
            source, detail_type, detail = entry["source"], entry["detail-type"], entry["detail"]
        if isinstance(detail, str):
            detail = json.loads(detail)
        missing = [k for k in DETAIL_KEYS if k not in detail]
        if missing:
            raise ValueError(f"EventBridge detail lacks envelope keys {missing}")
        return cls(
            id=detail["id"],
            type=detail_type,
            source=source,
            version=detail["version"],
            time=parse_time(detail["time"]),
            data=detail["data"],
        )
