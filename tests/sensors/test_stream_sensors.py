"""The stream sensors: one run per touched event-time hour, a durable cursor, backpressure, and
failed runs that nothing re-ran requested again.

Bad inputs tried: an empty record published between ticks, a batch visible out of order, a
run that failed with no retry (lost), one Dagster retried, one whose retries were used up, one
already resumed twice, a cancelled run, and a failure too recent to judge.
"""

import json
import re
import time

import dagster as dg
import pytest
from streaming_harness import EPOCH, Harness

from figstream.ingest.cursor import LandingCursor
from figstream.ingest.dataset import generate
from figstream.ingest.landing import parse_batch_key
from figstream.ingest.publish import Publisher
from figstream.storage.objects import LocalObjectStore
from figstream.storage.state import SqliteStateStore, state_path
from resources.run_launcher import WORKER_TAG
from sensors.streams import LANE_TAG, LIVE, RESUME_ATTEMPT_TAG, RESUMES_TAG


@pytest.fixture
def harness(tmp_path, monkeypatch):
    generate(tmp_path, start=EPOCH, days=1, events_per_day=600, seed=11, bad_rate=0.01)
    # Per-hour runs even for a whole day at once (the catch-up range has its own test).
    return Harness(tmp_path, monkeypatch, max_runs_per_tick=1000)


def test_first_tick_requests_one_run_per_touched_hour(harness):
    result = harness.tick("postings")
    runs = [r for r in result.run_requests if r.job_name == "postings_job"]
    partitions = [r.partition_key for r in runs]
    assert partitions == sorted(set(partitions)) and len(partitions) > 5
    assert all(p.startswith("2026-11-0") for p in partitions)
    # Each run names exactly the batches the landing index holds for its hour.
    state = SqliteStateStore(state_path(harness.home))
    for run in runs:
        keys = run.run_config["ops"]["raw_events"]["config"]["batch_keys"]
        assert keys == state.batches_for("postings", run.partition_key)
        assert run.run_key.startswith(f"postings:{run.partition_key}:")
    assert not [r for r in result.run_requests if r.job_name == "board_daily_stats_job"]
    cursor = LandingCursor.loads(result.cursor)
    assert cursor.watermark == LocalObjectStore(harness.home).list("landing/")[-1]


def test_the_daily_rollup_follows_on_the_next_tick_then_it_skips(harness):
    first = harness.tick("postings")
    assert {r.partition_key[:10] for r in first.run_requests} == {"2026-11-01"}
    second = harness.tick("postings")
    [stats] = second.run_requests
    assert stats.job_name == "board_daily_stats_job"
    assert stats.partition_key == "2026-11-01"
    third = harness.tick("postings")
    assert isinstance(third, dg.SkipReason)
    assert "no new batches" in third.skip_message


def test_new_batch_is_picked_up_alone(harness):
    harness.tick("postings")
    store = LocalObjectStore(harness.home)
    record = json.loads(
        next((harness.home / "feeds").rglob("*.jsonl")).read_bytes().split(b"\n")[0]
    )
    record["id"] = "late-arrival-1"
    [key] = Publisher(store, producer="test").publish([record])
    result = harness.tick("postings")
    [run] = [r for r in result.run_requests if r.job_name == "postings_job"]
    assert run.run_config["ops"]["raw_events"]["config"]["batch_keys"] == [key]
    assert run.partition_key == record["time"][:13].replace("T", "-") + ":00"


def test_batch_visible_out_of_order_within_lookback_is_not_skipped(harness):
    harness.tick("postings")
    store = LocalObjectStore(harness.home)
    watermark = LandingCursor.loads(harness.cursors["postings"]).watermark
    arrival, _ = parse_batch_key(watermark)
    import datetime as dt

    from figstream.ingest.landing import batch_key

    # A slow producer commits a batch named a few seconds *before* the newest key seen.
    late_key = batch_key(arrival - dt.timedelta(seconds=5), "slow", 1)
    record = {
        "id": "slow-1",
        "type": "job.expired",
        "source": "hireloop",
        "version": 1,
        "time": (arrival - dt.timedelta(seconds=30)).isoformat(),
        "data": {"job_id": "hireloop-0000001", "reason": "filled"},
    }
    store.put(late_key, json.dumps(record).encode())
    result = harness.tick("postings")
    runs = [r for r in result.run_requests if r.job_name == "postings_job"]
    assert [r.run_config["ops"]["raw_events"]["config"]["batch_keys"] for r in runs] == [[late_key]]


def _in_flight(harness: Harness, request: dg.RunRequest, runs: int) -> None:
    """Runs that were requested but have not finished (NOT_STARTED counts like STARTED)."""
    job = harness.defs.resolve_job_def("postings_job")
    for _ in range(runs):
        harness.instance.create_run_for_job(
            job_def=job, run_config=request.run_config, tags=request.tags
        )


def _posting(harness: Harness, event_id: str) -> dict:
    record = json.loads(
        next((harness.home / "feeds").rglob("*.jsonl")).read_bytes().split(b"\n")[0]
    )
    return {**record, "id": event_id}


@pytest.fixture
def backlog_harness(tmp_path, monkeypatch):
    """A harness where any batch is a backlog: nothing starts beside a run in flight."""
    generate(tmp_path, start=EPOCH, days=1, events_per_day=600, seed=11, bad_rate=0.01)
    return Harness(tmp_path, monkeypatch, max_runs_per_tick=1000, overlap_max_bytes=0)


def test_backpressure_leaves_the_cursor_while_runs_are_in_flight(backlog_harness):
    harness = backlog_harness
    store = _busy(harness)
    Publisher(store, producer="test").publish([b"{}"])
    _waits_unread(harness)


def _busy(harness: Harness) -> LocalObjectStore:
    """The day taken (and its daily rollup requested), then max_runs_in_flight runs in flight."""
    first = harness.tick("postings")
    harness.tick("postings")  # the daily rollup the first tick owes
    _in_flight(harness, first.run_requests[0], harness.settings.max_runs_in_flight)
    return LocalObjectStore(harness.home)


def _waits_unread(harness: Harness) -> None:
    """The next tick skips for the runs in flight and leaves the cursor where it was."""
    cursor = harness.cursors["postings"]
    waited = harness.tick("postings")
    assert isinstance(waited, dg.SkipReason) and "in flight" in waited.skip_message
    assert harness.cursors["postings"] == cursor


def test_a_trickle_starts_one_run_beside_those_in_flight_and_no_more(harness):
    store = _busy(harness)
    # A small batch: requested at once, beside the run in flight.
    [small] = Publisher(store, producer="test").publish([_posting(harness, "trickle-1")])
    [run] = requests(harness.tick("postings"))
    assert run.run_config["ops"]["raw_events"]["config"]["batch_keys"] == [small]
    # One run more is the most: with it in flight too, even a trickle waits.
    _in_flight(harness, run, 1)
    Publisher(store, producer="test").publish([_posting(harness, "trickle-2")])
    _waits_unread(harness)


def test_a_backlog_waits_for_the_run_in_flight(harness):
    store = _busy(harness)
    lines = [_posting(harness, f"backlog-{n}") for n in range(4000)]
    backlog = Publisher(store, producer="test").publish(lines)
    assert sum(store.size(k) for k in backlog) > harness.settings.overlap_max_bytes
    _waits_unread(harness)


def test_boards_sensor_only_requests_hours_with_mergers(harness):
    result = harness.tick("boards")
    runs = [r for r in result.run_requests if r.job_name == "boards_job"]
    assert len(runs) == 1  # one merger in a one-day range
    assert set(runs[0].run_config["ops"]) == {"board_mergers", "job_state", "search_index"}


def test_a_catch_up_becomes_range_runs_of_a_day_one_after_another(tmp_path, monkeypatch):
    generate(tmp_path, start=EPOCH, days=2, events_per_day=300, seed=4, bad_rate=0.0)
    harness = Harness(tmp_path, monkeypatch)
    ranges = []
    while runs := [r for r in requests(harness.tick("postings")) if r.job_name == "postings_job"]:
        [run] = runs  # one history run at a time
        start = run.tags["dagster/asset_partition_range_start"]
        end = run.tags["dagster/asset_partition_range_end"]
        assert run.tags["figstream/lane"] == "history" and start < end
        ranges.append((start, end))
        harness.run(run)
    assert [(s[:10], e[:10]) for s, e in ranges] == [("2026-11-01",) * 2, ("2026-11-02",) * 2]
    raw = harness.table("raw_events")
    manifest = json.loads((tmp_path / "generate-manifest.json").read_text())
    assert raw.num_rows == manifest["events"] - manifest["events_by_type"]["board.merged"]


def requests(result) -> list[dg.RunRequest]:
    return [] if isinstance(result, dg.SkipReason) else list(result.run_requests or [])


def _failed_run(harness, request: dg.RunRequest, status=dg.DagsterRunStatus.FAILURE, **tags):
    """A run of ``request`` that ended with ``status`` before doing anything (a worker killed
    at its start, say)."""
    job = harness.defs.resolve_job_def(request.job_name)
    run = harness.instance.create_run_for_job(
        job_def=job,
        run_config=request.run_config,
        tags={**request.tags, "dagster/partition": request.partition_key, **tags},
    )
    if status == dg.DagsterRunStatus.FAILURE:
        harness.instance.report_run_failed(run)
    else:
        harness.instance.report_run_canceled(run)
    return run


@pytest.mark.slow  # ~30-40 s on the 2-core machine: runs in make test-slow (CI runs both)
def test_a_failed_run_nothing_retried_is_requested_again_and_the_books_balance(
    tmp_path, monkeypatch
):
    generate(tmp_path, start=EPOCH, days=1, events_per_day=600, seed=11, bad_rate=0.01)
    harness = Harness(tmp_path, monkeypatch, max_runs_per_tick=1000, resume_failed_after_seconds=3)
    # As platform/local/dagster.yaml configures it: the sensor resumes what these would retry.
    retries = {"run_retries": {"enabled": True, "max_retries": 3}}
    harness.instance = dg.DagsterInstance.ephemeral(settings=retries)
    first = [r for r in harness.tick("postings").run_requests if r.job_name == "postings_job"]
    lost, retried, spent, resumed, cancelled, *rest = first
    for request in rest:
        harness.run(request)
    # Dagster retried this one (its retry is a child run, which succeeded).
    parent = _failed_run(harness, retried)
    harness.run(
        dg.RunRequest(
            job_name=retried.job_name, run_config=retried.run_config,
            partition_key=retried.partition_key,
            tags={**retried.tags, "dagster/parent_run_id": parent.run_id},
        )
    )  # fmt: skip
    # The slow part (a run) is done first: the failures below are recorded within a
    # moment of the tick that must find them all too recent.
    lost_run = _failed_run(harness, lost, **{WORKER_TAG: "warm"})  # as the launcher tags it
    _failed_run(harness, spent, **{"dagster/retry_number": "3"})  # retries used up
    _failed_run(harness, resumed, **{RESUME_ATTEMPT_TAG: "2"})  # resumed twice already
    _failed_run(harness, cancelled, dg.DagsterRunStatus.CANCELED)
    # Too recent: the retry daemon may still be about to retry it.
    assert not [r for r in requests(harness.tick("postings")) if r.run_key.startswith("resume")]
    time.sleep(3.2)
    [again] = [r for r in requests(harness.tick("postings")) if r.run_key.startswith("resume:")]
    assert again.run_key == f"resume:{lost_run.run_id}"
    assert again.tags[RESUMES_TAG] == lost_run.run_id and again.tags[RESUME_ATTEMPT_TAG] == "1"
    assert again.partition_key == lost.partition_key
    assert again.run_config == lost.run_config and again.job_name == lost.job_name
    assert again.tags["figstream/stream"] == "postings" and WORKER_TAG not in again.tags
    assert again.tags["figstream/batches"] == lost.tags["figstream/batches"]
    harness.run(again)
    # Resumed: not requested again.
    assert not [r for r in requests(harness.tick("postings")) if "resume" in r.run_key]
    # An operator re-executes the three left alone; then the boards stream and the rollups run.
    for request in (spent, resumed, cancelled):
        harness.run(request)
    harness.drain()
    # Every event of the day is materialised or dead-lettered, once.
    raw, mergers = harness.table("raw_events"), harness.table("board_mergers")
    manifest = json.loads((tmp_path / "generate-manifest.json").read_text())
    assert raw.num_rows + mergers.num_rows + harness.dead_letters().count() == manifest["events"]
    assert len(set(raw["event_id"].to_pylist())) == raw.num_rows


def test_a_rollup_in_flight_holds_back_only_the_next_rollup(tmp_path, monkeypatch):
    """The daily rollup recomputes its days (its cost grows with the day): new batches do not
    wait for it, and no second rollup is requested while it runs."""
    generate(tmp_path, start=EPOCH, days=1, events_per_day=600, seed=11, bad_rate=0.01)
    harness = Harness(
        tmp_path, monkeypatch, max_runs_per_tick=1000, overlap_max_bytes=0,
        daily_stats_every_seconds=1,
    )  # fmt: skip
    harness.tick("postings")
    [stats] = requests(harness.tick("postings"))
    assert stats.job_name == "board_daily_stats_job"
    job = harness.defs.resolve_job_def("board_daily_stats_job")
    tags = {**stats.tags, "dagster/partition": stats.partition_key}
    harness.instance.create_run_for_job(job_def=job, tags=tags)
    store = LocalObjectStore(harness.home)
    lines = [_posting(harness, f"beside-rollup-{n}") for n in range(4000)]
    Publisher(store, producer="test").publish(lines)
    runs = requests(harness.tick("postings"))
    assert runs and {r.job_name for r in runs} == {"postings_job"}
    # The day is owed a rollup again, but one is in flight: none is requested...
    time.sleep(1.1)
    assert not [r for r in requests(harness.tick("postings")) if r.job_name == job.name]
    # ... until it ends.
    for record in harness.instance.get_run_records(dg.RunsFilter(job_name=job.name)):
        harness.instance.report_run_canceled(record.dagster_run)
    time.sleep(1.1)
    assert [r.job_name for r in requests(harness.tick("postings"))] == [job.name]


def test_a_days_rollup_waits_until_no_stream_has_a_run_in_flight(tmp_path, monkeypatch):
    """board_daily_stats reads both streams' state: a rollup requested while the other stream
    still ingests the day computes a partial day (and legacy parity compares it)."""
    generate(tmp_path, start=EPOCH, days=1, events_per_day=300, seed=12, bad_rate=0.0)
    harness = Harness(tmp_path, monkeypatch, daily_stats_every_seconds=1)
    assert {r.job_name for r in requests(harness.tick("postings"))} == {"postings_job"}
    boards = harness.defs.resolve_job_def("boards_job")
    run = harness.instance.create_run_for_job(
        job_def=boards, tags={LANE_TAG: LIVE, "figstream/stream": "boards"}
    )
    time.sleep(1.1)
    # The postings stream is idle, but a boards run is in flight: no rollup yet.
    assert not [r for r in requests(harness.tick("postings")) if r.job_name != "postings_job"]
    harness.instance.report_run_canceled(run)
    time.sleep(1.1)
    [stats] = requests(harness.tick("postings"))
    assert stats.job_name == "board_daily_stats_job" and stats.partition_key == EPOCH.isoformat()


STRICT_TAG_VALUE = re.compile(r"[A-Za-z0-9_.-]{0,63}")


def _batch_ids(request: dg.RunRequest) -> list[str]:
    keys = request.run_config["ops"]["raw_events"]["config"]["batch_keys"]
    return sorted(parse_batch_key(key)[1] for key in keys)


def test_a_runs_tags_name_its_stream_and_batches_within_dagsters_tag_limits(harness):
    runs = [r for r in harness.tick("postings").run_requests if r.job_name == "postings_job"]
    assert runs
    for run in runs:
        ids = _batch_ids(run)
        assert run.tags["figstream/stream"] == "postings"
        assert run.tags["figstream/batches"] == str(len(ids))
        assert (run.tags["figstream/first_batch"], run.tags["figstream/last_batch"]) == (
            ids[0],
            ids[-1],
        )
        for key in ("figstream/first_batch", "figstream/last_batch", "figstream/batches"):
            assert STRICT_TAG_VALUE.fullmatch(run.tags[key]), run.tags[key]


def test_a_catch_up_runs_tags_name_the_first_and_last_batch_of_the_range(tmp_path, monkeypatch):
    generate(tmp_path, start=EPOCH, days=1, events_per_day=300, seed=5, bad_rate=0.0)
    harness = Harness(tmp_path, monkeypatch, max_runs_per_tick=1)
    [run] = [r for r in harness.tick("postings").run_requests if r.job_name == "postings_job"]
    ids = _batch_ids(run)
    assert len(ids) > 1
    assert run.tags["figstream/batches"] == str(len(ids))
    assert run.tags["figstream/first_batch"] == ids[0] != run.tags["figstream/last_batch"]
    assert run.tags["figstream/last_batch"] == ids[-1]


def test_a_batch_a_dead_tick_indexed_is_still_taken(harness):
    """A tick that indexed a batch and died before its cursor was saved: the landing index
    holds the batch, yet the next tick (from the saved cursor) still requests its run."""
    import datetime as dt

    from figstream.ingest.landing import batch_key
    from figstream.streaming import landing_index

    harness.tick("postings")
    saved = harness.cursors["postings"]
    arrival, _ = parse_batch_key(LandingCursor.loads(saved).watermark)
    # Visible out of order, a few seconds below the watermark (within the look-back).
    late = batch_key(arrival - dt.timedelta(seconds=5), "slow", 1)
    record = {**_posting(harness, "dead-tick-1"), "time": arrival.isoformat()}
    LocalObjectStore(harness.home).put(late, json.dumps(record).encode())
    landing_index.index_landing(harness.stores, "postings", [late])  # the dead tick's work
    result = harness.tick("postings")
    runs = [r for r in requests(result) if r.job_name == "postings_job"]
    taken = [k for r in runs for k in r.run_config["ops"]["raw_events"]["config"]["batch_keys"]]
    assert late in taken
    assert len(result.cursor) <= 300


def test_a_run_a_dead_tick_created_but_never_launched_is_requested_again_by_its_key(
    tmp_path, monkeypatch
):
    """The daemon killed between creating a sensor's run and launching it leaves a
    NOT_STARTED run that would count as in flight for ever. Once it is older than
    resume_failed_after_seconds the sensor asks for its run key again (and nothing else that
    tick), which makes the daemon launch that very run; a younger one is left alone."""
    generate(tmp_path, start=EPOCH, days=1, events_per_day=200, seed=5, bad_rate=0.0)
    harness = Harness(tmp_path, monkeypatch, max_runs_per_tick=1000, resume_failed_after_seconds=2)
    first = [r for r in harness.tick("postings").run_requests if r.job_name == "postings_job"]
    stranded_request, *rest = first
    job = harness.defs.resolve_job_def(stranded_request.job_name)
    stranded = harness.instance.create_run_for_job(
        job_def=job,
        run_config=stranded_request.run_config,
        tags={
            **stranded_request.tags,
            "dagster/partition": stranded_request.partition_key,
            "dagster/run_key": stranded_request.run_key,
        },
    )
    assert stranded.status == dg.DagsterRunStatus.NOT_STARTED
    # Too young to tell from a run being launched right now: the tick goes on as usual.
    assert not [
        r for r in requests(harness.tick("postings")) if r.run_key == stranded_request.run_key
    ]
    time.sleep(2.2)
    result = harness.tick("postings")
    [again] = requests(result)
    assert again.run_key == stranded_request.run_key
    assert again.job_name == stranded_request.job_name
    assert again.partition_key == stranded_request.partition_key
    assert again.tags["figstream/batches"] == stranded_request.tags["figstream/batches"]
    assert not rest or all(r.run_key != again.run_key for r in rest)


def test_the_day_in_progress_is_rolled_up_once_it_ends(tmp_path, monkeypatch):
    """A day's rollup costs what its jobs cost: rolled up every few minutes while the day ran,
    it grew with the day and took the cores the live stream needed. Today waits for its end."""
    import datetime as dt

    from sensors import streams

    generate(tmp_path, start=EPOCH, days=1, events_per_day=300, seed=13, bad_rate=0.0)
    harness = Harness(tmp_path, monkeypatch, max_runs_per_tick=1000, daily_stats_every_seconds=1)
    harness.tick("postings")
    [stats] = requests(harness.tick("postings"))
    assert stats.partition_key == EPOCH.isoformat()  # an ended day: rolled up at once
    now = dt.datetime.now(dt.UTC)
    today = now.date().isoformat()
    record = {**_posting(harness, "today-1"), "time": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    Publisher(LocalObjectStore(harness.home), producer="test").publish([record])
    assert [r.partition_key[:10] for r in requests(harness.tick("postings"))] == [today]
    time.sleep(1.1)
    assert requests(harness.tick("postings")) == []  # today is due, and not rolled up yet
    assert today in LandingCursor.loads(harness.cursors["postings"]).days_due
    tomorrow = (now + dt.timedelta(days=1)).date().isoformat()
    monkeypatch.setattr(streams, "_today", lambda _now: tomorrow)
    [stats] = requests(harness.tick("postings"))
    assert stats.job_name == "board_daily_stats_job" and stats.partition_key == today
    assert today not in LandingCursor.loads(harness.cursors["postings"]).days_due


def test_the_live_hours_of_a_tick_share_one_range_run(harness):
    """Past an hour's end, new batches still hold late lines of it: the two live hours a tick
    touches go in one run over both (a run per hour paid a run's fixed cost twice a tick). A
    tick that also touches an older hour keeps a run per hour."""
    import datetime as dt

    harness.tick("postings")  # the generated day, long past
    now = dt.datetime.now(dt.UTC)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    hours = [(now - dt.timedelta(hours=h)).strftime("%Y-%m-%d-%H:00") for h in (1, 0)]
    publisher = Publisher(LocalObjectStore(harness.home), producer="test")
    [key] = publisher.publish(
        [
            {**_posting(harness, "live-now"), "time": now.strftime(stamp)},
            {
                **_posting(harness, "live-late"),
                "time": (now - dt.timedelta(hours=1)).strftime(stamp),
            },
        ]
    )
    [run] = [r for r in requests(harness.tick("postings")) if r.job_name == "postings_job"]
    assert run.partition_key is None
    assert run.tags["dagster/asset_partition_range_start"] == hours[0]
    assert run.tags["dagster/asset_partition_range_end"] == hours[1]
    assert run.run_config["ops"]["raw_events"]["config"]["batch_keys"] == [key]
    older = (now - dt.timedelta(hours=5)).strftime(stamp)
    publisher.publish(
        [
            {**_posting(harness, "live-again"), "time": now.strftime(stamp)},
            {**_posting(harness, "hours-late"), "time": older},
        ]
    )
    runs = [r for r in requests(harness.tick("postings")) if r.job_name == "postings_job"]
    assert len(runs) == 2 and all(r.partition_key for r in runs)
