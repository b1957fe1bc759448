"""EventBridge pattern semantics, the routing file, and routing raw landed lines."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from figstream.events.envelope import Envelope
from figstream.ingest.generate import EventStream
from figstream.ingest.routing import (
    PatternError,
    Router,
    RoutingError,
    compile_pattern,
    matches,
    to_eventbridge_event,
)
from figstream.settings import PROJECT_ROOT

ROUTING_FILE = PROJECT_ROOT / "platform" / "routing.yaml"

EVENT = {
    "source": "hireloop",
    "detail-type": "job.posted",
    "detail": {
        "id": "e1",
        "version": 1,
        "time": "2026-11-01T09:00:00Z",
        "data": {
            "title": "Senior Dev",
            "salary_min": 90000,
            "remote": False,
            "tags": ["python", "sql"],
            "note": None,
            "empty": "",
            "nested": {"a": 1},
            "jobs": [{"k": "x", "n": 1}, {"k": "y", "n": 2}],
            "none": [],
        },
    },
}


def route_lines(router: Router, lines) -> dict[str, list[int]]:
    """Line indexes per stream, every stream present, as the landing index assigns them."""
    out: dict[str, list[int]] = {name: [] for name in router.streams}
    for i, line in enumerate(lines):
        for name in router.route(line):
            out[name].append(i)
    return out


def data(**fields):
    return {"detail": {"data": fields}}


CASES = [
    # exact values: OR within an array, AND across keys
    ({"source": ["hireloop"]}, True),
    ({"source": ["jobnest", "hireloop"]}, True),
    ({"source": ["jobnest"]}, False),
    ({"source": ["hireloop"], "detail-type": ["job.expired"]}, False),
    ({"source": ["Hireloop"]}, False),
    # types never mix; numbers compare by value
    ({"detail": {"version": [1]}}, True),
    ({"detail": {"version": [1.0]}}, True),
    ({"detail": {"version": ["1"]}}, False),
    ({"detail": {"version": [True]}}, False),
    (data(remote=[False]), True),
    (data(remote=[0]), False),
    (data(remote=["false"]), False),
    (data(note=[None]), True),
    (data(note=[""]), False),
    (data(empty=[""]), True),
    (data(empty=[None]), False),
    # prefix: strings only
    ({"detail-type": [{"prefix": "job."}]}, True),
    ({"detail-type": [{"prefix": "board."}]}, False),
    (data(salary_min=[{"prefix": "9"}]), False),
    (data(title=[{"prefix": ""}]), True),
    # arrays in the event: any element
    (data(tags=["sql"]), True),
    (data(tags=["java"]), False),
    (data(tags=[{"prefix": "py"}]), True),
    (data(tags=[{"anything-but": "python"}]), True),
    (data(tags=[{"anything-but": ["python", "sql"]}]), False),
    # arrays of objects: one element matches the whole sub-pattern
    (data(jobs={"k": ["x"], "n": [1]}), True),
    (data(jobs={"k": ["x"], "n": [2]}), False),
    (data(jobs={"k": ["y"]}), True),
    # absent keys fail everything but exists: false
    (data(missing=["x"]), False),
    (data(missing=[None]), False),
    (data(missing=[{"anything-but": "x"}]), False),
    (data(missing=[{"numeric": [">", 0]}]), False),
    (data(missing=[{"exists": False}]), True),
    (data(missing=[{"exists": True}]), False),
    ({"detail": {"absent": {"deeper": [{"exists": False}]}}}, True),
    ({"detail": {"absent": {"deeper": ["x"]}}}, False),
    # exists is about leaves: null is one, objects and empty arrays are not
    (data(note=[{"exists": True}]), True),
    (data(note=[{"exists": False}]), False),
    (data(nested=[{"exists": True}]), False),
    (data(nested=[{"exists": False}]), True),
    (data(none=[{"exists": False}]), True),
    (data(none=[{"exists": True}]), False),
    (data(nested={"a": [1]}), True),
    (data(title={"x": ["a"]}), False),
    (data(title={"x": [{"exists": False}]}), True),
    # anything-but: values, lists, prefix; numbers by value
    ({"source": [{"anything-but": "jobnest"}]}, True),
    ({"source": [{"anything-but": ["jobnest", "hireloop"]}]}, False),
    ({"source": [{"anything-but": {"prefix": "hire"}}]}, False),
    ({"source": [{"anything-but": {"prefix": "job"}}]}, True),
    (data(salary_min=[{"anything-but": [100, 90000.0]}]), False),
    (data(salary_min=[{"anything-but": [100]}]), True),
    (data(note=[{"anything-but": "x"}]), True),
    (data(remote=[{"anything-but": {"prefix": "f"}}]), True),
    # numeric: numbers only, bounds inclusive or not
    (data(salary_min=[{"numeric": [">", 0, "<=", 90000]}]), True),
    (data(salary_min=[{"numeric": [">", 0, "<", 90000]}]), False),
    (data(salary_min=[{"numeric": ["=", 90000]}]), True),
    (data(salary_min=[{"numeric": [">=", 90000.5]}]), False),
    (data(title=[{"numeric": [">", 0]}]), False),
    (data(remote=[{"numeric": ["=", 0]}]), False),
    # alternatives of one array are ORed, operators included (moto ANDs them; AWS does not)
    ({"source": [{"prefix": "zzz"}, "hireloop"]}, True),
    ({"source": [{"prefix": "hire"}, {"anything-but": "hireloop"}]}, True),
    ({"source": [{"exists": False}, "jobnest"]}, False),
]


@pytest.mark.parametrize(("pattern", "expected"), CASES, ids=[orjson.dumps(c[0]).decode()
                                                             for c in CASES])  # fmt: skip
def test_pattern_semantics(pattern, expected):
    assert matches(pattern, EVENT) is expected
    assert matches(orjson.dumps(pattern), EVENT) is expected


scalars = (
    st.text(max_size=5) | st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False)
    | st.booleans() | st.none()
)  # fmt: skip
excluded = st.lists(st.text(max_size=5), min_size=1, max_size=4) | st.lists(
    st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False), min_size=1, max_size=4
)
values = scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=2), scalars)


@given(value=scalars, excluded=excluded)
def test_anything_but_is_the_complement_of_exact_match_on_present_scalars(value, excluded):
    event = {"detail": {"x": value}}
    exact = matches({"detail": {"x": excluded}}, event)
    assert matches({"detail": {"x": [{"anything-but": excluded}]}}, event) is not exact
    if len(excluded) == 1:
        assert matches({"detail": {"x": [{"anything-but": excluded[0]}]}}, event) is not exact


@given(value=scalars, prefix=st.text(max_size=3))
def test_anything_but_prefix_is_the_complement_of_prefix(value, prefix):
    event = {"detail": {"x": value}}
    plain = matches({"detail": {"x": [{"prefix": prefix}]}}, event)
    assert plain is (isinstance(value, str) and value.startswith(prefix))
    assert matches({"detail": {"x": [{"anything-but": {"prefix": prefix}}]}}, event) is not plain


@given(value=st.none() | values, present=st.booleans())
def test_exists_true_and_false_are_complements(value, present):
    event = {"detail": {"x": value} if present else {}}
    yes = matches({"detail": {"x": [{"exists": True}]}}, event)
    no = matches({"detail": {"x": [{"exists": False}]}}, event)
    assert yes is not no
    is_leaf = present and not isinstance(value, dict) and value != []
    assert yes is is_leaf


@given(items=st.lists(scalars, min_size=1, max_size=4), wanted=st.lists(scalars, min_size=1,
                                                                        max_size=3))  # fmt: skip
def test_an_array_matches_when_any_element_does(items, wanted):
    def m(value):
        return matches({"detail": {"x": wanted}}, {"detail": {"x": value}})

    assert m(items) is any(m(item) for item in items)


@given(value=st.integers(-10, 10) | st.floats(-10, 10, allow_nan=False), low=st.integers(-10, 10),
       high=st.integers(-10, 10))  # fmt: skip
def test_numeric_range_is_the_python_comparison(value, low, high):
    pattern = {"detail": {"x": [{"numeric": [">", low, "<=", high]}]}}
    assert matches(pattern, {"detail": {"x": value}}) is (low < value <= high)


def test_to_eventbridge_event_matches_the_envelope_mapping():
    env = Envelope.from_dict({"id": "e1", "type": "job.posted", "source": "hireloop",
                              "version": 1, "time": "2026-11-01T09:00:00Z",
                              "data": {"job_id": "j"}})  # fmt: skip
    entry = env.to_eventbridge_entry()
    event = to_eventbridge_event(env.to_dict())
    assert event == {"source": entry["Source"], "detail-type": entry["DetailType"],
                     "detail": orjson.loads(entry["Detail"])}  # fmt: skip
    assert to_eventbridge_event({"id": "x"}) == {"detail": {"id": "x"}}


def test_the_platform_routing_file():
    router = Router.from_file(ROUTING_FILE)
    assert list(router.streams) == ["postings", "boards"]
    assert router.default_stream == "postings"
    assert all(s.description for s in router.streams.values())
    line = orjson.dumps
    assert router.route(line({"type": "job.posted", "source": "a"})) == ["postings"]
    assert router.route(line({"type": "job.deleted"})) == ["postings"]  # dead-lettered later
    assert router.route(line({"type": "board.merged", "source": "a"})) == ["boards"]
    assert router.route(line({"type": 5})) == ["postings"]
    assert router.route(b"\xff\xfe{") == ["postings"]
    assert router.route(b'{"type": "board.mer') == ["postings"]
    assert router.route(b"[1, 2]") == ["postings"]
    assert router.route(b"") == ["postings"]


def test_a_record_can_match_several_streams():
    router = Router.from_dict({
        "version": 1, "default_stream": "misc",
        "streams": {
            "misc": {"pattern": {"source": [{"exists": False}]}},
            "jobs": {"pattern": {"detail-type": [{"prefix": "job."}]}},
            "big": {"pattern": {"detail": {"data": {"salary_min": [{"numeric": [">=", 1e5]}]}}}},
        },
    })  # fmt: skip
    lines = [
        orjson.dumps({"type": "job.posted", "source": "a", "data": {"salary_min": 150000}}),
        orjson.dumps({"type": "job.posted", "source": "a", "data": {"salary_min": 50}}),
        b"not json",
        orjson.dumps({"type": "board.merged", "source": "a", "data": {}}),
        orjson.dumps({"type": "job.expired", "data": {}}),
    ]
    assert route_lines(router, lines) == {"misc": [2, 3, 4], "jobs": [0, 1, 4], "big": [0]}
    assert route_lines(router, []) == {"misc": [], "jobs": [], "big": []}


def test_generated_records_all_route_somewhere():
    router = Router.from_file(ROUTING_FILE)
    stream = EventStream(date(2026, 11, 1), days=2, events_per_day=400, seed=9, bad_rate=0.1)
    records = list(stream)
    routed = route_lines(router, [r.line for r in records])
    assert sorted(routed["postings"] + routed["boards"]) == list(range(len(records)))
    merged = [i for i, r in enumerate(records) if r.type == "board.merged" and not r.bad_kind]
    assert merged and routed["boards"] == merged
    good_jobs = [i for i, r in enumerate(records) if r.type.startswith("job.") and not r.bad_kind]
    assert set(good_jobs) <= set(routed["postings"])


GOOD = """\
version: 1
default_stream: postings
streams:
  postings: {description: d, pattern: {"detail-type": [{"prefix": "job."}]}}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("streams: [", "not valid YAML: line 1, column 11: expected the node content"),
        (GOOD + "default_stream: postings\n", "not valid YAML: line 5, column 1: found duplicate"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        (GOOD.replace("version: 1", "version: 2"), "entry version: must be 1"),
        (GOOD + "extra: 1\n", "entry extra: unknown key"),
        ("version: 1\ndefault_stream: postings\n", "entry streams: expected a non-empty"),
        (
            GOOD.replace("default_stream: postings", "default_stream: boards"),
            "entry default_stream: 'boards' is not one of the streams (postings)",
        ),
        (
            GOOD.replace("  postings:", "  Post-ings:").replace(
                "default_stream: postings", "default_stream: Post-ings"
            ),
            "entry streams.Post-ings: stream name must be snake_case",
        ),
        (
            GOOD.replace("{description: d, pattern", "{descripton: d, pattern"),
            "entry streams.postings.descripton: unknown key",
        ),
        (GOOD.replace("pattern: {", "patterns: {"), "entry streams.postings.patterns: unknown"),
        (
            "version: 1\ndefault_stream: p\nstreams:\n  p: {description: d}\n",
            "entry streams.p.pattern: missing",
        ),
        (
            "version: 1\ndefault_stream: p\nstreams:\n  p: just text\n",
            "entry streams.p: expected a mapping",
        ),
        (GOOD.replace("description: d", "description: [d]"), "description: expected text"),
        (
            GOOD.replace('"prefix"', '"suffix"'),
            "entry streams.postings.pattern.detail-type[0]: operator 'suffix' is outside the "
            "supported subset (prefix, anything-but, exists, numeric)",
        ),
        (
            GOOD.replace('{"prefix": "job."}', '{"equals-ignore-case": "job"}'),
            "operator 'equals-ignore-case' is outside the supported subset",
        ),
        (
            GOOD.replace('{"prefix": "job."}', '{"anything-but": {"wildcard": "job*"}}'),
            "streams.postings.pattern.detail-type[0].anything-but: anything-but takes",
        ),
        (
            GOOD.replace('"detail-type": [{"prefix": "job."}]', '"$or": [{"source": ["a"]}]'),
            "streams.postings.pattern.$or: operator '$or' is outside the supported subset",
        ),
        (
            GOOD.replace('[{"prefix": "job."}]', "job.posted"),
            "pattern.detail-type: expected an array of values or a nested object",
        ),
        (GOOD.replace('[{"prefix": "job."}]', "[]"), "pattern.detail-type: empty array"),
        (GOOD.replace('{"detail-type": [{"prefix": "job."}]}', "{}"), "pattern: empty object"),
        (
            GOOD.replace('{"detail-type": [{"prefix": "job."}]}', "[a]"),
            "pattern: expected an object, got list",
        ),
        (GOOD.replace('[{"prefix": "job."}]', '[["job.posted"]]'), "nested arrays"),
        (
            GOOD.replace('{"prefix": "job."}', '{"prefix": "job.", "exists": true}'),
            "detail-type[0]: an operator object has exactly one key, got 2",
        ),
        (GOOD.replace('{"prefix": "job."}', "{}"), "exactly one key, got 0"),
        (GOOD.replace('{"prefix": "job."}', '{"prefix": 5}'), "prefix must be a string"),
        (GOOD.replace('{"prefix": "job."}', '{"exists": "yes"}'), "exists takes true or false"),
        (
            GOOD.replace('{"prefix": "job."}', '{"numeric": ["<", 5, ">", 1]}'),
            "a numeric range is a lower bound",
        ),
        (
            GOOD.replace('{"prefix": "job."}', '{"numeric": ["~", 1]}'),
            "detail-type[0].numeric[0]: unknown numeric operator '~'",
        ),
        (
            GOOD.replace('{"prefix": "job."}', '{"numeric": [">", "a"]}'),
            "numeric[1]: expected a number",
        ),
        (GOOD.replace('{"prefix": "job."}', '{"numeric": [">"]}'), "numeric takes"),
        (
            GOOD.replace('{"prefix": "job."}', '{"anything-but": ["a", 1]}'),
            "all strings or all numbers",
        ),
        (
            GOOD.replace('{"prefix": "job."}', '{"anything-but": [true]}'),
            "anything-but values must be strings or numbers",
        ),
        (GOOD.replace('{"prefix": "job."}', '{"anything-but": []}'), "anything-but list is empty"),
        (
            GOOD.replace('"detail-type"', '"account"'),
            "pattern.account: top-level field 'account' is assigned by EventBridge",
        ),
        (
            GOOD.replace('"detail-type": [{"prefix": "job."}]', '"detail": {"time": [2026-11-01]}'),
            "pattern.detail.time[0]: date datetime.date(2026, 11, 1) is not a JSON string",
        ),
        (GOOD.replace('[{"prefix": "job."}]', "[.inf]"), "is not finite"),
    ],
)
def test_malformed_routing_files_are_refused_naming_file_and_entry(tmp_path, text, message):
    path = tmp_path / "routing.yaml"
    path.write_text(text)
    with pytest.raises(RoutingError) as info:
        Router.from_file(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_unreadable_routing_file(tmp_path):
    with pytest.raises(RoutingError, match="cannot read the routing file"):
        Router.from_file(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"version: 1 # caf\xe9\n")
    with pytest.raises(RoutingError, match="not UTF-8"):
        Router.from_file(tmp_path / "latin1.yaml")


def test_compile_pattern_reports_where(tmp_path: Path):
    with pytest.raises(PatternError) as info:
        compile_pattern({"detail": {"data": {"x": [{"cidr": "10.0.0.0/8"}]}}})
    assert info.value.where == "pattern.detail.data.x[0]"
    assert "'cidr'" in str(info.value)
    with pytest.raises(PatternError, match="not valid JSON"):
        compile_pattern("{nope")


MEMO_ROUTER = {
    "version": 1, "default_stream": "misc",
    "streams": {
        "misc": {"pattern": {"source": [{"exists": False}]}},
        "jobs": {"pattern": {
            "detail-type": [{"prefix": "job."}], "source": [{"anything-but": "x"}],
        }},
        "big": {"pattern": {"detail": {"data": {"salary_min": [{"numeric": [">=", 1]}]}}}},
        "flag": {"pattern": {"detail": {"data": {"remote": [True]}}}},
    },
}  # fmt: skip
leaf = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.floats(-2, 2)
    | st.sampled_from(["x", "job.posted", "job.", "board.merged", ""])
)
record_values = leaf | st.lists(leaf, max_size=2) | st.dictionaries(st.sampled_from(["k"]), leaf)


@given(
    records=st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "source": record_values,
                "type": record_values,
                "data": st.fixed_dictionaries(
                    {}, optional={"salary_min": record_values, "remote": record_values}
                )
                | record_values,
            },
        ),
        min_size=1,
        max_size=12,
    )
)
def test_remembered_routes_equal_a_full_match(records):
    """The router remembers decisions by the values at its patterns' paths: every record,
    routed again and after records that differ only in type (True vs 1, 1 vs 1.0) or shape
    (a list, an object), routes as a full match of every pattern says."""
    router = Router.from_dict(MEMO_ROUTER)
    for record in records * 2:
        event = to_eventbridge_event(record)
        full = [n for n, s in router.streams.items() if s.pattern.matches(event)] or ["misc"]
        assert router.route_record(record) == full


def test_remembered_routes_are_bounded(monkeypatch):
    import figstream.ingest.routing as routing

    monkeypatch.setattr(routing, "MEMO_LIMIT", 3)
    router = Router.from_dict(MEMO_ROUTER)
    for n in range(10):
        record = {"source": "a", "type": "job.posted", "data": {"salary_min": n}}
        assert router.route_record(record) == (["jobs", "big"] if n >= 1 else ["jobs"])
        assert len(router._memo) <= 3
