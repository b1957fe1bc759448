"""The run-history rule on plain data: each reason to keep a run, and what is never deleted."""

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from figstream.storage.retention import Keep, RunFacts, RunRetention, plan_purge, reason_to_keep

NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
POLICY = RunRetention(keep_days=7, failed_keep_days=30)
STREAM = {"figstream/stream": "postings"}


def _run(days_old: float, status="SUCCESS", job="postings_job", tags=STREAM, parts=("h",)):
    created = NOW - dt.timedelta(days=days_old)
    return RunFacts(f"r{days_old}{status}{job}", job, status, created, dict(tags), parts)


def test_each_reason_to_keep():
    assert reason_to_keep(_run(8), NOW, POLICY) is None
    assert reason_to_keep(_run(6.99), NOW, POLICY) == Keep.YOUNG
    assert reason_to_keep(_run(40, status="STARTED"), NOW, POLICY) == Keep.UNFINISHED
    assert reason_to_keep(_run(40, status="CANCELING"), NOW, POLICY) == Keep.UNFINISHED
    assert reason_to_keep(_run(40, job="legacy_job"), NOW, POLICY) == Keep.NOT_STREAMING
    assert reason_to_keep(_run(40, tags={}), NOW, POLICY) == Keep.NOT_STREAMING
    backfill = {**STREAM, "dagster/backfill": "b1"}
    assert reason_to_keep(_run(400, tags=backfill), NOW, POLICY) == Keep.BACKFILL
    assert reason_to_keep(_run(29, status="FAILURE"), NOW, POLICY) == Keep.FAILED_RECENTLY
    assert reason_to_keep(_run(31, status="FAILURE"), NOW, POLICY) is None
    assert reason_to_keep(_run(8, status="CANCELED"), NOW, POLICY) is None
    assert reason_to_keep(_run(8, parts=()), NOW, POLICY) == Keep.NO_PARTITION


def test_the_holder_of_a_latest_materialisation_stays():
    old, holder = _run(8), _run(9)
    plan = plan_purge([old, holder], NOW, POLICY, latest_holders={holder.run_id})
    assert plan.delete == [old.run_id]
    assert plan.kept == {Keep.HOLDS_LATEST: 1}
    assert plan.summary() == "1 runs to delete; kept: holds_latest 1"


STATUSES = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING", "SUCCESS", "FAILURE"]
runs = st.builds(
    _run,
    days_old=st.floats(0, 60),
    status=st.sampled_from([*STATUSES, "CANCELED"]),
    job=st.sampled_from(["postings_job", "boards_job", "legacy_job"]),
    tags=st.sampled_from([STREAM, {}, {**STREAM, "dagster/backfill": "b"}]),
)


@given(st.lists(runs, max_size=20, unique_by=lambda r: r.run_id), st.data())
def test_never_deleted_young_unfinished_foreign_or_holding(batch, data):
    holders = data.draw(st.sets(st.sampled_from([r.run_id for r in batch]))) if batch else set()
    deleted = set(plan_purge(batch, NOW, POLICY, holders).delete)
    for run in batch:
        if run.run_id in deleted:
            assert run.status in {"SUCCESS", "FAILURE", "CANCELED"}
            assert NOW - run.created >= dt.timedelta(days=7)
            assert run.job_name != "legacy_job" and "dagster/backfill" not in run.tags
            assert run.run_id not in holders
            assert run.status != "FAILURE" or NOW - run.created >= dt.timedelta(days=30)
