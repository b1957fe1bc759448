"""A range run's metadata describes each hour: the same generated hours run once as a range
and once an hour at a time (two homes, the same landed data) give each hour the same figures,
on the range's per-hour observations and on the one-hour runs' materialisations; the range's
materialisation carries only the range's totals, named ``range_*``.

A range run's steps each go over every hour before the next step starts, so the one-hour runs
go asset by asset in the same order: what a step reports can depend on the state the steps
before it left (``search_index`` deletes a job a later hour's ``job_state`` expired)."""

from __future__ import annotations

import dagster as dg
from streaming_harness import EPOCH, Harness

from figstream.ingest.dataset import generate

ASSETS = ["raw_events", "clean_postings", "deduped_postings", "job_state", "search_index"]
HOURS = 3


def plain(metadata: dict) -> dict:
    """Metadata values, without the lag (it depends on when each run ran)."""
    return {k: v.value for k, v in metadata.items() if not k.startswith("lag_seconds")}


def generated(path, monkeypatch) -> Harness:
    generate(path, start=EPOCH, days=1, seed=5, events_per_day=600, bad_rate=0.03)
    return Harness(path, monkeypatch)


def test_each_hour_of_a_range_run_has_the_figures_of_its_own_one_hour_run(tmp_path, monkeypatch):
    partitions = [f"{EPOCH.isoformat()}-{h:02d}:00" for h in range(HOURS)]
    # One home at a time: a harness points FIGSTREAM_HOME at its own.
    ranged = generated(tmp_path / "range", monkeypatch)
    job = ranged.defs.resolve_job_def("postings_job")
    result = job.execute_in_process(
        instance=ranged.instance,
        tags={
            "dagster/asset_partition_range_start": partitions[0],
            "dagster/asset_partition_range_end": partitions[-1],
        },
    )
    assert result.success
    observed = {
        (o.asset_key.path[-1], o.partition): o
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION
        for o in [e.event_specific_data.asset_observation]
    }
    assert set(observed) == {(a, p) for a in ASSETS for p in partitions}

    hourly = generated(tmp_path / "hourly", monkeypatch)
    # Each asset an hour at a time, in the order the range run's steps took them: search_index
    # reports the state as of its step, after the range's job_state step did every hour.
    one_hour = {}
    for name in ASSETS:
        for partition in partitions:
            run = hourly.defs.resolve_job_def("postings_job").execute_in_process(
                instance=hourly.instance,
                partition_key=partition,
                asset_selection=[dg.AssetKey(name)],
            )
            assert run.success
            [event] = run.get_asset_materialization_events()
            one_hour[(name, partition)] = event.event_specific_data.materialization

    for key, observation in observed.items():
        own = plain(observation.metadata)
        alone = plain(one_hour[key].metadata)
        # A one-hour ingest also lists its batch ids (they differ between the two homes).
        shared = {k: v for k, v in alone.items() if k in own}
        assert own == shared, key
        assert set(alone) - set(own) <= {"first_batch", "last_batch", "batch_ids"}, key
    # The hours differ from each other, so the check above compares something.
    rows = [observed[("clean_postings", p)].metadata["rows"].value for p in partitions]
    assert len(set(rows)) > 1 and all(n > 0 for n in rows)
    events = [observed[("job_state", p)].metadata["events"].value for p in partitions]
    assert all(n > 0 for n in events)

    # Every hour of the range is materialised with the range's metadata: totals, named so.
    for event in result.get_asset_materialization_events():
        m = event.event_specific_data.materialization
        name = m.asset_key.path[-1]
        assert m.metadata["hours"].value == HOURS, name
        assert m.metadata["first_partition"].value == partitions[0]
        per_hour = {k for o in observed.values() for k in o.metadata}
        assert not (per_hour - {"dead_letters_by_reason"}) & set(m.metadata), name
    clean = [
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("clean_postings")
    ]
    assert len(clean) == HOURS
    assert all(m.metadata["range_rows"].value == sum(rows) for m in clean)
