"""The streaming steps over the state store (job state, dedupe registry, duplicates, search
index changes and snapshots) against a recompute over every event with the transform alone.

Bad inputs tried: batches applied out of event-time order (late events touching old hours),
the same batch replayed, a merger of a board with hundreds of jobs and a posting of that board
arriving after it, a job re-posted with another dedupe key earlier than its first posting (its
registry row moves between keys), an update of a job never posted, runs with no events, a
writer that changes a job between a run's read and its write, a run killed in the middle of
its writes (then retried), and homes written by earlier versions (Parquet buckets with their
manifests, and the single-object layout before them, beside an old state database).
"""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from figstream.storage.objects import LocalObjectStore, read_parquet, write_parquet
from figstream.storage.state import INDEX_COLUMNS, SqliteStateStore, StateStore, state_path
from figstream.streaming import cleaning, convert, fragments, index_export, table_ops
from figstream.streaming import dedupe as streaming_dedupe
from figstream.streaming import jobs as streaming_jobs
from figstream.streaming import stores as streaming_stores
from figstream.streaming import tables as streaming_tables
from figstream.streaming.ingest import claim_keys

START = datetime(2026, 11, 1, tzinfo=UTC)
BOARDS = ["alpha", "beta", "gamma"]
TEXTS = [
    ("Acme", "Engineer", "Berlin"),
    ("Acme", "Engineer", "Paris"),
    ("Initech", "Analyst", "Oslo"),
]


class RecordingStore(LocalObjectStore):
    """A local store that remembers the keys it was asked to write."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: list[str] = []

    @contextlib.contextmanager
    def writer(self, key):  # what put writes through too
        self.written.append(key)
        with super().writer(key) as sink:
            yield sink


def make_stores(home: Path, state: StateStore | None = None) -> streaming_stores.Stores:
    stores = streaming_stores.Stores.local(home, "2026-10-01-00:00", RecordingStore(home))
    if state is not None:
        stores.state = state
    return stores


BACKENDS = pytest.mark.parametrize("state", ["sqlite", "dynamo"], indirect=True)


@pytest.fixture
def state(request: pytest.FixtureRequest) -> StateStore | None:
    """The state store a scenario runs on (parametrised indirectly): the local profile's
    SQLite (None: the one ``Stores.local`` opens), or DynamoDB on moto server."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    from figstream.storage.dynamo_state import DynamoStateStore, ensure_tables

    config = request.getfixturevalue("aws_config")
    ensure_tables(config)
    return DynamoStateStore(config)


class Events:
    """Events in :data:`transform.EVENTS_SCHEMA`, numbered in the order they are made."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, kind: str, minutes: float, source: str, **data) -> dict:
        n = len(self.rows)
        row = {
            "event_id": f"e{n:05d}",
            "event_type": kind,
            "source": source,
            "version": 1,
            "event_time": START + timedelta(minutes=minutes),
            **data,
        }
        self.rows.append(row)
        return row

    def posting(self, kind: str, minutes: float, board: str, job: str, text: int = 0) -> dict:
        company, title, location = TEXTS[text]
        return self.add(
            kind, minutes, board, job_id=job, title=title, company=company, location=location,
            employment_type="full_time", remote=False, salary_min=40_000 + 1000 * text,
            salary_max=60_000, currency="EUR", url=f"https://{board}.example/jobs/{job}",
        )  # fmt: skip

    def table(self, rows: list[dict], batch_id: str) -> pa.Table:
        rows = [{**r, "batch_id": batch_id, "line_no": i + 1} for i, r in enumerate(rows)]
        names = streaming_tables.EVENTS_SCHEMA.names
        return pa.Table.from_pylist(
            [{n: r.get(n) for n in names} for r in rows], schema=streaming_tables.EVENTS_SCHEMA
        )


def land(stores: streaming_stores.Stores, events: pa.Table) -> list[str]:
    """Write a batch as the ingest step would (a fragment per hour and stream); its hours."""
    merged = pc.equal(events["event_type"], streaming_tables.MERGED)
    fragments.write_each(stores.objects, "raw_events", events.filter(pc.invert(merged)))
    fragments.write_each(stores.objects, "board_mergers", events.filter(merged))
    hours = pc.strftime(events["event_time"], format="%Y-%m-%d-%H:00", locale="C")
    return sorted(set(hours.to_pylist()))


def run(
    stores: streaming_stores.Stores, hours: list[str], batch_id: str, replay: bool = False
) -> None:
    """The streaming steps a sensor run does for one batch."""
    cleaning.clean(stores, hours, [batch_id])
    streaming_dedupe.dedupe(stores, hours, [batch_id])
    streaming_jobs.update_job_state(stores, hours, [batch_id])
    index_export.export_changes(stores, hours, [batch_id])
    if replay:  # an hour whose postings all became duplicates keeps its first fragment
        return
    # The batch's postings of jobs that are not duplicates (now), in their order.
    schema = streaming_tables.POSTINGS_SCHEMA
    clean = fragments.read_fragments(stores.objects, "clean_postings", hours, [batch_id], schema)
    kept = fragments.read_fragments(stores.objects, "deduped_postings", hours, [batch_id], schema)
    duplicates = read_duplicates(stores)["job_id"]
    assert kept.equals(clean.filter(pc.invert(pc.is_in(clean["job_id"], duplicates))))


def every_event(stores: streaming_stores.Stores) -> pa.Table:
    objects = stores.objects
    tables = [
        read_parquet(objects, key).cast(streaming_tables.EVENTS_SCHEMA)
        for table in streaming_stores.INGEST_TABLES.values()
        for key in objects.list(f"tables/{table}/")
    ]
    return table_ops.dedupe_events(pa.concat_tables(tables))


def read_duplicates(stores: streaming_stores.Stores) -> pa.Table:
    registry = stores.state.registry()
    duplicates = registry.filter(pc.is_valid(registry["duplicate_of"]))
    return (
        pa.table(
            {
                "job_id": duplicates["job_id"],
                "duplicate_of_job_id": duplicates["duplicate_of"],
                "dedupe_key": duplicates["dedupe_key"],
            }
        )
        .cast(streaming_tables.DUPLICATES_SCHEMA)
        .sort_by("job_id")
    )


def assert_equals_recompute(stores: streaming_stores.Stores) -> None:
    events = every_event(stores)
    state = table_ops.apply_job_state(None, events)
    dedupe = table_ops.dedupe_postings(table_ops.clean_postings(events))
    assert streaming_jobs.read_state(stores.state).equals(state)
    registry = stores.state.registry().select(streaming_tables.CANONICAL_SCHEMA.names)
    assert registry.cast(streaming_tables.CANONICAL_SCHEMA).equals(dedupe.canonical)
    assert read_duplicates(stores).equals(dedupe.duplicates)
    index = table_ops.search_index(state, dedupe.duplicates, INDEX_COLUMNS)
    # The store's own index, and the one a consumer builds from snapshot and changes.
    served = pa.concat_tables(
        [
            index_export.INDEX_SCHEMA.empty_table(),
            *(p.cast(index_export.INDEX_SCHEMA) for p in stores.state.iter_index(batch_rows=7)),
        ]
    )
    assert served.cast(index_export.INDEX_SCHEMA).equals(index.cast(index_export.INDEX_SCHEMA))
    built = index_export.current_index(stores.objects)
    assert built.equals(index.cast(index_export.INDEX_SCHEMA))


# random_day draws its times on a ~50-hour day and squeezes them into a quarter of it: the
# same events in the same event-time order over ~12 hours, with late events still crossing
# hours in most batches (each batch's steps cost grows with the hours it touches).
SQUEEZE = 0.25


def random_day(seed: int) -> tuple[Events, list[list[dict]]]:
    """~350 events of 200 jobs on three boards over ~12 hours, shuffled into batches (so most
    batches hold late events), with re-posts under other keys and a merger of beta into
    alpha."""
    rng = random.Random(seed)
    events = Events()

    def at(minutes: float) -> float:
        return minutes * SQUEEZE

    for n in range(200):
        board, job = rng.choice(BOARDS), f"{rng.choice(BOARDS)}-{n:04d}"
        posted = rng.uniform(0, 2000)
        events.posting(streaming_tables.POSTED, at(posted), board, job, rng.randrange(len(TEXTS)))
        if rng.random() < 0.3:
            when = at(posted + rng.uniform(1, 600))
            events.posting(streaming_tables.UPDATED, when, board, job, 0)
        if rng.random() < 0.15:  # re-posted under another key, sometimes before the first
            when = at(posted + rng.uniform(-300, 300))
            events.posting(streaming_tables.POSTED, when, board, job, rng.randrange(len(TEXTS)))
        if rng.random() < 0.3:
            events.add(streaming_tables.EXPIRED, at(posted + rng.uniform(1, 900)), board,
                       job_id=job, reason="filled")  # fmt: skip
    events.posting(streaming_tables.UPDATED, at(50), "gamma", "gamma-never-posted", 2)
    events.add(
        streaming_tables.MERGED, at(1200), "alpha", absorbed_board="beta", surviving_board="alpha"
    )
    rows = events.rows[:]
    rng.shuffle(rows)
    cuts = sorted(rng.sample(range(1, len(rows)), 7))
    return events, [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]


# chunk: jobs folded (and index rows read) at once, as a busy hour is taken a slice at a time
# SQLite only: on DynamoDB over moto (a few hundred calls a second, fewer on a busy machine) one
# seed took 9 minutes (it passed); the merger and re-post scenarios below run on both stores.
@pytest.mark.parametrize(("seed", "chunk"), [(1, None), (2, None), (3, 7), (4, None), (5, 3)])
def test_the_store_equals_a_recompute_over_every_event(
    tmp_path: Path, seed: int, chunk: int | None, monkeypatch: pytest.MonkeyPatch, state
) -> None:
    if chunk is not None:
        monkeypatch.setattr(streaming_jobs, "JOBS_PER_APPLY", chunk)
        monkeypatch.setattr(index_export, "JOBS_PER_READ", chunk)
        monkeypatch.setattr(streaming_dedupe, "JOBS_PER_PASS", chunk)
        monkeypatch.setattr(index_export, "SNAPSHOT_PAGE_ROWS", chunk)
    stores = make_stores(tmp_path, state)
    events, batches = random_day(seed)
    for n, rows in enumerate(batches):
        batch_id = f"b{n:02d}"
        run(stores, land(stores, events.table(rows, batch_id)), batch_id)
        assert_equals_recompute(stores)
        if n == 3:  # a daily snapshot midway: the later changes complete it
            report = index_export.export_snapshot(stores, "2026-11-01")
            assert report.rows == len(index_export.current_index(stores.objects))
    # Replaying a batch (at-least-once delivery) changes nothing: no job is written again.
    versions = (
        streaming_jobs.read_state(stores.state).num_rows,
        stores.state.get_jobs(every_event(stores)["job_id"].drop_null().to_pylist()),
    )
    hours = land(stores, events.table(batches[3], "b03"))
    run(stores, hours, "b03", replay=True)
    report = streaming_jobs.update_job_state(stores, hours, ["b03"])
    assert report.inserted == report.updated == 0 and report.unchanged > 0
    again = stores.state.get_jobs(versions[1]["job_id"].to_pylist())
    assert again.equals(versions[1])  # versions included: nothing was rewritten
    assert_equals_recompute(stores)


# 300 jobs merged on DynamoDB over moto server: the dynamo case runs in `make test-slow`.
@pytest.mark.parametrize(
    "state", ["sqlite", pytest.param("dynamo", marks=pytest.mark.slow)], indirect=True
)
def test_a_merger_reaches_every_job_of_the_absorbed_board(tmp_path: Path, state) -> None:
    stores = make_stores(tmp_path, state)
    events = Events()
    jobs = [f"beta-{n:04d}" for n in range(300)]
    first = [
        events.posting(streaming_tables.POSTED, n / 10, "beta", job, n % 3)
        for n, job in enumerate(jobs)
    ]
    first.append(events.posting(streaming_tables.POSTED, 5, "alpha", "alpha-0001", 1))
    run(stores, land(stores, events.table(first, "b00")), "b00")
    merger = events.add(streaming_tables.MERGED, 120, "alpha", absorbed_board="beta",
                        surviving_board="alpha")  # fmt: skip
    hours = land(stores, events.table([merger], "b01"))
    run(stores, hours, "b01")
    state = streaming_jobs.read_state(stores.state)
    of_beta = state.filter(
        pc.and_(pc.equal(state["board"], "beta"), pc.equal(state["kind"], "job"))
    )
    assert of_beta.num_rows == 300 and set(of_beta["status"].to_pylist()) == {"merged"}
    assert set(of_beta["merged_into"].to_pylist()) == {"alpha"}
    # The hour's index changes delete every beta job the site showed.
    changes = index_export.read_changes(stores.objects, hours, ["b01"])
    deleted = changes.filter(pc.equal(changes["op"], "delete"))["job_id"].to_pylist()
    assert set(jobs) - set(deleted) == set()
    assert index_export.current_index(stores.objects)["job_id"].to_pylist() == ["alpha-0001"]
    # A beta posting timed before the merger but arriving after it still meets it.
    late = events.posting(streaming_tables.POSTED, 60, "beta", "beta-late", 2)
    run(stores, land(stores, events.table([late], "b02")), "b02")
    assert stores.state.jobs(job_ids=["beta-late"])["status"].to_pylist() == ["merged"]
    assert_equals_recompute(stores)


@BACKENDS
def test_a_job_reposted_earlier_under_another_key_moves_between_keys(tmp_path: Path, state) -> None:
    stores = make_stores(tmp_path, state)
    events = Events()
    rows = [
        events.posting(streaming_tables.POSTED, 100, "alpha", "alpha-1", 0),
        events.posting(streaming_tables.POSTED, 50, "beta", "beta-1", 0),  # alpha-1 duplicates it
        events.posting(streaming_tables.POSTED, 70, "gamma", "gamma-1", 2),
    ]
    run(stores, land(stores, events.table(rows, "b00")), "b00")
    assert read_duplicates(stores)["job_id"].to_pylist() == ["alpha-1"]
    # alpha-1 first posted at 10 with key 2: it now holds key 2 (gamma-1 duplicates it) and
    # no longer duplicates beta-1.
    moved = events.posting(streaming_tables.POSTED, 10, "alpha", "alpha-1", 2)
    hours = land(stores, events.table([moved], "b01"))
    run(stores, hours, "b01")
    assert read_duplicates(stores).select(["job_id", "duplicate_of_job_id"]).to_pylist() == [
        {"job_id": "gamma-1", "duplicate_of_job_id": "alpha-1"}
    ]
    # Both keys' members were told: gamma-1 leaves the index, beta-1 stays.
    changes = index_export.read_changes(stores.objects, hours, ["b01"])
    ops = dict(zip(changes["job_id"].to_pylist(), changes["op"].to_pylist(), strict=True))
    assert ops == {"alpha-1": "upsert", "beta-1": "upsert", "gamma-1": "delete"}
    assert_equals_recompute(stores)


class CountingStore(SqliteStateStore):
    """Records the job ids a run asks for, and refuses a whole-state read."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.asked: list[str] = []

    def get_jobs(self, job_ids):
        ids = list(job_ids)
        self.asked += ids
        return super().get_jobs(ids)

    def iter_jobs(self, batch_rows: int = 50_000):
        raise AssertionError("a run read the whole state")

    def iter_index(self, batch_rows: int = 50_000):
        raise AssertionError("a run read the whole index")


def test_a_run_reads_only_the_jobs_its_events_name(tmp_path: Path) -> None:
    stores = make_stores(tmp_path)
    events, batches = random_day(7)
    for n, rows in enumerate(batches):
        run(stores, land(stores, events.table(rows, f"b{n:02d}")), f"b{n:02d}")
    stores.state = CountingStore(state_path(tmp_path))
    update = events.posting(streaming_tables.UPDATED, 3000, "alpha", "alpha-0000", 1)
    hours = land(stores, events.table([update], "b99"))
    cleaning.clean(stores, hours, ["b99"])
    streaming_dedupe.dedupe(stores, hours, ["b99"])
    report = streaming_jobs.update_job_state(stores, hours, ["b99"])
    changes = index_export.export_changes(stores, hours, ["b99"])
    assert set(stores.state.asked) == {"alpha-0000"}
    assert report.events == 1 and report.inserted + report.updated + report.unchanged == 1
    assert changes.upserts + changes.deletes >= 1
    # No events: nothing written.
    stores.objects.written.clear()
    run(stores, ["2026-11-05-00:00"], "nothing")
    assert stores.objects.written == []


def test_job_state_reports_inserted_updated_unchanged_and_stale(tmp_path: Path) -> None:
    stores = make_stores(tmp_path)
    events = Events()
    first = [
        events.posting(streaming_tables.POSTED, 10, "alpha", "a-1"),
        events.posting(streaming_tables.POSTED, 11, "alpha", "a-2"),
    ]
    hours = land(stores, events.table(first, "b00"))
    report = streaming_jobs.update_job_state(stores, hours, ["b00"])
    assert (report.inserted, report.updated, report.unchanged, report.stale) == (2, 0, 0, 0)
    assert report.metadata()["lag_seconds_max"] > 0
    later = [
        events.posting(streaming_tables.UPDATED, 30, "alpha", "a-1", 1),  # newer: updates
        events.posting(streaming_tables.UPDATED, 5, "alpha", "a-2", 1),  # older: stale
        events.add(streaming_tables.EXPIRED, 20, "alpha", job_id="a-1", reason="filled"),  # stale
        events.posting(streaming_tables.POSTED, 12, "beta", "b-1"),  # new
    ]
    hours = land(stores, events.table(later, "b01"))
    report = streaming_jobs.update_job_state(stores, hours, ["b01"])
    assert (report.inserted, report.updated, report.unchanged, report.stale) == (1, 1, 1, 2)
    again = streaming_jobs.update_job_state(stores, hours, ["b01"])  # idempotent
    assert (again.inserted, again.updated, again.unchanged, again.stale) == (0, 0, 3, 2)


class MeddlingStore(SqliteStateStore):
    """Between a run's read of a job and its write, another writer applies an event to it
    (once per job): the conditional write must be refused, and the run must merge again."""

    def __init__(self, path: Path, other: pa.Table) -> None:
        super().__init__(path)
        self.other, self.meddled = other, set()

    def put_jobs(self, rows):
        targets = set(rows["job_id"].to_pylist()) & set(self.other["job_id"].to_pylist())
        targets -= self.meddled
        if targets:
            self.meddled |= targets
            plain = SqliteStateStore(self.path)
            events = self.other.filter(pc.is_in(self.other["job_id"], pa.array(sorted(targets))))
            streaming_jobs.apply_to_jobs(
                plain, sorted(targets), events, table_ops.merger_rows(plain.mergers())
            )
        return super().put_jobs(rows)


def test_a_job_changed_between_read_and_write_is_merged_again(tmp_path: Path) -> None:
    stores = make_stores(tmp_path)
    events, batches = random_day(8)
    for n, rows in enumerate(batches[:4]):
        run(stores, land(stores, events.table(rows, f"b{n:02d}")), f"b{n:02d}")
    # Another writer updates every job of batch 4 in the middle of batch 4's run.
    mine = [r for r in batches[4] if r.get("job_id")]
    updates = [
        events.posting(streaming_tables.UPDATED, 3000 + n, r["source"], r["job_id"], 1)
        for n, r in enumerate(mine)
    ]
    other = events.table(updates, "b98")
    stores.state = MeddlingStore(state_path(tmp_path), other)
    hours = land(stores, events.table(batches[4], "b04"))
    report = streaming_jobs.update_job_state(stores, hours, ["b04"])
    assert report.retried >= len({r["job_id"] for r in mine})
    stores.state = SqliteStateStore(state_path(tmp_path))
    run(stores, hours, "b04")
    run(stores, land(stores, other), "b98")  # the other writer's events, landed (a replay here)
    for n, rows in enumerate(batches[5:], start=5):
        run(stores, land(stores, events.table(rows, f"b{n:02d}")), f"b{n:02d}")
    assert_equals_recompute(stores)


class DyingStore(SqliteStateStore):
    """Dies (as a killed run) after ``jobs`` conditional job writes."""

    def __init__(self, path: Path, jobs: int) -> None:
        super().__init__(path)
        self.left = jobs

    def put_jobs(self, rows):
        if rows.num_rows > self.left:
            super().put_jobs(rows.slice(0, self.left))
            raise OSError("killed mid-write")
        self.left -= rows.num_rows
        return super().put_jobs(rows)


def test_a_run_killed_mid_write_converges_when_retried(tmp_path: Path) -> None:
    stores = make_stores(tmp_path)
    events, batches = random_day(9)
    for n, rows in enumerate(batches[:3]):
        run(stores, land(stores, events.table(rows, f"b{n:02d}")), f"b{n:02d}")
    hours = land(stores, events.table(batches[3], "b03"))
    stores.state = DyingStore(state_path(tmp_path), jobs=5)
    with pytest.raises(OSError, match="killed"):
        run(stores, hours, "b03")
    stores.state = SqliteStateStore(state_path(tmp_path))
    run(stores, hours, "b03")
    for n, rows in enumerate(batches[4:], start=4):
        run(stores, land(stores, events.table(rows, f"b{n:02d}")), f"b{n:02d}")
    assert_equals_recompute(stores)


OLD_STATE_DDL = """
CREATE TABLE job_state (job_id TEXT PRIMARY KEY NOT NULL, board TEXT, title TEXT,
    status TEXT NOT NULL, last_event_time INTEGER NOT NULL, last_event_id TEXT NOT NULL)
    WITHOUT ROWID;
CREATE INDEX job_state_board ON job_state (board, status);
CREATE TABLE event_claims (event_id TEXT PRIMARY KEY NOT NULL, batch_id TEXT NOT NULL,
    claimed_at INTEGER NOT NULL) WITHOUT ROWID;
"""


@pytest.mark.parametrize("layout", ["buckets", "single objects"])
def test_a_home_written_by_an_earlier_version_is_converted_once(
    tmp_path: Path, layout: str
) -> None:
    import sqlite3

    events, batches = random_day(5)
    old = pa.concat_tables(events.table(rows, f"b{n:02d}") for n, rows in enumerate(batches[:4]))
    # The earlier state database: a serving copy of job_state, and claims with no expiry.
    path = state_path(tmp_path)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_STATE_DDL)
        conn.execute("INSERT INTO job_state VALUES ('x', 'alpha', 't', 'active', 1, 'e')")
        claimed = int(datetime.now(UTC).timestamp() * 1e6)
        for row in batches[0]:
            conn.execute(
                "INSERT INTO event_claims VALUES (?, 'b00', ?)", (row["event_id"], claimed)
            )
    stores = make_stores(tmp_path)
    first_id = batches[0][0]["event_id"]
    assert stores.state.claim_batches([("other", [first_id])]) == [{first_id: "b00"}]
    for n, rows in enumerate(batches[:4]):
        land(stores, events.table(rows, f"b{n:02d}"))
    state = table_ops.apply_job_state(None, old)
    dedupe = table_ops.dedupe_postings(table_ops.clean_postings(old))
    objects = stores.objects
    if layout == "buckets":  # two job buckets, mergers apart, registry by job and by key
        jobs = state.filter(pc.equal(state["kind"], "job"))
        half = jobs.num_rows // 2
        write_parquet(objects, "tables/job_state/jobs/000-of-002.parquet", jobs.slice(0, half))
        write_parquet(objects, "tables/job_state/jobs/001-of-002.parquet", jobs.slice(half))
        write_parquet(objects, "tables/job_state/active/000-of-002.parquet",
                      table_ops.search_index(jobs))  # fmt: skip
        write_parquet(objects, convert.MERGERS, state.filter(pc.equal(state["kind"], "merger")))
        write_parquet(objects, "tables/postings_registry/by_job/000-of-001.parquet",
                      dedupe.canonical)  # fmt: skip
        write_parquet(objects, "tables/postings_registry/by_key/000-of-001.parquet",
                      dedupe.canonical)  # fmt: skip
        write_parquet(objects, "tables/duplicates/000-of-001.parquet", dedupe.duplicates)
        for key in convert.MANIFESTS:
            objects.put(key, orjson.dumps({"buckets": 2, "token": "t", "counts": {}}))
    else:
        write_parquet(objects, convert.JOB_STATE_OBJECT, state)
        write_parquet(objects, convert.REGISTRY_OBJECT, dedupe.canonical)
        write_parquet(objects, "tables/duplicates/current.parquet", dedupe.duplicates)
    objects.put("tables/search_index/source.json", b"{}")
    write_parquet(objects, "tables/search_index/snapshot.parquet", table_ops.search_index(state))
    for n, rows in enumerate(batches[4:], start=4):
        run(stores, land(stores, events.table(rows, f"b{n:02d}")), f"b{n:02d}")
    left = [k for k in objects.list("tables/")
            if k.startswith(("tables/job_state/", "tables/postings_registry/",
                             "tables/duplicates/", "tables/search_index/s"))]  # fmt: skip
    assert left == []
    assert not convert.old_state_present(objects)
    assert_equals_recompute(stores)
    assert "x" not in stores.state.jobs()["job_id"].to_pylist()  # the old serving copy is gone
    # The old claims were scoped by their event's hour: a redelivery of a converted event is
    # still dropped; the bare claims are gone.
    e0 = next(r for r in batches[0] if r["event_type"] != streaming_tables.MERGED)
    hour = e0["event_time"].strftime("%Y-%m-%d-%H:00")
    scoped = claim_keys(hour, pa.array([e0["event_id"]]))
    assert stores.state.claim_batches([("other", scoped)]) == [{scoped[0]: "b00"}]
    assert stores.state.claim_batches([("other", [e0["event_id"]])]) == [{e0["event_id"]: "other"}]


def test_an_earlier_versions_job_rows_get_the_upcasters_v2_columns_on_conversion() -> None:
    """State Parquet from before v2 has no v2 columns: its job rows (all from v1 events) get
    what the v1 -> v2 upcaster derives from v1's columns; merger rows get none."""
    from figstream.events.postings import FLAT_V2_COLUMNS

    rows = [
        {"kind": "job", "job_id": "j1", "location": "Portland, OR", "salary_min": 90_000,
         "salary_max": 120_000, "currency": "USD", "title": "Engineer"},
        {"kind": "job", "job_id": "j2", "location": "Berlin, DE", "salary_min": None,
         "salary_max": None, "currency": "USD", "title": "Engineer"},
        {"kind": "merger", "job_id": None, "location": None, "salary_min": None,
         "salary_max": None, "currency": None, "title": None},
    ]  # fmt: skip
    schema = pa.schema([f.with_nullable(True) for f in streaming_tables.STATE_SCHEMA])
    old = pa.Table.from_pylist(
        [{**{n: None for n in schema.names}, **row} for row in rows], schema=schema
    )
    old = old.drop_columns([c for c in old.column_names if c in FLAT_V2_COLUMNS])
    got = convert._v2_columns(old)
    assert got["city"].to_pylist() == ["Portland", "Berlin", None]
    assert got["region"].to_pylist() == ["OR", "DE", None]  # DE reads as Delaware, as v1 did
    assert got["country_code"].to_pylist() == ["US", "US", None]
    assert got["salary_period"].to_pylist() == ["year", None, None]
    assert convert._v2_columns(got) is got  # a part that has them is left as it is


# --- v2 postings: salary period and structured location through the state ------------------------

V2_FIELDS = ["salary_period", "city", "region", "country_code"]


def envelope(event_id: str, kind: str, minutes: int, version: int, job: str, **data) -> dict:
    """A posting as a producer writes it (parsed and upcast by the ingest step's parser)."""
    body = {"job_id": job, "title": "Engineer", "company": "Acme", "employment_type": "full_time",
            "remote": False, "url": f"https://alpha.example/{job}", **data}  # fmt: skip
    when = (START + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"id": event_id, "type": kind, "source": "alpha", "version": version, "time": when,
            "data": body}  # fmt: skip


def parsed(records: list[dict], batch_id: str) -> pa.Table:
    from figstream.streaming.parse import parse_batch

    batch = parse_batch(b"\n".join(orjson.dumps(r) for r in records), batch_id)
    assert batch.rejected.num_rows == 0, batch.rejected.to_pylist()
    return batch.valid


def v2_fields(table: pa.Table, job: str) -> dict:
    row = table.filter(pc.equal(table["job_id"], job)).to_pylist()
    assert len(row) == 1, row
    return {name: row[0][name] for name in V2_FIELDS}


AUSTIN = {"city": "Austin", "region": "Texas", "country_code": "US"}


@BACKENDS
def test_v2_fields_reach_job_state_the_index_changes_and_the_snapshot(
    tmp_path: Path, state
) -> None:
    stores = make_stores(tmp_path, state)
    records = [
        envelope("p1", "job.posted", 10, 2, "j1", location=AUSTIN,
                 salary={"min": 5000, "max": 6000, "currency": "USD", "period": "month"}),
        # v1: what the upcaster derives ("City, ST" is a US state; v1 salaries are annual)
        envelope("p2", "job.posted", 11, 1, "j2", location="Portland, OR", salary_min=90_000),
        envelope("p3", "job.posted", 12, 1, "j3", location="Somewhere"),  # no salary, no shape
    ]  # fmt: skip
    run(stores, land(stores, parsed(records, "b00")), "b00")
    austin = {"salary_period": "month", **AUSTIN}
    portland = {"salary_period": "year", "city": "Portland", "region": "OR", "country_code": "US"}
    nowhere = {"salary_period": None, "city": "Somewhere", "region": None, "country_code": None}
    expected = {"j1": austin, "j2": portland, "j3": nowhere}
    served = stores.state.jobs()
    changes = index_export.read_changes(stores.objects, ["2026-11-01-00:00"])
    assert set(changes["op"].to_pylist()) == {"upsert"}
    report = index_export.export_snapshot(stores, "2026-11-01")
    snapshot = read_parquet(stores.objects, report.key)
    for job, fields in expected.items():
        assert v2_fields(served, job) == fields
        assert v2_fields(changes, job) == fields
        assert v2_fields(snapshot, job) == fields
        assert v2_fields(index_export.current_index(stores.objects), job) == fields
    assert snapshot.schema.names == INDEX_COLUMNS
    # Legacy's format keeps v1's columns only: the v1 rendering of the v2 location.
    from figstream.migration.views import SNAPSHOT_COLUMNS, render_snapshot

    as_legacy = render_snapshot(snapshot)
    assert as_legacy.column_names == list(SNAPSHOT_COLUMNS)
    assert set(V2_FIELDS).isdisjoint(SNAPSHOT_COLUMNS)
    assert as_legacy.filter(pc.equal(as_legacy["job_id"], "j1"))["location"].to_pylist() == [
        "Austin, Texas"
    ]


# A v2 posting of Austin, then v1 updates: of the same place (its string is the v1 rendering
# of the v2 structure, which the upcaster reads as a city alone), of another place, and of
# Austin again; then a v2 update that names another place.
HISTORY = [
    envelope("a", "job.posted", 10, 2, "j1", location=AUSTIN,
             salary={"min": 5000, "max": 6000, "currency": "USD", "period": "month"}),
    envelope("b", "job.updated", 20, 1, "j1", location="Austin, Texas", salary_min=70_000),
    envelope("c", "job.updated", 30, 1, "j1", location="Dallas, TX"),
    envelope("d", "job.updated", 40, 1, "j1", location="Austin, Texas"),
    envelope("e", "job.updated", 50, 2, "j1",
             location={"city": "Lyon", "region": "Auvergne-Rhone-Alpes", "country_code": "FR"}),
]  # fmt: skip
AFTER = [  # the job's v2 fields after each event of HISTORY
    {"salary_period": "month", **AUSTIN},
    # The v1 update names the same place: the structure stays (the upcaster cannot derive it);
    # its salary is annual, as the upcaster says of every v1 salary.
    {"salary_period": "year", **AUSTIN},
    # Another place: what the upcaster derives, not the old place's structure.
    {"salary_period": None, "city": "Dallas", "region": "TX", "country_code": "US"},
    {"salary_period": None, **AUSTIN},  # Austin again: the structure a v2 producer gave it
    {"salary_period": None, "city": "Lyon", "region": "Auvergne-Rhone-Alpes", "country_code": "FR"},
]


@BACKENDS
def test_a_v1_update_keeps_the_structure_of_the_place_it_names_whatever_the_order(
    tmp_path: Path, state
) -> None:
    stores = make_stores(tmp_path / "in_order", state)
    for n, record in enumerate(HISTORY):
        batch_id = f"b{n:02d}"
        run(stores, land(stores, parsed([record], batch_id)), batch_id)
        assert v2_fields(stores.state.jobs(), "j1") == AFTER[n]
        changes = index_export.read_changes(stores.objects, ["2026-11-01-00:00"], [batch_id])
        assert v2_fields(changes, "j1") == AFTER[n]
    in_order = streaming_jobs.read_state(stores.state)
    assert_equals_recompute(stores)
    # The same events in other orders (the v2 posting late, after the v1 updates) end the same.
    orders = [HISTORY[::-1], HISTORY[1:] + HISTORY[:1]]
    for seed in range(3):
        orders.append(random.Random(seed).sample(HISTORY, len(HISTORY)))
    for n_order, shuffled in enumerate(orders):
        other = make_stores(tmp_path / f"order_{n_order}")
        for n, record in enumerate(shuffled):
            batch_id = f"b{n:02d}"
            run(other, land(other, parsed([record], batch_id)), batch_id)
        assert streaming_jobs.read_state(other.state).equals(in_order)
    # Without the last event, the day rows and the fold end at Austin again.
    day = make_stores(tmp_path / "day")
    run(day, land(day, parsed(HISTORY[:4], "b00")), "b00")
    assert v2_fields(day.state.jobs(), "j1") == AFTER[3]
    assert v2_fields(day.state.job_days(["j1"], "2026-11-01"), "j1") == AFTER[3]


@BACKENDS
def test_a_late_v2_update_that_loses_to_a_v1_one_still_gives_the_place_its_structure(
    tmp_path: Path, state
) -> None:
    """Only the structure register changes (the v1 posting stays the latest), and that is a
    change of the row: written, and a search-index change."""
    stores = make_stores(tmp_path, state)
    records = [
        envelope("v1", "job.posted", 20, 1, "j9", location="Austin, Texas"),
        envelope("v2", "job.updated", 15, 2, "j9", location=AUSTIN),  # earlier, landed later
    ]
    run(stores, land(stores, parsed(records[:1], "b00")), "b00")
    assert v2_fields(stores.state.jobs(), "j9")["city"] == "Austin, Texas"  # the upcaster's
    run(stores, land(stores, parsed(records[1:], "b01")), "b01")
    (row,) = stores.state.jobs(job_ids=["j9"]).to_pylist()
    assert row["last_event_id"] == "v1"  # still the latest posting
    assert v2_fields(stores.state.jobs(), "j9") == {"salary_period": None, **AUSTIN}
    changes = index_export.read_changes(stores.objects, ["2026-11-01-00:00"], ["b01"])
    assert v2_fields(changes, "j9") == {"salary_period": None, **AUSTIN}
    assert_equals_recompute(stores)
