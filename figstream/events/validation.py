"""Validation of raw records into envelopes. It never raises for bad data.

Each bad record gets a :class:`Rejection` with a machine-readable ``code`` (for grouping in the
dead-letter store) and a human-readable ``detail`` naming the field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from figstream.events.envelope import Envelope, parse_time
from figstream.events.schemas import REGISTRY

KNOWN_TYPES = frozenset(t for t, _ in REGISTRY)

# Event times outside this window are absurd for a job board, not merely late.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)

ENVELOPE_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "type": str,
    "source": str,
    "version": int,
    "time": str,
    "data": dict,
}

REASON_CODES = (
    "bad_encoding",
    "malformed_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "unknown_type",
    "unknown_version",
    "invalid_value",
)


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def _decode(raw: bytes | str | dict) -> dict | Rejection:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejection("bad_encoding", f"not UTF-8 at byte {exc.start}")
    if not isinstance(raw, str):
        return Rejection("not_an_object", f"expected a JSON object, got {type(raw).__name__}")
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson reports lone surrogates (a broken encoding) as a decode error too.
        if "surrogate" in str(exc):
            return Rejection("bad_encoding", str(exc))
        return Rejection("malformed_json", _not_json(exc))
    if not isinstance(record, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(record).__name__}")
    return record


def _not_json(exc: orjson.JSONDecodeError) -> str:
    """Where the line stops being JSON, and what is there. orjson guesses a misspelt literal
    from the first letter ("invalid literal, expected 'null'" for a line of text starting
    with n), which misleads more than it helps."""
    reason = "unexpected text" if exc.msg.startswith("invalid literal") else exc.msg
    near = exc.doc[exc.pos : exc.pos + 24]
    where = f"line {exc.lineno} column {exc.colno}"
    return f"not JSON: {reason} at {where}" + (f", near {near!r}" if near else "")


def _check_envelope(record: dict) -> Rejection | None:
    for name, expected in ENVELOPE_TYPES.items():
        if name not in record:
            return Rejection("missing_field", f"envelope field {name!r} is missing")
        value = record[name]
        # bool is an int subclass in Python; a JSON true is never a version.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            return Rejection(
                "wrong_type",
                f"envelope field {name!r} must be {getattr(expected, '__name__', expected)}, "
                f"got {type(value).__name__}",
            )
    if not record["id"] or len(record["id"]) > 128:
        return Rejection("invalid_value", "envelope field 'id' must be 1..128 characters")
    if not record["source"]:
        return Rejection("invalid_value", "envelope field 'source' is empty")
    if record["type"] not in KNOWN_TYPES:
        return Rejection("unknown_type", f"event type {record['type']!r} is not registered")
    if (record["type"], record["version"]) not in REGISTRY:
        return Rejection(
            "unknown_version",
            f"{record['type']} version {record['version']} is not registered",
        )
    try:
        when = parse_time(record["time"])
    except (TypeError, ValueError) as exc:
        return Rejection("invalid_value", f"envelope field 'time': {exc}")
    if not EARLIEST <= when < LATEST:
        return Rejection("invalid_value", f"event time {record['time']} is outside 2000..2100")
    return None


def _pydantic_reason(exc: ValidationError) -> Rejection:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in ("data", *err["loc"]))
    kind = err["type"]
    if kind == "missing":
        code = "missing_field"
    elif kind.endswith("_type"):
        code = "wrong_type"
    else:
        code = "invalid_value"
    return Rejection(code, f"{where}: {err['msg']}")


def validate(raw: bytes | str | dict[str, Any]) -> Envelope | Rejection:
    """Turn one raw record into an :class:`Envelope`, or say why it cannot be one."""
    record = _decode(raw)
    if isinstance(record, Rejection):
        return record
    problem = _check_envelope(record)
    if problem is not None:
        return problem
    model = REGISTRY[(record["type"], record["version"])]
    try:
        model.model_validate(record["data"])
    except ValidationError as exc:
        return _pydantic_reason(exc)
    return Envelope.from_dict(record)
