"""``job.posted``/``job.updated`` between v1 and v2: the upcaster, the downcaster, the flat row.

* :func:`upcast_v1` (registered as the v1 -> v2 step): v1's location string is split by
  :func:`figstream.events.geo.split_locations`; the flat salary becomes ``salary`` with period
  ``"year"`` (v1 salaries are annual), or null when v1 had no amounts and the default USD.
* :func:`downcast_v2` (v2 -> v1, for legacy): the location rendered back, the range's amounts
  and currency flat again; the period is dropped, v1 cannot say it. For every valid v1,
  ``downcast_v2(upcast_v1(v1)) == v1`` (a hypothesis test holds it).
* :func:`flatten_v2`: the one row shape both versions materialise as, the v1 columns kept
  (``salary_min``, ``salary_max``, ``currency``, ``location`` as the v1 string) plus
  ``salary_period``, ``city``, ``region`` and ``country_code``.

All three are Arrow column operations. :func:`upcast_data` and :func:`downcast_data` are the same
rules on one ``data`` dict, for producers and feed dumps that handle one event at a time (an
Arrow call per event would cost ~50 us; a hypothesis test holds the two forms equal).
:func:`legacy_line` is what the platform hands legacy Luigi for one landed line: a v2 posting
as v1, anything else as it came.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from figstream.events.arrow import arrow_schema
from figstream.events.geo import render_location, render_locations, split_location, split_locations
from figstream.events.schemas import JobPostingV1, JobPostingV2
from figstream.events.validation import Rejection, validate

POSTING_TYPES = ("job.posted", "job.updated")
DEFAULT_CURRENCY = "USD"  # v1's default currency: a v2 posting without a salary renders it
V1_PERIOD = "year"
V1_SCHEMA = arrow_schema(JobPostingV1)
V2_SCHEMA = arrow_schema(JobPostingV2)
SALARY_TYPE = V2_SCHEMA.field("salary").type
# The columns a v2 posting adds to the flat row, beside v1's.
FLAT_V2_COLUMNS = ("salary_period", "city", "region", "country_code")


def _column(data: pa.Table, name: str) -> pa.Array:
    return data.column(name).combine_chunks()


def upcast_v1(data: pa.Table) -> pa.Table:
    """v1 posting ``data`` columns -> v2."""
    low, high, currency = (_column(data, n) for n in ("salary_min", "salary_max", "currency"))
    nothing = pc.and_(
        pc.and_(pc.is_null(low), pc.is_null(high)),
        pc.fill_null(pc.equal(currency, DEFAULT_CURRENCY), False),
    )
    period = pa.repeat(pa.scalar(V1_PERIOD), data.num_rows)
    salary = pa.StructArray.from_arrays(
        [low, high, currency, period], fields=list(SALARY_TYPE), mask=nothing
    )
    columns = {name: data.column(name) for name in data.column_names}
    columns["location"] = split_locations(columns["location"])
    columns["salary"] = salary
    return pa.table([columns[name] for name in V2_SCHEMA.names], names=V2_SCHEMA.names)


def _salary_parts(data: pa.Table) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    salary = _column(data, "salary")
    currency = pc.fill_null(pc.struct_field(salary, "currency"), DEFAULT_CURRENCY)
    return (
        pc.struct_field(salary, "min"),
        pc.struct_field(salary, "max"),
        currency,
        pc.struct_field(salary, "period"),
    )


def downcast_v2(data: pa.Table) -> pa.Table:
    """v2 posting ``data`` columns -> v1 (what legacy reads)."""
    low, high, currency, _period = _salary_parts(data)
    columns = {name: data.column(name) for name in data.column_names}
    columns.update(
        location=render_locations(columns["location"]),
        salary_min=low,
        salary_max=high,
        currency=currency,
    )
    return pa.table([columns[name] for name in V1_SCHEMA.names], schema=V1_SCHEMA)


def flatten_v2(data: pa.Table) -> pa.Table:
    """v2 posting ``data`` columns -> the flat columns of the events table."""
    low, high, currency, period = _salary_parts(data)
    location = _column(data, "location")
    columns = {name: data.column(name) for name in data.column_names if name != "salary"}
    columns.update(
        location=render_locations(location),
        salary_min=low,
        salary_max=high,
        currency=currency,
        salary_period=period,
        city=pc.struct_field(location, "city"),
        region=pc.struct_field(location, "region"),
        country_code=pc.struct_field(location, "country_code"),
    )
    return pa.table(columns)


@lru_cache(maxsize=65536)
def _split(text: str) -> tuple[str | None, ...]:
    location = split_location(text)
    return location["city"], location["region"], location["country_code"]


def upcast_data(data: dict[str, Any]) -> dict[str, Any]:
    """:func:`upcast_v1` on one valid v1 ``data`` dict (a test holds the two equal); the
    location split is cached, since producers repeat their locations."""
    low, high = data.get("salary_min"), data.get("salary_max")
    currency = data.get("currency", DEFAULT_CURRENCY)
    nothing = low is None and high is None and currency == DEFAULT_CURRENCY
    salary = (
        None if nothing else {"min": low, "max": high, "currency": currency, "period": V1_PERIOD}
    )
    city, region, country = _split(data["location"])
    out = {name: data[name] for name in V2_SCHEMA.names if name in data}
    out["location"] = {"city": city, "region": region, "country_code": country}
    out["salary"] = salary
    return {name: out[name] for name in V2_SCHEMA.names}


def downcast_data(data: dict[str, Any]) -> dict[str, Any]:
    """:func:`downcast_v2` on one valid v2 ``data`` dict (a test holds the two equal)."""
    salary = data.get("salary") or {}
    out = {name: data[name] for name in V1_SCHEMA.names if name in data}
    out.update(
        location=render_location(data["location"]),
        salary_min=salary.get("min"),
        salary_max=salary.get("max"),
        currency=salary.get("currency", DEFAULT_CURRENCY),
    )
    return {name: out[name] for name in V1_SCHEMA.names}


def downcast_record(record: dict[str, Any]) -> dict[str, Any]:
    """A *valid* v2 posting envelope (as a dict) as its v1 envelope; others unchanged."""
    if record.get("type") not in POSTING_TYPES or record.get("version") != 2:
        return record
    return {**record, "version": 1, "data": downcast_data(record["data"])}


def upcast_record(record: dict[str, Any]) -> dict[str, Any]:
    """A *valid* v1 posting envelope (as a dict) as its v2 envelope; others unchanged."""
    if record.get("type") not in POSTING_TYPES or record.get("version") != 1:
        return record
    return {**record, "version": 2, "data": upcast_data(record["data"])}


def _loose_downcast(record: dict[str, Any]) -> dict[str, Any]:
    """An *invalid* v2 posting in v1's shape as far as it goes, its bad values kept: legacy
    does not validate, so it reads them as it would a bad v1 (and parity's no_validation
    flaw explains them), where v2's objects would crash its night."""
    data = dict(record["data"])
    location = data.get("location")
    parts = ("city", "region", "country_code")
    if (
        isinstance(location, dict)
        and all(isinstance(location.get(k), str | None) for k in parts)
        and isinstance(location.get("city"), str)
    ):
        data["location"] = render_location(location)
    salary = data.pop("salary", None)
    salary = salary if isinstance(salary, dict) else {}
    data.update(
        salary_min=salary.get("min"),
        salary_max=salary.get("max"),
        currency=salary.get("currency", DEFAULT_CURRENCY),
    )
    return {**record, "version": 1, "data": data}


def legacy_line(line: bytes) -> bytes:
    """One landed line as legacy Luigi should receive it: a v2 posting downcast to v1 (exactly
    when valid, as far as it goes when not), every other line unchanged."""
    if b'"version"' not in line:
        return line
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if (
        type(record) is not dict
        or record.get("type") not in POSTING_TYPES
        or record.get("version") != 2
        or type(record.get("data")) is not dict
    ):
        return line
    if isinstance(validate(record), Rejection):
        return orjson.dumps(_loose_downcast(record))
    return orjson.dumps(downcast_record(record))


def upgrade_line(line: bytes) -> bytes:
    """One producer line as a v2 producer writes it: a valid v1 posting upcast to v2, every
    other line (other types, bad records) unchanged, so bad records keep their reasons."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if type(record) is not dict or record.get("type") not in POSTING_TYPES:
        return line
    if record.get("version") != 1 or isinstance(validate(record), Rejection):
        return line
    return orjson.dumps(upcast_record(record))
