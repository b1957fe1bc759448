import datetime as dt
import json

from hypothesis import given
from hypothesis import strategies as st

from figstream.events.envelope import Envelope, format_time, parse_time

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
times = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),
    max_value=dt.datetime(2099, 12, 31),
    timezones=st.just(dt.UTC),
)
envelopes = st.builds(
    Envelope,
    id=st.uuids().map(str),
    type=st.sampled_from(["job.posted", "job.updated", "job.expired", "board.merged"]),
    source=st.from_regex(r"[a-z][a-z0-9-]{1,20}", fullmatch=True),
    version=st.integers(1, 50),
    time=times,
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
)


@given(envelopes)
def test_eventbridge_put_entry_round_trips(envelope):
    entry = envelope.to_eventbridge_entry()
    assert entry["Source"] == envelope.source
    assert entry["DetailType"] == envelope.type
    assert Envelope.from_eventbridge(entry) == envelope


@given(envelopes)
def test_delivered_event_round_trips(envelope):
    """EventBridge delivers detail as an object and time at one-second resolution."""
    entry = envelope.to_eventbridge_entry()
    delivered = {
        "version": "0",
        "id": "assigned-by-eventbridge",
        "detail-type": entry["DetailType"],
        "source": entry["Source"],
        "time": format_time(envelope.time.replace(microsecond=0)),
        "detail": json.loads(entry["Detail"]),
    }
    assert Envelope.from_eventbridge(delivered) == envelope


@given(envelopes)
def test_dict_form_round_trips(envelope):
    assert Envelope.from_dict(json.loads(json.dumps(envelope.to_dict()))) == envelope


def test_time_is_normalised_to_utc():
    assert parse_time("2026-11-20T12:00:00+02:00") == dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
    assert format_time(dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)) == "2026-11-20T10:00:00Z"


def test_naive_time_is_refused():
    try:
        parse_time("2026-11-20T12:00:00")
    except ValueError as exc:
        assert "offset" in str(exc)
    else:
        raise AssertionError("a naive time was accepted")
