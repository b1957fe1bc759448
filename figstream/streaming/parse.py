"""Parsing landed micro-batches: JSON lines into valid events and rejected records, vectorised.

:func:`parse_batch` and :func:`parse_batches` accept exactly what
:func:`figstream.events.validation.validate` accepts, with the same reason code and detail for
the rest. ``validate`` costs ~8 us a record (pydantic), so it only sees the
suspicious remainder. Lines go through stages, each taking what it surely can:

1. ``msgspec`` decodes each line into a typed struct per event type (tagged on ``type``, unknown
   fields forbidden): JSON types are checked in C and no dicts are built. Fields come out with
   ``msgspec.structs.astuple`` and the value checks run over whole columns.
2. What msgspec refuses (unknown fields, floats for ints, a repeated ``type``, bad lines) is
   loaded with ``orjson``, fields are pulled out with C-level ``map``/``itemgetter``, and the same
   column checks run; a handful of leftover lines skip this stage, whose fixed cost is higher.
   v2 postings start here: a type's msgspec struct is its v1, so stage 1 only tries lines
   that spell ``"version":1``; their nested objects become struct columns
   (:func:`_struct_column`).
3. ``validate`` for the rest, one line at a time: it names the reason.

The column checks (:mod:`figstream.streaming.checks`) are *conservative*: a row they pass is
surely valid; anything else is re-checked by ``validate``, which gives the exact reason.
What ``validate`` refuses in the raw line, the fast stages prove absent: a line is within the
size of an event; duplicate keys (which msgspec and orjson both let pass, keeping the last)
are ruled out in stage 1 by the line being as long as the shortest spelling of what the
struct holds (:func:`_spelt_shortest`) and in stage 2 by orjson spelling the record back as the line
(:func:`_spelt_back`); a BOM, invalid UTF-8, raw control characters, NaN, ints beyond 64
bits and deep nesting never decode in stage 1, and stage 2 takes only records without extra
fields (:func:`_known`), whose values the columns check.
Envelope times are checked and converted by Arrow's own ISO-8601 cast, after a shape check that
admits only the canonical spelling of real dates. ``tests/figstream/streaming/test_parse.py``
checks the equivalence with hypothesis.

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

import gc
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from typing import Annotated, Any, Union

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from msgspec import UNSET

from figstream.events.envelope import Envelope, parse_time
from figstream.events.schemas import REGISTRY
from figstream.events.upcasters import UPCASTERS, Upcasters, arrow_schema, field_defaults
from figstream.events.validation import (
    EARLIEST,
    LATEST,
    MAX_EVENT_BYTES,
    Rejection,
    valid_id,
    validate,
)
from figstream.streaming.checks import (
    FAST_CHECKS,
    event_ids_ok,
    event_times,
    int_values,
    sources_ok,
    string_offsets,
    validity,
)
from figstream.streaming.tables import DATA_COLUMNS, EVENTS_SCHEMA, REJECTED_SCHEMA, TS, empty

# --- parse_batch -------------------------------------------------------------------------------

_UNPARSED = object()  # a line orjson could not load; validate() names the reason
_NoneType = type(None)
_I64 = (-(2**63), 2**63 - 1)
_ENVELOPE_KEYS = ("id", "type", "source", "version", "time", "data")
_ENVELOPE = operator.itemgetter(*_ENVELOPE_KEYS)
_NO_ENVELOPE = (None,) * len(_ENVELOPE_KEYS)
_ENVELOPE_NAMES = frozenset(_ENVELOPE_KEYS)


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


def _known(values: Sequence[Any], names: frozenset[str]) -> np.ndarray:
    """Per value: an object (or anything iterable) of no key outside ``names``, at C speed.

    Extra fields are valid, but the column checks do not look at them (their depth, ints,
    keys), so a record with one takes ``validate``."""
    out: list[bool] = []
    it = iter(values)
    while True:
        try:
            out.extend(map(names.issuperset, it))  # as in _load_lines: len(out) is the failure
            return np.array(out, bool)
        except TypeError:  # not iterable, or unhashable items: not an object
            out.append(False)


def _spelt_back(records: Sequence[Any], lines: Sequence[bytes], small: np.ndarray) -> np.ndarray:
    """Per orjson-loaded record: orjson spells it back as its line, byte for byte. Such a line
    has no duplicate key (orjson keeps one of them) and no int orjson read as a float, and is
    within the size of an event when its fields are; the others take ``validate``."""
    out: list[bool] = []
    it, rest = iter(records), iter(lines)
    while True:
        try:
            out.extend(map(operator.eq, map(orjson.dumps, it), rest))
            return np.array(out, bool) & small
        except TypeError:  # too deep for orjson.dumps (it was read with extra fields)
            out.append(False)
            next(rest)


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
    if pa.types.is_struct(arrow_type):
        return _struct_column(values, arrow_type)
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


_NO_OBJECT: dict = {}


def _struct_column(values: Sequence[Any], arrow_type: pa.StructType) -> tuple[pa.Array, Any]:
    """Objects of a nested model (v2's location, salary) as a struct array, nulls kept; a
    value that is neither an object nor null, a child of another JSON type, or a field the
    model does not know (left to validate, which checks it), is flagged."""
    n = len(values)
    present = np.fromiter(map(operator.is_, map(type, values), repeat(dict)), bool, n)
    wrong = np.zeros(n, bool)
    objects = values
    if not present.all():  # a null or a mistyped value among them: not an object to read
        wrong = ~present & np.fromiter(map(operator.is_not, values, repeat(None)), bool, n)
        objects = [v if ok else _NO_OBJECT for v, ok in zip(values, present.tolist(), strict=True)]
    wrong |= ~_known(objects, frozenset(arrow_type.names))
    children = []
    for field in arrow_type:
        child, child_wrong = _column(
            list(map(operator.methodcaller("get", field.name), objects)), field.type
        )
        children.append(child)
        if child_wrong is not None:
            wrong |= child_wrong
    mask = None if present.all() else pa.array(~present)
    array = pa.StructArray.from_arrays(children, fields=list(arrow_type), mask=mask)
    return array, wrong if wrong.any() else None


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
    # A field that may be absent decodes as UNSET (so that the size check knows it is absent)
    # and becomes its default here; per field, what its key, value and comma spell then.
    defaults: tuple[Any, ...]
    absent_sizes: tuple[int, ...]

    def columns(self, datas: Sequence[msgspec.Struct]) -> tuple[list[pa.Array], np.ndarray]:
        """The data columns, absent fields filled with their defaults, and per row what the
        absent fields would have spelt (``count + (bytes << 8)``, 0 when none is absent)."""
        rows = list(map(_astuple, datas))
        try:  # Arrow refuses UNSET: when it takes the rows, no field is absent
            return pa.array(rows, self.data).flatten(), np.zeros(len(rows), np.int64)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        absent = np.fromiter(map(_COUNT_UNSET, rows), np.int64, len(rows))
        for i in np.flatnonzero(absent).tolist():  # a producer that leaves fields out
            row = rows[i]
            spelt = sum(n for v, n in zip(row, self.absent_sizes, strict=True) if v is UNSET)
            absent[i] += spelt << 8
            rows[i] = tuple(d if v is UNSET else v for v, d in zip(row, self.defaults, strict=True))
        return pa.array(rows, self.data).flatten(), absent


def _wire(key: tuple[str, int]) -> _Wire:
    event_type, version = key
    shape = _SHAPES[key]
    fields: list[tuple] = []
    for field in shape.schema:
        wire_type: Any = _WIRE_TYPES[field.type]
        wire_type = wire_type | None if field.nullable else wire_type
        if field.name in shape.defaults:
            fields.append((field.name, wire_type | msgspec.UnsetType, UNSET))
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
    defaults = tuple(shape.defaults.get(f.name, UNSET) for f in shape.schema)
    absent_sizes = tuple(
        len(orjson.dumps({f.name: shape.defaults[f.name]})) - 1 if f.name in shape.defaults else 0
        for f in shape.schema
    )  # '"name":value' and its comma: the object's braces less one
    return _Wire(key, envelope, pa.struct(list(shape.schema)), defaults, absent_sizes)


_COUNT_UNSET = operator.methodcaller("count", UNSET)
# The canonical envelope less its values: what orjson writes for one with empty strings.
_ENVELOPE_BYTES = len(b'{"id":"","type":"","source":"","version":,"time":"","data":}')
_POWERS = np.array([10**k for k in range(1, 20)], np.uint64)


def _int_sizes(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per int: the characters of its shortest JSON spelling (``null`` where not valid)."""
    negative = values < 0
    magnitude = np.where(negative, ~values, values).astype(np.uint64) + negative  # no overflow
    digits = 1 + negative
    top = int(magnitude.max()) if len(magnitude) else 0
    for power in _POWERS[: len(str(top)) - 1]:  # as many passes as the largest has digits
        digits = digits + (magnitude >= power)
    return np.where(valid, digits, 4)


def _value_sizes(array: pa.Array) -> np.ndarray:
    """Per value: the bytes of its shortest JSON spelling, a string's as if it needed no
    escape (so never more than any spelling of it)."""
    if array.type == pa.string():
        sizes = np.diff(string_offsets(array)) + 2
    elif array.type == pa.bool_():
        sizes = 5 - array.fill_null(True).to_numpy(zero_copy_only=False)
    else:
        return _int_sizes(*int_values(array))
    return sizes if not array.null_count else np.where(validity(array), sizes, 4)


def _spelt_shortest(
    size: np.ndarray,
    wire: _Wire,
    envelope: Sequence[pa.Array],
    version: np.ndarray,
    absent: np.ndarray,
    data: Sequence[pa.Array],
) -> np.ndarray:
    """Per line msgspec decoded as ``wire``: it is exactly as long as the shortest spelling of
    what the struct holds, so it repeats no key (msgspec, like orjson, keeps the last of a
    duplicate key without a word).

    Every spelling of the same content is at least that long: a repeated key, whitespace, an
    escape or a longer number only adds bytes, and a string's size here leaves out the
    escapes it needs (so one that needs some never matches). A line of another size is not
    necessarily bad: it takes ``validate``.
    """
    fields = len(wire.absent_sizes)
    fixed = _ENVELOPE_BYTES + len(wire.key[0]) + 2 + fields - 1
    fixed += sum(len(name) + 3 for name in wire.data.names)
    shortest = _int_sizes(version, True) + fixed
    for array in envelope:  # id, source, time: strings
        shortest += np.diff(string_offsets(array))
    for array in data:
        shortest += _value_sizes(array)
    if absent.any():  # their keys, values and commas are not in the line
        count = absent & 0xFF
        shortest -= (absent >> 8) - count + np.minimum(count, fields - 1)
    return size == shortest


@dataclass(frozen=True)
class _Facts:
    """Per line: its size in bytes."""

    size: np.ndarray

    @classmethod
    def of(cls, lines: Sequence[bytes]) -> _Facts:
        return cls(np.fromiter(map(len, lines), np.int64, len(lines)))

    def take(self, rows: np.ndarray) -> _Facts:
        return _Facts(self.size[rows])

    @property
    def small(self) -> np.ndarray:
        """Per line: within the size of one EventBridge event."""
        return self.size <= MAX_EVENT_BYTES


# One struct per event type: the tag is ``type``, so a type with several fast-checked versions
# keeps its lowest here; lines of its other versions decode, fail the version check and take
# the orjson stage, which is correct, only slower.
_WIRES = tuple(
    _wire(min(k for k in FAST_CHECKS if k[0] == event_type))
    for event_type in dict.fromkeys(t for t, _ in FAST_CHECKS)
)
assert {w.key[1] for w in _WIRES} == {1}, "the stage-1 line filter assumes v1 wires"
_WIRE_VERSION = b'"version":1'  # orjson's spelling; other spellings take the orjson stage
_WIRE_DECODER = msgspec.json.Decoder(Union[tuple(w.struct for w in _WIRES)])  # noqa: UP007
_WIRE_CODES = {w.struct: code for code, w in enumerate(_WIRES)} | {_NoneType: -1}


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
    if not valid_id(event_id):  # an unsafe id never becomes a dead letter's or a trace's key
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
            ok &= validity(array)
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
    latest version and flattened (v1 and v2 postings come out alike), nulls where a column does
    not apply. A version that is not registered (a future v3) is rejected as
    ``unknown_version``. ``rejected`` follows
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
    facts: _Facts

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
            self.facts.take(rows),
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
    # Only lines that may be of a wire's version: a v2 line never decodes as its type's v1
    # struct, and each refusal costs an exception (most of stage 1's time for v2 traffic).
    maybe = np.fromiter(map(operator.contains, lines, repeat(_WIRE_VERSION)), bool, n)
    if maybe.sum() >= n - n // 8:  # a few odd lines cost less than picking the rest out
        decoded = _decode_wire(lines)
    else:
        decoded = [None] * n
        picked = np.flatnonzero(maybe)
        found = _decode_wire(list(_gather(lines, picked))) if len(picked) else []
        for i, struct in zip(picked.tolist(), found, strict=True):
            decoded[i] = struct
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
        arrays, absent = wire.columns(datas)
        id_array, source_array = pa.array(ids, pa.string()), pa.array(sources, pa.string())
        time_array = pa.array(times, pa.string())
        time_ok, micros = event_times(time_array)
        version = np.array(versions, np.int64)
        ok = version == wire.key[1]
        ok &= event_ids_ok(id_array) & sources_ok(source_array) & time_ok
        size = where.facts.size[rows]
        ok &= size <= MAX_EVENT_BYTES
        envelope_strings = (id_array, source_array, time_array)
        ok &= _spelt_shortest(size, wire, envelope_strings, version, absent, arrays)
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
    version, version_valid = int_values(_column(versions, pa.int64())[0])
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
        time_ok, micros = event_times(_column(_gather(times, rows), pa.string())[0])
        shape = _SHAPES[key]
        data_rows = _gather(datas, rows)
        plucked = _pluck(data_rows, shape.getter, shape.fallback)
        table, ok = _data_table(shape, plucked)
        ok &= event_ids_ok(id_array) & sources_ok(source_array) & time_ok
        ok &= _known(data_rows, frozenset(shape.schema.names))
        loaded = _gather(records, rows)
        small = where.facts.small[rows]
        ok &= _known(loaded, _ENVELOPE_NAMES) & _spelt_back(loaded, _gather(lines, rows), small)
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


def lines_of(batches: list[tuple[str, bytes]]) -> tuple[list[bytes], _Lines]:
    """The lines of ``batches`` and where each comes from."""
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
        _Facts.of(lines),
    )
    return lines, where


def _parse(batches: list[tuple[str, bytes]], upcasters: Upcasters) -> ParsedBatch:
    lines, where = lines_of(batches)
    batch_ids, n = where.batch_ids, len(lines)
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
        table = upcasters.flatten(event_type, latest, table)
        outputs.append(_output(event_type, latest, envelope, table))
    valid = pa.concat_tables(outputs) if outputs else empty(EVENTS_SCHEMA)
    rejected_table = pa.Table.from_pylist(
        [dict(zip(REJECTED_SCHEMA.names, row, strict=True)) for row in rejected],
        schema=REJECTED_SCHEMA,
    )
    return ParsedBatch(batch_ids, valid, rejected_table, n - blank)
