"""Streams defined by EventBridge event patterns, matched locally with EventBridge's semantics.

``platform/routing.yaml`` names the streams. Each has an EventBridge event pattern, written in
a subset of the pattern language that this module implements faithfully, so the same rules can
be installed on an EventBridge bus in the ``aws`` profile. A record is matched against the
EventBridge form of its envelope::

    {"source": <source>, "detail-type": <type>,
     "detail": {"id": ..., "version": ..., "time": ..., "data": {...}}}

(see ``Envelope.to_eventbridge_entry``). Fields absent from the record are absent from that
form. Only ``source``, ``detail-type`` and ``detail`` may appear at the top of a pattern: the
other fields of a delivered EventBridge event (``id``, ``time``, ``account`` ...) are assigned
by EventBridge and would match differently here.

The subset, with AWS semantics:

* a leaf is a non-empty array of alternatives (OR); keys of an object are ANDed, nested objects
  go down into ``detail``;
* exact values: strings, numbers, ``true``, ``false``, ``null``. Types never mix: ``"1"`` does
  not match ``1``, ``""`` does not match ``null``, ``true`` does not match ``1``. Numbers
  compare by value (``300`` matches ``300.0``);
* ``{"prefix": "s"}`` matches strings only;
* ``{"anything-but": v | [v, ...] | {"prefix": "s"}}`` with strings or numbers: it matches a
  present leaf value that the exact (or prefix) match would not, so on a present scalar it is
  exactly the complement (``null``, booleans and numbers are all "anything but" a string);
* ``{"exists": true | false}``: presence of a *leaf* value, whatever it is (``null`` counts);
  an object or an empty array is not a leaf, so ``exists: false`` matches it;
* ``{"numeric": [">", 0, "<=", 5]}``: one comparison, or a lower bound (``>``/``>=``) followed
  by an upper bound (``<``/``<=``); numbers only, never booleans.

When the event value is an array, a leaf matches if any element matches; for a nested pattern,
one element (an object) must match the whole sub-pattern. A key the pattern names but the event
lacks fails every alternative except ``exists: false``.

Loading refuses anything else (``suffix``, ``wildcard``, ``equals-ignore-case``, ``cidr``,
``$or``, bare scalars instead of arrays, empty arrays or objects, nested arrays, operator
objects with several keys, YAML values that are not JSON) with a message naming the file, the
stream and the place in the pattern.

Known differences from moto's ``TestEventPattern`` (checked later against the emulator): moto
ANDs the operator objects of one array instead of ORing them, and some of its versions only
compare strings for exact matches; where moto and AWS disagree this module follows AWS.

Bad inputs tried (see tests/figstream/test_routing.py): unreadable bytes, JSON that is not an
object, envelopes with missing or wrongly typed fields, arrays and objects where scalars are
expected, and every malformed routing file shape listed above, plus unknown stream keys, a
``default_stream`` that is not a stream, a wrong ``version`` and invalid YAML.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from figstream.settings import YamlSyntaxError, load_yaml

SUPPORTED_OPERATORS = ("prefix", "anything-but", "exists", "numeric")
TOP_LEVEL_KEYS = ("source", "detail-type", "detail")
STREAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_MISSING = object()
_LOWER_OPS = (">", ">=")
_UPPER_OPS = ("<", "<=")
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "=": lambda a, b: a == b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}


class RoutingError(ValueError):
    """The routing file or a pattern cannot be used; the message says where and why."""


class PatternError(ValueError):
    """A pattern is outside the supported subset; ``where`` is the path inside the pattern."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


# --- compiling patterns -----------------------------------------------------------------------

Matcher = Callable[[Any], bool]  # takes one scalar leaf value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """Type tag for exact matching: JSON types never match across each other."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "str"
    if _is_number(value):
        return "num"
    return "other"


def _exact(values: Iterable[Any]) -> Matcher:
    wanted = {(_kind(v), v) for v in values}

    def match(value: Any) -> bool:
        try:
            return (_kind(value), value) in wanted
        except TypeError:  # unhashable: never a scalar we can match
            return False

    return match


def _check_scalar(value: Any, where: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if _is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            raise PatternError(where, f"number {value!r} is not finite")
        return
    if isinstance(value, list):
        raise PatternError(where, "nested arrays are not allowed in a pattern")
    raise PatternError(
        where, f"{type(value).__name__} {value!r} is not a JSON string, number, bool or null"
    )


def _compile_prefix(value: Any, where: str) -> Matcher:
    if not isinstance(value, str):
        raise PatternError(where, f"prefix must be a string, got {type(value).__name__}")
    return lambda v: isinstance(v, str) and v.startswith(value)


def _compile_anything_but(value: Any, where: str) -> Matcher:
    if isinstance(value, dict):
        if list(value) != ["prefix"]:
            ops = ", ".join(repr(k) for k in value) or "nothing"
            raise PatternError(
                where,
                f"anything-but takes a value, a list of values or {{'prefix': ...}}, "
                f"got an object with {ops} (outside the supported subset)",
            )
        inner = _compile_prefix(value["prefix"], f"{where}.prefix")
        return lambda v: not inner(v)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise PatternError(where, "anything-but list is empty")
    kinds = set()
    for i, item in enumerate(values):
        item_where = f"{where}[{i}]" if isinstance(value, list) else where
        if not (isinstance(item, str) or _is_number(item)):
            raise PatternError(
                item_where,
                f"anything-but values must be strings or numbers, got {item!r}",
            )
        _check_scalar(item, item_where)
        kinds.add(_kind(item))
    if len(kinds) > 1:
        raise PatternError(where, "anything-but values must be all strings or all numbers")
    inner = _exact(values)
    return lambda v: not inner(v)


def _compile_numeric(value: Any, where: str) -> Matcher:
    if not isinstance(value, list) or len(value) not in (2, 4):
        raise PatternError(
            where, f"numeric takes [op, number] or [lower-op, number, upper-op, number], "
            f"got {value!r}"
        )  # fmt: skip
    ops, bounds = value[0::2], value[1::2]
    for i, (op, bound) in enumerate(zip(ops, bounds, strict=True)):
        if op not in _COMPARE:
            raise PatternError(f"{where}[{2 * i}]", f"unknown numeric operator {op!r}")
        if not _is_number(bound) or (isinstance(bound, float) and not math.isfinite(bound)):
            raise PatternError(f"{where}[{2 * i + 1}]", f"expected a number, got {bound!r}")
    if len(ops) == 2 and (ops[0] not in _LOWER_OPS or ops[1] not in _UPPER_OPS):
        raise PatternError(
            where, "a numeric range is a lower bound ('>' or '>=') then an upper bound "
            f"('<' or '<='), got {ops[0]!r} then {ops[1]!r}"
        )  # fmt: skip
    checks = [(_COMPARE[op], bound) for op, bound in zip(ops, bounds, strict=True)]
    return lambda v: _is_number(v) and all(cmp(v, bound) for cmp, bound in checks)


@dataclass(frozen=True)
class _Leaf:
    matchers: tuple[Matcher, ...]
    exists_true: bool
    exists_false: bool

    def matches(self, value: Any) -> bool:
        leaves = _leaf_values(value)
        if not leaves:
            return self.exists_false
        if self.exists_true:
            return True
        return any(m(v) for v in leaves for m in self.matchers)


def _leaf_values(value: Any) -> list[Any]:
    """The scalar leaves at one place in the event: none when absent or an object."""
    if value is _MISSING or isinstance(value, dict):
        return []
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            out.extend(_leaf_values(item))
        return out
    return [value]


def _compile_leaf(alternatives: list[Any], where: str) -> _Leaf:
    if not alternatives:
        raise PatternError(where, "empty array: it would match nothing")
    matchers: list[Matcher] = []
    exact: list[Any] = []
    exists_true = exists_false = False
    for i, alt in enumerate(alternatives):
        alt_where = f"{where}[{i}]"
        if not isinstance(alt, dict):
            _check_scalar(alt, alt_where)
            exact.append(alt)
            continue
        if len(alt) != 1:
            raise PatternError(
                alt_where,
                f"an operator object has exactly one key, got {len(alt)} "
                f"({', '.join(repr(k) for k in alt) or 'none'})",
            )
        ((op, arg),) = alt.items()
        op_where = f"{alt_where}.{op}"
        if op == "prefix":
            matchers.append(_compile_prefix(arg, op_where))
        elif op == "anything-but":
            matchers.append(_compile_anything_but(arg, op_where))
        elif op == "numeric":
            matchers.append(_compile_numeric(arg, op_where))
        elif op == "exists":
            if not isinstance(arg, bool):
                raise PatternError(op_where, f"exists takes true or false, got {arg!r}")
            exists_true |= arg
            exists_false |= not arg
        else:
            raise PatternError(
                alt_where,
                f"operator {op!r} is outside the supported subset "
                f"({', '.join(SUPPORTED_OPERATORS)})",
            )
    if exact:
        matchers.insert(0, _exact(exact))
    return _Leaf(tuple(matchers), exists_true, exists_false)


_Node = dict[str, "_Node | _Leaf"]


def _compile_object(pattern: Any, where: str, top: bool = False) -> _Node:
    if not isinstance(pattern, dict):
        raise PatternError(where, f"expected an object, got {type(pattern).__name__}")
    if not pattern:
        raise PatternError(where, "empty object: a pattern must name at least one field")
    node: _Node = {}
    for key, sub in pattern.items():
        if not isinstance(key, str):
            raise PatternError(where, f"field name {key!r} is not a string")
        sub_where = f"{where}.{key}"
        if key.startswith("$"):
            raise PatternError(
                sub_where, f"operator {key!r} is outside the supported subset "
                f"({', '.join(SUPPORTED_OPERATORS)})"
            )  # fmt: skip
        if top and key not in TOP_LEVEL_KEYS:
            raise PatternError(
                sub_where,
                f"top-level field {key!r} is assigned by EventBridge and cannot be routed on "
                f"locally; use {', '.join(TOP_LEVEL_KEYS)}",
            )
        if isinstance(sub, list):
            node[key] = _compile_leaf(sub, sub_where)
        elif isinstance(sub, dict):
            node[key] = _compile_object(sub, sub_where)
        else:
            raise PatternError(
                sub_where,
                f"expected an array of values or a nested object, got {sub!r} "
                "(write a single value as [value])",
            )
    return node


def _match_object(node: _Node, obj: Mapping[str, Any]) -> bool:
    for key, sub in node.items():
        value = obj.get(key, _MISSING)
        if isinstance(sub, _Leaf):
            if not sub.matches(value):
                return False
        elif not _match_nested(sub, value):
            return False
    return True


def _objects(value: Any) -> list[dict]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [obj for item in value for obj in _objects(item)]
    return []


def _match_nested(node: _Node, value: Any) -> bool:
    objects = _objects(value)
    if not objects:
        # Absent, scalar or no objects in the array: only `exists: false` leaves can hold.
        return _match_object(node, {})
    return any(_match_object(node, obj) for obj in objects)


@dataclass(frozen=True)
class Pattern:
    """A compiled event pattern; ``source`` keeps the pattern as written."""

    source: dict[str, Any]
    _root: _Node = field(repr=False)

    def matches(self, event: Mapping[str, Any]) -> bool:
        return _match_object(self._root, event)


def compile_pattern(pattern: Any, where: str = "pattern") -> Pattern:
    """Check ``pattern`` against the supported subset and compile it; ``PatternError`` if not."""
    if isinstance(pattern, str | bytes):
        try:
            pattern = orjson.loads(pattern)
        except orjson.JSONDecodeError as exc:
            raise PatternError(where, f"not valid JSON: {exc}") from None
    root = _compile_object(pattern, where, top=True)
    return Pattern(pattern, root)


def matches(pattern: Any, event: Mapping[str, Any]) -> bool:
    """Whether an EventBridge ``event`` matches ``pattern`` (a dict or JSON text)."""
    compiled = pattern if isinstance(pattern, Pattern) else compile_pattern(pattern)
    return compiled.matches(event)


def to_eventbridge_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """The EventBridge form of a (possibly invalid) envelope dict; absent fields stay absent."""
    event: dict[str, Any] = {}
    if "source" in record:
        event["source"] = record["source"]
    if "type" in record:
        event["detail-type"] = record["type"]
    event["detail"] = {k: record[k] for k in ("id", "version", "time", "data") if k in record}
    return event


# --- the routing file -------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    name: str
    description: str
    pattern: Pattern


def _paths(node: _Node, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The event paths a compiled pattern looks at, one per leaf."""
    out = []
    for key, sub in node.items():
        out += [(*prefix, key)] if isinstance(sub, _Leaf) else _paths(sub, (*prefix, key))
    return out


_SCALARS = (str, int, float, bool, type(None))
MEMO_LIMIT = 10_000  # routing decisions remembered (by the values at the patterns' paths)


def _signature(event: Mapping[str, Any], paths: Iterable[tuple[str, ...]]) -> tuple | None:
    """What decides every pattern's match on ``event``: the scalar at each path (typed, since
    ``True == 1``), or absent. None when a path crosses or ends at an array or an object, which
    the patterns match element by element: such an event is matched in full."""
    out: list[Any] = []
    for path in paths:
        value: Any = event
        for key in path:
            if not isinstance(value, dict):
                return None
            value = value.get(key, _MISSING)
            if value is _MISSING:
                break
        if value is _MISSING:
            out.append(_MISSING)
        elif isinstance(value, _SCALARS):
            out += (type(value), value)
        else:
            return None
    return tuple(out)


@dataclass(frozen=True)
class Router:
    streams: dict[str, Stream]
    default_stream: str
    # Routing a record costs a full pattern match per stream, while a stream of events holds a
    # handful of distinct (source, type) pairs: decisions are remembered by signature.
    _memo: dict[tuple, list[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _looked_at: list[tuple[str, ...]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.default_stream not in self.streams:
            raise RoutingError(f"default_stream {self.default_stream!r} is not a stream")
        paths = {path for s in self.streams.values() for path in _paths(s.pattern._root)}
        self._looked_at.extend(sorted(paths))

    @classmethod
    def from_file(cls, path: Path | str) -> Router:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RoutingError(f"{path}: cannot read the routing file: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise RoutingError(f"{path}: not UTF-8 text: {exc}") from None
        return cls.from_text(text, path)

    @classmethod
    def from_text(cls, text: str, path: Path | str = "<routing>") -> Router:
        try:
            raw = load_yaml(text)
        except YamlSyntaxError as exc:
            raise RoutingError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: Any, path: Path | str = "<routing>") -> Router:
        if not isinstance(raw, dict):
            raise RoutingError(f"{path}: expected a mapping at the top level, got "
                               f"{type(raw).__name__}")  # fmt: skip
        unknown = sorted(set(raw) - {"version", "default_stream", "streams"}, key=str)
        if unknown:
            raise RoutingError(f"{path}: entry {unknown[0]}: unknown key (expected version, "
                               "default_stream, streams)")  # fmt: skip
        if raw.get("version") != 1 or isinstance(raw.get("version"), bool):
            raise RoutingError(f"{path}: entry version: must be 1, got {raw.get('version')!r}")
        streams_raw = raw.get("streams")
        if not isinstance(streams_raw, dict) or not streams_raw:
            raise RoutingError(f"{path}: entry streams: expected a non-empty mapping of "
                               f"stream name to stream, got {streams_raw!r}")  # fmt: skip
        streams: dict[str, Stream] = {}
        for name, entry in streams_raw.items():
            streams[name] = _load_stream(name, entry, path)
        default = raw.get("default_stream")
        if default not in streams:
            raise RoutingError(
                f"{path}: entry default_stream: {default!r} is not one of the streams "
                f"({', '.join(streams)})"
            )
        return cls(streams, default)

    def route_record(self, record: Any) -> list[str]:
        """Streams for an already-parsed record (anything that is not an object: default)."""
        if not isinstance(record, dict):
            return [self.default_stream]
        event = to_eventbridge_event(record)
        signature = _signature(event, self._looked_at)
        if signature is not None and (hits := self._memo.get(signature)) is not None:
            return list(hits)
        hits = [name for name, stream in self.streams.items() if stream.pattern.matches(event)]
        hits = hits or [self.default_stream]
        if signature is not None:
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[signature] = hits
        return list(hits)

    def route(self, raw: bytes | str) -> list[str]:
        """Streams for one raw line: unreadable or unmatched lines go to the default stream."""
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return [self.default_stream]
        return self.route_record(record)


def _load_stream(name: Any, entry: Any, path: Path | str) -> Stream:
    where = f"{path}: entry streams.{name}"
    if not isinstance(name, str) or not STREAM_NAME.fullmatch(name):
        raise RoutingError(
            f"{where}: stream name must be snake_case ([a-z][a-z0-9_]*, at most 63 "
            f"characters), got {name!r}"
        )
    if not isinstance(entry, dict):
        raise RoutingError(f"{where}: expected a mapping with description and pattern, got "
                           f"{type(entry).__name__}")  # fmt: skip
    unknown = sorted(set(entry) - {"description", "pattern"}, key=str)
    if unknown:
        raise RoutingError(f"{where}.{unknown[0]}: unknown key (expected description, pattern)")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise RoutingError(f"{where}.description: expected text, got {description!r}")
    if "pattern" not in entry:
        raise RoutingError(f"{where}.pattern: missing; every stream needs an event pattern")
    try:
        pattern = compile_pattern(entry["pattern"], where="pattern")
    except PatternError as exc:
        raise RoutingError(f"{where}.{exc}") from None
    return Stream(name, description, pattern)
