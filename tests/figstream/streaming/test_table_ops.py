"""The transform's table operations: normalisation, dedupe by event id, cross-board dedupe,
job state and the read models, with hypothesis where inputs are open-ended."""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transform_cases import FAST, T0, texts

from figstream.ingest.dataset import generate
from figstream.streaming.parse import parse_batch, parse_batches
from figstream.streaming.table_ops import (
    apply_job_state,
    board_daily_stats,
    clean_postings,
    dedupe_events,
    dedupe_key,
    dedupe_postings,
    normalise_text,
    search_index,
)
from figstream.streaming.tables import (
    CANONICAL_SCHEMA,
    EVENTS_SCHEMA,
    POSTINGS_SCHEMA,
    STATE_SCHEMA,
    STATS_SCHEMA,
)

# --- normalisation, dedupe by event id ----------------------------------------------------------


@given(st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=15)))
def test_normalise_text_is_pythons_split_and_join(values):
    assert normalise_text(pa.array(values, pa.string())).to_pylist() == [
        " ".join(v.split()) for v in values
    ]


@given(st.lists(st.tuples(texts, texts, texts), max_size=10))
def test_dedupe_key_is_injective_casefolded_text(parts):
    columns = list(zip(*parts, strict=True)) or [(), (), ()]
    company, title, location = (pa.array(list(col), pa.string()) for col in columns)
    keys = dedupe_key(company, title, location).to_pylist()

    def escape(s: str) -> str:
        return s.casefold().replace("\\", "\\\\").replace("|", "\\|")

    assert keys == ["|".join(escape(p) for p in triple) for triple in parts]
    for a, b in zip(parts, keys, strict=True):
        for c, d in zip(parts, keys, strict=True):
            if b == d:
                assert [x.casefold() for x in a] == [x.casefold() for x in c]


def event_rows(rows: list[dict]) -> pa.Table:
    full = [{f.name: row.get(f.name) for f in EVENTS_SCHEMA} for row in rows]
    return pa.Table.from_pylist(full, schema=EVENTS_SCHEMA)


@FAST
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from(["b1", "b2", "b3"]), st.integers(1, 5)),
        max_size=30,
    ),
    st.randoms(),
)
def test_dedupe_events_keeps_the_first_delivery(deliveries, rng):
    rows = [
        {
            "event_id": f"e{e}",
            "batch_id": b,
            "line_no": n,
            "event_type": "job.expired",
            "title": f"{b}:{n}",
        }
        for e, b, n in deliveries
    ]
    table = event_rows(rows)
    out = dedupe_events(table)
    expected = {}
    for row in sorted(rows, key=lambda r: (r["batch_id"], r["line_no"])):
        expected.setdefault(row["event_id"], row["title"])
    assert dict(zip(out["event_id"].to_pylist(), out["title"].to_pylist(), strict=True)) == expected
    assert out.num_rows == len(expected)
    shuffled = table.take(pa.array(rng.sample(range(table.num_rows), table.num_rows), pa.int64()))
    assert dedupe_events(shuffled).sort_by("event_id").equals(out.sort_by("event_id"))


def posting(
    event_id: str,
    job_id: str,
    minutes: int,
    title: str = "Data Engineer",
    company: str = "Acme",
    location: str = "Austin, TX",
    board: str = "hireloop",
    event_type: str = "job.posted",
    salary: int | None = 100_000,
) -> dict:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "source": board,
        "version": 1,
        "event_time": T0 + timedelta(minutes=minutes),
        "job_id": job_id,
        "title": title,
        "company": company,
        "location": location,
        "employment_type": "full_time",
        "remote": False,
        "salary_min": salary,
        "salary_max": None,
        "currency": "USD",
        "url": f"https://{board}.example/jobs/{job_id}",
        "batch_id": "b",
        "line_no": 1,
    }


def test_clean_postings_normalises_and_keys():
    events = event_rows(
        [
            posting("e1", "j1", 0, title="  Data   Engineer ", company="ACME\u00a0Inc"),
            posting("e2", "j2", 1, title="data engineer", company="acme inc", board="jobnest"),
            {
                "event_id": "e3",
                "event_type": "job.expired",
                "source": "hireloop",
                "event_time": T0,
                "job_id": "j1",
                "reason": "filled",
                "batch_id": "b",
                "line_no": 2,
            },
        ]
    )
    out = clean_postings(events)
    assert out.schema == POSTINGS_SCHEMA
    assert out["title"].to_pylist() == ["Data Engineer", "data engineer"]
    assert out["company"].to_pylist() == ["ACME Inc", "acme inc"]
    assert out["board"].to_pylist() == ["hireloop", "jobnest"]
    assert out["dedupe_key"].to_pylist() == ["acme inc|data engineer|austin, tx"] * 2


# --- cross-board dedupe -------------------------------------------------------------------------

posting_events = st.lists(
    st.builds(
        lambda n, job, minutes, title, company, kind: posting(
            f"e{n:03d}",
            f"j{job}",
            minutes,
            title=title,
            company=company,
            board=f"b{job % 3}",
            event_type=kind,
        ),
        st.integers(0, 999),
        st.integers(0, 7),
        st.integers(0, 5),
        st.sampled_from(["Data Engineer", "data  engineer", "Nurse"]),
        st.sampled_from(["Acme", "ACME", "Lee"]),
        st.sampled_from(["job.posted", "job.posted", "job.updated"]),
    ),
    max_size=25,
    unique_by=lambda r: r["event_id"],
)


def reference_duplicates(rows: list[dict]) -> dict[str, str]:
    def key(r: dict) -> str:
        return "|".join(" ".join(r[f].split()).casefold() for f in ("company", "title", "location"))

    first = {}
    for r in sorted(rows, key=lambda r: (r["event_time"], r["event_id"])):
        if r["event_type"] == "job.posted":
            first.setdefault(r["job_id"], r)
    winner = {}
    for r in sorted(first.values(), key=lambda r: (r["event_time"], r["event_id"])):
        winner.setdefault(key(r), r["job_id"])
    return {j: winner[key(r)] for j, r in first.items() if winner[key(r)] != j}


@FAST
@given(posting_events, st.randoms(), st.integers(1, 4))
def test_dedupe_postings_is_order_insensitive_and_idempotent(rows, rng, parts):
    postings = clean_postings(event_rows(rows))
    once = dedupe_postings(postings)
    expected = reference_duplicates(rows)
    got = once.duplicates.to_pylist()
    assert {d["job_id"]: d["duplicate_of_job_id"] for d in got} == expected
    assert set(once.kept["job_id"].to_pylist()) == {r["job_id"] for r in rows} - expected.keys()
    assert once.canonical.schema == CANONICAL_SCHEMA

    order = rng.sample(range(len(rows)), len(rows))
    cuts = sorted(rng.sample(range(len(rows) + 1), min(parts, len(rows) + 1)))
    canonical = None
    for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True):
        chunk = clean_postings(event_rows([rows[i] for i in order[a:b]]))
        result = dedupe_postings(chunk, canonical)
        canonical = result.canonical
    assert result.canonical.equals(once.canonical)
    assert result.duplicates.equals(once.duplicates)

    again = dedupe_postings(postings, once.canonical)
    assert again.canonical.equals(once.canonical)
    assert again.duplicates.equals(once.duplicates)
    assert again.kept.equals(once.kept)


def test_a_late_earlier_posting_takes_the_key_over():
    early = posting("e1", "j1", 0, board="jobnest")
    middle = posting("e2", "j2", 5, title="DATA  ENGINEER")
    late = posting("e3", "j3", 9, board="workwave")
    first = dedupe_postings(clean_postings(event_rows([middle, late])))
    assert first.duplicates.to_pylist() == [
        {"job_id": "j3", "duplicate_of_job_id": "j2", "dedupe_key": "acme|data engineer|austin, tx"}
    ]
    second = dedupe_postings(clean_postings(event_rows([early])), first.canonical)
    assert [(d["job_id"], d["duplicate_of_job_id"]) for d in second.duplicates.to_pylist()] == [
        ("j2", "j1"),
        ("j3", "j1"),
    ]


# --- job state ----------------------------------------------------------------------------------

JOBS = ["j0", "j1", "j2", "j3"]


@st.composite
def job_events(draw) -> list[dict]:
    events = []
    for n in range(draw(st.integers(0, 18))):
        kind = draw(st.sampled_from(["job.posted", "job.updated", "job.expired", "board.merged"]))
        minutes = draw(st.integers(0, 6))  # few distinct times: ties broken by event id
        event_id = f"e{draw(st.integers(0, 99)):02d}-{n}"
        if kind == "board.merged":
            absorbed, surviving = draw(st.permutations(["b0", "b1", "b2"]))[:2]
            events.append(
                {
                    "event_id": event_id,
                    "event_type": kind,
                    "source": surviving,
                    "event_time": T0 + timedelta(minutes=minutes),
                    "absorbed_board": absorbed,
                    "surviving_board": surviving,
                    "batch_id": "b",
                    "line_no": n,
                }
            )
        elif kind == "job.expired":
            events.append(
                {
                    "event_id": event_id,
                    "event_type": kind,
                    "source": "b0",
                    "event_time": T0 + timedelta(minutes=minutes),
                    "job_id": draw(st.sampled_from(JOBS)),
                    "reason": draw(st.sampled_from(["filled", "expired"])),
                    "batch_id": "b",
                    "line_no": n,
                }
            )
        else:
            events.append(
                posting(
                    event_id,
                    draw(st.sampled_from(JOBS)),
                    minutes,
                    title=draw(st.sampled_from(["Nurse", " Nurse  II "])),
                    board=draw(st.sampled_from(["b0", "b1", "b2"])),
                    event_type=kind,
                    salary=draw(st.sampled_from([None, 50_000])),
                )
            )
    return events


def reference_state(events: list[dict]) -> dict[str, dict]:
    """Events folded one by one in (event_time, event_id) order: the spec, row by row."""
    jobs: dict[str, dict] = {}
    for e in sorted(events, key=lambda e: (e["event_time"], e["event_id"])):
        at, eid = e["event_time"], e["event_id"]
        if e["event_type"] in ("job.posted", "job.updated"):
            job = jobs.setdefault(e["job_id"], {"posted_at": None})
            job.update(
                board=e["source"],
                title=" ".join(e["title"].split()),
                status="active",
                updated_at=at,
                expired_at=None,
                merged_into=None,
                last=(at, eid),
            )
            if e["event_type"] == "job.posted" and job["posted_at"] is None:
                job["posted_at"] = at
        elif e["event_type"] == "job.expired":
            job = jobs.setdefault(
                e["job_id"], {"posted_at": None, "board": None, "title": None, "updated_at": None}
            )
            job.update(status="expired", expired_at=at, merged_into=None, last=(at, eid))
        else:
            for job in jobs.values():
                if job["board"] == e["absorbed_board"] and job["status"] in ("active", "merged"):
                    job.update(status="merged", merged_into=e["surviving_board"], last=(at, eid))
    return jobs


def state_view(state: pa.Table) -> dict[str, dict]:
    jobs = state.filter(pc.equal(state["kind"], "job")).to_pylist()
    return {
        j["job_id"]: {
            "posted_at": j["posted_at"],
            "board": j["board"],
            "title": j["title"],
            "status": j["status"],
            "updated_at": j["updated_at"],
            "expired_at": j["expired_at"],
            "merged_into": j["merged_into"],
            "last": (j["last_event_time"], j["last_event_id"]),
        }
        for j in jobs
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_events(), job_events(), st.randoms())
def test_job_state_is_last_writer_wins_idempotent_and_order_insensitive(a, b, rng):
    ids = {e["event_id"] for e in a}
    b = [e for e in b if e["event_id"] not in ids]
    table_a, table_b = event_rows(a), event_rows(b)
    both = apply_job_state(None, event_rows(a + b))
    assert both.schema == STATE_SCHEMA
    assert state_view(both) == reference_state(a + b)
    ab = apply_job_state(apply_job_state(None, table_a), table_b)
    ba = apply_job_state(apply_job_state(None, table_b), table_a)
    assert ab.equals(both) and ba.equals(both)
    assert apply_job_state(both, table_a).equals(both)
    shuffled = event_rows(rng.sample(a + b, len(a + b)))
    assert apply_job_state(None, shuffled).equals(both)


def test_a_merger_acts_as_of_its_event_time():
    merger = {
        "event_id": "m",
        "event_type": "board.merged",
        "source": "hireloop",
        "event_time": T0 + timedelta(minutes=30),
        "absorbed_board": "jobnest",
        "surviving_board": "hireloop",
        "batch_id": "b",
        "line_no": 9,
    }
    events = [
        posting("e1", "open", 0, board="jobnest"),
        posting("e2", "closed", 0, board="jobnest"),
        {
            "event_id": "e3",
            "event_type": "job.expired",
            "source": "jobnest",
            "job_id": "closed",
            "event_time": T0 + timedelta(minutes=10),
            "reason": "filled",
            "batch_id": "b",
            "line_no": 3,
        },
        posting("e4", "elsewhere", 0, board="workwave"),
        posting("e5", "after", 45, board="jobnest"),  # impossible in practice: stays active
    ]
    state = apply_job_state(None, event_rows([merger]))
    # The merger arrived first; the postings it covers arrive late and still meet it.
    state = apply_job_state(state, event_rows(events))
    status = dict(zip(state["job_id"].to_pylist(), state["status"].to_pylist(), strict=True))
    assert status == {
        "open": "merged",
        "closed": "expired",
        "elsewhere": "active",
        "after": "active",
        "@jobnest": None,
    }
    merged = state.filter(pc.equal(state["job_id"], "open")).to_pylist()[0]
    assert (merged["merged_into"], merged["last_event_id"]) == ("hireloop", "m")
    assert search_index(state)["job_id"].to_pylist() == ["after", "elsewhere"]


# --- read models --------------------------------------------------------------------------------


def test_search_index_hides_duplicates_of_active_jobs_only():
    events = [
        posting("e1", "j1", 0),
        posting("e2", "j2", 1, board="jobnest"),
        posting("e3", "j3", 2, title="Nurse"),
        posting("e4", "j4", 3, title="nurse", board="w"),
        {
            "event_id": "e5",
            "event_type": "job.expired",
            "source": "hireloop",
            "job_id": "j3",
            "event_time": T0 + timedelta(minutes=5),
            "reason": "filled",
            "batch_id": "b",
            "line_no": 5,
        },
    ]
    table = event_rows(events)
    state = apply_job_state(None, table)
    duplicates = dedupe_postings(clean_postings(table)).duplicates
    assert duplicates["job_id"].to_pylist() == ["j2", "j4"]
    index = search_index(state, duplicates)
    assert index.column_names[:2] == ["job_id", "board"]
    # j2 duplicates the active j1; j4 duplicates j3, which expired, so j4 shows.
    assert index["job_id"].to_pylist() == ["j1", "j4"]
    assert search_index(state)["job_id"].to_pylist() == ["j1", "j2", "j4"]


def test_board_daily_stats_mirror_legacy_columns():
    events = [
        posting("e1", "j1", 0, salary=100_000),
        posting("e2", "j2", 1, salary=None),
        posting("e3", "j3", 2, salary=50_001, board="jobnest"),
        posting("e4", "j1", 3, event_type="job.updated", salary=100_001),
        {
            "event_id": "e5",
            "event_type": "job.expired",
            "source": "jobnest",
            "job_id": "j3",
            "event_time": T0 + timedelta(minutes=5),
            "reason": "filled",
            "batch_id": "b",
            "line_no": 5,
        },
        {
            "event_id": "e6",
            "event_type": "board.merged",
            "source": "careerhub",
            "event_time": T0 + timedelta(minutes=6),
            "absorbed_board": "x1",
            "surviving_board": "careerhub",
            "batch_id": "b",
            "line_no": 6,
        },
    ]
    table = event_rows(events)
    stats = board_daily_stats(table, apply_job_state(None, table))
    assert stats.schema == STATS_SCHEMA
    assert stats.to_pylist() == [
        {
            "date": date(2026, 11, 20),
            "board": "careerhub",
            "postings": 0,
            "updates": 0,
            "expiries": 0,
            "active_jobs": 0,
            "avg_salary_min": None,
        },
        {
            "date": date(2026, 11, 20),
            "board": "hireloop",
            "postings": 2,
            "updates": 1,
            "expiries": 0,
            "active_jobs": 2,
            "avg_salary_min": 100_001.0,
        },
        {
            "date": date(2026, 11, 20),
            "board": "jobnest",
            "postings": 1,
            "updates": 0,
            "expiries": 1,
            "active_jobs": 0,
            "avg_salary_min": None,
        },
    ]
    with pytest.raises(ValueError, match="needs a day"):
        board_daily_stats(event_rows([]), apply_job_state(None, table))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 5_000_000), min_size=1, max_size=12))
def test_average_salary_rounds_like_legacy(salaries):
    rows = [posting(f"e{i}", f"j{i}", i, salary=s) for i, s in enumerate(salaries)]
    table = event_rows(rows)
    stats = board_daily_stats(table, apply_job_state(None, table), day=date(2026, 11, 20))
    legacy = float("%.2f" % (sum(salaries) / len(salaries)))
    assert stats["avg_salary_min"].to_pylist() == [pytest.approx(legacy, abs=0.0051)]


def test_everything_runs_on_a_generated_day(tmp_path: Path):
    generate(tmp_path, date(2026, 11, 20), days=1, events_per_day=2000, seed=11)
    batches = [(p.stem, p.read_bytes()) for p in sorted((tmp_path / "landing").rglob("*.jsonl"))]
    events = dedupe_events(parse_batches(batches).valid)
    assert pc.count_distinct(events["event_id"]).as_py() == events.num_rows
    rng = random.Random(1)
    shuffled = events.take(pa.array(rng.sample(range(events.num_rows), events.num_rows)))
    half = shuffled.num_rows // 2
    state = apply_job_state(None, events)
    assert apply_job_state(
        apply_job_state(None, shuffled.slice(half)), shuffled.slice(0, half)
    ).equals(state)
    result = dedupe_postings(clean_postings(events))
    stats = board_daily_stats(events, state, duplicates=result.duplicates)
    assert stats["board"].to_pylist() == sorted(stats["board"].to_pylist())
    assert sum(stats["active_jobs"].to_pylist()) == search_index(state, result.duplicates).num_rows


def test_job_state_can_be_applied_to_the_slice_the_events_touch(tmp_path: Path):
    generate(tmp_path, date(2026, 11, 20), days=2, events_per_day=1500, seed=5, bad_rate=0)
    batches = [(p.stem, p.read_bytes()) for p in sorted((tmp_path / "landing").rglob("*.jsonl"))]
    events = dedupe_events(parse_batches(batches).valid)
    merger_time = events.filter(pc.equal(events["event_type"], "board.merged"))["event_time"][0]
    late = pc.greater_equal(events["event_time"], merger_time)
    before, after = events.filter(pc.invert(late)), events.filter(late)
    state = apply_job_state(None, before)
    absorbed = after.filter(pc.equal(after["event_type"], "board.merged"))["absorbed_board"]
    touched = pc.or_(
        pc.or_(
            pc.is_in(state["job_id"], after["job_id"].drop_null()),
            pc.equal(state["kind"], "merger"),
        ),
        pc.is_in(state["board"], absorbed),
    )
    updated = apply_job_state(state.filter(touched), after)
    untouched = state.filter(pc.invert(pc.is_in(state["job_id"], updated["job_id"])))
    upserted = pa.concat_tables([untouched, updated]).sort_by(
        [("kind", "ascending"), ("job_id", "ascending")]
    )
    assert upserted.equals(apply_job_state(state, after))
    assert pc.sum(pc.equal(upserted["status"], "merged")).as_py() > 0


def test_empty_inputs_give_empty_tables_of_the_right_shape():
    for parsed in (parse_batches([]), parse_batch(b"", "b"), parse_batch(b"\n \r\n", "b")):
        assert parsed.records == 0
        assert parsed.valid.schema == EVENTS_SCHEMA and parsed.valid.num_rows == 0
    nothing = event_rows([])
    assert dedupe_events(nothing).num_rows == 0
    result = dedupe_postings(clean_postings(nothing))
    assert result.canonical.schema == CANONICAL_SCHEMA and result.duplicates.num_rows == 0
    state = apply_job_state(None, nothing)
    assert state.schema == STATE_SCHEMA and search_index(state).num_rows == 0
    assert board_daily_stats(nothing, state, day=date(2026, 11, 20)).num_rows == 0
