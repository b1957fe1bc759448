"""Validation of raw records into envelopes. It never raises for bad data.

Each bad record gets a :class:`Rejection` with a machine-readable ``code`` (for grouping in the
dead-letter store) and a human-readable ``detail`` naming the field at fault. :data:`REASONS`
lists every code with what it means, in the order the checks run: the first problem found
names the record.

The envelope is as strict as the schemas' fields and closed: its ``id`` and ``source`` become
claim keys (``<hour>/<id>``), trace and dead-letter keys, object-store keys and EventBridge's
``Source``, so they take a safe alphabet (:data:`ID_PATTERN`, :data:`SOURCE_PATTERN`) that
admits no path separator, traversal, whitespace or control character; and a field outside the
six is refused (``unknown_field``), since the EventBridge mapping would drop it silently.
``data`` stays open: fields the schema does not know are ignored, which is how producers add a
field before consumers read it (a zero-downtime schema change); the fields it reads refuse
control characters.

Decisions about raw bytes: a UTF-8 byte order mark is refused (``bom``) rather than stripped,
so the stored bytes are always what was validated (strip it and replay the dead letter);
duplicate keys in one object are refused (``duplicate_key``), since JSON parsers disagree on
which one wins; ints outside int64 (nothing downstream stores them) and ``NaN``/``Infinity``
are ``number_out_of_range``; nesting deeper than :data:`MAX_DEPTH` is ``too_deep``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from figstream.events.envelope import Envelope, NaiveTimeError, parse_time
from figstream.events.schemas import REGISTRY

KNOWN_TYPES = frozenset(t for t, _ in REGISTRY)

# Event times outside this window are absurd for a job board, not merely late.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)

# The 256 KiB of an EventBridge event less the 1 KiB EventBridge adds on delivery to SQS
# (figstream.ingest.eventbridge.MAX_EVENT_BYTES, which a test holds equal to this).
MAX_EVENT_BYTES = 256 * 1024 - 1024
# The envelope is depth 1, data 2, a v2 location 3: extra fields get room, not a stack bomb.
MAX_DEPTH = 16
INT64 = (-(2**63), 2**63 - 1)
BOM = b"\xef\xbb\xbf"

# The schemas' job-id alphabet, starting with a letter or digit: no "/", "\\", "..", space or
# control character can make an id a path, an option or two keys.
ID_MAX = 128
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# EventBridge's Source: no ":" (kept for keys built as "<source>:<...>"), and not "aws.",
# which EventBridge reserves for AWS services.
SOURCE_MAX = 64
SOURCE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED_SOURCE_PREFIX = "aws."
# Unicode category Cc: C0 controls, DEL and C1 controls.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

ENVELOPE_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "type": str,
    "source": str,
    "version": int,
    "time": str,
    "data": dict,
}

REASONS: dict[str, str] = {
    "too_large": f"the record is over {MAX_EVENT_BYTES:,} bytes, more than one EventBridge "
    "event carries",
    "bom": "the line starts with a UTF-8 byte order mark (refused, not stripped)",
    "bad_encoding": "not UTF-8, or a lone surrogate escape",
    "control_character": "a raw control character in the line, or an escaped one in a data "
    "field the schema reads",
    "number_out_of_range": "an int outside int64 anywhere in the record, NaN or Infinity, or "
    "a number beyond a double's range",
    "too_deep": f"JSON nested deeper than {MAX_DEPTH} levels",
    "malformed_json": "not JSON (e.g. truncated)",
    "not_an_object": "JSON, but not an object",
    "duplicate_key": "a key twice in one object",
    "missing_field": "a required envelope or data field is missing",
    "wrong_type": "a field of the wrong JSON type",
    "unknown_field": "an envelope field outside id, type, source, version, time, data",
    "bad_id": f"id is not 1..{ID_MAX} characters of [A-Za-z0-9._:-] starting with a letter "
    "or digit",
    "bad_source": f"source is not 1..{SOURCE_MAX} characters of [A-Za-z0-9._-] starting with "
    "a letter or digit, or starts with the reserved 'aws.'",
    "unknown_type": "an event type nobody registered",
    "unknown_version": "a schema version nobody registered",
    "bad_time": "time is not an ISO-8601 timestamp",
    "time_without_offset": "time has no UTC offset",
    "time_out_of_range": "time is outside 2000..2100",
    "invalid_value": "a data field breaks its schema's constraint (range, pattern, choice, "
    "length, consistency)",
    "time_outside_window": "a valid event timed outside the accepted window: before the first "
    "partition, or in an hour after its batch arrived (set by the ingest step, not the "
    "validator: dead-lettered in the hour its batch arrived)",
}
REASON_CODES = tuple(REASONS)


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class _Found(Exception):
    """A problem met while re-reading a record with the stdlib parser's hooks."""

    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection


def valid_id(value: Any) -> bool:
    return type(value) is str and ID_PATTERN.fullmatch(value) is not None


def valid_source(value: Any) -> bool:
    return (
        type(value) is str
        and SOURCE_PATTERN.fullmatch(value) is not None
        and not value.startswith(RESERVED_SOURCE_PREFIX)
    )


def _decode(raw: bytes | str | dict) -> dict | Rejection:
    if isinstance(raw, dict):
        return _check_values(raw)
    if isinstance(raw, bytes):
        if len(raw) > MAX_EVENT_BYTES:
            return Rejection("too_large", f"{len(raw):,} bytes, over {MAX_EVENT_BYTES:,}")
        if raw.startswith(BOM):
            return Rejection("bom", "the line starts with a UTF-8 byte order mark")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejection("bad_encoding", f"not UTF-8 at byte {exc.start}")
    elif isinstance(raw, str):
        text = raw
        size = len(raw.encode("utf-8", "surrogatepass"))
        if size > MAX_EVENT_BYTES:
            return Rejection("too_large", f"{size:,} bytes, over {MAX_EVENT_BYTES:,}")
        if raw.startswith("\ufeff"):
            return Rejection("bom", "the line starts with a UTF-8 byte order mark")
    else:
        return Rejection("not_an_object", f"expected a JSON object, got {type(raw).__name__}")
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _not_json(exc)
    if not isinstance(record, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(record).__name__}")
    checked = _check_values(record)  # first: orjson spells back only 255 levels
    if isinstance(checked, Rejection):
        return checked
    # orjson keeps the last of duplicate keys and reads ints beyond 64 bits as floats; its own
    # spelling of what it read is the line itself only when neither happened.
    if orjson.dumps(record) != (raw if isinstance(raw, bytes) else text.encode()):
        problem = _reread(text)
        if problem is not None:
            return problem
    return record


def _not_json(exc: orjson.JSONDecodeError) -> Rejection:
    """The most specific reason a line is not JSON, and where."""
    where = f"line {exc.lineno} column {exc.colno}"
    at = exc.doc[exc.pos : exc.pos + 8]
    # orjson reports lone surrogates (a broken encoding) as a decode error too.
    if "surrogate" in exc.msg:
        return Rejection("bad_encoding", str(exc))
    if at[:1] and CONTROL.match(at[0]) and at[0] not in "\t\n\r":
        return Rejection(
            "control_character", f"raw control character U+{ord(at[0]):04X} at {where}"
        )
    # A CRLF line's "\r" ends it: inside a string there, the line was cut short, not dirty.
    if "control character" in exc.msg and at != "\r":
        return Rejection("control_character", f"raw control character in a string at {where}")
    if "depth limit" in exc.msg:
        return Rejection("too_deep", f"nested deeper than {MAX_DEPTH} levels at {where}")
    if "infinity" in exc.msg or at.startswith(("NaN", "Infinity")):
        return Rejection("number_out_of_range", f"NaN, Infinity or a number too large at {where}")
    # orjson guesses a misspelt literal from the first letter ("invalid literal, expected
    # 'null'" for a line of text starting with n), which misleads more than it helps.
    reason = "unexpected text" if exc.msg.startswith("invalid literal") else exc.msg
    near = exc.doc[exc.pos : exc.pos + 24]
    return Rejection(
        "malformed_json", f"not JSON: {reason} at {where}" + (f", near {near!r}" if near else "")
    )


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    seen = dict(pairs)
    if len(seen) < len(pairs):
        keys = [k for k, _ in pairs]
        twice = next(k for k in keys if keys.count(k) > 1)
        raise _Found(Rejection("duplicate_key", f"key {twice!r} appears twice in one object"))
    return seen


def _int(text: str) -> int:
    value = int(text)
    if not INT64[0] <= value <= INT64[1]:
        raise _Found(Rejection("number_out_of_range", f"{text[:24]} is outside int64"))
    return value


def _reread(text: str) -> Rejection | None:
    """Duplicate keys and ints beyond 64 bits, read exactly by the stdlib parser (only for
    lines orjson does not spell back as they are: the canonical ones have neither)."""
    try:
        json.loads(text, object_pairs_hook=_pairs, parse_int=_int)
    except _Found as found:
        return found.rejection
    except RecursionError:
        return Rejection("too_deep", f"nested deeper than {MAX_DEPTH} levels")
    return None


def _check_values(record: dict) -> dict | Rejection:
    """Depth and int range over the whole record (extra fields too)."""
    stack: list[tuple[Any, int]] = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return Rejection("too_deep", f"nested deeper than {MAX_DEPTH} levels")
        children = value.values() if type(value) is dict else value
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is int and not INT64[0] <= child <= INT64[1]:
                return Rejection("number_out_of_range", f"{child} is outside int64")
            elif kind is float and not math.isfinite(child):
                return Rejection("number_out_of_range", f"{child} is not a finite number")
    return record


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
    if len(record) > len(ENVELOPE_TYPES):
        extra = next(k for k in record if k not in ENVELOPE_TYPES)
        return Rejection("unknown_field", f"envelope field {extra[:40]!r} is not one of the six")
    if not valid_id(record["id"]):
        return Rejection(
            "bad_id", f"envelope field 'id' {record['id'][:40]!r}: {REASONS['bad_id']}"
        )
    if not valid_source(record["source"]):
        shown = record["source"][:40]
        return Rejection(
            "bad_source", f"envelope field 'source' {shown!r}: {REASONS['bad_source']}"
        )
    if record["type"] not in KNOWN_TYPES:
        return Rejection("unknown_type", f"event type {record['type'][:40]!r} is not registered")
    if (record["type"], record["version"]) not in REGISTRY:
        return Rejection(
            "unknown_version",
            f"{record['type']} version {record['version']} is not registered",
        )
    try:
        when = parse_time(record["time"])
    except NaiveTimeError as exc:
        return Rejection("time_without_offset", f"envelope field 'time': {exc}")
    except (TypeError, ValueError) as exc:
        return Rejection("bad_time", f"envelope field 'time': {str(exc)[:80]}")
    if not EARLIEST <= when < LATEST:
        return Rejection("time_out_of_range", f"event time {record['time']} is outside 2000..2100")
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


def _control_in(model: BaseModel, where: str = "data") -> Rejection | None:
    """A control character in a string field the schema reads (extra fields are ignored)."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            problem = _control_in(value, f"{where}.{name}")
            if problem is not None:
                return problem
        elif isinstance(value, str) and (found := CONTROL.search(value)):
            return Rejection(
                "control_character",
                f"{where}.{name}: control character U+{ord(found.group()):04X}",
            )
    return None


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
        data = model.model_validate(record["data"])
    except ValidationError as exc:
        return _pydantic_reason(exc)
    problem = _control_in(data)
    if problem is not None:
        return problem
    return Envelope.from_dict(record)
