"""The vectorised transform core of the streaming path: pure functions over Arrow tables.

Landed micro-batch (JSON lines) -> :func:`parse_batch` (valid events + rejected records) ->
:func:`dedupe_events` (at-least-once delivery) -> :func:`clean_postings` ->
:func:`dedupe_postings` (cross-board duplicates) / :func:`apply_job_state` (current state per
job) -> :func:`search_index` and :func:`board_daily_stats`. :func:`parse_in` runs
:func:`parse_batches` in worker processes, its results coming back through shared memory.

Parsing accepts exactly what :func:`figstream.validation.validate` accepts, with the same reason
code and detail for the rest. ``validate`` costs ~8 us a record (pydantic), so it only sees the
suspicious remainder. Lines go through stages, each taking what it surely can:

1. ``msgspec`` decodes each line into a typed struct per event type (tagged on ``type``, unknown
   fields forbidden): JSON types are checked in C and no dicts are built. Fields come out with
   ``msgspec.structs.astuple`` and the value checks run over whole columns.
2. What msgspec refuses (unknown fields, floats for ints, a repeated ``type``, bad lines) is
   loaded with ``orjson``, fields are pulled out with C-level ``map``/``itemgetter``, and the same
   column checks run; a handful of leftover lines skip this stage, whose fixed cost is higher.
3. ``validate`` for the rest, one line at a time: it names the reason.

The column checks run in numpy over the Arrow buffers or as ``pyarrow.compute`` kernels. They
are *conservative*: a row they pass is surely valid; anything else (wrong type, an odd but legal
time spelling, a non-ASCII URL, ...) is re-checked by ``validate``, which gives the exact
reason. ``FAST_CHECKS`` mirrors :data:`figstream.schemas.REGISTRY`; a (type, version) without a
fast check is still correct, only slower. ``tests/figstream/test_transform.py`` checks the
equivalence with hypothesis.

Python loops remain only where no vectorised form exists, each on a small remainder: the
``validate`` fallback, values of an unexpected JSON type, Unicode case folding and whitespace
of non-ASCII text, and the per-record reason details.

Conventions:

* times are ``timestamp[us, tz=UTC]``; "first"/"last" order by ``(event_time, event_id)``, and
  event ids are unique per event (a redelivery repeats the same event), so that is a total order;
* every function is deterministic, and each one states its row order; results that must not
  depend on arrival order (state, canonical registry, duplicates) are sorted on their content;
* state tables are plain Arrow tables that the caller stores and passes back in.
"""

from __future__ import annotations

import contextlib
import gc
import operator
import os
import tempfile
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import repeat
from typing import Annotated, Any, Union, get_args

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from figstream.events import Envelope, parse_time
from figstream.schemas import MAX_SALARY, REGISTRY, EmploymentType
from figstream.upcast import UPCASTERS, Upcasters, arrow_schema, field_defaults
from figstream.validation import EARLIEST, LATEST, Rejection, validate

POSTED, UPDATED, EXPIRED, MERGED = "job.posted", "job.updated", "job.expired", "board.merged"
POSTING_TYPES = (POSTED, UPDATED)
TS = pa.timestamp("us", tz="UTC")

POSTING_FIELDS = (
    "title",
    "company",
    "location",
    "employment_type",
    "remote",
    "salary_min",
    "salary_max",
    "currency",
    "url",
)
DATA_COLUMNS = [
    pa.field("job_id", pa.string()),
    pa.field("title", pa.string()),
    pa.field("company", pa.string()),
    pa.field("location", pa.string()),
    pa.field("employment_type", pa.string()),
    pa.field("remote", pa.bool_()),
    pa.field("salary_min", pa.int64()),
    pa.field("salary_max", pa.int64()),
    pa.field("currency", pa.string()),
    pa.field("url", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("absorbed_board", pa.string()),
    pa.field("surviving_board", pa.string()),
]
EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string()),
        pa.field("event_type", pa.string()),
        pa.field("source", pa.string()),
        pa.field("version", pa.int64()),
        pa.field("event_time", TS),
        *DATA_COLUMNS,
        pa.field("batch_id", pa.string()),
        pa.field("line_no", pa.int64()),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("batch_id", pa.string()),
        pa.field("line_no", pa.int64()),
        pa.field("event_id", pa.string()),
        pa.field("event_time", TS),
        pa.field("code", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("payload", pa.binary()),
    ]
)
POSTINGS_SCHEMA = pa.schema(
    [
        *(EVENTS_SCHEMA.field(n) for n in ("event_id", "event_type", "source", "version")),
        EVENTS_SCHEMA.field("event_time"),
        pa.field("board", pa.string()),
        *DATA_COLUMNS[:10],
        pa.field("dedupe_key", pa.string()),
        pa.field("batch_id", pa.string()),
        pa.field("line_no", pa.int64()),
    ]
)
CANONICAL_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string()),
        pa.field("dedupe_key", pa.string()),
        pa.field("board", pa.string()),
        pa.field("event_time", TS),
        pa.field("event_id", pa.string()),
    ]
)
DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string()),
        pa.field("duplicate_of_job_id", pa.string()),
        pa.field("dedupe_key", pa.string()),
    ]
)
STATE_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string()),  # "job", or "merger" for a remembered board.merged
        pa.field("job_id", pa.string()),  # "@<absorbed board>" on a merger row
        pa.field("board", pa.string()),
        *DATA_COLUMNS[1:10],
        pa.field("dedupe_key", pa.string()),
        pa.field("status", pa.string()),  # active | expired | merged (null on merger rows)
        pa.field("posted_at", TS),  # earliest job.posted
        pa.field("updated_at", TS),  # the posting that set the fields (posted or updated)
        pa.field("posting_event_id", pa.string()),
        pa.field("expired_at", TS),
        pa.field("expired_reason", pa.string()),
        pa.field("expiry_event_id", pa.string()),
        pa.field("merged_into", pa.string()),
        pa.field("merged_at", TS),
        pa.field("merger_event_id", pa.string()),
        pa.field("last_event_time", TS),
        pa.field("last_event_id", pa.string()),
    ]
)
SEARCH_INDEX_COLUMNS = ["job_id", "board", *POSTING_FIELDS, "posted_at", "updated_at"]
STATS_SCHEMA = pa.schema(
    [
        pa.field("date", pa.date32()),
        pa.field("board", pa.string()),
        pa.field("postings", pa.int64()),
        pa.field("updates", pa.int64()),
        pa.field("expiries", pa.int64()),
        pa.field("active_jobs", pa.int64()),
        pa.field("avg_salary_min", pa.float64()),
    ]
)


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


# --- parse_batch -------------------------------------------------------------------------------

_UNPARSED = object()  # a line orjson could not load; validate() names the reason
_NoneType = type(None)
_I64 = (-(2**63), 2**63 - 1)
_ENVELOPE_KEYS = ("id", "type", "source", "version", "time", "data")
_ENVELOPE = operator.itemgetter(*_ENVELOPE_KEYS)
_NO_ENVELOPE = (None,) * len(_ENVELOPE_KEYS)
_EARLIEST_YEAR, _LATEST_YEAR = EARLIEST.year, LATEST.year  # both bounds are on Jan 1st 00:00
assert datetime(_EARLIEST_YEAR, 1, 1, tzinfo=UTC) == EARLIEST
assert datetime(_LATEST_YEAR, 1, 1, tzinfo=UTC) == LATEST

# Byte sets of the schema patterns. A pattern is checked as "every byte is in the set", which
# for these ASCII classes is exact: any byte of a non-ASCII character is outside them.
_JOB_ID_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
_BOARD_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789-"
_CURRENCY_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Stricter than the schema's ^https?://[^\s]+$ (its \s is Unicode-aware): printable ASCII only;
# a URL with anything else is left to validate().
_URL_BYTES = bytes(range(0x21, 0x7F))
_EMPLOYMENT_TYPES = pa.array(get_args(EmploymentType))
_EXPIRY_REASONS = pa.array(["filled", "expired", "withdrawn"])


@dataclass(frozen=True)
class ParsedBatch:
    """Landed batches split in two; ``line_no`` is 1-based within its batch.

    ``valid`` rows come grouped by (event type, version), each group in (batch, line) order;
    ``rejected`` rows in (batch, line) order. ``records`` counts non-blank lines, so
    conservation reads ``records == valid.num_rows + rejected.num_rows``.
    """

    batch_ids: tuple[str, ...]
    valid: pa.Table
    rejected: pa.Table
    records: int


def _load_lines(lines: list[bytes]) -> list[Any]:
    """orjson.loads of every line, at C speed; a line it refuses becomes ``_UNPARSED``."""
    out: list[Any] = []
    it = iter(lines)
    loads = orjson.loads
    while True:
        try:
            # extend() keeps what it appended before the exception, and map() has consumed
            # the failing line, so len(out) is that line's index.
            out.extend(map(loads, it))
            return out
        except orjson.JSONDecodeError:
            out.append(_UNPARSED)


def _pluck(records: Sequence[Any], getter: Callable, fallback: Callable) -> list[tuple]:
    """``getter(r)`` for each record at C speed; ``fallback(r)`` for the few it raises on."""
    out: list[tuple] = []
    it = iter(records)
    while True:
        try:
            out.extend(map(getter, it))
            return out
        except (KeyError, TypeError, IndexError):
            out.append(fallback(records[len(out)]))


def _column(values: Sequence[Any], arrow_type: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    """Values of exactly the JSON type of ``arrow_type`` (bool is not int), the rest nulled.

    Returns the array and a mask of present-but-mistyped values (None when there are none).
    pa.array is strict for str and bool but turns 2.0 into 2 for int64, so ints are screened.
    """
    is_int = arrow_type == pa.int64()
    if not is_int or set(map(type, values)) <= {int, _NoneType}:
        try:
            return pa.array(values, arrow_type), None
        except (OverflowError, pa.ArrowTypeError, pa.ArrowInvalid):
            pass
    # A mistyped value is among these (rare): null it and flag it, staying at C speed.
    pytype = int if is_int else (str if arrow_type == pa.string() else bool)
    right = np.fromiter(map(operator.is_, map(type, values), repeat(pytype)), bool, len(values))
    cleaned = list(values)
    wrong = ~right
    for i in np.flatnonzero(wrong).tolist():
        if cleaned[i] is None:
            wrong[i] = False
        cleaned[i] = None
    try:
        array = pa.array(cleaned, arrow_type)
    except OverflowError:  # ints beyond int64: a Python pass over the ints, rarer still
        for i in np.flatnonzero(right).tolist():
            if not _I64[0] <= cleaned[i] <= _I64[1]:
                wrong[i], cleaned[i] = True, None
        array = pa.array(cleaned, arrow_type)
    return array, wrong


def _valid(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.ones(len(array), bool)
    return array.is_valid().to_numpy(zero_copy_only=False)


def _offsets(array: pa.Array) -> np.ndarray:
    """The n+1 offsets of a (large_)string array, as numpy (zero-copy)."""
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    size = np.dtype(width).itemsize
    return np.frombuffer(array.buffers()[1], width, len(array) + 1, array.offset * size)


def _data(array: pa.Array) -> np.ndarray:
    buffer = array.buffers()[2]
    return np.frombuffer(buffer, np.uint8) if buffer is not None else np.zeros(0, np.uint8)


def _byte_length(array: pa.Array) -> np.ndarray:
    """UTF-8 byte length per value: equal to the character count for ASCII, larger otherwise,
    so ``1 <= bytes <= limit`` is an exact lower bound and a conservative upper one."""
    return np.diff(_offsets(array))


def _sized(array: pa.Array, low: int, high: int) -> np.ndarray:
    size = _byte_length(array)
    return _valid(array) & (size >= low) & (size <= high)


def _only_bytes(array: pa.Array, allowed: bytes) -> np.ndarray:
    """Per value: every byte is in ``allowed`` (checked over the whole buffer at once)."""
    offsets = _offsets(array)
    data = _data(array)[offsets[0] : offsets[-1]]
    if not data.tobytes().translate(None, allowed):
        return np.ones(len(array), bool)
    # Some value has an outsider (a rare record): find which, value by value.
    return np.fromiter(
        (not v.encode().translate(None, allowed) for v in array.fill_null("").to_pylist()),
        bool,
        len(array),
    )


def _np(mask: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy, null as False."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def _is_in(array: pa.Array, values: pa.Array) -> np.ndarray:
    return _np(pc.is_in(array, values))


def _ints(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls as 0, validity) of an int64 array."""
    return array.fill_null(0).to_numpy(), _valid(array)


def _salary_ok(array: pa.Array) -> np.ndarray:
    values, valid = _ints(array)
    return ~valid | ((values >= 0) & (values <= MAX_SALARY))


def _posting_v1(c: dict[str, pa.Array]) -> np.ndarray:
    low, low_valid = _ints(c["salary_min"])
    high, high_valid = _ints(c["salary_max"])
    url = c["url"]
    url_len = _byte_length(url)
    scheme = (_np(pc.starts_with(url, "http://")) & (url_len > 7)) | (
        _np(pc.starts_with(url, "https://")) & (url_len > 8)
    )
    return (
        _sized(c["job_id"], 1, 64)
        & _only_bytes(c["job_id"], _JOB_ID_BYTES)
        & _sized(c["title"], 1, 200)
        & _sized(c["company"], 1, 200)
        & _sized(c["location"], 1, 200)
        & _is_in(c["employment_type"], _EMPLOYMENT_TYPES)
        & _valid(c["remote"])
        & _salary_ok(c["salary_min"])
        & _salary_ok(c["salary_max"])
        & ~(low_valid & high_valid & (high < low))
        & _sized(c["currency"], 3, 3)
        & _only_bytes(c["currency"], _CURRENCY_BYTES)
        & _sized(url, 1, 500)
        & _only_bytes(url, _URL_BYTES)
        & scheme
    )


def _expired_v1(c: dict[str, pa.Array]) -> np.ndarray:
    return (
        _sized(c["job_id"], 1, 64)
        & _only_bytes(c["job_id"], _JOB_ID_BYTES)
        & _is_in(c["reason"], _EXPIRY_REASONS)
    )


def _board_ok(array: pa.Array) -> np.ndarray:
    ok = _sized(array, 2, 64) & _only_bytes(array, _BOARD_BYTES)
    return ok & ~_np(pc.starts_with(array, "-"))


def _merged_v1(c: dict[str, pa.Array]) -> np.ndarray:
    absorbed, surviving = c["absorbed_board"], c["surviving_board"]
    differ = _np(pc.not_equal(absorbed, surviving))
    return _board_ok(absorbed) & _board_ok(surviving) & differ


# Conservative vectorised twins of the registered models: True only where the model accepts.
FAST_CHECKS: dict[tuple[str, int], Callable[[dict[str, pa.Array]], np.ndarray]] = {
    (POSTED, 1): _posting_v1,
    (UPDATED, 1): _posting_v1,
    (EXPIRED, 1): _expired_v1,
    (MERGED, 1): _merged_v1,
}
assert set(FAST_CHECKS) <= set(REGISTRY), "a fast check for an unregistered schema"


@dataclass(frozen=True)
class _Shape:
    """How to pluck one registered model's fields out of ``data`` dicts."""

    schema: pa.Schema
    defaults: dict[str, Any]
    getter: Callable[[dict], tuple]
    fallback: Callable[[Any], tuple]


def _shape(model: type) -> _Shape:
    schema = arrow_schema(model)
    names = schema.names
    defaults = field_defaults(model)
    # The fast path tells "missing" from "null" only through non-nullable fields.
    assert any(not f.nullable for f in schema), f"{model.__name__} has no required field"
    missing = (None,) * len(names)

    def fallback(data: Any) -> tuple:
        if type(data) is not dict:
            return missing
        return tuple(data.get(name, defaults.get(name)) for name in names)

    # itemgetter of one name returns a bare value, not a 1-tuple.
    getter = operator.itemgetter(*names) if len(names) > 1 else (lambda d: (d[names[0]],))
    return _Shape(schema, defaults, getter, fallback)


_SHAPES = {key: _shape(model) for key, model in REGISTRY.items()}

# The first stage of parsing: msgspec decodes each line straight into a typed envelope struct
# (one per event type, tagged on ``type``), checking JSON types in C and building no dicts.
# A line it decodes is well-formed JSON whose every value has the model's JSON type; all else
# (msgspec refuses more than orjson: floats for ints, null for a required string, unknown
# fields, a repeated ``type``) takes the orjson stage below. Unknown fields are forbidden
# because msgspec skips them without checking UTF-8 or number ranges, where orjson refuses.
_INT64 = Annotated[int, msgspec.Meta(ge=_I64[0], le=_I64[1])]
_WIRE_TYPES = {pa.string(): str, pa.int64(): _INT64, pa.bool_(): bool}
_astuple = msgspec.structs.astuple


@dataclass(frozen=True)
class _Wire:
    """The msgspec struct of one fast-checked (type, version); its fields are
    (id, source, version, time, data), and those of data are the model's, in order."""

    key: tuple[str, int]
    struct: type[msgspec.Struct]
    data: pa.StructType  # the Arrow type of the data fields, in the same order


def _wire(key: tuple[str, int]) -> _Wire:
    event_type, version = key
    shape = _SHAPES[key]
    fields: list[tuple] = []
    for field in shape.schema:
        wire_type: Any = _WIRE_TYPES[field.type]
        wire_type = wire_type | None if field.nullable else wire_type
        if field.name in shape.defaults:
            fields.append((field.name, wire_type, shape.defaults[field.name]))
        else:
            fields.append((field.name, wire_type))
    options = {"forbid_unknown_fields": True, "gc": False, "kw_only": True}
    data = msgspec.defstruct(f"{event_type}.v{version}.data", fields, **options)
    assert data.__struct_fields__ == tuple(shape.schema.names)  # astuple gives schema order
    envelope = msgspec.defstruct(
        f"{event_type}.v{version}",
        [("id", str), ("source", str), ("version", _INT64), ("time", str), ("data", data)],
        tag_field="type",
        tag=event_type,
        **options,
    )
    return _Wire(key, envelope, pa.struct(list(shape.schema)))


# One struct per event type: the tag is ``type``, so a type with several fast-checked versions
# keeps its lowest here; lines of its other versions decode, fail the version check and take
# the orjson stage, which is correct, only slower.
_WIRES = tuple(
    _wire(min(k for k in FAST_CHECKS if k[0] == event_type))
    for event_type in dict.fromkeys(t for t, _ in FAST_CHECKS)
)
_WIRE_DECODER = msgspec.json.Decoder(Union[tuple(w.struct for w in _WIRES)])  # noqa: UP007
_WIRE_CODES = {w.struct: code for code, w in enumerate(_WIRES)} | {_NoneType: -1}

_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_PUNCTUATION = ((4, ord("-")), (7, ord("-")), (10, ord("T")), (13, ord(":")), (16, ord(":")))
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _times(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(surely-valid mask, epoch microseconds) of envelope times.

    Only the canonical spelling ``YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z`` with a real calendar date
    and a year in 2000..2099 passes; ``parse_time`` accepts it and means the same instant.
    Every other spelling it accepts (offsets, no seconds, ...) is left to validate().
    """
    n = len(array)
    ok = np.zeros(n, bool)
    micros = np.zeros(n, np.int64)
    size = _byte_length(array)
    size[~_valid(array)] = 0
    counts = np.bincount(np.minimum(size, 28), minlength=29)
    for length in (20, 22, 23, 24, 25, 26, 27):
        if not counts[length]:
            continue
        # The values of this length, compacted by Arrow, as a (rows x length) byte matrix view.
        if counts[length] == n:
            rows: Any = slice(None)
            same = array
        else:
            rows = size == length
            same = array.filter(pa.array(rows))
        start = _offsets(same)[0]
        chars = _data(same)[start : start + len(same) * length].reshape(len(same), length)
        good = (chars[:, length - 1] == ord("Z")) & (
            chars[:, 19] == (ord("Z") if length == 20 else ord("."))
        )
        for col, char in _PUNCTUATION:
            good &= chars[:, col] == char
        digits = chars[:, _DIGITS + list(range(20, length - 1))] - np.uint8(ord("0"))
        good &= (digits <= 9).all(axis=1)  # uint8 wraps, so anything below "0" is large too
        digits = digits.astype(np.int32)

        def number(first: int, count: int, d: np.ndarray = digits) -> np.ndarray:
            out = d[:, first]
            for col in range(first + 1, first + count):
                out = out * 10 + d[:, col]
            return out

        year, month, day = number(0, 4), number(4, 2), number(6, 2)
        hour, minute, second = number(8, 2), number(10, 2), number(12, 2)
        fraction = number(14, length - 21) if length > 20 else np.zeros(len(digits), np.int32)
        fraction = fraction.astype(np.int64) * 10 ** (6 - max(length - 21, 0))
        leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
        month_ok = (month >= 1) & (month <= 12)
        days = _DAYS_IN_MONTH[np.where(month_ok, month, 1)] + (leap & (month == 2))
        good &= month_ok & (day >= 1) & (day <= days) & (hour <= 23) & (minute <= 59)
        good &= (second <= 59) & (year >= _EARLIEST_YEAR) & (year < _LATEST_YEAR)
        days_since_epoch = _days_from_civil(year, month, day).astype(np.int64)
        seconds = ((days_since_epoch * 24 + hour) * 60 + minute) * 60 + second
        ok[rows] = good
        micros[rows] = np.where(good, seconds * 1_000_000 + fraction, 0)
    return ok, micros


def _line_blank(line: bytes) -> bool:
    return not line.strip(b" \t\r")


def _recover(record: Any, line: bytes, code: str) -> tuple[str | None, datetime | None]:
    """Event id and time of a rejected record, where the line still yields them."""
    if record is _UNPARSED and code == "bad_encoding":
        try:
            record = orjson.loads(line.decode("utf-8", "replace"))
        except orjson.JSONDecodeError:
            return None, None
    if type(record) is not dict:
        return None, None
    event_id = record.get("id")
    if not (type(event_id) is str and 1 <= len(event_id) <= 128):
        event_id = None
    when = None
    if type(record.get("time")) is str:
        try:
            when = parse_time(record["time"])
        except (TypeError, ValueError):
            pass
        else:
            when = when if EARLIEST <= when < LATEST else None
    return event_id, when


def _data_table(shape: _Shape, rows: list[tuple]) -> tuple[pa.Table, np.ndarray]:
    """Typed ``data`` columns of one (type, version) group and their well-typed mask."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(shape.schema)
    ok = np.ones(len(rows), bool)
    arrays = []
    for field, values in zip(shape.schema, columns, strict=True):
        array, wrong = _column(values, field.type)
        arrays.append(array)
        if wrong is not None:
            ok &= ~wrong
        if not field.nullable:
            ok &= _valid(array)
    return pa.Table.from_arrays(arrays, schema=shape.schema), ok


def _gather(values: Sequence[Any], rows: np.ndarray) -> Sequence[Any]:
    """values[rows] for a tuple or list, at C speed."""
    if len(rows) == len(values):
        return values
    if len(rows) == 1:
        return (values[int(rows[0])],)
    return operator.itemgetter(*rows.tolist())(values)


def _output(
    event_type: str, version: int, envelope: dict[str, pa.Array], data: pa.Table
) -> pa.Table:
    n = data.num_rows
    columns: dict[str, Any] = {
        "event_id": envelope["event_id"],
        "event_type": pa.repeat(pa.scalar(event_type), n),
        "source": envelope["source"],
        "version": pa.repeat(pa.scalar(version, pa.int64()), n),
        "event_time": envelope["event_time"],
    }
    for field in DATA_COLUMNS:
        if field.name in data.column_names:
            columns[field.name] = data.column(field.name).cast(field.type)
        else:
            columns[field.name] = pa.nulls(n, field.type)
    columns["batch_id"] = envelope["batch_id"]
    columns["line_no"] = envelope["line_no"]
    return pa.table(columns, schema=EVENTS_SCHEMA)


def parse_batch(data: bytes, batch_id: str, upcasters: Upcasters = UPCASTERS) -> ParsedBatch:
    """Split one landed batch (JSON lines) into valid events and rejected records.

    ``valid`` follows :data:`EVENTS_SCHEMA`: the flattened envelope, ``data`` upcast to the
    latest version, nulls where a column does not apply. ``rejected`` follows
    :data:`REJECTED_SCHEMA`: ``validate``'s code and detail, the line's bytes, and the event
    id and time wherever the line still yields them. Blank lines are not records.
    """
    return parse_batches([(batch_id, data)], upcasters)


VECTOR_MIN_LINES = 256  # fewer left by msgspec go to validate() one by one
PASS_BYTES = 8 << 20  # ~20k lines: big enough to amortise kernel calls, small enough for caches


def parse_batches(
    batches: Iterable[tuple[str, bytes]], upcasters: Upcasters = UPCASTERS
) -> ParsedBatch:
    """:func:`parse_batch` over several (batch_id, bytes) batches, in vectorised passes.

    The same rows as parsing each batch alone, only cheaper: every kernel call has a fixed
    cost of microseconds that a 1,000-line batch feels. Batches are grouped into passes of
    about ``PASS_BYTES``. Within a pass, valid rows come grouped by (event type, version),
    each group in (batch, line) order; sort on (batch_id, line_no) if order matters.
    """
    batches = list(batches)
    passes: list[list[tuple[str, bytes]]] = [[]]
    size = 0
    for batch in batches:
        if passes[-1] and size + len(batch[1]) > PASS_BYTES:
            passes.append([])
            size = 0
        passes[-1].append(batch)
        size += len(batch[1])
    # Parsing allocates millions of acyclic containers; the cyclic GC would walk them again
    # and again for nothing (a third of the parse time), so it waits until we are done.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        parts = [_parse(group, upcasters) for group in passes]
    finally:
        if gc_was_enabled:
            gc.enable()
    if len(parts) == 1:
        return parts[0]
    return ParsedBatch(
        tuple(batch_id for batch_id, _ in batches),
        pa.concat_tables([p.valid for p in parts]),
        pa.concat_tables([p.rejected for p in parts]),
        sum(p.records for p in parts),
    )


# Worker processes get their batches and send their results through files in shared memory:
# a pickled 60 MB table costs the parent a pipe read and an unpickling copy, a mapped
# Arrow IPC file costs it nothing.
_SHARED_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _shared_path(kind: str) -> str:
    return os.path.join(_SHARED_DIR, f"figstream-{kind}-{os.getpid()}-{uuid.uuid4().hex}")


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _parse_shared(
    path: str, sizes: list[tuple[str, int]], upcasters: Upcasters | None
) -> tuple[str, int]:
    """In a worker: parse the batches laid end to end in ``path``; returns the Arrow IPC file
    of (valid, rejected) and the record count."""
    with open(path, "rb") as source:
        batches = [(batch_id, source.read(size)) for batch_id, size in sizes]
    _unlink(path)
    parsed = parse_batches(batches, upcasters or UPCASTERS)
    out = _shared_path("parsed")
    try:
        with pa.OSFile(out, "wb") as sink:
            for table in (parsed.valid, parsed.rejected):
                with pa.ipc.new_stream(sink, table.schema) as writer:
                    writer.write_table(table)
    except BaseException:
        _unlink(out)
        raise
    return out, parsed.records


def _load_shared(path: str) -> tuple[pa.Table, pa.Table]:
    """(valid, rejected) read in place from a worker's file, which is unlinked at once: the
    mapping keeps the pages for as long as the tables live."""
    try:
        with pa.memory_map(path) as source:
            valid = pa.ipc.open_stream(source).read_all()
            rejected = pa.ipc.open_stream(source).read_all()
    finally:
        _unlink(path)
    return valid, rejected


def _submit(
    pool: Executor, batches: Sequence[tuple[str, bytes]], upcasters: Upcasters | None
) -> tuple[tuple[str, ...], str, Future]:
    path = _shared_path("batches")
    try:
        with open(path, "wb") as sink:
            sink.writelines(data for _, data in batches)
        sizes = [(batch_id, len(data)) for batch_id, data in batches]
        future = pool.submit(_parse_shared, path, sizes, upcasters)
    except BaseException:
        _unlink(path)
        raise
    return tuple(batch_id for batch_id, _ in batches), path, future


def parse_in(
    pool: Executor,
    passes: Iterable[Sequence[tuple[str, bytes]]],
    upcasters: Upcasters = UPCASTERS,
    ahead: int = 4,
) -> Iterator[ParsedBatch]:
    """:func:`parse_batches` of each pass in ``pool``'s worker processes, in pass order.

    ``pool`` is a process pool the caller keeps (starting workers costs far more than a
    pass). At most ``ahead`` passes are in flight. Batches and results travel through files
    in shared memory, results as Arrow IPC that is memory-mapped, not copied; only file names
    and counts are pickled (and ``upcasters``, when not the default).
    """
    extra = None if upcasters is UPCASTERS else upcasters
    pending: deque[tuple[tuple[str, ...], str, Future]] = deque()
    todo = iter(passes)
    try:
        while True:
            while len(pending) < max(ahead, 1) and (batches := next(todo, None)) is not None:
                pending.append(_submit(pool, batches, extra))
            if not pending:
                return
            batch_ids, _, future = pending[0]
            out, records = future.result()
            pending.popleft()
            yield ParsedBatch(batch_ids, *_load_shared(out), records)
    finally:
        # Abandoned or failed: nothing may stay behind in shared memory.
        for _, path, future in pending:
            _unlink(path)
            if not future.cancel() and future.exception() is None:
                _unlink(future.result()[0])


def _decode_wire(lines: list[bytes]) -> list[Any]:
    """The typed envelope of every line msgspec decodes, at C speed; None for the others."""
    out: list[Any] = []
    it = iter(lines)
    decode = _WIRE_DECODER.decode
    while True:
        try:
            out.extend(map(decode, it))  # as in _load_lines: len(out) is the failing line
            return out
        except (msgspec.MsgspecError, ValueError):  # UnicodeDecodeError is a ValueError
            out.append(None)


Parts = dict[tuple[str, int], list[tuple[dict[str, pa.Array], pa.Table]]]


@dataclass(frozen=True)
class _Lines:
    """Where lines come from (their batch and line number), and the valid rows found so far."""

    batch_ids: tuple[str, ...]
    batch_id_array: pa.Array
    batch_index: np.ndarray
    line_no: np.ndarray
    parts: Parts

    def origin(self, rows: np.ndarray) -> dict[str, pa.Array]:
        return {
            "batch_id": self.batch_id_array.take(pa.array(self.batch_index[rows])),
            "line_no": pa.array(self.line_no[rows], pa.int64()),
        }

    def subset(self, rows: np.ndarray) -> _Lines:
        return _Lines(
            self.batch_ids,
            self.batch_id_array,
            self.batch_index[rows],
            self.line_no[rows],
            self.parts,
        )

    def add(self, key: tuple[str, int], ok: np.ndarray, envelope: dict, table: pa.Table) -> None:
        """Keep the rows of ``ok`` of one group."""
        if not ok.all():
            keep = pa.array(ok)
            envelope = {k: v.filter(keep) for k, v in envelope.items()}
            table = table.filter(keep)
        self.parts.setdefault(key, []).append((envelope, table))


def _parse_wire(lines: list[bytes], where: _Lines) -> np.ndarray:
    """Stage 1: the lines msgspec decodes and the fast checks pass go to ``where.parts``.

    Returns their mask. msgspec has checked each JSON type and that required fields are
    there, so the columns convert without screening; the values get the same conservative
    checks as in the orjson stage.
    """
    n = len(lines)
    done = np.zeros(n, bool)
    decoded = _decode_wire(lines)
    kinds = np.fromiter(map(_WIRE_CODES.__getitem__, map(type, decoded)), np.int8, n)
    for code, wire in enumerate(_WIRES):
        rows = np.flatnonzero(kinds == code)
        if not len(rows):
            continue
        shape = _SHAPES[wire.key]
        # astuple reads a struct's slots in C; zip turns the envelope rows into columns, and
        # Arrow takes the data rows as they are (a struct array: no transposing in Python).
        ids, sources, versions, times, datas = zip(
            *map(_astuple, _gather(decoded, rows)), strict=True
        )
        arrays = pa.array(list(map(_astuple, datas)), wire.data).flatten()
        id_array, source_array = pa.array(ids, pa.string()), pa.array(sources, pa.string())
        time_ok, micros = _times(pa.array(times, pa.string()))
        ok = np.array(versions, np.int64) == wire.key[1]
        ok &= _sized(id_array, 1, 128) & _sized(source_array, 1, 1 << 30) & time_ok
        ok &= FAST_CHECKS[wire.key](dict(zip(shape.schema.names, arrays, strict=True)))
        envelope = {
            "event_id": id_array,
            "source": source_array,
            "event_time": pa.array(micros, pa.int64()).cast(TS),
            **where.origin(rows),
        }
        where.add(wire.key, ok, envelope, pa.Table.from_arrays(arrays, schema=shape.schema))
        done[rows[ok]] = True
    return done


def _parse_loaded(lines: list[bytes], where: _Lines) -> tuple[list[tuple], int]:
    """Stage 2 (what msgspec left): orjson dicts, the fast checks, then ``validate``.

    Valid rows go to ``where.parts``; returns the rejected rows and the count of blank lines.
    """
    n = len(lines)
    records = _load_lines(lines)
    envelopes = _pluck(records, _ENVELOPE, lambda _: _NO_ENVELOPE)
    ids, types, sources, versions, times, datas = (
        zip(*envelopes, strict=True) if envelopes else [()] * 6
    )
    type_array, _ = _column(types, pa.string())
    version, version_valid = _ints(_column(versions, pa.int64())[0])
    encoded = pc.dictionary_encode(type_array)
    type_code = encoded.indices.fill_null(-1).to_numpy()
    type_names = encoded.dictionary.to_pylist()

    fast = np.zeros(n, bool)
    # A handful of lines (what msgspec leaves is mostly bad ones) costs less in validate()
    # than the fixed cost of the column checks.
    for key, check in FAST_CHECKS.items() if n >= VECTOR_MIN_LINES else ():
        event_type, event_version = key
        if event_type not in type_names:
            continue
        selected = (type_code == type_names.index(event_type)) & version_valid
        rows = np.flatnonzero(selected & (version == event_version))
        if not len(rows):
            continue
        id_array, _ = _column(_gather(ids, rows), pa.string())
        source_array, _ = _column(_gather(sources, rows), pa.string())
        time_ok, micros = _times(_column(_gather(times, rows), pa.string())[0])
        shape = _SHAPES[key]
        plucked = _pluck(_gather(datas, rows), shape.getter, shape.fallback)
        table, ok = _data_table(shape, plucked)
        ok &= _sized(id_array, 1, 128) & _sized(source_array, 1, 1 << 30) & time_ok
        ok &= check({name: table.column(name).combine_chunks() for name in table.column_names})
        envelope = {
            "event_id": id_array,
            "source": source_array,
            "event_time": pa.array(micros, pa.int64()).cast(TS),
            **where.origin(rows),
        }
        where.add(key, ok, envelope, table)
        fast[rows[ok]] = True

    # The remainder (~1-3% on real feeds) goes through validate() one by one: it is what
    # defines the reason codes, and pydantic has no columnar mode.
    rejected: list[tuple] = []
    slow: dict[tuple[str, int], list[tuple[int, Envelope]]] = {}
    blank = 0
    for i in np.flatnonzero(~fast).tolist():
        line = lines[i]
        if _line_blank(line):
            blank += 1
            continue
        result = validate(line)
        if isinstance(result, Rejection):
            event_id, when = _recover(records[i], line, result.code)
            rejected.append(
                (
                    where.batch_ids[where.batch_index[i]],
                    int(where.line_no[i]),
                    event_id,
                    when,
                    result.code,
                    result.detail,
                    line,
                )
            )
        else:
            slow.setdefault((result.type, result.version), []).append((i, result))

    for key, accepted in slow.items():
        shape = _SHAPES[key]
        table = pa.Table.from_pylist(
            [{**shape.defaults, **env.data} for _, env in accepted], schema=shape.schema
        )
        envelope = {
            "event_id": pa.array([env.id for _, env in accepted], pa.string()),
            "source": pa.array([env.source for _, env in accepted], pa.string()),
            "event_time": pa.array([env.time for _, env in accepted], TS),
            **where.origin(np.array([i for i, _ in accepted], np.int64)),
        }
        where.add(key, np.ones(len(accepted), bool), envelope, table)
    return rejected, blank


def _parse(batches: list[tuple[str, bytes]], upcasters: Upcasters) -> ParsedBatch:
    batch_ids = tuple(batch_id for batch_id, _ in batches)
    lines: list[bytes] = []
    sizes = []
    for _, data in batches:
        chunk = data.split(b"\n")
        if chunk and not chunk[-1]:
            chunk.pop()  # the newline that ends the last line
        lines += chunk
        sizes.append(len(chunk))
    n = len(lines)
    starts = np.cumsum([0, *sizes], dtype=np.int64)[:-1]
    where = _Lines(
        batch_ids,
        pa.array(batch_ids, pa.string()),
        np.repeat(np.arange(len(batches)), sizes),
        np.arange(1, n + 1) - np.repeat(starts, sizes),
        {},
    )
    # Lines in (batch, line) order through both stages, so rejections keep that order.
    rest = np.flatnonzero(~_parse_wire(lines, where))
    rejected: list[tuple] = []
    blank = 0
    if len(rest):
        rejected, blank = _parse_loaded(list(_gather(lines, rest)), where.subset(rest))

    outputs = []
    for (event_type, event_version), pieces in where.parts.items():
        envelope = {k: pa.concat_arrays([p[0][k] for p in pieces]) for k in pieces[0][0]}
        table = pa.concat_tables([p[1] for p in pieces]) if len(pieces) > 1 else pieces[0][1]
        latest, table = upcasters.upcast(event_type, event_version, table)
        outputs.append(_output(event_type, latest, envelope, table))
    valid = pa.concat_tables(outputs) if outputs else empty(EVENTS_SCHEMA)
    rejected_table = pa.Table.from_pylist(
        [dict(zip(REJECTED_SCHEMA.names, row, strict=True)) for row in rejected],
        schema=REJECTED_SCHEMA,
    )
    return ParsedBatch(batch_ids, valid, rejected_table, n - blank)


# --- shared helpers -----------------------------------------------------------------------------


def _true(mask: Any) -> Any:
    return pc.fill_null(mask, False)


def _all(*masks: Any) -> Any:
    out = _true(masks[0])
    for mask in masks[1:]:
        out = pc.and_(out, _true(mask))
    return out


def _first_mask(table: pa.Table, key: str, order: list[tuple[str, str]]) -> np.ndarray | None:
    """Mask of the first row of each ``key`` value by ``order``; None when every row is first.

    A hash pass numbers the ``key`` values and counts them, and only the rows of repeated
    values are sorted, on their number rather than the string: on event streams that is a few
    percent of the rows, and sorting strings is what costs. Null keys form one group.
    """
    if table.num_rows < 2:
        return None
    encoded = pc.dictionary_encode(table[key].combine_chunks())
    groups = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy()
    repeated = np.bincount(groups)[groups] > 1
    if not repeated.any():
        return None
    rows = np.flatnonzero(repeated)
    rest = [(name, direction) for name, direction in order if name != key]
    contenders = table.select([name for name, _ in rest]).take(pa.array(rows))
    contenders = contenders.append_column("__group", pa.array(groups[rows]))
    contenders = contenders.append_column("__row", pa.array(rows))
    contenders = contenders.sort_by([("__group", "ascending"), *rest])
    group = contenders["__group"].to_numpy()
    keep = np.ones(table.num_rows, bool)
    keep[contenders["__row"].to_numpy()[1:][group[1:] == group[:-1]]] = False
    return keep


def _first_per(table: pa.Table, key: str, order: list[tuple[str, str]]) -> pa.Table:
    """The first row of each ``key`` value by ``order``; the table's row order is kept."""
    keep = _first_mask(table, key, order)
    return table if keep is None else table.filter(pa.array(keep))


def _chunk(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous ``string`` array (large strings are narrowed: text fields are short)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return values.cast(pa.string()) if pa.types.is_large_string(values.type) else values


def _body(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, the bytes of all values) of a string array, as numpy (zero-copy)."""
    offsets = _offsets(values)
    return offsets, _data(values)[offsets[0] : offsets[-1]]


def _holding(offsets: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Mask of the values whose bytes include the positions ``hits`` of the body."""
    mask = np.zeros(len(offsets) - 1, bool)
    mask[np.searchsorted(offsets, hits + offsets[0], side="right") - 1] = True
    return mask


def _any_byte(values: pa.Array, wanted: bytes) -> bool:
    """Whether any value holds any of the ``wanted`` bytes (one pass over the buffer)."""
    body = _body(values)[1]
    return any((body == byte).any() for byte in wanted)


def normalise_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Strip and collapse whitespace exactly like Python's ``" ".join(s.split())``; case kept.

    numpy finds the values that need it (non-ASCII ones are always re-checked, since Unicode
    has spaces of its own); only those go through Python, so the definition of whitespace
    is Python's, as in legacy ``squash``.
    """
    values = _chunk(values)
    if len(values) == 0:
        return values
    # Anything but printable ASCII, or a space that is leading, trailing or doubled: found in
    # numpy over the whole buffer, then mapped to the values holding those bytes (a pair of
    # spaces across two values marks the one that ends with a space, suspect anyway).
    offsets, body = _body(values)
    size = np.diff(offsets)
    suspect = np.zeros(len(values), bool)
    if len(body):
        first, last = np.minimum(offsets[:-1] - offsets[0], len(body) - 1), offsets[1:] - 1
        suspect |= (size > 0) & ((body[first] == 32) | (body[last - offsets[0]] == 32))
        space = body == 32
        odd = (body - np.uint8(0x20)) > 0x5E  # uint8 wraps: below 0x20 is large too
        odd[:-1] |= space[:-1] & space[1:]
        suspect |= _holding(offsets, np.flatnonzero(odd))
    suspect &= _valid(values)
    if not suspect.any():
        return values
    mask = pa.array(suspect)
    squashed = [" ".join(s.split()) for s in values.filter(mask).to_pylist()]
    return pc.replace_with_mask(values, mask, pa.array(squashed, values.type))


def casefold(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``str.casefold`` of each value: ASCII in Arrow, the (rare) non-ASCII values in Python."""
    values = _chunk(values)
    lowered = pc.ascii_lower(values)
    offsets, body = _body(values)
    other = _holding(offsets, np.flatnonzero(body >= 0x80)) & _valid(values)
    if not other.any():
        return lowered
    # No Arrow kernel does full Unicode case folding ("Straße" -> "strasse").
    mask = pa.array(other)
    folded = [s.casefold() for s in values.filter(mask).to_pylist()]
    return pc.replace_with_mask(lowered, mask, pa.array(folded, values.type))


def dedupe_key(company: Any, title: Any, location: Any) -> pa.Array:
    """casefold("company|title|location") of normalised text, with "\\" and "|" escaped in
    the parts, so that ("a|b", "c") and ("a", "b|c") cannot collide."""
    parts = []
    for values in (company, title, location):
        folded = casefold(values)
        if _any_byte(folded, b"|\\"):
            folded = pc.replace_substring(folded, "\\", "\\\\")
            folded = pc.replace_substring(folded, "|", "\\|")
        parts.append(folded)
    return pc.binary_join_element_wise(*parts, "|")


# --- events, postings, duplicates ---------------------------------------------------------------


def dedupe_events(table: pa.Table) -> pa.Table:
    """One row per event_id, the first by (batch_id, line_no); row order is kept."""
    return _first_per(table, "event_id", [("batch_id", "ascending"), ("line_no", "ascending")])


def clean_postings(events: pa.Table) -> pa.Table:
    """job.posted/job.updated rows, text normalised, with ``board`` and ``dedupe_key``."""
    names = [
        n for n in events.column_names if n not in ("reason", "absorbed_board", "surviving_board")
    ]
    rows = events.select(names).filter(pc.is_in(events["event_type"], pa.array(POSTING_TYPES)))
    text = {name: normalise_text(rows[name]) for name in ("title", "company", "location")}
    columns = {name: rows[name] for name in rows.column_names}
    columns.update(text)
    columns["board"] = rows["source"]
    columns["dedupe_key"] = dedupe_key(text["company"], text["title"], text["location"])
    return pa.table([columns[name] for name in POSTINGS_SCHEMA.names], schema=POSTINGS_SCHEMA)


@dataclass(frozen=True)
class DedupeResult:
    """``kept``: the input postings of jobs that are not duplicates (input order).
    ``duplicates``: every duplicate among the jobs in ``canonical`` (job_id,
    duplicate_of_job_id, dedupe_key), by job_id. ``canonical``: the registry to store and pass
    back next time, by (event_time, event_id)."""

    kept: pa.Table
    duplicates: pa.Table
    canonical: pa.Table


_FIRST = [("event_time", "ascending"), ("event_id", "ascending")]


def canonical_jobs(canonical: pa.Table) -> pa.Table:
    """dedupe_key -> canonical job_id: the job first posted with that key."""
    return _first_per(canonical, "dedupe_key", _FIRST).select(["dedupe_key", "job_id"])


def dedupe_postings(postings: pa.Table, canonical: pa.Table | None = None) -> DedupeResult:
    """Cross-board dedupe: a job is a duplicate when an earlier job was posted with its key.

    ``canonical`` is a registry of every job's *first* job.posted (job_id, dedupe_key, board,
    event_time, event_id); the canonical job of a key is its registry row first by
    (event_time, event_id). Keeping every job, not only the winner of each key, is what makes
    the result independent of arrival order: a late but earlier posting takes a key over, and
    the jobs that pointed at the old winner re-point at it. The registry is a minimum per job
    and the duplicates are derived from it, so both are order-insensitive and idempotent.

    Pass the whole registry, or at least its rows whose job_id or dedupe_key occurs in
    ``postings``; the result covers the rows passed in. As in legacy, only job.posted events
    define keys; updates never move a job to another key.
    """
    canonical = canonical if canonical is not None else empty(CANONICAL_SCHEMA)
    names = CANONICAL_SCHEMA.names
    posted = postings.select([*names, "event_type"])
    posted = posted.filter(pc.equal(posted["event_type"], POSTED)).select(names)
    fresh = pa.table(posted.columns, schema=CANONICAL_SCHEMA)
    known = canonical.select(names).cast(CANONICAL_SCHEMA)
    registry = _first_per(pa.concat_tables([known, fresh]), "job_id", _FIRST).sort_by(_FIRST)
    first = _first_mask(registry, "dedupe_key", _FIRST)
    if first is None:
        duplicates = empty(DUPLICATES_SCHEMA)
    else:
        winners, losers = registry.filter(pa.array(first)), registry.filter(pa.array(~first))
        contested = winners.filter(pc.is_in(winners["dedupe_key"], losers["dedupe_key"]))
        duplicates = losers.select(["job_id", "dedupe_key"]).join(
            contested.select(["dedupe_key", "job_id"]).rename_columns(
                ["dedupe_key", "duplicate_of_job_id"]
            ),
            "dedupe_key",
            join_type="inner",
        )
    duplicates = duplicates.select(DUPLICATES_SCHEMA.names).cast(DUPLICATES_SCHEMA)
    duplicates = duplicates.sort_by("job_id").combine_chunks()
    kept = postings.filter(pc.invert(pc.is_in(postings["job_id"], duplicates["job_id"])))
    return DedupeResult(kept, duplicates, registry.combine_chunks())


# --- job state ----------------------------------------------------------------------------------


def empty_state() -> pa.Table:
    return empty(STATE_SCHEMA)


def _after(t1: Any, id1: Any, t2: Any, id2: Any) -> pa.Array:
    """(t1, id1) > (t2, id2), where a missing left side never wins and a missing right loses."""
    later = pc.or_kleene(pc.greater(t1, t2), pc.and_kleene(pc.equal(t1, t2), pc.greater(id1, id2)))
    return pc.if_else(pc.is_null(t2), pc.is_valid(t1), _true(later))


def _latest_per(table: pa.Table, key: str, time: str, event_id: str) -> pa.Table:
    return _first_per(table, key, [(time, "descending"), (event_id, "descending")])


def apply_job_state(state: pa.Table | None, events: pa.Table) -> pa.Table:
    """Current state per job after ``events`` (rows of :data:`EVENTS_SCHEMA`).

    Each job keeps three components, each a join in a semilattice (a maximum or minimum by
    (event_time, event_id)), and everything else is derived from them, so applying is
    idempotent and order-insensitive:
    ``apply(apply(s, a), b) == apply(apply(s, b), a) == apply(s, a | b)``.

    * The latest posting (job.posted or job.updated) sets ``board``, the posting fields
      (text normalised as in :func:`clean_postings`), ``dedupe_key`` and ``updated_at``;
      ``posted_at`` is the earliest job.posted.
    * The latest job.expired.
    * The latest board.merged of the job's board. Mergers are kept as ``kind == "merger"``
      rows (job_id ``"@<absorbed board>"``, never a valid job id), so that a posting that
      arrives after its board's merger still meets it.

    Status: the later of the latest posting and the latest expiry gives ``active`` or
    ``expired`` (last writer wins; a re-posting re-opens an expired job). A merger of the
    job's board timed after that turns an ``active`` job into ``merged`` (``merged_into``,
    ``merged_at``): the merger acts as of its event time. An expired job stays expired, and a
    posting on the absorbed board timed after the merger (impossible in practice) is a later
    write, so that job is ``active``. ``expired_*`` and ``merged_*`` are set only while they
    are the status (a component that lost can never win later, so nothing is forgotten).
    ``last_event_time``/``last_event_id`` name the event that decided the status.
    Rows are sorted by (kind, job_id).

    ``state`` may be the whole state or a slice of it, and the result covers what was passed
    in (upsert it by job_id): the rows of the job ids in ``events``, every merger row (a
    handful), and, when ``events`` hold a board.merged, the rows of the absorbed board.
    """
    state = state if state is not None else empty_state()
    state = state.select(STATE_SCHEMA.names).cast(STATE_SCHEMA)
    jobs = state.filter(pc.equal(state["kind"], "job"))
    kind = events["event_type"]

    postings = clean_postings(events)
    new_postings = pa.table(
        {
            "job_id": postings["job_id"],
            "board": postings["board"],
            **{f: postings[f] for f in POSTING_FIELDS},
            "dedupe_key": postings["dedupe_key"],
            "updated_at": postings["event_time"],
            "posting_event_id": postings["event_id"],
        }
    )
    posting_columns = new_postings.column_names
    old_postings = jobs.filter(pc.is_valid(jobs["posting_event_id"])).select(posting_columns)
    posting = _latest_per(
        pa.concat_tables([old_postings, new_postings.cast(old_postings.schema)]),
        "job_id",
        "updated_at",
        "posting_event_id",
    )

    posted = events.filter(pc.equal(kind, POSTED))
    first_posted = (
        pa.concat_tables(
            [
                jobs.select(["job_id", "posted_at"]).filter(pc.is_valid(jobs["posted_at"])),
                pa.table({"job_id": posted["job_id"], "posted_at": posted["event_time"]}),
            ]
        )
        .group_by("job_id")
        .aggregate([("posted_at", "min")])
        .rename_columns(["job_id", "posted_at"])
    )

    expired = events.filter(pc.equal(kind, EXPIRED))
    expiry_columns = ["job_id", "expired_at", "expired_reason", "expiry_event_id"]
    expiry = _latest_per(
        pa.concat_tables(
            [
                jobs.filter(pc.is_valid(jobs["expiry_event_id"])).select(expiry_columns),
                pa.table(
                    [
                        expired["job_id"],
                        expired["event_time"],
                        expired["reason"],
                        expired["event_id"],
                    ],
                    names=expiry_columns,
                ),
            ]
        ),
        "job_id",
        "expired_at",
        "expiry_event_id",
    )

    merged = events.filter(pc.equal(kind, MERGED))
    merger_columns = ["board", "merged_into", "merged_at", "merger_event_id"]
    old_mergers = state.filter(pc.equal(state["kind"], "merger")).select(merger_columns)
    mergers = _latest_per(
        pa.concat_tables(
            [
                old_mergers,
                pa.table(
                    [
                        merged["absorbed_board"],
                        merged["surviving_board"],
                        merged["event_time"],
                        merged["event_id"],
                    ],
                    names=merger_columns,
                ),
            ]
        ),
        "board",
        "merged_at",
        "merger_event_id",
    )

    job_ids = pc.unique(
        pa.chunked_array(
            [posting["job_id"], expiry["job_id"], first_posted["job_id"]], type=pa.string()
        )
    )
    table = (
        pa.table({"job_id": job_ids})
        .join(posting, "job_id")
        .join(first_posted, "job_id")
        .join(expiry, "job_id")
        .join(mergers, "board")
    )
    p = (table["updated_at"], table["posting_event_id"])
    x = (table["expired_at"], table["expiry_event_id"])
    m = (table["merged_at"], table["merger_event_id"])
    # The latest posting or expiry says active or expired; a later merger of the board turns
    # an active job into a merged one, and leaves an expired one expired.
    is_expired = _after(*x, *p)
    is_merged = _all(pc.invert(is_expired), _after(*m, *p))
    status = pc.if_else(is_expired, "expired", pc.if_else(is_merged, "merged", "active"))

    def only(mask: pa.Array, column: str) -> pa.Array:
        values = table[column].combine_chunks()
        return pc.if_else(mask, values, pa.nulls(len(values), values.type))

    last_time = pc.if_else(is_expired, x[0], pc.if_else(is_merged, m[0], p[0]))
    last_id = pc.if_else(is_expired, x[1], pc.if_else(is_merged, m[1], p[1]))
    n = table.num_rows
    job_rows = {
        "kind": pa.repeat(pa.scalar("job"), n),
        "job_id": table["job_id"],
        "board": table["board"],
        **{f: table[f] for f in POSTING_FIELDS},
        "dedupe_key": table["dedupe_key"],
        "status": status,
        "posted_at": table["posted_at"],
        "updated_at": table["updated_at"],
        "posting_event_id": table["posting_event_id"],
        "expired_at": only(is_expired, "expired_at"),
        "expired_reason": only(is_expired, "expired_reason"),
        "expiry_event_id": only(is_expired, "expiry_event_id"),
        "merged_into": only(is_merged, "merged_into"),
        "merged_at": only(is_merged, "merged_at"),
        "merger_event_id": only(is_merged, "merger_event_id"),
        "last_event_time": last_time,
        "last_event_id": last_id,
    }
    k = mergers.num_rows
    merger_rows = {
        "kind": pa.repeat(pa.scalar("merger"), k),
        "job_id": pc.binary_join_element_wise("@", mergers["board"], ""),
        "board": mergers["board"],
        "merged_into": mergers["merged_into"],
        "merged_at": mergers["merged_at"],
        "merger_event_id": mergers["merger_event_id"],
        "last_event_time": mergers["merged_at"],
        "last_event_id": mergers["merger_event_id"],
    }
    merger_table = pa.table(
        {f.name: merger_rows.get(f.name, pa.nulls(k, f.type)).cast(f.type) for f in STATE_SCHEMA}
    )
    job_table = pa.table({f.name: job_rows[f.name] for f in STATE_SCHEMA}, schema=STATE_SCHEMA)
    out = pa.concat_tables([job_table, merger_table])
    return out.sort_by([("kind", "ascending"), ("job_id", "ascending")]).combine_chunks()


# --- read models --------------------------------------------------------------------------------


def search_index(state: pa.Table, duplicates: pa.Table | None = None) -> pa.Table:
    """Active jobs, sorted by job_id, in the shape of legacy's active-jobs snapshot.

    With ``duplicates`` (from :func:`dedupe_postings`), a duplicate job is left out while the
    job it duplicates is active; once that one is gone the duplicate shows again, since the
    job is still open on its own board.
    """
    active = state.filter(
        pc.and_(pc.equal(state["kind"], "job"), pc.equal(state["status"], "active"))
    )
    if duplicates is not None and duplicates.num_rows:
        shadowed = duplicates.filter(pc.is_in(duplicates["duplicate_of_job_id"], active["job_id"]))
        active = active.filter(pc.invert(pc.is_in(active["job_id"], shadowed["job_id"])))
    return active.select(SEARCH_INDEX_COLUMNS).sort_by("job_id")


def board_daily_stats(
    events_of_day: pa.Table,
    state: pa.Table,
    day: date | None = None,
    duplicates: pa.Table | None = None,
) -> pa.Table:
    """Per board: the day's postings, updates and expiries (from ``events_of_day``, by
    ``source``), and the active jobs and their mean ``salary_min`` (2 decimals, null without
    salaries) in ``state`` as of the end of the day, read through :func:`search_index`. One
    row per board seen in either, sorted by board: legacy BoardStats' columns.

    ``day`` defaults to the UTC date of the earliest event.
    """
    if day is None:
        if events_of_day.num_rows == 0:
            raise ValueError("board_daily_stats needs a day when there are no events")
        first = pc.min(events_of_day["event_time"]).as_py()
        day = first.astimezone(UTC).date()
    counts = events_of_day.group_by(["source", "event_type"]).aggregate([("event_id", "count")])
    boards = pa.chunked_array([events_of_day["source"]], type=pa.string())
    index = search_index(state, duplicates)
    active = index.group_by("board").aggregate([("job_id", "count"), ("salary_min", "mean")])
    all_boards = pc.unique(pa.chunked_array(boards.chunks + index["board"].chunks)).sort()
    table = pa.table({"board": all_boards})
    for name, event_type in (("postings", POSTED), ("updates", UPDATED), ("expiries", EXPIRED)):
        sub = counts.filter(pc.equal(counts["event_type"], event_type))
        sub = pa.table({"board": sub["source"], name: sub["event_id_count"]})
        table = table.join(sub, "board")
    table = table.join(
        pa.table(
            {
                "board": active["board"],
                "active_jobs": active["job_id_count"],
                "avg_salary_min": pc.round(active["salary_min_mean"], 2),
            }
        ),
        "board",
    )
    n = table.num_rows
    out = pa.table(
        {
            "date": pa.repeat(pa.scalar(day, pa.date32()), n),
            "board": table["board"],
            **{c: pc.fill_null(table[c], 0) for c in ("postings", "updates", "expiries")},
            "active_jobs": pc.fill_null(table["active_jobs"], 0),
            "avg_salary_min": table["avg_salary_min"],
        }
    ).cast(STATS_SCHEMA)
    return out.sort_by("board")
