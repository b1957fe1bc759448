"""The vectorised column checks of parsing: conservative twins of the event models, and times.

:func:`figstream.streaming.parse.parse_batches` runs these over whole Arrow columns so that
``validate`` (pydantic, ~8 us a record) only sees the remainder. Each check is *conservative*:
a row it passes is surely valid; anything else (wrong type, an odd but legal time spelling, a
non-ASCII URL, ...) goes to ``validate``, which gives the exact reason. They run in numpy over
the Arrow buffers or as ``pyarrow.compute`` kernels, with a Python loop only over the rare
value that needs one.

:data:`FAST_CHECKS` mirrors :data:`~figstream.events.schemas.REGISTRY`; a (type, version)
without a fast check is still correct, only slower. v2 postings' nested ``location`` and
``salary`` arrive as struct columns; their checks read the children. :func:`event_times`
checks and converts envelope times with Arrow's own ISO-8601 cast; :func:`event_ids_ok` and
:func:`sources_ok` the envelope's id and source alphabets; the text fields refuse control
characters (:func:`no_controls`), as ``validate`` does.
``tests/figstream/streaming/test_parse.py`` checks the equivalence with ``validate`` with
hypothesis (for v2: ``tests/figstream/events/test_parse_v2.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from figstream.events.geo import ISO_COUNTRIES
from figstream.events.schemas import MAX_SALARY, REGISTRY, EmploymentType, SalaryPeriod
from figstream.events.validation import (
    CONTROL,
    EARLIEST,
    ID_MAX,
    LATEST,
    valid_source,
)
from figstream.streaming.tables import EXPIRED, MERGED, POSTED, TS, UPDATED

# Byte sets of the schema patterns. A pattern is checked as "every byte is in the set", which
# for these ASCII classes is exact: any byte of a non-ASCII character is outside them.
_JOB_ID_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
_BOARD_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789-"
_CURRENCY_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Stricter than the schema's ^https?://[^\s]+$ (its \s is Unicode-aware): printable ASCII only;
# a URL with anything else is left to validate().
_URL_BYTES = bytes(range(0x21, 0x7F))
# The envelope id's alphabet (figstream.events.validation.ID_PATTERN), starting with a letter
# or digit.
_ID_BYTES = _JOB_ID_BYTES
_ALNUM = np.zeros(256, bool)
_ALNUM[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")] = True
_EMPLOYMENT_TYPES = pa.array(get_args(EmploymentType))
_EXPIRY_REASONS = pa.array(["filled", "expired", "withdrawn"])
_COUNTRIES = pa.array(sorted(ISO_COUNTRIES))
_SALARY_PERIODS = pa.array(get_args(SalaryPeriod))
_LOCATION_PARTS = ("city", "region", "country_code")
_SALARY_PARTS = ("min", "max", "currency", "period")


def validity(array: pa.Array) -> np.ndarray:
    """Per value: not null, as numpy."""
    if array.null_count == 0:
        return np.ones(len(array), bool)
    return array.is_valid().to_numpy(zero_copy_only=False)


def string_offsets(array: pa.Array) -> np.ndarray:
    """The n+1 offsets of a (large_)string array, as numpy (zero-copy)."""
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    size = np.dtype(width).itemsize
    return np.frombuffer(array.buffers()[1], width, len(array) + 1, array.offset * size)


def string_data(array: pa.Array) -> np.ndarray:
    """The data buffer of a (large_)string array, as numpy bytes (zero-copy); index it with
    :func:`string_offsets`."""
    buffer = array.buffers()[2]
    return np.frombuffer(buffer, np.uint8) if buffer is not None else np.zeros(0, np.uint8)


def _byte_length(array: pa.Array) -> np.ndarray:
    """UTF-8 byte length per value: equal to the character count for ASCII, larger otherwise,
    so ``1 <= bytes <= limit`` is an exact lower bound and a conservative upper one."""
    return np.diff(string_offsets(array))


def sized(array: pa.Array, low: int, high: int) -> np.ndarray:
    size = _byte_length(array)
    return validity(array) & (size >= low) & (size <= high)


def _only_bytes(array: pa.Array, allowed: bytes) -> np.ndarray:
    """Per value: every byte is in ``allowed`` (checked over the whole buffer at once)."""
    offsets = string_offsets(array)
    data = string_data(array)[offsets[0] : offsets[-1]]
    if not data.tobytes().translate(None, allowed):
        return np.ones(len(array), bool)
    # Some value has an outsider (a rare record): find which, value by value.
    return np.fromiter(
        (not v.encode().translate(None, allowed) for v in array.fill_null("").to_pylist()),
        bool,
        len(array),
    )


def _first_alnum(array: pa.Array) -> np.ndarray:
    """Per value: its first byte is an ASCII letter or digit (False for empty values)."""
    offsets = string_offsets(array)
    data = string_data(array)
    if not len(data):
        return np.zeros(len(array), bool)
    starts = offsets[:-1]
    return _ALNUM[data[np.minimum(starts, len(data) - 1)]] & (offsets[1:] > starts)


def event_ids_ok(array: pa.Array) -> np.ndarray:
    """Per value: a valid envelope id (``validation.ID_PATTERN``)."""
    return sized(array, 1, ID_MAX) & _only_bytes(array, _ID_BYTES) & _first_alnum(array)


def sources_ok(array: pa.Array) -> np.ndarray:
    """Per value: a valid envelope source (``validation.valid_source``). A stream has a
    handful of sources (its boards), so each distinct one is checked once."""
    if array.null_count == 0 and all(map(valid_source, pc.unique(array).to_pylist())):
        return np.ones(len(array), bool)
    encoded = pc.dictionary_encode(array)  # a bad one among them: which rows hold it
    ok = np.fromiter(map(valid_source, encoded.dictionary.to_pylist()), bool)
    return np.append(ok, False)[encoded.indices.fill_null(-1).to_numpy()]


def no_controls(array: pa.Array) -> np.ndarray:
    """Per value: no control character (Unicode Cc: C0, DEL, C1), nulls pass. C1 controls are
    U+0080..U+009F, in UTF-8 the byte 0xC2 before 0x80..0x9F."""
    offsets = string_offsets(array)
    data = string_data(array)[offsets[0] : offsets[-1]]
    if not len(data) or (data.min() >= 0x20 and not (data == 0x7F).any()):
        c2 = np.flatnonzero(data[:-1] == 0xC2)
        if not len(c2) or not (data[c2 + 1] < 0xA0).any():
            return np.ones(len(array), bool)
    # Some value has one (a rare record): find which, value by value.
    return np.fromiter(
        (CONTROL.search(v) is None for v in array.fill_null("").to_pylist()), bool, len(array)
    )


def _text(array: pa.Array, low: int, high: int) -> np.ndarray:
    """A schema ``Text``-like field: ``low..high`` long, no control character."""
    return sized(array, low, high) & no_controls(array)


def _np(mask: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy, null as False."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def _is_in(array: pa.Array, values: pa.Array) -> np.ndarray:
    return _np(pc.is_in(array, values))


def int_values(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls as 0, validity) of an int64 array."""
    return array.fill_null(0).to_numpy(), validity(array)


def _salary_ok(array: pa.Array) -> np.ndarray:
    values, valid = int_values(array)
    return ~valid | ((values >= 0) & (values <= MAX_SALARY))


def _posting(c: dict[str, pa.Array]) -> np.ndarray:
    """The fields v1 and v2 postings share."""
    url = c["url"]
    url_len = _byte_length(url)
    scheme = (_np(pc.starts_with(url, "http://")) & (url_len > 7)) | (
        _np(pc.starts_with(url, "https://")) & (url_len > 8)
    )
    return (
        sized(c["job_id"], 1, 64)
        & _only_bytes(c["job_id"], _JOB_ID_BYTES)
        & _text(c["title"], 1, 200)
        & _text(c["company"], 1, 200)
        & _is_in(c["employment_type"], _EMPLOYMENT_TYPES)
        & validity(c["remote"])
        & sized(url, 1, 500)
        & _only_bytes(url, _URL_BYTES)
        & scheme
    )


def _salaries(low: pa.Array, high: pa.Array, currency: pa.Array) -> np.ndarray:
    low_values, low_valid = int_values(low)
    high_values, high_valid = int_values(high)
    return (
        _salary_ok(low)
        & _salary_ok(high)
        & ~(low_valid & high_valid & (high_values < low_values))
        & sized(currency, 3, 3)
        & _only_bytes(currency, _CURRENCY_BYTES)
    )


def _posting_v1(c: dict[str, pa.Array]) -> np.ndarray:
    return (
        _posting(c)
        & _text(c["location"], 1, 200)
        & _salaries(c["salary_min"], c["salary_max"], c["currency"])
    )


def _optional(array: pa.Array, ok: np.ndarray) -> np.ndarray:
    return ~validity(array) | ok


def _posting_v2(c: dict[str, pa.Array]) -> np.ndarray:
    location, salary = c["location"], c["salary"]
    city, region, country = (pc.struct_field(location, n) for n in _LOCATION_PARTS)
    # bytes >= characters, so the rendered v1 string's bound is conservative
    rendered = _byte_length(city) + _byte_length(region) + 8
    low, high, currency, period = (pc.struct_field(salary, n) for n in _SALARY_PARTS)
    money = _salaries(low, high, currency) & _is_in(period, _SALARY_PERIODS)
    return (
        _posting(c)
        & _text(city, 1, 200)
        & _optional(region, _text(region, 1, 100))
        & _optional(country, _is_in(country, _COUNTRIES))
        & (rendered <= 200)
        & (~validity(salary) | money)
    )


def _expired_v1(c: dict[str, pa.Array]) -> np.ndarray:
    return (
        sized(c["job_id"], 1, 64)
        & _only_bytes(c["job_id"], _JOB_ID_BYTES)
        & _is_in(c["reason"], _EXPIRY_REASONS)
    )


def _board_ok(array: pa.Array) -> np.ndarray:
    ok = sized(array, 2, 64) & _only_bytes(array, _BOARD_BYTES)
    return ok & ~_np(pc.starts_with(array, "-"))


def _merged_v1(c: dict[str, pa.Array]) -> np.ndarray:
    absorbed, surviving = c["absorbed_board"], c["surviving_board"]
    differ = _np(pc.not_equal(absorbed, surviving))
    return _board_ok(absorbed) & _board_ok(surviving) & differ


# Conservative vectorised twins of the registered models: True only where the model accepts.
FAST_CHECKS: dict[tuple[str, int], Callable[[dict[str, pa.Array]], np.ndarray]] = {
    (POSTED, 1): _posting_v1,
    (UPDATED, 1): _posting_v1,
    (POSTED, 2): _posting_v2,
    (UPDATED, 2): _posting_v2,
    (EXPIRED, 1): _expired_v1,
    (MERGED, 1): _merged_v1,
}
assert set(FAST_CHECKS) <= set(REGISTRY), "a fast check for an unregistered schema"

# The one time spelling the fast path takes: what format_time writes, YYYY-MM-DDTHH:MM:SS, then
# 1 to 6 fraction digits or none, then Z. The shape admits only real calendar dates (month
# lengths, Feb 29 in leap years, proleptic Gregorian as Python's datetime) and times up to
# 23:59:59, so Arrow's cast of a matching string cannot fail; parse_time accepts every such
# string of a year from 1 on, and reads the same instant. Every other spelling parse_time
# accepts (offsets, no seconds, a space, 7+ fraction digits, ...) is left to validate().
_DIGIT = "[0-9]"  # not \d: ASCII digits only, whatever the regex engine's Unicode mode
_LEAP_YEAR = f"(?:{_DIGIT}{{2}}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
_MONTH_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
CANONICAL_TIME = (
    f"^(?:{_DIGIT}{{4}}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
    f"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.{_DIGIT}{{1,6}})?Z$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST_US = (EARLIEST - _EPOCH) // timedelta(microseconds=1)
_LATEST_US = (LATEST - _EPOCH) // timedelta(microseconds=1)
_STAND_IN = pa.scalar(EARLIEST.strftime("%Y-%m-%dT%H:%M:%SZ"))  # cast in place of the others


def event_times(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(surely-valid mask, epoch microseconds, 0 where not valid) of envelope times: those of
    the :data:`CANONICAL_TIME` shape in ``EARLIEST <= time < LATEST``, cast by Arrow."""
    n = len(array)
    shaped = pc.fill_null(pc.match_substring_regex(array, CANONICAL_TIME), False)
    matched = shaped.true_count
    if matched == 0:
        return np.zeros(n, bool), np.zeros(n, np.int64)
    # One cast over the whole column: the rows of another shape are cast as a stand-in.
    castable = array if matched == n else pc.if_else(shaped, array, _STAND_IN)
    micros = pc.cast(castable, TS).cast(pa.int64()).to_numpy()
    ok = shaped.to_numpy(zero_copy_only=False) & (micros >= _EARLIEST_US) & (micros < _LATEST_US)
    return ok, np.where(ok, micros, 0)
