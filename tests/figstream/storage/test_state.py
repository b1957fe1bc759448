"""The state stores, SQLite and DynamoDB (over moto server) from one suite: conditional job
writes (optimistic concurrency), last-writer-wins mergers, the earliest-wins dedupe registry,
search-index reads, first-claimant-wins event claims that expire, the landing index, exact
timestamps, bad inputs and concurrent writers. DynamoDB-only cases are in
``test_dynamo_state.py``."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from figstream.storage.dynamo_state import DynamoStateStore, ensure_tables
from figstream.storage.sqlite import CHUNK_ROWS
from figstream.storage.state import (
    DAY_SCHEMA,
    DAY_VERSIONED_SCHEMA,
    JOB_SCHEMA,
    JOB_STATE_SCHEMA,
    MERGER_DAY_SCHEMA,
    MERGER_SCHEMA,
    REGISTRY_SCHEMA,
    VERSIONED_SCHEMA,
    DayFold,
    DayRowsFolded,
    SqliteStateStore,
    StateStore,
    state_path,
)

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def job_row(job_id: str, when: datetime, event_id: str, **fields) -> dict:
    row = {name: None for name in JOB_SCHEMA.names}
    row.update(job_id=job_id, status="active", last_event_time=when, last_event_id=event_id)
    row.update(title=f"{job_id} @ {event_id}", board="hireloop", posted_at=when, version=0)
    row.update(fields)
    return row


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=VERSIONED_SCHEMA)


@dataclass
class Backend:
    name: str
    new: Callable[..., StateStore]  # a store of its own (fresh file or tables)
    reopen: Callable[..., StateStore]  # another store on the same data
    # A store for concurrent writers: the same, but on DynamoDB on a serial emulator.
    new_concurrent: Callable[..., StateStore] | None = None


SERIAL_MOTO = textwrap.dedent(
    """
    import sys
    from werkzeug.serving import run_simple
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
    )
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=False,
               request_handler=MotoRequestHandler)
    """
)


@pytest.fixture(scope="module")
def serial_moto_endpoint(tmp_path_factory: pytest.TempPathFactory):
    """A moto server that serves one request at a time. moto's own server is threaded and
    checks a write's condition and stores the item without a lock, so two concurrent
    conditional writes of one item can both pass there (a lost update that DynamoDB, which
    applies each conditional write atomically, never allows): tests of concurrent writers
    run here."""
    import urllib.request

    from tests.aws_server import set_credentials
    from tests.conftest import free_port, stop_group

    set_credentials()
    port = free_port()
    log = tmp_path_factory.mktemp("serial_moto") / "moto.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERIAL_MOTO, str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, f"the serial moto server exited; see {log}"
                time.sleep(0.1)
        yield endpoint
    finally:
        stop_group(proc, grace=5.0)


@pytest.fixture(params=["sqlite", "dynamo"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        files = iter(range(1_000_000))

        def new_sqlite(**kwargs) -> StateStore:
            return SqliteStateStore(tmp_path / f"s{next(files)}" / "figstream.sqlite", **kwargs)

        return Backend("sqlite", new_sqlite, lambda s, **kw: SqliteStateStore(s.path, **kw))
    from tests.aws_server import emulator_config

    endpoint = request.getfixturevalue("aws_config").endpoint_url

    def new_dynamo(endpoint: str = endpoint, **kwargs) -> StateStore:
        config = emulator_config(endpoint)  # a fresh name prefix: tables of its own
        ensure_tables(config)
        return DynamoStateStore(config, **kwargs)

    def new_concurrent(**kwargs) -> StateStore:
        return new_dynamo(request.getfixturevalue("serial_moto_endpoint"), **kwargs)

    def reopen(store: StateStore, **kwargs) -> StateStore:
        return DynamoStateStore(store.config, **kwargs)

    return Backend("dynamo", new_dynamo, reopen, new_concurrent)


@pytest.fixture
def store(backend: Backend) -> StateStore:
    return backend.new()


# --- job rows: one conditional write per job --------------------------------------------------

texts = st.none() | st.text(max_size=12)  # NUL, non-ASCII and astral characters included
times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@st.composite
def writes(draw) -> list[tuple[str, int, dict]]:
    """Writers putting rows of three jobs, each at a version it may or may not have read."""
    out = []
    for n in range(draw(st.integers(1, 25))):
        job = draw(st.sampled_from(["j1", "j2", "j3"]))
        fields = {"title": draw(texts), "remote": draw(st.none() | st.booleans()),
                  "salary_min": draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
                  "status": draw(st.sampled_from(["active", "expired", "merged"])),
                  "expired_at": draw(st.none() | times)}  # fmt: skip
        out.append((job, draw(st.integers(0, 4)), job_row(job, T0, f"e{n}", **fields)))
    return out


EXAMPLES = itertools.count()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(writes())
def test_a_job_write_lands_only_at_the_version_it_read(store, case):
    """Against a model: a write at the stored version (0 for a new job) lands and advances
    the version by one; any other is refused and changes nothing. (One store for every
    example, each example's jobs under its own prefix.)"""
    model: dict[str, tuple[int, dict]] = {}
    tag = f"x{next(EXAMPLES)}-"
    for job, version, row in case:
        row = {**row, "job_id": tag + job}
        refused = store.put_jobs(table([{**row, "version": version}]))
        stored = model.get(job, (0, None))[0]
        if version == stored:
            assert refused == []
            model[job] = (version + 1, row)
        else:
            assert refused == [tag + job]
    got = store.get_jobs([tag + j for j in ("j1", "j2", "j3", "nope")])
    want = table([{**row, "version": v} for _, (v, row) in sorted(model.items())])
    assert got.equals(want)


def big(backend: Backend, sqlite: int, dynamo: int) -> int:
    """A size past the store's batching: SQLite's transactions of CHUNK_ROWS, DynamoDB's
    calls of 25/100 items and its thread pool (moto serves a few hundred calls a second)."""
    return sqlite if backend.name == "sqlite" else dynamo


def test_put_jobs_reports_exactly_the_refused_jobs_of_a_large_call(store, backend):
    rows = [job_row(f"j{n:05d}", T0, "e1") for n in range(big(backend, 2 * CHUNK_ROWS + 11, 311))]
    assert store.put_jobs(table(rows)) == []
    again = [{**r, "title": "second", "version": 1 if n % 3 else 0} for n, r in enumerate(rows)]
    refused = store.put_jobs(table(again))
    assert refused == [r["job_id"] for n, r in enumerate(rows) if n % 3 == 0]
    got = store.get_jobs(r["job_id"] for r in rows)
    assert got["version"].to_pylist() == [1 if n % 3 == 0 else 2 for n in range(len(rows))]
    assert set(got["title"].filter(pa.compute.equal(got["version"], 2)).to_pylist()) == {"second"}


def test_reads_of_jobs_boards_and_the_serving_projection(store, backend):
    store.put_jobs(
        table(
            [
                job_row("a", T0, "e1", board="b1"),
                job_row("b", T0, "e2", board="b1", status="expired", expired_reason="filled"),
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
    many = big(backend, 50_000, 1_234)  # SQLite: no variable limit
    assert ids(store.jobs(job_ids=(f"x{i}" for i in range(many)))) == []
    assert store.jobs(board="nope").schema == JOB_STATE_SCHEMA
    assert store.jobs(job_ids=["b"])["reason"].to_pylist() == ["filled"]
    assert ids(store.get_jobs(f"x{i}" for i in range(many))) == []
    assert [ids(t) for t in store.board_jobs("b1", batch_rows=1)] == [["a"], ["b"]]
    assert [ids(t) for t in store.iter_jobs(batch_rows=2)] == [["a", "b"], ["c"]]
    assert store.counts() == {"jobs": 3, "active": 2, "registered": 0, "duplicates": 0}
    # A job whose board changes moves in the board index (the same-board update is refused).
    (a,) = store.get_jobs(["a"]).to_pylist()
    assert store.put_jobs(table([{**a, "board": "b2"}])) == []
    assert [ids(t) for t in store.board_jobs("b2")] == [["a", "c"]]
    assert store.put_jobs(table([{**a, "board": "b1"}])) == ["a"]  # read at the old version
    with pytest.raises(TypeError):
        store.jobs(job_ids="a")
    for bad in ("a", None):
        with pytest.raises(TypeError):
            store.get_jobs(bad)


def test_timestamps_round_trip_exactly(store):
    edge = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2025, 3, 1, 12, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]
    rows = [job_row(f"j{i}", when, "e", updated_at=when) for i, when in enumerate(edge)]
    store.put_jobs(table(rows))
    got = store.jobs()
    assert got.schema.field("last_event_time").type == pa.timestamp("us", tz="UTC")
    assert got["last_event_time"].to_pylist() == edge
    assert got["updated_at"].to_pylist() == edge
    assert got["expired_at"].to_pylist() == [None] * len(edge)


def test_other_time_zones_and_units_are_converted_exactly(store):
    paris = table([job_row("a", T0, "e1")]).set_column(
        VERSIONED_SCHEMA.get_field_index("last_event_time"),
        "last_event_time",
        pa.array([1_740_830_400_000_001_000], pa.timestamp("ns", tz="Europe/Paris")),
    )
    store.put_jobs(paris)
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
        (_with("version", pa.array([None], pa.int64())), "'version' has nulls"),
        (_with("version", pa.array([-1], pa.int64())), "version must be >= 0"),
        (_with("version", pa.array(["1.5"])), "1.5"),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_written(store, bad, message):
    with pytest.raises(ValueError, match=message):
        store.put_jobs(bad)
    assert store.jobs().num_rows == 0


def test_extra_columns_are_ignored(store):
    rows = table([job_row("a", T0, "e1")]).append_column("kind", pa.array(["job"]))
    assert store.put_jobs(rows) == []


# --- mergers and the dedupe registry -------------------------------------------------------------


def mergers(*rows: tuple) -> pa.Table:
    names = MERGER_SCHEMA.names
    return pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows], MERGER_SCHEMA)


def test_mergers_last_writer_wins_per_board(store):
    t1 = T0 + timedelta(hours=1)
    assert store.put_mergers(mergers(("beta", "alpha", T0, "m1"))) == 1
    assert store.put_mergers(mergers(("beta", "gamma", T0, "m0"))) == 0  # a tie, smaller id
    assert store.put_mergers(mergers(("beta", "gamma", t1, "m2"), ("x", "y", T0, "m3"))) == 2
    assert store.put_mergers(mergers(("beta", "alpha", T0, "m1"))) == 0  # older: kept
    got = store.mergers().to_pylist()
    assert [(r["board"], r["merged_into"]) for r in got] == [("beta", "gamma"), ("x", "y")]
    with pytest.raises(ValueError, match="'merged_into' has nulls"):
        store.put_mergers(mergers(("z", None, T0, "m4")))


def day_rows(*rows: tuple[str, str, str, int]) -> pa.Table:
    """(job_id, day, board, version) day rows."""
    out = []
    for job_id, day, board, version in rows:
        row = job_row(job_id, T0, f"e-{job_id}-{day}", board=board, version=version)
        out.append({**row, "day": day})
    return pa.Table.from_pylist(out, schema=DAY_VERSIONED_SCHEMA)


def test_day_rows_are_written_at_the_version_read_and_read_by_job_day_and_board(store):
    days = ["2025-03-01", "2025-03-02", "2025-03-03"]
    # a job id that is a prefix of another: its rows stay its own
    written = day_rows(
        *((job, day, "hireloop", 0) for job in ("j1", "j1 b", "j2") for day in days[:2]),
        ("j2", days[2], "jobly", 0),
    )
    assert store.put_job_days(written) == []
    assert store.put_job_days(day_rows(("j1", days[0], "hireloop", 0))) == [("j1", days[0])]
    got = store.get_job_days([("j1", days[0]), ("j2", days[2]), ("nope", days[0])])
    assert list(zip(got["job_id"].to_pylist(), got["day"].to_pylist(), strict=True)) == [
        ("j1", days[0]), ("j2", days[2]),
    ]  # fmt: skip
    assert got["version"].to_pylist() == [1, 1]
    again = day_rows(("j1", days[0], "hireloop", 1), ("j2", days[2], "jobly", 0))
    assert store.put_job_days(again) == [("j2", days[2])]  # stale version: refused
    assert store.get_job_days([("j1", days[0])])["version"].to_pylist() == [2]
    until = store.job_days(["j1", "j2"], days[1])
    assert until.schema == DAY_SCHEMA
    assert until["job_id"].to_pylist() == ["j1", "j1", "j2", "j2"]
    assert until["day"].to_pylist() == days[:2] * 2
    assert [i for chunk in store.day_job_ids(days[1], batch_rows=2) for i in chunk] == [
        "j1", "j1 b", "j2",
    ]  # fmt: skip
    assert [i for c in store.board_day_job_ids("jobly") for i in c] == ["j2"]
    batches = list(store.iter_job_days(days[2], batch_jobs=2))
    assert [b["job_id"].to_pylist() for b in batches] == [
        ["j1", "j1", "j1 b", "j1 b"], ["j2", "j2", "j2"],
    ]  # fmt: skip
    assert [b.num_rows for b in store.iter_job_days(days[0])] == [3]


def day_versions(store: StateStore, job: str, until: str) -> dict[str, int]:
    rows = store.job_days([job], until)
    held = store.get_job_days(zip(rows["job_id"].to_pylist(), rows["day"].to_pylist(), strict=True))
    return dict(zip(held["day"].to_pylist(), held["version"].to_pylist(), strict=True))


def test_a_fold_writes_each_jobs_row_and_deletes_its_others_together_or_not_at_all(store):
    days = ["2025-03-01", "2025-03-02", "2025-03-03"]
    assert store.put_job_days(
        day_rows(*((job, day, "hireloop", 0) for job in ("j1", "j2", "j3") for day in days))
    ) == []  # fmt: skip
    # j1: folded into its row of days[2]; j2: one delete at a stale version; j3: its row
    # written at a stale version. j2 and j3 are refused whole: nothing of theirs changes.
    rows = day_rows(("j1", days[2], "jobly", 1), ("j2", days[2], "jobly", 1),
                    ("j3", days[2], "jobly", 7))  # fmt: skip
    gone = [("j1", days[0], 1), ("j1", days[1], 1), ("j2", days[0], 1), ("j2", days[1], 5),
            ("j3", days[0], 1)]  # fmt: skip
    assert sorted(store.fold_job_days(rows, gone)) == ["j2", "j3"]
    assert day_versions(store, "j1", days[2]) == {days[2]: 2}
    assert store.job_days(["j1"], days[2])["board"].to_pylist() == ["jobly"]
    for job in ("j2", "j3"):
        assert day_versions(store, job, days[2]) == dict.fromkeys(days, 1), job
    # a new row (version 0) may take the join too
    assert store.fold_job_days(day_rows(("j2", "2025-03-04", "jobly", 0)),
                               [("j2", d, 1) for d in days]) == []  # fmt: skip
    assert day_versions(store, "j2", "2025-03-09") == {"2025-03-04": 1}
    bad = [
        ([("j9", days[0], 1)], "no row to write"),
        ([("j3", days[2], 1)], "the row of 2025-03-03 it writes"),
        ([("j3", days[0], 0)], "must be >= 1"),
    ]
    for gone, message in bad:
        with pytest.raises(ValueError, match=message):
            store.fold_job_days(day_rows(("j3", days[2], "hireloop", 1)), gone)
    with pytest.raises(ValueError, match="two rows"):
        store.fold_job_days(day_rows(("j3", days[2], "a", 1), ("j3", days[1], "b", 1)), [])


def test_a_job_with_more_rows_than_a_transaction_holds_is_folded_whole(store):
    days = [(T0 + timedelta(days=n)).date().isoformat() for n in range(150)]
    assert store.put_job_days(day_rows(*(("j1", d, "hireloop", 0) for d in days))) == []
    gone = [("j1", d, 1) for d in days[:-1]]
    assert store.fold_job_days(day_rows(("j1", days[-1], "jobly", 1)), gone) == []
    assert store.job_days(["j1"], days[-1])["day"].to_pylist() == [days[-1]]


def test_the_fold_horizon_only_moves_forward_and_refuses_reads_before_it(store):
    assert store.day_fold() == DayFold()
    store.put_job_days(day_rows(("j1", "2025-03-01", "hireloop", 0)))
    store.set_day_fold(DayFold(horizon="2025-03-05"))
    store.set_day_fold(DayFold(horizon="2025-03-02", done="2025-03-01"))
    assert store.day_fold() == DayFold(horizon="2025-03-05", done="2025-03-01")
    store.check_as_of("2025-03-05")
    assert store.job_days(["j1"], "2025-03-06").num_rows == 1
    with pytest.raises(DayRowsFolded, match=r"end of 2025-03-04 .* before 2025-03-05"):
        store.job_days(["j1"], "2025-03-04")
    with pytest.raises(DayRowsFolded):
        list(store.iter_job_days("2025-03-01"))


def test_merger_days_keep_the_latest_merger_of_each_board_and_day(store):
    def rows(*values: tuple) -> pa.Table:
        names = MERGER_DAY_SCHEMA.names
        return pa.Table.from_pylist(
            [dict(zip(names, v, strict=True)) for v in values], MERGER_DAY_SCHEMA
        )

    day1, day2 = "2025-03-01", "2025-03-02"
    early, late = T0, T0 + timedelta(hours=1)
    assert store.put_merger_days(rows(("b", day1, "x", late, "m2"), ("b", day2, "y", late, "m3")))
    assert store.put_merger_days(rows(("b", day1, "z", early, "m1"))) == 0  # earlier: lost
    held = store.merger_days(day2)
    assert held["merged_into"].to_pylist() == ["x", "y"]
    assert store.merger_days(day1)["merger_event_id"].to_pylist() == ["m2"]


def first_posting(job: str, key: str, minutes: int, event_id: str) -> dict:
    when = T0 + timedelta(minutes=minutes)
    return {"job_id": job, "dedupe_key": key, "board": job[0], "event_time": when,
            "event_id": event_id}  # fmt: skip


def registry(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist(list(rows), pa.schema(list(REGISTRY_SCHEMA)[:-1]))


def test_the_registry_keeps_each_jobs_earliest_posting_and_its_original(store):
    assert store.register(registry(first_posting("a1", "k", 10, "e1"))) == 1
    assert store.register(registry(first_posting("a1", "k2", 20, "e2"))) == 0  # later: kept
    assert store.register(registry(first_posting("a1", "k2", 5, "e3"))) == 1  # earlier: moves
    store.register(registry(first_posting("b1", "k2", 7, "e4"), first_posting("c1", "k", 1, "e5")))
    assert store.first_postings(["a1"])["dedupe_key"].to_pylist() == ["k2"]
    assert store.key_members(["k2"])["job_id"].to_pylist() == ["a1", "b1"]
    assert store.set_duplicates([("b1", "a1")]) == 1
    assert store.set_duplicates([("b1", "a1")]) == 0  # unchanged
    assert store.duplicates_of(["a1"])["job_id"].to_pylist() == ["b1"]
    assert store.registry()["job_id"].to_pylist() == ["c1", "a1", "b1"]  # by first posting
    assert store.counts()["duplicates"] == 1
    assert store.set_duplicates([("b1", None)]) == 1
    assert store.duplicates_of(["a1"]).num_rows == 0
    with pytest.raises(ValueError, match="'dedupe_key' has nulls"):
        store.register(registry({**first_posting("d1", "k", 1, "e6"), "dedupe_key": None}))


def test_the_index_shows_active_jobs_unless_they_duplicate_an_active_one(store):
    store.put_jobs(
        table(
            [
                job_row("a", T0, "e1"),  # the original
                job_row("b", T0, "e2"),  # a's duplicate: hidden while a is active
                job_row("c", T0, "e3", status="expired"),
                job_row("d", T0, "e4"),  # c's duplicate: shown, c is not active
            ]
        )
    )
    store.register(
        registry(
            *(
                first_posting(j, "k" if j in "ab" else "k2", n, f"p{j}")
                for n, j in enumerate("abcd")
            )
        )
    )
    store.set_duplicates([("b", "a"), ("d", "c")])
    rows = store.index_rows(["a", "b", "c", "d", "zz"])
    assert dict(zip(rows["job_id"].to_pylist(), rows["visible"].to_pylist(), strict=True)) == {
        "a": True, "b": False, "c": False, "d": True,
    }  # fmt: skip
    pages = [t["job_id"].to_pylist() for t in store.iter_index(batch_rows=1)]
    assert pages == [["a"], ["d"]]
    # a expires: b shows again.
    (a,) = store.get_jobs(["a"]).to_pylist()
    store.put_jobs(table([{**a, "status": "expired"}]))
    assert [r for t in store.iter_index() for r in t["job_id"].to_pylist()] == ["b", "d"]


# --- first claimant wins: event claims, expiring after a horizon --------------------------------


def claim(store: StateStore, batch_id: str, event_ids) -> dict[str, str]:
    """One batch's claims, alone in its call."""
    return store.claim_batches([(batch_id, event_ids)])[0]


def test_claims_first_claimant_wins_and_keeps_its_claims(store, backend):
    assert claim(store, "b2", ["e1", "e2", "e1"]) == {"e1": "b2", "e2": "b2"}
    assert claim(store, "b1", iter(["e2", "e3"])) == {"e2": "b2", "e3": "b1"}
    assert claim(store, "b2", ["e1", "e2", "e3"]) == {"e1": "b2", "e2": "b2", "e3": "b1"}
    assert claim(store, "b3", []) == {}
    many = [f"x{i}" for i in range(big(backend, 5000, 345))]  # several transactions
    assert set(claim(store, "b4", many).values()) == {"b4"}
    assert set(claim(store, "b5", many).values()) == {"b4"}
    with pytest.raises(TypeError):
        claim(store, "b1", "e1")
    with pytest.raises(ValueError):
        claim(store, "b1", ["e9", None])


def test_claim_batches_claims_in_order_as_one_call_per_batch_would(store, backend):
    claims = [("b2", ["e1", "e2", "e1"]), ("b1", ["e2", "e3"]), ("b2", ["e3", "e4"]), ("b3", [])]
    one_by_one = backend.new()
    expected = [claim(one_by_one, batch, ids) for batch, ids in claims]
    assert store.claim_batches(claims) == expected
    assert expected[1] == {"e2": "b2", "e3": "b1"}  # an earlier entry claims first
    assert store.claim_batches([("b9", ["e1", "e4"])]) == [{"e1": "b2", "e4": "b2"}]
    with pytest.raises(ValueError):  # refused as a whole: nothing of it is claimed
        store.claim_batches([("b5", ["e5"]), ("b5", [None])])
    assert claim(store, "b6", ["e5"]) == {"e5": "b6"}


def test_claim_batches_inserted_in_id_order_still_let_the_earlier_batch_claim(store, backend):
    # The store inserts a call's ids sorted, in chunks: ids shared by two batches, spread past
    # a chunk, go to the earlier batch even where the later one's ids sort first.
    many = [f"e{n:05d}" for n in range(big(backend, 2 * CHUNK_ROWS + 7, 307))]
    claims = [("late", many[::-1][::2]), ("early", many[1::3]), ("later", many)]
    one_by_one = backend.new()
    expected = [claim(one_by_one, batch, ids) for batch, ids in claims]
    assert store.claim_batches(claims) == expected
    owners = expected[2]
    assert {owners[i] for i in many[::-1][::2]} == {"late"}
    assert {owners[i] for i in set(many[1::3]) - set(many[::-1][::2])} == {"early"}
    assert "later" in owners.values()


def test_a_claim_keeps_its_claimants_digest(store):
    # The first claimant's digest stays with the claim; a later claimant (another batch, or
    # a second row of the same batch) reads it back to tell a duplicate from a conflict.
    got = store.claim_versions([("b1", ["h/e1", "h/e2", "h/e1"], ["d1", "d2", "dX"])])
    assert got == [{"h/e1": ("b1", "d1"), "h/e2": ("b1", "d2")}]
    got = store.claim_versions(
        [("b2", ["h/e1", "h/e3"], ["d1-other", "d3"]), ("b1", ["h/e3"], ["d3-late"])]
    )
    assert got == [{"h/e1": ("b1", "d1"), "h/e3": ("b2", "d3")}, {"h/e3": ("b2", "d3")}]
    # A retry of b1 gets its own claims back, its digests unchanged.
    assert store.claim_versions([("b1", ["h/e1"], ["d1"])]) == [{"h/e1": ("b1", "d1")}]
    # A claim made without a digest (an earlier version's) reads back None.
    assert store.claim_batches([("b3", ["h/e4"])]) == [{"h/e4": "b3"}]
    assert store.claim_versions([("b4", ["h/e4"], ["d4"])]) == [{"h/e4": ("b3", None)}]
    assert store.claim_batches([("b5", ["h/e1"])]) == [{"h/e1": "b1"}]
    with pytest.raises(ValueError, match="digests"):
        store.claim_versions([("b6", ["h/e5", "h/e6"], ["d5"])])
    with pytest.raises(ValueError, match="digests"):
        store.claim_versions([("b6", ["h/e5"], [5])])
    assert store.claim_versions([("b6", ["h/e5"], [None])]) == [{"h/e5": ("b6", None)}]


def test_an_expired_claim_is_taken_with_the_new_claimants_digest(backend):
    store = backend.new(claim_ttl_s=60)
    t = 1_000_000_000_000_000
    store.claim_versions([("b1", ["h/e1"], ["d1"])], now=t)
    after = t + 60_000_000
    assert store.claim_versions([("b2", ["h/e1"], ["d2"])], now=after) == [{"h/e1": ("b2", "d2")}]
    assert store.claim_versions([("b3", ["h/e1"], ["d1"])], now=after) == [{"h/e1": ("b2", "d2")}]


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


def test_a_claim_expires_after_its_horizon_and_is_purged(backend):
    store = backend.new(claim_ttl_s=60)
    t = 1_000_000_000_000_000
    assert store.claim_batches([("b1", ["e1", "e2"])], now=t) == [{"e1": "b1", "e2": "b1"}]
    # Within the horizon the first claimant keeps them, and may claim them again.
    late = t + 59_999_999
    assert store.claim_batches([("b2", ["e1"]), ("b1", ["e2"])], now=late) == [
        {"e1": "b1"},
        {"e2": "b1"},
    ]
    # After it, a redelivery is new: the next claimant owns the id.
    after = t + 60_000_000
    assert store.claim_batches([("b3", ["e1"])], now=after) == [{"e1": "b3"}]
    assert store.purge_claims(now=after) == 1  # e2's; e1 was claimed again
    assert store.purge_claims(now=after) == 0
    assert store.claim_batches([("b4", ["e1", "e2"])], now=after) == [{"e1": "b3", "e2": "b4"}]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="claim_ttl_s"):
            backend.reopen(store, claim_ttl_s=bad)


# --- concurrency --------------------------------------------------------------------------------

INCREMENTS = 40

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pyarrow as pa
    sys.path.insert(0, {tests!r})
    from test_state import increment
    from figstream.storage.state import SqliteStateStore

    path, worker, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    store = SqliteStateStore(path, busy_timeout=20)
    while not go.exists():
        time.sleep(0.005)
    retries = increment(store, worker)
    store.index_batches("jobs", [("p", f"b{{worker}}", retries)])
    """
)


def increment(store: StateStore, worker: int) -> int:
    """Add 1 to the salary of jobs j0..j2, INCREMENTS times each, by read and conditional
    write, retrying a refused write from a fresh read; returns the retries."""
    retries = 0
    for n in range(INCREMENTS):
        job = f"j{n % 3}"
        while True:
            rows = store.get_jobs([job]).to_pylist()
            row = rows[0] if rows else job_row(job, T0, "e0", salary_min=0)
            new = {**row, "salary_min": row["salary_min"] + 1, "last_event_id": f"w{worker}"}
            if not store.put_jobs(table([new])):
                break
            retries += 1
    return retries


def test_two_processes_incrementing_the_same_jobs_lose_no_write(tmp_path):
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
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert not any("locked" in e for e in errors)
    store = SqliteStateStore(path)
    got = store.get_jobs(["j0", "j1", "j2"])
    assert sum(got["salary_min"].to_pylist()) == 2 * INCREMENTS
    assert len(store.batches_for("jobs", "p")) == 2


def test_threads_incrementing_and_claiming_lose_no_write(backend):
    first = (backend.new_concurrent or backend.new)()
    errors: list[BaseException] = []
    owners: list[dict[str, str]] = []
    retries: list[int] = []

    def work(worker: int) -> None:
        store = backend.reopen(first)
        try:
            retries.append(increment(store, worker))
            # Every worker redelivers the same events: each must end up with one owner.
            owners.append(claim(store, f"b{worker}", [f"e{i}" for i in range(0, 600, 5)]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    got = backend.reopen(first).get_jobs(["j0", "j1", "j2"])
    assert sum(got["salary_min"].to_pylist()) == 4 * INCREMENTS
    assert len(owners) == 4 and all(o == owners[0] for o in owners)


def test_only_the_state_connections_keep_a_big_page_cache(tmp_path):
    """A kept connection fills its page cache as its file grows: the state's B-trees get
    CACHE_KIB, the append-mostly side files (trace index, books, dead letters) SIDE_CACHE_KIB,
    so that a run worker's memory does not grow by four big caches."""
    from figstream.storage.books import SqliteBooks
    from figstream.storage.deadletter import SqliteDeadLetterStore
    from figstream.storage.sqlite import CACHE_KIB, SIDE_CACHE_KIB
    from figstream.storage.trace import SqliteTraceIndex

    path = tmp_path / "figstream.sqlite"

    def cache_kib(store) -> int:
        return -store._db.connect().execute("PRAGMA cache_size").fetchone()[0]

    assert SIDE_CACHE_KIB < CACHE_KIB
    assert cache_kib(SqliteStateStore(path)) == CACHE_KIB
    assert cache_kib(SqliteBooks(path)) == SIDE_CACHE_KIB
    assert cache_kib(SqliteTraceIndex(tmp_path / "trace.sqlite")) == SIDE_CACHE_KIB
    assert cache_kib(SqliteDeadLetterStore(tmp_path / "deadletter.sqlite")) == SIDE_CACHE_KIB


# --- v2's columns: in both stores, and added to a file written before them ----------------------

V2 = {"salary_period": "month", "city": "Austin", "region": "Texas", "country_code": "US",
      "structure_at": T0, "structure_event_id": "e1", "structure_city": "Austin",
      "structure_region": "Texas", "structure_country_code": "US"}  # fmt: skip
V2_NULLS = dict.fromkeys(V2)


def test_v2_columns_round_trip_through_job_rows_day_rows_and_the_index(store):
    store.put_jobs(table([job_row("j1", T0, "e1", **V2), job_row("j2", T0, "e2")]))
    (got, bare) = store.get_jobs(["j1", "j2"]).to_pylist()
    assert {k: got[k] for k in V2} == V2 and {k: bare[k] for k in V2} == V2_NULLS
    shown = ["salary_period", "city", "region", "country_code"]
    (index,) = store.index_rows(["j1"]).to_pylist()
    assert {k: index[k] for k in shown} == {k: V2[k] for k in shown}
    (snapshot, _) = [r for page in store.iter_index() for r in page.to_pylist()]
    assert {k: snapshot[k] for k in shown} == {k: V2[k] for k in shown}
    (served,) = store.jobs(job_ids=["j1"]).to_pylist()
    assert {k: served[k] for k in shown} == {k: V2[k] for k in shown}
    days = day_rows(("j1", "2025-03-01", "b", 0))
    days = days.set_column(days.schema.get_field_index("city"), "city", pa.array(["Austin"]))
    assert store.put_job_days(days) == []
    assert store.job_days(["j1"], "2025-03-01")["city"].to_pylist() == ["Austin"]


# The columns of job rows and day rows after their key, as the SQLite store created them
# before v2's columns (a frozen copy: the test is of a file an earlier version wrote).
PRE_V2_ROW = ", ".join(
    [f"{name} TEXT" for name in ("board", "title", "company", "location", "employment_type")]
    + [f"{name} INTEGER" for name in ("remote", "salary_min", "salary_max")]
    + ["currency TEXT", "url TEXT", "dedupe_key TEXT"]
    + ["status TEXT NOT NULL CHECK (status IN ('active', 'expired', 'merged'))"]
    + ["posted_at INTEGER", "updated_at INTEGER", "posting_event_id TEXT"]
    + ["expired_at INTEGER", "expired_reason TEXT", "expiry_event_id TEXT"]
    + ["merged_into TEXT", "merged_at INTEGER", "merger_event_id TEXT"]
    + ["last_event_time INTEGER NOT NULL", "last_event_id TEXT NOT NULL"]
    + ["version INTEGER NOT NULL"]
)
PRE_V2_DDL = f"""
CREATE TABLE job_state (job_id TEXT PRIMARY KEY NOT NULL, {PRE_V2_ROW}) WITHOUT ROWID;
CREATE INDEX job_state_board ON job_state (board);
CREATE TABLE job_days (job_id TEXT NOT NULL, day TEXT NOT NULL, {PRE_V2_ROW},
    PRIMARY KEY (job_id, day)) WITHOUT ROWID;
"""


def test_a_store_written_before_v2_gains_the_columns_once_on_open(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "figstream.sqlite"
    when = int(T0.timestamp() * 1e6)
    with sqlite3.connect(path) as conn:
        conn.executescript(PRE_V2_DDL)
        conn.execute(
            "INSERT INTO job_state (job_id, board, title, location, status, posted_at,"
            " last_event_time, last_event_id, version)"
            " VALUES ('old', 'alpha', 'Engineer', 'Austin, Texas', 'active', ?, ?, 'e0', 3)",
            (when, when),
        )
        conn.execute(
            "INSERT INTO job_days (job_id, day, board, status, last_event_time, last_event_id,"
            " version) VALUES ('old', '2025-03-01', 'alpha', 'active', ?, 'e0', 1)",
            (when,),
        )
    for _ in range(2):  # a second open (or a concurrent one) finds nothing left to add
        store = SqliteStateStore(path)
        with sqlite3.connect(path) as conn:
            for name in ("job_state", "job_days"):
                held = [row[1] for row in conn.execute(f"PRAGMA table_info({name})")]
                assert set(V2) <= set(held) and len(held) == len(set(held))
    (old,) = store.get_jobs(["old"]).to_pylist()
    assert old["title"] == "Engineer" and old["version"] == 3
    assert {k: old[k] for k in V2} == V2_NULLS  # read as null until its next posting
    (index,) = store.index_rows(["old"]).to_pylist()
    assert index["visible"] and index["city"] is None
    # Written afterwards at the version read, with v2's columns, and read back.
    assert store.put_jobs(table([job_row("old", T0, "e1", version=3, **V2)])) == []
    assert store.put_jobs(table([job_row("new", T0, "e2", **V2)])) == []
    for job in ("old", "new"):
        (row,) = store.get_jobs([job]).to_pylist()
        assert {k: row[k] for k in V2} == V2
    assert store.get_jobs(["old"])["version"].to_pylist() == [4]
    days = store.get_job_days([("old", "2025-03-01")])
    assert days["version"].to_pylist() == [1] and days["city"].to_pylist() == [None]
    rows = day_rows(("old", "2025-03-01", "alpha", 1), ("old", "2025-03-02", "alpha", 0))
    rows = rows.set_column(rows.schema.get_field_index("region"), "region", pa.array(["TX"] * 2))
    assert store.put_job_days(rows) == []
    assert store.job_days(["old"], "2025-03-02")["region"].to_pylist() == ["TX", "TX"]
