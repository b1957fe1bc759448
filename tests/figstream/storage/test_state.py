"""The SQLite state store: last-writer-wins job rows, first-claimant-wins event claims, the
landing index, exact timestamps, bad inputs and concurrent writers."""

from __future__ import annotations

import itertools
import random
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from figstream.storage.sqlite import CHUNK_ROWS
from figstream.storage.state import (
    JOB_STATE_SCHEMA,
    SqliteStateStore,
    job_state_rows,
    state_path,
)
from figstream.streaming.parse import parse_batch
from figstream.streaming.table_ops import apply_job_state

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def job_row(job_id: str, when: datetime, event_id: str, **fields) -> dict:
    row = {name: None for name in JOB_STATE_SCHEMA.names}
    row.update(job_id=job_id, status="active", last_event_time=when, last_event_id=event_id)
    row.update(title=f"{job_id} @ {event_id}", board="hireloop", posted_at=when)
    row.update(fields)
    return row


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=JOB_STATE_SCHEMA)


def expected_lww(rows: list[dict]) -> pa.Table:
    best: dict[str, dict] = {}
    for row in rows:
        old = best.get(row["job_id"])
        key = (row["last_event_time"], row["last_event_id"])
        if old is None or key > (old["last_event_time"], old["last_event_id"]):
            best[row["job_id"]] = row
    return table([best[k] for k in sorted(best)])


@pytest.fixture
def store(tmp_path: Path) -> SqliteStateStore:
    return SqliteStateStore(tmp_path / "state" / "figstream.sqlite")


# --- last writer wins ---------------------------------------------------------------------------

texts = st.none() | st.text(max_size=12)  # NUL, non-ASCII and astral characters included
times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
# Code points compare like their UTF-8 bytes, so Python's order is SQLite's order.
event_ids = st.text(alphabet="aZ0é€𝄞", min_size=1, max_size=3)


@st.composite
def versions(draw) -> list[dict]:
    """Distinct (job_id, last_event_time, last_event_id) rows with arbitrary content: one
    event decides one state, so a (job, time, id) triple never carries two contents."""
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(["j1", "j2", "j3"]), times, event_ids),
            min_size=1,
            max_size=12,
            unique=True,
        )
    )
    return [
        job_row(
            job_id,
            when,
            event_id,
            board=draw(texts),
            title=draw(texts),
            remote=draw(st.none() | st.booleans()),
            salary_min=draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
            status=draw(st.sampled_from(["active", "expired", "merged"])),
            expired_at=draw(st.none() | times),
            merged_into=draw(texts),
        )
        for job_id, when, event_id in keys
    ]


def cut(draw, picks: list) -> list[list]:
    """``picks`` cut into consecutive non-empty batches of any size."""
    cuts = sorted(draw(st.lists(st.integers(0, len(picks)), max_size=5)))
    bounds = [0, *cuts, len(picks)]
    return [picks[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@st.composite
def deliveries(draw) -> tuple[list[dict], list[list[dict]]]:
    """A multiset of versions (repeats, any order) cut into batches of any size."""
    rows = draw(versions())
    picks = draw(st.lists(st.sampled_from(rows), min_size=1, max_size=30))
    picks = draw(st.permutations(picks))
    return picks, cut(draw, picks)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_upsert_is_last_writer_wins_whatever_the_order_and_repeats(case):
    picks, batches = case
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStateStore(Path(tmp) / "s.sqlite")
        for batch in batches:
            store.upsert_jobs(table(batch))
        want = expected_lww(picks)
        assert store.jobs().equals(want)
        # Idempotent: delivering everything again changes nothing.
        assert store.upsert_jobs(table(picks)) == 0
        assert store.jobs().equals(want)


def test_upsert_counts_only_rows_that_changed(store):
    assert store.upsert_jobs(table([])) == 0
    assert store.upsert_jobs(table([job_row("a", T0, "e2"), job_row("b", T0, "e1")])) == 2
    assert store.upsert_jobs(table([job_row("a", T0, "e1")])) == 0  # same time, smaller id
    assert store.upsert_jobs(table([job_row("a", T0, "e2", title="x")])) == 0  # tie: kept
    assert store.upsert_jobs(table([job_row("a", T0, "e3", status="expired")])) == 1
    assert store.upsert_jobs(table([job_row("a", T0 - timedelta(microseconds=1), "e9")])) == 0
    got = store.jobs(job_ids=["a"]).to_pylist()
    assert [(r["last_event_id"], r["status"]) for r in got] == [("e3", "expired")]


def test_large_upserts_commit_in_chunks_and_still_keep_the_latest(store):
    rows = interleaved_rows(3, n=4500)  # several write transactions of CHUNK_ROWS
    assert store.upsert_jobs(table(rows)) >= 40
    assert store.jobs().equals(expected_lww(rows))
    assert store.upsert_jobs(table(rows[::-1])) == 0


def test_a_file_with_the_old_status_index_loses_it_and_still_answers(tmp_path):
    """Files made before the status index was dropped have it; opening them drops it (every
    upsert paid for it), and status queries still answer."""
    path = tmp_path / "old.sqlite"
    SqliteStateStore(path).upsert_jobs(
        table([job_row("a", T0, "e1"), job_row("b", T0, "e2", status="expired")])
    )
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE INDEX job_state_status ON job_state (status)")
    store = SqliteStateStore(path)
    with sqlite3.connect(path) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='index'")}
    assert "job_state_status" not in indexes and "job_state_board" in indexes
    assert store.jobs(status="expired")["job_id"].to_pylist() == ["b"]


def test_jobs_filters(store):
    store.upsert_jobs(
        table(
            [
                job_row("a", T0, "e1", board="b1"),
                job_row("b", T0, "e2", board="b1", status="expired"),
                job_row("c", T0, "e3", board="b2"),
            ]
        )
    )
    ids = lambda t: t["job_id"].to_pylist()  # noqa: E731
    assert ids(store.jobs()) == ["a", "b", "c"]
    assert ids(store.jobs(board="b1")) == ["a", "b"]
    assert ids(store.jobs(status="active")) == ["a", "c"]
    assert ids(store.jobs(board="b1", status="active")) == ["a"]
    assert ids(store.jobs(job_ids=["c", "a", "zz"])) == ["a", "c"]
    assert ids(store.jobs(job_ids=[])) == []
    assert ids(store.jobs(job_ids=(f"x{i}" for i in range(50_000)))) == []  # no variable limit
    assert store.jobs(board="nope").schema == JOB_STATE_SCHEMA
    with pytest.raises(TypeError):
        store.jobs(job_ids="a")


def test_timestamps_round_trip_exactly(store):
    edge = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2025, 3, 1, 12, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]
    rows = [job_row(f"j{i}", when, "e", updated_at=when) for i, when in enumerate(edge)]
    store.upsert_jobs(table(rows))
    got = store.jobs()
    assert got.schema.field("last_event_time").type == pa.timestamp("us", tz="UTC")
    assert got["last_event_time"].to_pylist() == edge
    assert got["updated_at"].to_pylist() == edge
    assert got["expired_at"].to_pylist() == [None] * len(edge)


def test_other_time_zones_and_units_are_converted_exactly(store):
    paris = table([job_row("a", T0, "e1")]).set_column(
        JOB_STATE_SCHEMA.get_field_index("last_event_time"),
        "last_event_time",
        pa.array([1_740_830_400_000_001_000], pa.timestamp("ns", tz="Europe/Paris")),
    )
    store.upsert_jobs(paris)
    assert store.jobs()["last_event_time"].to_pylist() == [T0 + timedelta(microseconds=1)]


def _with(column: str, array: pa.Array) -> pa.Table:
    base = table([job_row("a", T0, "e1")])
    return base.set_column(base.schema.get_field_index(column), column, array)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (table([job_row("a", T0, "e1")]).drop_columns(["status", "url"]), "url, status"),
        (_with("job_id", pa.array([None], pa.string())), "'job_id' has nulls"),
        (_with("last_event_id", pa.array([None], pa.string())), "'last_event_id' has nulls"),
        (_with("status", pa.array(["deleted"])), "status must be one of"),
        (_with("salary_min", pa.array(["abc"])), "abc"),
        (_with("last_event_time", pa.array([T0.replace(tzinfo=None)])), "naive"),
        (_with("last_event_time", pa.array([1], pa.timestamp("ns", tz="UTC"))), "lose data"),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_written(store, bad, message):
    with pytest.raises(ValueError, match=message):
        store.upsert_jobs(bad)
    assert store.jobs().num_rows == 0


def test_extra_columns_are_ignored(store):
    rows = table([job_row("a", T0, "e1")]).append_column("kind", pa.array(["job"]))
    assert store.upsert_jobs(rows) == 1


def test_transform_state_converts_to_job_rows(store):
    lines = [
        b'{"id":"e1","type":"job.posted","source":"hireloop","version":1,'
        b'"time":"2025-03-01T10:00:00.000001Z","data":{"job_id":"j1","title":"Dev",'
        b'"company":"Acme","location":"Oslo","employment_type":"full_time","remote":true,'
        b'"url":"https://x.example/j1"}}',
        b'{"id":"e2","type":"job.expired","source":"hireloop","version":1,'
        b'"time":"2025-03-02T10:00:00Z","data":{"job_id":"j1","reason":"filled"}}',
        b'{"id":"e3","type":"board.merged","source":"hireloop","version":1,'
        b'"time":"2025-03-03T10:00:00Z","data":{"absorbed_board":"jobnest",'
        b'"surviving_board":"hireloop"}}',
    ]
    parsed = parse_batch(b"\n".join(lines), "b1")
    state = apply_job_state(None, parsed.valid)
    rows = job_state_rows(state)
    assert store.upsert_jobs(rows) == 1
    (job,) = store.jobs().to_pylist()
    assert (job["job_id"], job["status"], job["reason"]) == ("j1", "expired", "filled")
    assert job["posted_at"] == datetime(2025, 3, 1, 10, 0, 0, 1, tzinfo=UTC)
    assert job["last_event_id"] == "e2"


# --- first claimant wins: event claims ---------------------------------------------------------


def claim(store: SqliteStateStore, batch_id: str, event_ids) -> dict[str, str]:
    """One batch's claims, alone in its call."""
    return store.claim_batches([(batch_id, event_ids)])[0]


def test_claims_first_claimant_wins_and_keeps_its_claims(store):
    assert claim(store, "b2", ["e1", "e2", "e1"]) == {"e1": "b2", "e2": "b2"}
    assert claim(store, "b1", iter(["e2", "e3"])) == {"e2": "b2", "e3": "b1"}
    assert claim(store, "b2", ["e1", "e2", "e3"]) == {"e1": "b2", "e2": "b2", "e3": "b1"}
    assert claim(store, "b3", []) == {}
    many = [f"x{i}" for i in range(5000)]  # several transactions
    assert set(claim(store, "b4", many).values()) == {"b4"}
    assert set(claim(store, "b5", many).values()) == {"b4"}
    with pytest.raises(TypeError):
        claim(store, "b1", "e1")
    with pytest.raises(ValueError):
        claim(store, "b1", ["e9", None])


def test_claim_batches_claims_in_order_as_one_call_per_batch_would(store, tmp_path):
    claims = [("b2", ["e1", "e2", "e1"]), ("b1", ["e2", "e3"]), ("b2", ["e3", "e4"]), ("b3", [])]
    one_by_one = SqliteStateStore(tmp_path / "other.sqlite")
    expected = [claim(one_by_one, batch, ids) for batch, ids in claims]
    assert store.claim_batches(claims) == expected
    assert expected[1] == {"e2": "b2", "e3": "b1"}  # an earlier entry claims first
    assert store.claim_batches([("b9", ["e1", "e4"])]) == [{"e1": "b2", "e4": "b2"}]
    with pytest.raises(ValueError):  # refused as a whole: nothing of it is claimed
        store.claim_batches([("b5", ["e5"]), ("b5", [None])])
    assert claim(store, "b6", ["e5"]) == {"e5": "b6"}


def test_claim_batches_inserted_in_id_order_still_let_the_earlier_batch_claim(store, tmp_path):
    # The store inserts a call's ids sorted, in chunks: ids shared by two batches, spread past
    # a chunk, go to the earlier batch even where the later one's ids sort first.
    many = [f"e{n:05d}" for n in range(2 * CHUNK_ROWS + 7)]
    claims = [("late", many[::-1][::2]), ("early", many[1::3]), ("later", many)]
    one_by_one = SqliteStateStore(tmp_path / "other.sqlite")
    expected = [claim(one_by_one, batch, ids) for batch, ids in claims]
    assert store.claim_batches(claims) == expected
    owners = expected[2]
    assert {owners[i] for i in many[::-1][::2]} == {"late"}
    assert {owners[i] for i in set(many[1::3]) - set(many[::-1][::2])} == {"early"}
    assert "later" in owners.values()


# --- the landing index --------------------------------------------------------------------------


def test_landing_index_is_idempotent_and_sorted(store):
    entries = [
        ("2025-03-01-11:00", "landing/2025-03-01/b2.jsonl", 40),
        ("2025-03-01-10:00", "landing/2025-03-01/b2.jsonl", 7),
        ("2025-03-01-10:00", "landing/2025-03-01/b1.jsonl", 100),
    ]
    assert store.index_batches("jobs", iter(entries)) == 3
    assert store.index_batches("jobs", entries) == 0
    assert store.index_batches("jobs", entries + entries) == 0
    assert store.batches_for("jobs", "2025-03-01-10:00") == [
        "landing/2025-03-01/b1.jsonl",
        "landing/2025-03-01/b2.jsonl",
    ]
    assert store.batch_counts("jobs", "2025-03-01-10:00") == {
        "landing/2025-03-01/b1.jsonl": 100,
        "landing/2025-03-01/b2.jsonl": 7,
    }
    assert store.partitions_for("jobs", "landing/2025-03-01/b2.jsonl") == [
        "2025-03-01-10:00",
        "2025-03-01-11:00",
    ]
    assert store.batches_for("other", "2025-03-01-10:00") == []
    assert store.partitions_for("jobs", "landing/nope.jsonl") == []


@pytest.mark.parametrize(
    "entries",
    [
        [("p", "new", 1), ("p", "b1", 99)],  # an immutable batch with another count
        [("p", "new", 1), ("p", "new", 2)],
        [("p", "new", -1)],
        [("p", "new", "3")],
        [("p", None, 3)],
    ],
)
def test_landing_index_refuses_inconsistent_entries(store, entries):
    store.index_batches("jobs", [("p", "b1", 5)])
    with pytest.raises(ValueError):
        store.index_batches("jobs", entries)
    assert store.batch_counts("jobs", "p") == {"b1": 5}


def test_state_path_is_under_figstream_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FIGSTREAM_HOME", str(tmp_path))
    assert state_path() == tmp_path.resolve() / "state" / "figstream.sqlite"
    assert state_path(tmp_path / "x") == tmp_path / "x" / "state" / "figstream.sqlite"


# --- concurrency --------------------------------------------------------------------------------


def interleaved_rows(seed: int, n: int = 600) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        when = T0 + timedelta(seconds=rng.randrange(50))
        rows.append(job_row(f"j{rng.randrange(40)}", when, f"e{i:04d}", title=f"v{i}"))
    return rows


WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_state import interleaved_rows, table
    from figstream.storage.state import SqliteStateStore

    path, worker, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    store = SqliteStateStore(path, busy_timeout=20)
    rows = interleaved_rows(7)[worker::2]
    while not go.exists():
        time.sleep(0.005)
    for start in range(0, len(rows), 5):
        batch = rows[start : start + 5]
        store.upsert_jobs(table(batch))
        store.index_batches("jobs", [("p", f"b{{worker}}-{{start}}", len(batch))])
    """
)


def test_two_processes_upserting_interleaved_rows(tmp_path):
    path, go = tmp_path / "s.sqlite", tmp_path / "go"  # the workers create the database
    script = WORKER.format(tests=str(Path(__file__).parent))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), str(w), str(go)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in (0, 1)
    ]
    go.touch()
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert not any("locked" in e for e in errors)
    rows = interleaved_rows(7)
    store = SqliteStateStore(path)
    assert store.jobs().equals(expected_lww(rows))
    assert len(store.batches_for("jobs", "p")) == 120


def test_threads_upserting_interleaved_rows(tmp_path):
    path = tmp_path / "s.sqlite"
    rows = interleaved_rows(11)
    errors: list[BaseException] = []

    owners: list[dict[str, str]] = []

    def work(worker: int, part: list[dict]) -> None:
        store = SqliteStateStore(path)
        try:
            for start in range(0, len(part), 3):
                store.upsert_jobs(table(part[start : start + 3]))
            # Every worker redelivers the same events: each must end up with one owner.
            events = [r["last_event_id"] for r in rows[::5]]
            owners.append(claim(store, f"b{worker}", events))
        except BaseException as exc:
            errors.append(exc)

    SqliteStateStore(path)
    threads = [threading.Thread(target=work, args=(i, rows[i::4])) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert SqliteStateStore(path).jobs().equals(expected_lww(rows))
    assert len(owners) == 4 and all(o == owners[0] for o in owners)
