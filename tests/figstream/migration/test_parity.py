import datetime as dt
import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from figstream.migration.ledger import ParitySpec
from figstream.migration.parity import Explained, UnknownFlawError, View, compare
from figstream.migration.parity_report import Differences, ParityReport

POSTINGS = {
    "job_id": ["j1", "j2", "j3", "j4"],
    "title": ["Data Engineer", "Nurse", "Chef", "Driver"],
    "salary_min": ["50000", "", "30000", "42000"],
    "event_time": [
        "2026-11-01T10:00:00Z",
        "2026-11-01T11:00:00Z",
        "2026-11-01T12:00:00Z",
        "2026-11-01T13:00:00Z",
    ],
}
SPEC = ParitySpec(key=["job_id"])


def table(columns: dict[str, list]) -> pa.Table:
    return pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})


def edited(*changes: tuple[str, int, str]) -> dict[str, list]:
    columns = {name: list(values) for name, values in POSTINGS.items()}
    for column, row, value in changes:
        columns[column][row] = value
    return columns


def changed(column: str, row: int, value) -> pa.Table:
    return table(edited((column, row, value)))


def one_value(old, new, spec: ParitySpec) -> ParityReport:
    return compare(table({"k": ["1"], "v": [old]}), View(table({"k": ["1"], "v": [new]})), spec)


def test_identical_tables_are_clean():
    report = compare(table(POSTINGS), View(table(POSTINGS)), SPEC)
    assert report.verdict == "clean"
    assert report.passed
    assert (report.matched, report.only_legacy, report.only_new, report.differing) == (4, 0, 0, 0)
    assert report.samples == {"only_legacy": [], "only_new": [], "differing": []}


def test_row_order_does_not_matter():
    report = compare(table(POSTINGS), View(table(POSTINGS).take([3, 1, 0, 2])), SPEC)
    assert report.verdict == "clean"
    assert report.matched == 4


def test_a_changed_value_is_a_mismatch_counted_and_sampled_by_column():
    report = compare(table(POSTINGS), View(changed("title", 2, "Sous Chef")), SPEC)
    assert report.verdict == "mismatch"
    assert not report.passed
    assert (report.matched, report.differing) == (3, 1)
    assert report.column_differences == {"title": 1}
    assert report.unexplained == {"only_legacy": 0, "only_new": 0, "differing": 1}
    assert report.samples["differing"] == [
        {
            "job_id": "j3",
            "differing_columns": "title",
            "title_legacy": "Chef",
            "title_new": "Sous Chef",
        }
    ]


def test_rows_on_one_side_only():
    legacy = table(POSTINGS)
    new = table({name: [*values[1:], "x"] for name, values in POSTINGS.items()})
    report = compare(legacy, View(new), SPEC)
    assert (report.only_legacy, report.only_new, report.matched) == (1, 1, 3)
    assert report.samples["only_legacy"][0]["job_id"] == "j1"
    assert report.samples["only_new"][0] == {c: "x" for c in POSTINGS}


def test_ignored_columns_are_not_compared():
    new = changed("event_time", 0, "yesterday")
    assert compare(table(POSTINGS), View(new), SPEC).verdict == "mismatch"
    ignoring = ParitySpec(key=["job_id"], ignore=["event_time"])
    assert compare(table(POSTINGS), View(new), ignoring).verdict == "clean"


def test_null_is_not_an_empty_string_unless_normalised():
    assert one_value("", None, ParitySpec(key=["k"])).verdict == "mismatch"
    assert one_value(None, None, ParitySpec(key=["k"])).verdict == "clean"
    spec = ParitySpec(key=["k"], normalise={"v": ["strip", "empty_as_null"]})
    assert one_value("  ", None, spec).verdict == "clean"


@pytest.mark.parametrize(
    ("steps", "old", "new", "equal"),
    [
        (["timestamp"], "2026-11-01T10:00:00Z", "2026-11-01T10:00:00.000000+00:00", True),
        (["timestamp"], "2026-11-01T10:00:00Z", "2026-11-01T12:00:00+02:00", True),
        (["timestamp"], "2026-11-01T10:00:00.5Z", "2026-11-01T10:00:00.500000+00:00", True),
        (["timestamp"], "2026-11-01T10:00:00.1234567Z", "2026-11-01T10:00:00.123456Z", True),
        (["timestamp"], "2026-11-01T23:30:00-01:00", "2026-11-02T00:30:00z", True),
        (["timestamp"], "2026-11-01T10:00:00Z", "2026-11-01T10:00:00.000001Z", False),
        (["timestamp"], "2026-11-01T10:00:00Z", "2026-11-01T10:00:00+01:00", False),
        (["number"], "90000", "90000.0", True),
        (["number"], "90000", "9e4", True),
        (["number"], " 90000 ", "+9.0E+04", True),
        (["number"], "90000", "90001", False),
        (["casefold"], "STRASSE", "Straße", True),
        (["casefold"], "Data Engineer", "data engineer", True),
        ([], "Data Engineer", "data engineer", False),
        (["squash"], "  Data \t Engineer\n", "Data Engineer", True),
        (["squash"], "Data Engineer", "DataEngineer", False),
        (["strip"], " Data  Engineer ", "Data  Engineer", True),
        (["strip"], "Data  Engineer", "Data Engineer", False),
        (["strip", "casefold", "empty_as_null"], " ", None, True),
    ],
)
def test_normalisers(steps, old, new, equal):
    report = one_value(old, new, ParitySpec(key=["k"], normalise={"v": steps}))
    assert report.verdict == ("clean" if equal else "mismatch")


@pytest.mark.parametrize(
    ("steps", "old", "new"),
    [
        (["number"], "n/a", "n/a"),
        (["number"], "", ""),
        (["number"], "nan", "nan"),
        (["timestamp"], "2026-11-01T10:00:00", "2026-11-01T10:00:00"),
        (["timestamp"], "2026-11-31T10:00:00Z", "2026-11-31T10:00:00Z"),
        (["timestamp"], "2026-02-29T10:00:00Z", "2026-02-29T10:00:00Z"),
        (["timestamp"], "2026-11-01T24:00:00Z", "2026-11-01T24:00:00Z"),
        (["timestamp"], "2026-11-01T10:00:60Z", "2026-11-01T10:00:60Z"),
        (["timestamp"], "2026-11-01t10:00:60z", "2026-11-01t10:00:60z"),
        (["timestamp"], "2026-11-31t10:00:00z", "2026-11-31t10:00:00z"),
        (["timestamp"], "2026-11-01T10:00:00+24:00", "2026-11-01T10:00:00+24:00"),
    ],
)
def test_unparsable_values_differ_and_are_reported(steps, old, new):
    report = one_value(old, new, ParitySpec(key=["k"], normalise={"v": steps}))
    assert report.verdict == "mismatch"
    assert report.unparsable == {"v": 1}
    assert report.column_differences == {"v": 1}


def test_empty_as_null_before_number_lets_blanks_through():
    spec = ParitySpec(key=["k"], normalise={"v": ["empty_as_null", "number"]})
    assert one_value("", "", spec).verdict == "clean"
    assert one_value("", "0", spec).verdict == "mismatch"


@pytest.mark.parametrize(
    ("tolerance", "old", "new", "equal"),
    [
        (0.1, "90000", "90000.1", True),
        (0.1, "90000.1", "90000", True),
        (0.1, "90000", "90000.1000001", False),
        (0.5, "1.5", "1", True),
        (0.5, "1.5", "0.9999999", False),
        (0.0, "1", "1.0", True),
        (0.0, "1", "1.0000001", False),
        (1.0, None, None, True),
        (1.0, "1", None, False),
        (1.0, "1", "one", False),
        (1.0, "", "", False),
    ],
)
def test_tolerance_boundaries(tolerance, old, new, equal):
    report = one_value(old, new, ParitySpec(key=["k"], tolerances={"v": tolerance}))
    assert report.verdict == ("clean" if equal else "mismatch")


def test_a_tolerance_reports_non_numeric_rows():
    report = one_value("1", "one", ParitySpec(key=["k"], tolerances={"v": 1.0}))
    assert report.unparsable == {"v": 1}


def test_normalised_keys_match_and_a_null_key_part_matches_a_null():
    legacy = table({"board": ["A ", None], "job": ["1", "2"], "v": ["x", "y"]})
    new = table({"board": ["a", None], "job": ["1", "2"], "v": ["x", "y"]})
    spec = ParitySpec(key=["board", "job"], normalise={"board": ["strip", "casefold"]})
    report = compare(legacy, View(new), spec)
    assert report.verdict == "clean"
    assert report.matched == 2


def test_columns_of_other_types_compare_as_text():
    legacy = table({"k": ["1", "2"], "n": ["90000", ""]})
    new = pa.table({"k": pa.array([1, 2]), "n": pa.array([90000, None])})
    spec = ParitySpec(key=["k"], normalise={"n": ["empty_as_null"]})
    assert compare(legacy, View(new), spec).verdict == "clean"


def rows_with_letter(letter: str):
    """A flaw rule explaining the rows whose (legacy) title starts with ``letter``."""

    def rule(differences: Differences, context) -> Explained:
        def starts(t: pa.Table, column: str) -> pa.Array:
            return pc.starts_with(t.column(column), letter).combine_chunks()

        return Explained(
            only_legacy=starts(differences.only_legacy, "title"),
            only_new=starts(differences.only_new, "title"),
            differing=starts(differences.differing, "title_legacy"),
        )

    return rule


def test_flaw_rules_explain_rows_and_the_first_listed_rule_gets_the_credit():
    new = table(edited(("title", 2, "Sous Chef"), ("title", 3, "Bus Driver")))
    flaws = {
        "c_flaw": rows_with_letter("C"),
        "d_flaw": rows_with_letter("D"),
        "also_c": rows_with_letter("C"),
    }
    spec = ParitySpec(key=["job_id"], known_flaws=["c_flaw", "d_flaw", "also_c"])
    report = compare(table(POSTINGS), View(new), spec, flaws)
    assert report.verdict == "explained"
    assert report.passed
    assert report.explained == {"c_flaw": 1, "d_flaw": 1, "also_c": 0}
    assert report.unexplained == {"only_legacy": 0, "only_new": 0, "differing": 0}
    assert {s["explained_by"] for s in report.samples["differing"]} == {"c_flaw", "d_flaw"}


def test_one_row_left_unexplained_is_a_mismatch_and_sampled_first():
    columns = edited(("title", 0, "Data Engineer!"), ("title", 1, "Nurse!"), ("title", 2, "Chef!"))
    spec = ParitySpec(key=["job_id"], known_flaws=["d_flaw"], sample_rows=2)
    report = compare(table(POSTINGS), View(table(columns)), spec, {"d_flaw": rows_with_letter("D")})
    assert report.verdict == "mismatch"
    assert report.explained == {"d_flaw": 1}
    assert report.unexplained["differing"] == 2
    assert [s.get("explained_by") for s in report.samples["differing"]] == [None, None]
    assert [s["job_id"] for s in report.samples["differing"]] == ["j2", "j3"]


def test_flaw_rules_see_the_new_side_context():
    seen = {}

    def rule(differences, context):
        seen.update(context)
        n = differences.differing.num_rows
        return Explained(pa.array([], pa.bool_()), pa.array([], pa.bool_()), pa.array([True] * n))

    boards = table({"board": ["a"]})
    spec = ParitySpec(key=["job_id"], known_flaws=["f"])
    report = compare(
        table(POSTINGS),
        View(changed("title", 0, "x"), context={"boards": boards}),
        spec,
        {"f": rule},
    )
    assert report.verdict == "explained"
    assert seen == {"boards": boards}


def test_an_unknown_flaw_name_is_an_error_naming_it():
    spec = ParitySpec(key=["job_id"], known_flaws=["salary_as_text"])
    with pytest.raises(UnknownFlawError, match="salary_as_text") as caught:
        compare(
            table(POSTINGS), View(table(POSTINGS)), spec, {"salary_as_txt": rows_with_letter("x")}
        )
    assert isinstance(caught.value, ValueError)
    assert "'salary_as_text'" in str(caught.value)


def test_a_flaw_mask_of_the_wrong_length_is_an_error():
    def rule(differences, context):
        empty = pa.array([], pa.bool_())
        return Explained(only_legacy=empty, only_new=empty, differing=pa.array([True]))

    spec = ParitySpec(key=["job_id"], known_flaws=["short"])
    new = table(edited(("title", 0, "x"), ("title", 1, "y")))
    with pytest.raises(ValueError, match=r"'short'.*differing mask has 1 values for 2 rows"):
        compare(table(POSTINGS), View(new), spec, {"short": rule})


def test_repeated_keys_are_reported_and_never_paired():
    legacy = table({"k": ["1", "2", "2", "3"], "v": ["a", "b", "b", "c"]})
    new = table({"k": ["1", "2", "3", "3"], "v": ["a", "b", "c", "c"]})
    report = compare(legacy, View(new), ParitySpec(key=["k"]))
    assert report.verdict == "mismatch"
    assert report.duplicate_keys == {"legacy": 2, "new": 2}
    assert report.matched == 1
    assert (report.only_legacy, report.only_new) == (3, 3)
    assert all(s["duplicate_key"] for s in report.samples["only_legacy"])
    assert report.legacy_rows == report.matched + report.differing + report.only_legacy


def test_a_column_missing_on_the_new_side_is_a_schema_difference():
    new = table({k: v for k, v in POSTINGS.items() if k != "salary_min"})
    report = compare(table(POSTINGS), View(new), SPEC)
    assert report.verdict == "mismatch"
    assert report.schema == {"missing_in_new": ["salary_min"], "extra_in_new": []}
    assert report.column_differences == {"salary_min": 4}
    assert report.samples["differing"][0]["salary_min_new"] is None


def test_a_column_only_on_the_new_side_is_a_mismatch_unless_ignored():
    new = table({**POSTINGS, "board": ["a"] * 4})
    report = compare(table(POSTINGS), View(new), SPEC)
    assert report.verdict == "mismatch"
    assert report.schema["extra_in_new"] == ["board"]
    spec = ParitySpec(key=["job_id"], ignore=["board"])
    assert compare(table(POSTINGS), View(new), spec).verdict == "clean"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ParitySpec(key=["id"]), "key column 'id' is missing from the legacy table"),
        (ParitySpec(key=["job_id"], normalise={"salary": ["number"]}), "normalise.salary"),
        (ParitySpec(key=["job_id"], tolerances={"salary": 1}), "tolerances.salary"),
        (
            ParitySpec(key=["job_id"], normalise={"salary_min": ["number", "strip"]}),
            "'number' must come last",
        ),
    ],
)
def test_a_spec_that_cannot_apply_is_an_error(spec, message):
    with pytest.raises(ValueError, match=message):
        compare(table(POSTINGS), View(table(POSTINGS)), spec)


def test_report_round_trips_through_json():
    spec = ParitySpec(key=["job_id"], known_flaws=["c_flaw"])
    columns = edited(("title", 2, "changed"))
    new = table({name: [*values[1:], "x"] for name, values in columns.items()})
    report = compare(table(POSTINGS), View(new), spec, {"c_flaw": rows_with_letter("C")})
    assert report.differing and report.only_new and report.explained["c_flaw"] == 1
    assert ParityReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_from_dict_rejects_what_is_not_a_report():
    with pytest.raises(ValueError, match="unknown field"):
        ParityReport.from_dict({"verdict": "clean", "rows": 1})


def test_markdown_escapes_pipes_and_newlines_in_values():
    report = compare(table(POSTINGS), View(changed("title", 1, "a|b\nc")), SPEC)
    markdown = report.to_markdown()
    assert "a\\|b\\nc" in markdown
    assert "**Parity: mismatch**" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| j2 ")]
    assert rows == ["| j2 | title | Nurse | a\\|b\\nc |  |"]
    assert all(
        not line or line.startswith(("|", "**", "Rows", "Sample")) for line in markdown.splitlines()
    )


def test_markdown_tells_null_from_empty():
    report = one_value("", None, ParitySpec(key=["k"]))
    assert '| 1 | v | "" | *null* |  |' in report.to_markdown()


def test_empty_sides():
    empty = table({name: [] for name in POSTINGS})
    assert compare(empty, View(empty), SPEC).verdict == "clean"
    report = compare(table(POSTINGS), View(empty), SPEC)
    assert (report.only_legacy, report.matched) == (4, 0)


# an impossible date makes Arrow's all-or-nothing parser refuse a column: the part-by-part
# parser then decides every value of it, and must agree with Python
POISON = "2026-11-31T00:00:00Z"
instants = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1))
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(instants, offsets, st.sampled_from("T t")), max_size=20), st.booleans())
def test_timestamps_compare_as_the_instants_python_reads(stamps, poisoned):
    utc = [instant.replace(tzinfo=dt.UTC) for instant, _, _ in stamps]
    legacy = [u.isoformat().replace("+00:00", "Z") for u in utc]
    new = [
        u.astimezone(dt.timezone(dt.timedelta(minutes=minutes))).isoformat(sep=sep)
        for u, (_, minutes, sep) in zip(utc, stamps, strict=True)
    ]
    keys = [str(i) for i in range(len(stamps))]
    if poisoned:
        keys, legacy, new = [*keys, "poison"], [*legacy, POISON], [*new, POISON]
    spec = ParitySpec(key=["k"], normalise={"t": ["timestamp"]})
    report = compare(table({"k": keys, "t": legacy}), View(table({"k": keys, "t": new})), spec)
    assert report.matched == len(stamps)
    assert report.column_differences == ({"t": 1} if poisoned else {})


keys = st.lists(st.text(max_size=8), min_size=1, max_size=30, unique=True)
cells = st.one_of(st.none(), st.text(max_size=10))


@st.composite
def unique_key_tables(draw):
    key = draw(keys)
    width = draw(st.integers(min_value=0, max_value=3))
    columns = {"key": key}
    for i in range(width):
        columns[f"c{i}"] = draw(st.lists(cells, min_size=len(key), max_size=len(key)))
    return table(columns), draw(st.permutations(range(len(key))))


@settings(max_examples=150, deadline=None)
@given(unique_key_tables(), st.data())
def test_shuffled_is_clean_and_one_removed_row_is_one_only_legacy(drawn, data):
    legacy, order = drawn
    spec = ParitySpec(key=["key"])
    assert compare(legacy, View(legacy.take(order)), spec).verdict == "clean"
    removed = data.draw(st.integers(min_value=0, max_value=legacy.num_rows - 1))
    kept = [i for i in order if i != removed]
    report = compare(legacy, View(legacy.take(pa.array(kept, pa.int64()))), spec)
    assert (report.only_legacy, report.only_new, report.differing) == (1, 0, 0)
    assert report.matched == legacy.num_rows - 1
    assert report.samples["only_legacy"][0]["key"] == legacy.column("key")[removed].as_py()


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_text_normalisers_do_what_python_does(text):
    for steps, python in (
        (["squash"], " ".join(text.split())),
        (["strip"], text.strip()),
        (["casefold"], text.casefold()),
    ):
        assert one_value(text, python, ParitySpec(key=["k"], normalise={"v": steps})).passed


def test_an_unparsable_key_matches_nothing():
    spec = ParitySpec(key=["k"], normalise={"k": ["number"]})
    report = compare(table({"k": ["1", "x"]}), View(table({"k": ["1.0", "x"]})), spec)
    assert (report.matched, report.only_legacy, report.only_new) == (1, 1, 1)
    assert report.unparsable == {"k": 2}


small = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", None]),
        st.sampled_from(["1", "2"]),
        st.sampled_from(["x", "", None]),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(small, small)
def test_counts_agree_with_a_row_by_row_oracle(old_rows, new_rows):
    def side(rows):
        return table({name: [row[i] for row in rows] for i, name in enumerate(("k1", "k2", "v"))})

    report = compare(side(old_rows), View(side(new_rows)), ParitySpec(key=["k1", "k2"]))
    old_keys = Counter(row[:2] for row in old_rows)
    new_keys = Counter(row[:2] for row in new_rows)
    new_value = {row[:2]: row[2] for row in new_rows}
    pairs = [row for row in old_rows if old_keys[row[:2]] == 1 and new_keys[row[:2]] == 1]
    differing = sum(row[2] != new_value[row[:2]] for row in pairs)
    assert (report.matched, report.differing) == (len(pairs) - differing, differing)
    assert report.only_legacy == len(old_rows) - len(pairs)
    assert report.only_new == len(new_rows) - len(pairs)
    assert report.duplicate_keys == {
        "legacy": sum(n for n in old_keys.values() if n > 1),
        "new": sum(n for n in new_keys.values() if n > 1),
    }
