"""The bucketed global state of the streaming steps (job state, dedupe registry, duplicates,
search index) against a recompute over every event with the transform functions alone.

Bad inputs tried: batches applied out of event-time order (late events touching old hours),
the same batch replayed, a merger whose absorbed board has jobs in nearly every bucket and a
posting of that board arriving after it, a job re-posted with another dedupe key earlier than
its first posting (its registry row moves between key buckets), an update of a job never
posted, runs with no events, a home in the single-file layout of earlier versions, a table
split from one bucket into many mid-stream, a crash in the middle of that split (then a retry),
objects left in the split layout by a split that never finished, and manifests that name no
bucket count.
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

from figstream.storage import buckets
from figstream.storage.objects import LocalObjectStore, read_parquet, write_parquet
from figstream.storage.state import job_state_rows
from figstream.streaming import bucket_state, cleaning, fragments, index_export, table_ops
from figstream.streaming import dedupe as streaming_dedupe
from figstream.streaming import jobs as streaming_jobs
from figstream.streaming import stores as streaming_stores
from figstream.streaming import tables as streaming_tables

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


def make_stores(home: Path) -> streaming_stores.Stores:
    return streaming_stores.Stores.local(home, "2026-10-01-00:00", RecordingStore(home))


def split_at(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """Split a one-bucket table once it could pass ``rows`` (0: at its first events)."""
    monkeypatch.setattr(buckets, "SPLIT_ROWS", rows)


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
    index_export.export_search_index(stores)
    if replay:  # an hour whose postings all became duplicates keeps its first fragment
        return
    # The batch's postings of jobs that are not duplicates (now), in their order.
    schema = streaming_tables.POSTINGS_SCHEMA
    clean = fragments.read_fragments(stores.objects, "clean_postings", hours, [batch_id], schema)
    kept = fragments.read_fragments(stores.objects, "deduped_postings", hours, [batch_id], schema)
    duplicates = bucket_state.read_duplicates(stores.objects)["job_id"]
    assert kept.equals(clean.filter(pc.invert(pc.is_in(clean["job_id"], duplicates))))


def every_event(stores: streaming_stores.Stores) -> pa.Table:
    objects = stores.objects
    tables = [
        read_parquet(objects, key).cast(streaming_tables.EVENTS_SCHEMA)
        for table in streaming_stores.INGEST_TABLES.values()
        for key in objects.list(f"tables/{table}/")
    ]
    return table_ops.dedupe_events(pa.concat_tables(tables))


def assert_equals_recompute(stores: streaming_stores.Stores) -> None:
    events = every_event(stores)
    state = table_ops.apply_job_state(None, events)
    dedupe = table_ops.dedupe_postings(table_ops.clean_postings(events))
    objects = stores.objects
    assert bucket_state.read_job_state(objects).equals(state)
    assert bucket_state.read_registry(objects).equals(dedupe.canonical)
    assert bucket_state.read_duplicates(objects).equals(dedupe.duplicates)
    index = table_ops.search_index(state, dedupe.duplicates)
    assert read_parquet(objects, index_export.SEARCH_INDEX_KEY).equals(index)
    # The serving store has every job, as the state says, except where the state went back
    # in time (a late expiry timed before a merger): its last writer wins by event time.
    columns = ["job_id", "status", "last_event_time", "last_event_id"]
    served = stores.state.jobs().select(columns).to_pylist()
    expected = job_state_rows(state).select(columns).to_pylist()
    assert [r["job_id"] for r in served] == [r["job_id"] for r in expected]
    for have, want in zip(served, expected, strict=True):
        assert have == want or have["last_event_time"] > want["last_event_time"], (have, want)


def random_day(seed: int) -> tuple[Events, list[list[dict]]]:
    """~600 events of 200 jobs on three boards, shuffled into batches (so most batches hold
    late events), with re-posts under other keys and a merger of beta into alpha."""
    rng = random.Random(seed)
    events = Events()
    for n in range(200):
        board, job = rng.choice(BOARDS), f"{rng.choice(BOARDS)}-{n:04d}"
        posted = rng.uniform(0, 2000)
        events.posting(streaming_tables.POSTED, posted, board, job, rng.randrange(len(TEXTS)))
        if rng.random() < 0.3:
            events.posting(streaming_tables.UPDATED, posted + rng.uniform(1, 600), board, job, 0)
        if rng.random() < 0.15:  # re-posted under another key, sometimes before the first
            when = posted + rng.uniform(-300, 300)
            events.posting(streaming_tables.POSTED, when, board, job, rng.randrange(len(TEXTS)))
        if rng.random() < 0.3:
            events.add(streaming_tables.EXPIRED, posted + rng.uniform(1, 900), board, job_id=job,
                       reason="filled")  # fmt: skip
    events.posting(streaming_tables.UPDATED, 50, "gamma", "gamma-never-posted", 2)
    events.add(
        streaming_tables.MERGED, 1200, "alpha", absorbed_board="beta", surviving_board="alpha"
    )
    rows = events.rows[:]
    rng.shuffle(rows)
    cuts = sorted(rng.sample(range(1, len(rows)), 7))
    return events, [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]


# split: 0 = many buckets from the first run, 150 = split mid-stream, None = one bucket throughout
# sort: active rows the index export sorts in memory (None: the default, which every run here
# stays under; 0: always the merge; 60: the sort until the state outgrows it, then the merge)
@pytest.mark.parametrize(
    ("seed", "cap", "split", "sort"),
    [(1, None, 0, None), (2, None, 0, 0), (3, None, None, 60), (4, 1, 0, 0), (5, 1, 150, None)],
)
def test_bucketed_state_equals_a_recompute_over_every_event(
    tmp_path: Path,
    seed: int,
    cap: int | None,
    split: int | None,
    sort: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if cap is not None:  # every touched bucket its own apply_job_state call, as in a busy hour
        monkeypatch.setattr(streaming_jobs, "TOUCHED_ROWS_PER_APPLY", cap)
    if sort is not None:
        monkeypatch.setattr(index_export, "INDEX_SORT_ROWS", sort)
    if sort == 0:  # the merge steps through several row groups of each bucket
        monkeypatch.setattr(bucket_state, "INDEX_ROW_GROUP", 3)
    if split is not None:
        split_at(monkeypatch, split)
    stores = make_stores(tmp_path)
    events, batches = random_day(seed)
    layouts = []
    for n, rows in enumerate(batches):
        batch_id = f"b{n:02d}"
        run(stores, land(stores, events.table(rows, batch_id)), batch_id)
        assert_equals_recompute(stores)
        layouts.append(stores.objects.list(bucket_state.JOB_STATE_BUCKETS))
    if split is None:  # ~200 jobs: one object
        assert layouts[-1] == [buckets.bucket_key(bucket_state.JOB_STATE_BUCKETS, 0, 1)]
    else:  # the split layout, and nothing left of the one-bucket layout
        assert len(layouts[-1]) > buckets.BUCKETS // 2
        assert all(k.endswith(tuple(f"/{b:03d}.parquet" for b in range(64))) for k in layouts[-1])
        for prefix in (
            bucket_state.ACTIVE_BUCKETS,
            bucket_state.REGISTRY_BY_JOB,
            bucket_state.REGISTRY_BY_KEY,
        ):
            assert not [k for k in stores.objects.list(prefix) if "-of-" in k], prefix
    if split == 150:  # one bucket for the first runs, then split
        assert layouts[0] == [buckets.bucket_key(bucket_state.JOB_STATE_BUCKETS, 0, 1)]
    # Replaying a batch (at-least-once delivery) changes nothing and rewrites no bucket.
    stores.objects.written.clear()
    run(stores, land(stores, events.table(batches[3], "b03")), "b03", replay=True)
    assert_equals_recompute(stores)
    rewritten = [k for k in stores.objects.written if k.endswith(".parquet")]
    assert all(k.startswith(("tables/raw_events/", "tables/clean_postings/",
                             "tables/deduped_postings/", "tables/board_mergers/"))
               for k in rewritten), rewritten  # fmt: skip


@pytest.mark.parametrize("cap", [None, 1])
def test_a_merger_reaches_the_absorbed_boards_jobs_in_every_bucket(
    tmp_path: Path, cap: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    split_at(monkeypatch, 0)
    if cap is not None:  # the merger applied bucket by bucket: 64 calls, one merger row
        monkeypatch.setattr(streaming_jobs, "TOUCHED_ROWS_PER_APPLY", cap)
    stores = make_stores(tmp_path)
    events = Events()
    jobs = [f"beta-{n:04d}" for n in range(300)]
    first = [
        events.posting(streaming_tables.POSTED, n / 10, "beta", job, n % 3)
        for n, job in enumerate(jobs)
    ]
    first.append(events.posting(streaming_tables.POSTED, 5, "alpha", "alpha-0001", 1))
    run(stores, land(stores, events.table(first, "b00")), "b00")
    assert len({buckets.bucket_of(pa.array([j]))[0] for j in jobs}) == buckets.BUCKETS
    merger = events.add(streaming_tables.MERGED, 120, "alpha", absorbed_board="beta",
                        surviving_board="alpha")  # fmt: skip
    stores.objects.written.clear()
    run(stores, land(stores, events.table([merger], "b01")), "b01")
    written = set(stores.objects.written)
    assert {
        buckets.bucket_key(bucket_state.JOB_STATE_BUCKETS, b) for b in range(buckets.BUCKETS)
    } <= written
    state = bucket_state.read_job_state(stores.objects)
    of_beta = state.filter(
        pc.and_(pc.equal(state["board"], "beta"), pc.equal(state["kind"], "job"))
    )
    assert of_beta.num_rows == 300 and set(of_beta["status"].to_pylist()) == {"merged"}
    assert set(of_beta["merged_into"].to_pylist()) == {"alpha"}
    index = read_parquet(stores.objects, index_export.SEARCH_INDEX_KEY)
    assert index["job_id"].to_pylist() == ["alpha-0001"]
    # A beta posting timed before the merger but arriving after it still meets it.
    late = events.posting(streaming_tables.POSTED, 60, "beta", "beta-late", 2)
    run(stores, land(stores, events.table([late], "b02")), "b02")
    row = bucket_state.read_job_state(stores.objects).filter(
        pc.equal(pc.field("job_id"), "beta-late")
    )
    assert row["status"].to_pylist() == ["merged"]
    assert_equals_recompute(stores)


def test_a_job_reposted_earlier_under_another_key_moves_between_key_buckets(
    tmp_path: Path,
) -> None:
    stores = make_stores(tmp_path)
    events = Events()
    # Keys 0 and 2 fall in different key buckets, so the job's registry row has to move.
    keys = table_ops.dedupe_key(*(pa.array([t[i] for t in TEXTS]) for i in (0, 1, 2)))
    assert len(set(buckets.bucket_of(keys).tolist())) == len(TEXTS)
    rows = [
        events.posting(streaming_tables.POSTED, 100, "alpha", "alpha-1", 0),
        events.posting(streaming_tables.POSTED, 50, "beta", "beta-1", 0),  # alpha-1 duplicates it
        events.posting(streaming_tables.POSTED, 70, "gamma", "gamma-1", 2),
    ]
    run(stores, land(stores, events.table(rows, "b00")), "b00")
    assert bucket_state.read_duplicates(stores.objects)["job_id"].to_pylist() == ["alpha-1"]
    # alpha-1 first posted at 10 with key 2: it now holds key 2 (gamma-1 duplicates it) and
    # no longer duplicates beta-1.
    moved = events.posting(streaming_tables.POSTED, 10, "alpha", "alpha-1", 2)
    run(stores, land(stores, events.table([moved], "b01")), "b01")
    duplicates = bucket_state.read_duplicates(stores.objects)
    assert duplicates.select(["job_id", "duplicate_of_job_id"]).to_pylist() == [
        {"job_id": "gamma-1", "duplicate_of_job_id": "alpha-1"}
    ]
    registry = pa.concat_tables(
        read_parquet(stores.objects, k) for k in stores.objects.list(bucket_state.REGISTRY_BY_KEY)
    )
    assert registry["job_id"].to_pylist().count("alpha-1") == 1
    assert_equals_recompute(stores)


def test_only_the_touched_buckets_are_rewritten_and_no_events_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split_at(monkeypatch, 0)
    stores = make_stores(tmp_path)
    events, batches = random_day(7)
    for n, rows in enumerate(batches):
        run(stores, land(stores, events.table(rows, f"b{n:02d}")), f"b{n:02d}")
    update = events.posting(streaming_tables.UPDATED, 3000, "alpha", "alpha-0000", 1)
    bucket = int(buckets.bucket_of(pa.array(["alpha-0000"]))[0])
    stores.objects.written.clear()
    run(stores, land(stores, events.table([update], "b99")), "b99")
    state_writes = [
        k for k in stores.objects.written if k.startswith(("tables/job_state/", "tables/post"))
    ]
    assert sorted(state_writes) == sorted(
        [
            buckets.bucket_key(bucket_state.ACTIVE_BUCKETS, bucket),
            buckets.bucket_key(bucket_state.JOB_STATE_BUCKETS, bucket),
            # a new token before the first bucket write, and after the last
            *[bucket_state.JOB_STATE_MANIFEST] * 2,
        ]  # an update defines no dedupe key: the registry is left alone
    )
    assert index_export.SEARCH_INDEX_KEY in stores.objects.written
    assert_equals_recompute(stores)
    stores.objects.written.clear()
    run(stores, ["2026-11-05-00:00"], "nothing")
    assert stores.objects.written == []


def test_a_home_in_the_single_file_layout_is_converted_on_the_first_run(tmp_path: Path) -> None:
    stores = make_stores(tmp_path)
    events, batches = random_day(5)
    old = pa.concat_tables(events.table(rows, f"b{n:02d}") for n, rows in enumerate(batches[:4]))
    for n, rows in enumerate(batches[:4]):
        land(stores, events.table(rows, f"b{n:02d}"))
    state = table_ops.apply_job_state(None, old)
    dedupe = table_ops.dedupe_postings(table_ops.clean_postings(old))
    objects = stores.objects
    write_parquet(objects, bucket_state.OLD_JOB_STATE_KEY, state)
    write_parquet(objects, bucket_state.OLD_REGISTRY_KEY, dedupe.canonical)
    write_parquet(objects, bucket_state.OLD_DUPLICATES_KEY, dedupe.duplicates)
    stores.state.upsert_jobs(job_state_rows(state))
    # Readers read the old objects until a state step converts them.
    assert bucket_state.read_job_state(objects).equals(state)
    assert bucket_state.read_duplicates(objects).equals(dedupe.duplicates)
    for n, rows in enumerate(batches[4:], start=4):
        run(stores, land(stores, events.table(rows, f"b{n:02d}")), f"b{n:02d}")
    for key in (
        bucket_state.OLD_JOB_STATE_KEY,
        bucket_state.OLD_REGISTRY_KEY,
        bucket_state.OLD_DUPLICATES_KEY,
    ):
        assert not objects.exists(key)
    assert_equals_recompute(stores)


class CrashingStore(RecordingStore):
    """Raises on the ``nth`` write of a key under ``prefix`` in the split layout (as a killed
    run would stop there), then works again once ``nth`` is None."""

    def __init__(self, root: Path, prefix: str, nth: int) -> None:
        super().__init__(root)
        self.prefix, self.nth, self.seen = prefix, nth, 0

    def put(self, key, data) -> None:
        if self.nth is not None and key.startswith(self.prefix) and "-of-" not in key:
            self.seen += 1
            if self.seen == self.nth:
                raise OSError(f"killed while writing {key}")
        super().put(key, data)


@pytest.mark.parametrize(
    ("prefix", "nth"),
    [
        (bucket_state.REGISTRY_BY_JOB, 1),  # the registry's first bucket write
        (bucket_state.REGISTRY_BY_KEY, 2),  # its second key bucket (the day has three dedupe keys)
        (bucket_state.ACTIVE_BUCKETS, 30),  # the job state's 30th bucket (29 written whole)
    ],
)
def test_a_split_killed_midway_leaves_the_old_layout_whole_and_is_redone(
    tmp_path: Path, prefix: str, nth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = CrashingStore(tmp_path, prefix, nth=None)
    stores = streaming_stores.Stores.local(tmp_path, "2026-10-01-00:00", objects)
    events, batches = random_day(6)
    for n, rows in enumerate(batches[:5]):
        run(stores, land(stores, events.table(rows, f"b{n:02d}")), f"b{n:02d}")
    before = (bucket_state.read_job_state(objects), bucket_state.read_registry(objects))
    split_at(monkeypatch, 0)
    objects.nth = nth
    hours = land(stores, events.table(batches[5], "b05"))
    with pytest.raises(OSError, match="killed while writing"):
        run(stores, hours, "b05")
    # The table being split still reads as it was before the run (the other may have moved).
    if prefix in (bucket_state.JOB_STATE_BUCKETS, bucket_state.ACTIVE_BUCKETS):
        assert bucket_state.read_job_state(objects).equals(before[0])
    else:
        assert bucket_state.read_registry(objects).equals(before[1])
    objects.nth = None  # the retry of the run
    run(stores, hours, "b05")
    assert_equals_recompute(stores)
    assert not [k for k in objects.list("tables/") if "-of-" in k]


def test_objects_left_in_the_split_layout_by_an_unfinished_split_are_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = make_stores(tmp_path)
    events = Events()
    first = [
        events.posting(streaming_tables.POSTED, n, "alpha", f"alpha-{n}", n % 3) for n in range(3)
    ]
    run(stores, land(stores, events.table(first, "b00")), "b00")
    # A ghost job in a split-layout bucket no real job falls in, as a split that died after
    # writing it and before its manifest would leave it (say, of rows since gone).
    jobs = [*(f"alpha-{n}" for n in range(5))]
    taken = set(buckets.bucket_of(pa.array(jobs)).tolist())
    ghost = next(f"ghost-{n}" for n in range(1000)
                 if buckets.bucket_of(pa.array([f"ghost-{n}"]))[0] not in taken)  # fmt: skip
    bucket = int(buckets.bucket_of(pa.array([ghost]))[0])
    state = bucket_state.read_job_state(stores.objects)
    row = state.slice(0, 1).to_pylist()[0] | {"job_id": ghost}
    row_table = pa.Table.from_pylist([row], schema=streaming_tables.STATE_SCHEMA)
    write_parquet(
        stores.objects, buckets.bucket_key(bucket_state.JOB_STATE_BUCKETS, bucket), row_table
    )
    write_parquet(stores.objects, buckets.bucket_key(bucket_state.ACTIVE_BUCKETS, bucket),
                  table_ops.search_index(row_table))  # fmt: skip
    assert ghost not in bucket_state.read_job_state(stores.objects)["job_id"].to_pylist()
    split_at(monkeypatch, 0)
    more = [
        events.posting(streaming_tables.POSTED, 10 + n, "beta", f"alpha-{n}", 1) for n in (3, 4)
    ]
    run(stores, land(stores, events.table(more, "b01")), "b01")
    assert len(stores.objects.list(bucket_state.JOB_STATE_BUCKETS)) == len(taken)
    assert ghost not in bucket_state.read_job_state(stores.objects)["job_id"].to_pylist()
    assert_equals_recompute(stores)


def test_layout_names_and_manifests_that_name_no_bucket_count(tmp_path: Path) -> None:
    # The many-bucket layout keeps the names of the versions that had no other.
    assert buckets.bucket_key("t/", 17) == "t/017.parquet"
    assert buckets.bucket_key("t/", 0, 1) == "t/000-of-001.parquet"
    objects = LocalObjectStore(tmp_path)
    for bad in ({"token": "x", "counts": {}}, {"buckets": 0, "token": "x", "counts": {}},
                {"buckets": "64", "token": "x", "counts": {}}):  # fmt: skip
        objects.put("t/manifest.json", orjson.dumps(bad))
        with pytest.raises(ValueError, match="names no bucket count"):
            buckets.Manifest.read(objects, "t/manifest.json")


def test_index_export_falls_back_to_the_merge_when_the_manifest_undercounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest from an earlier version may count no active rows for buckets no run has
    touched since: the export then finds out while reading, and merges instead."""
    stores = make_stores(tmp_path)
    events, batches = random_day(6)
    for n, rows in enumerate(batches):
        run(stores, land(stores, events.table(rows, f"b{n:02d}")), f"b{n:02d}")
    manifest = buckets.Manifest.read(stores.objects, bucket_state.JOB_STATE_MANIFEST)
    assert manifest.total("active") > 20
    manifest.counts["active"] = [0] * manifest.buckets  # what an old manifest may say
    manifest.write(stores.objects)  # a new token: the index is rebuilt
    merged = []

    def counting(*args, **kwargs):
        merged.append(1)
        yield from buckets.merge_sorted(*args, **kwargs)

    monkeypatch.setattr(index_export, "INDEX_SORT_ROWS", 20)
    monkeypatch.setattr(index_export, "merge_sorted", counting)
    index_export.export_search_index(stores)
    assert merged  # the rows read passed 20, so the index was merged
    assert_equals_recompute(stores)


def test_merge_sorted_equals_a_sort_of_everything() -> None:
    rng = random.Random(3)
    keys = rng.sample(range(100_000), 5000)
    streams: list[list[str]] = [[] for _ in range(7)]
    for key in keys:
        streams[rng.randrange(6)].append(f"k{key:06d}")  # the 7th stays empty

    def batches(values: list[str]):
        values = sorted(values)
        size = rng.randint(1, 300)
        for i in range(0, len(values), size):
            yield pa.record_batch({"job_id": values[i : i + size]})

    out = list(buckets.merge_sorted([batches(s) for s in streams], "job_id"))
    merged = [v for t in out for v in t["job_id"].to_pylist()]
    assert merged == sorted(f"k{k:06d}" for k in keys)
    assert list(buckets.merge_sorted([], "job_id")) == []
