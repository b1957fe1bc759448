"""The stream sensors' reconciliation: a batch that became visible only after the cursor's
listing moved past it plus the look-back is still found, taken and run, at a bounded cost.

Bad inputs tried: a batch planted ten minutes below the watermark (a producer whose clock ran
behind), a tick before the reconciliation is due, a sweep cut into slices across ticks, and
runs in flight while a slice finds it.
"""

import datetime as dt
import json
from dataclasses import replace

import dagster as dg
import pytest
from streaming_harness import EPOCH, Harness

import sensors.streams
from figstream.ingest.cursor import LandingCursor
from figstream.ingest.dataset import generate
from figstream.ingest.landing import batch_key, parse_batch_key
from figstream.storage.objects import LocalObjectStore
from figstream.storage.state import SqliteStateStore, state_path


@pytest.fixture
def harness(tmp_path, monkeypatch):
    generate(tmp_path, start=EPOCH, days=1, events_per_day=600, seed=11, bad_rate=0.01)
    return Harness(tmp_path, monkeypatch, max_runs_per_tick=1000)


def _cursor(harness: Harness) -> LandingCursor:
    return LandingCursor.loads(harness.cursors["postings"])


def _plant_late(harness: Harness) -> tuple[str, str]:
    """Take the day, then land a batch whose key sorts ten minutes below the watermark: far
    below the listing start. Returns its key and the hour its event belongs to."""
    harness.tick("postings")
    harness.tick("postings")  # the daily rollup, and the first sweep (nothing is missing)
    cursor = _cursor(harness)
    assert cursor.reconciled_at > 0 and not cursor.reconcile_after and not cursor.late
    arrival, _ = parse_batch_key(cursor.watermark)
    late_key = batch_key(arrival - dt.timedelta(minutes=10), "slow-clock", 1)
    lookback = dt.timedelta(seconds=harness.settings.lookback_seconds)
    assert late_key < cursor.start_after(lookback)
    moment = arrival - dt.timedelta(minutes=10, seconds=30)
    record = {
        "id": "late-by-ten-minutes",
        "type": "job.expired",
        "source": "hireloop",
        "version": 1,
        "time": moment.isoformat(),
        "data": {"job_id": "hireloop-0000001", "reason": "filled"},
    }
    LocalObjectStore(harness.home).put(late_key, json.dumps(record).encode())
    return late_key, moment.strftime("%Y-%m-%d-%H:00")


def _age(harness: Harness) -> None:
    """As if reconcile_every_seconds had passed since the last sweep began."""
    cursor = _cursor(harness)
    earlier = cursor.reconciled_at - harness.settings.reconcile_every_seconds
    harness.cursors["postings"] = replace(cursor, reconciled_at=earlier).dumps()


def _indexed(harness: Harness, key: str) -> list[str]:
    return SqliteStateStore(state_path(harness.home)).partitions_for("postings", key)


def _batches(request: dg.RunRequest) -> list[str]:
    return request.run_config["ops"]["raw_events"]["config"]["batch_keys"]


def test_a_batch_visible_after_the_lookback_is_found_taken_and_run(harness):
    late_key, hour = _plant_late(harness)
    # Not due yet: neither the listing nor a sweep sees it (the sweep's cost is paid only
    # every reconcile_every_seconds).
    quiet = harness.tick("postings")
    assert isinstance(quiet, dg.SkipReason) and "no new batches" in quiet.skip_message
    assert not _indexed(harness, late_key)

    _age(harness)
    before = _cursor(harness)
    found = harness.tick("postings")
    assert not found.run_requests
    assert "reconciliation found 1 late batches" in found.skip_reason.skip_message
    assert late_key in found.skip_reason.skip_message
    swept = _cursor(harness)
    assert swept.late == {late_key} and not swept.reconcile_after
    assert swept.reconciled_at > before.reconciled_at and swept.watermark == before.watermark

    # The next tick takes it like a new batch: indexed, then one run naming it.
    taken = harness.tick("postings")
    [run] = [r for r in taken.run_requests if r.job_name == "postings_job"]
    assert _batches(run) == [late_key] and run.partition_key == hour
    assert run.run_key == f"postings:{hour}:{late_key.rsplit('/', 1)[1]}"
    assert _indexed(harness, late_key) == [hour]
    after = _cursor(harness)
    assert not after.late and hour[:10] in after.days_due
    harness.run(run)
    assert "late-by-ten-minutes" in harness.table("raw_events")["event_id"].to_pylist()
    # Taken once: later sweeps see it in the index.
    _age(harness)
    harness.tick("postings")  # the rollup the late hour owes
    assert not [r for r in _requests(harness.tick("postings")) if r.job_name == "postings_job"]


def _requests(result) -> list[dg.RunRequest]:
    return [] if isinstance(result, dg.SkipReason) else list(result.run_requests or [])


def test_a_sweep_resumes_across_ticks_in_bounded_slices(harness, monkeypatch):
    late_key, hour = _plant_late(harness)
    monkeypatch.setattr(sensors.streams, "RECONCILE_KEYS_PER_TICK", 3)
    _age(harness)
    positions, runs = [], []
    while True:
        runs += [r for r in _requests(harness.tick("postings")) if r.job_name == "postings_job"]
        cursor = _cursor(harness)
        if not cursor.reconcile_after:
            break
        positions.append(cursor.reconcile_after)
        assert len(positions) < 100
    # Several slices, each ahead of the last, each one key in the cursor.
    assert len(positions) > 2 and positions == sorted(set(positions))
    runs += [r for r in _requests(harness.tick("postings")) if r.job_name == "postings_job"]
    assert [(r.partition_key, _batches(r)) for r in runs] == [(hour, [late_key])]
    assert not _cursor(harness).late


def test_a_slice_runs_while_runs_are_in_flight_and_the_batch_waits_for_them(harness):
    late_key, hour = _plant_late(harness)
    job = harness.defs.resolve_job_def("postings_job")
    runs = [  # as many as the sensor lets fly at once
        harness.instance.create_run_for_job(job_def=job, tags={"figstream/stream": "postings"})
        for _ in range(harness.settings.max_runs_in_flight)
    ]
    _age(harness)
    busy = harness.tick("postings")
    assert "in flight" in busy.skip_reason.skip_message
    assert "reconciliation found 1 late batches" in busy.skip_reason.skip_message
    assert _cursor(harness).late == {late_key} and not _indexed(harness, late_key)
    for run in runs:
        harness.instance.report_run_canceled(run)
    [taken] = [r for r in _requests(harness.tick("postings")) if r.job_name == "postings_job"]
    assert _batches(taken) == [late_key] and taken.partition_key == hour


def test_reconciliation_turned_off_never_sweeps(tmp_path, monkeypatch):
    generate(tmp_path, start=EPOCH, days=1, events_per_day=600, seed=11, bad_rate=0.01)
    harness = Harness(tmp_path, monkeypatch, max_runs_per_tick=1000, reconcile_every_seconds=0)
    harness.tick("postings")
    harness.tick("postings")
    assert _cursor(harness).reconciled_at == 0.0
