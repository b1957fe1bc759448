"""Live does not wait behind history: a tick that takes a catch-up of old hours together with
batches of the current hours requests the live hours at once, each its own run, and the history
as range runs of at most ``history_hours_per_run`` hours, one in flight at a time, below the
live runs' priority. A history run in flight holds back neither new live batches nor their
runs; every event still lands exactly once.
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
from streaming_harness import EPOCH, Harness

from figstream.ingest.dataset import generate
from figstream.ingest.landing import parse_batch_key
from sensors.streams import HISTORY, LANE_TAG, LIVE

HOUR = "%Y-%m-%d-%H:00"


def live_postings(harness: Harness, prefix: str, n: int) -> list[dict]:
    """``n`` job.posted events of the current hour, copied from a generated one."""
    record = json.loads(
        next((harness.home / "feeds").rglob("*.jsonl")).read_bytes().split(b"\n")[0]
    )
    now = dt.datetime.now(dt.UTC).isoformat()
    return [{**record, "id": f"{prefix}-{i}", "time": now} for i in range(n)]


def postings_runs(result) -> list[dg.RunRequest]:
    if isinstance(result, dg.SkipReason):
        return []
    return [r for r in result.run_requests or [] if r.job_name == "postings_job"]


def batch_keys(request: dg.RunRequest) -> list[str]:
    return request.run_config["ops"]["raw_events"]["config"]["batch_keys"]


def test_live_hours_are_their_own_runs_beside_a_history_catch_up(tmp_path, monkeypatch):
    generate(tmp_path, start=EPOCH, days=2, events_per_day=400, seed=9, bad_rate=0.0)
    harness = Harness(tmp_path, monkeypatch)  # max_runs_per_tick 6: 48 old hours are a catch-up
    live_floor = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime(HOUR)
    [live_key] = harness.publish(live_postings(harness, "live", 3))

    runs = postings_runs(harness.tick("postings"))
    live = [r for r in runs if r.tags[LANE_TAG] == LIVE]
    history = [r for r in runs if r.tags[LANE_TAG] == HISTORY]
    # The live hour: a run of its own, covering only the live hour, naming only its batch.
    [live_run] = live
    assert live_run.partition_key >= live_floor
    assert "dagster/asset_partition_range_start" not in live_run.tags
    assert batch_keys(live_run) == [live_key]
    # The history: one range run of at most a day of old hours, at a lower priority.
    [first] = history
    start = first.tags["dagster/asset_partition_range_start"]
    end = first.tags["dagster/asset_partition_range_end"]
    assert start.startswith("2026-11-01") and start < end < live_floor
    span = dt.datetime.strptime(end, HOUR) - dt.datetime.strptime(start, HOUR)
    assert span < dt.timedelta(hours=harness.settings.history_hours_per_run)
    assert int(first.tags["dagster/priority"]) < 0
    assert live_key not in batch_keys(first)
    cursor = harness.cursors["postings"]
    assert "history" in json.loads(cursor)

    # The history run in flight (not started): new live batches are taken and run at once,
    # and no second history run is asked for meanwhile.
    job = harness.defs.resolve_job_def("postings_job")
    in_flight = harness.instance.create_run_for_job(
        job_def=job, run_config=first.run_config, tags=first.tags
    )
    harness.run(live_run)
    [more] = harness.publish(live_postings(harness, "more", 2))
    [again] = postings_runs(harness.tick("postings"))
    assert again.tags[LANE_TAG] == LIVE and batch_keys(again) == [more]
    harness.run(again)

    # The history run done: the next chunk follows, one at a time, until the history is done.
    harness.instance.delete_run(in_flight.run_id)
    harness.run(first)
    chunks = [(start, end)]
    while runs := postings_runs(harness.tick("postings")):
        [run] = runs
        assert run.tags[LANE_TAG] == HISTORY
        chunks.append(
            (
                run.tags.get("dagster/asset_partition_range_start", run.partition_key),
                run.tags.get("dagster/asset_partition_range_end", run.partition_key),
            )
        )
        harness.run(run)
    assert len(chunks) == 2 and chunks[0][1] < chunks[1][0]
    assert "history" not in json.loads(harness.cursors["postings"])

    # Every event exactly once.
    manifest = json.loads((tmp_path / "generate-manifest.json").read_text())
    raw = harness.table("raw_events")
    assert len(set(raw["event_id"].to_pylist())) == raw.num_rows
    expected = manifest["events"] - manifest["events_by_type"]["board.merged"] + 5
    assert raw.num_rows == expected
    assert {parse_batch_key(k)[1] for k in (live_key, more)} <= set(raw["batch_id"].to_pylist())
