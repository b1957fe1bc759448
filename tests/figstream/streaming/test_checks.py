"""The vectorised time check (``checks.event_times``): exactly what ``parse_time`` reads.

Bad inputs tried: impossible dates (month 13, day 32, Feb 29 of a common year), hours and
minutes out of range, offsets, missing zones, 0 to 7 fraction digits, the window's edges.
"""

import re
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from transform_cases import edge_times, time_strings

from figstream.events.envelope import parse_time
from figstream.events.validation import EARLIEST, LATEST
from figstream.streaming.checks import event_times

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")


def _reference_micros(text: str) -> int | None:
    """What validate() makes of an envelope time: its instant in microseconds, or None."""
    try:
        when = parse_time(text)
    except ValueError:
        return None
    if not EARLIEST <= when < LATEST:
        return None
    return (when - _EPOCH) // timedelta(microseconds=1)


@settings(max_examples=300, deadline=None)
@given(st.lists(edge_times | time_strings(), min_size=1, max_size=30))
def test_event_times_take_only_what_parse_time_reads_and_every_canonical_one(texts):
    ok, micros = event_times(pa.array([*texts, None], pa.string()))
    assert not ok[-1]
    for text, taken, got in zip(texts, ok.tolist(), micros.tolist(), strict=False):
        expected = _reference_micros(text)
        if taken:
            assert got == expected, text
        else:
            assert got == 0, text
            # The fast path leaves no canonical time to validate(): that would only be slower.
            assert expected is None or not _CANONICAL.fullmatch(text), text
