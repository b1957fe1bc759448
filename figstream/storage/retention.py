"""Which Dagster runs may go: the run-history policy, on plain data (no Dagster here).

Deleting a run in Dagster deletes its whole event log, its materialisations with it. What
that does, measured on Dagster 1.13.27 (``tests/sensors/test_maintenance.py`` pins it):

- a partition whose *only* materialisation goes is dropped by the event-log query
  (``get_materialized_partitions``), while the UI's cached partition status still says
  materialised until the cache is rebuilt, and a downstream asset's status computed afresh
  already treats it as missing: the status becomes wrong and inconsistent;
- ``get_latest_materialization_event`` and the asset record keep pointing at a deleted
  run's event; the asset stays in the catalog;
- the asset's history (``fetch_materializations``) loses that run's events, and a downstream
  materialisation's ``dagster/input_event_pointer`` to them dangles;
- a partition that a *later, kept* run materialised again is untouched by all of the above.

So a streaming run is deleted only when it is old, finished, and none of its partitions'
latest materialisation is its own: the run that holds a partition's latest materialisation
is kept, so every partition keeps its status and its latest event. The rule:

1. a run not finished (queued, started, cancelling ...) stays: ``delete_run`` would also free
   its pool slots;
2. only the streaming jobs' runs go (``streaming_jobs``, tagged ``figstream/stream``): legacy
   nights, migration jobs and anything launched by a backfill (``dagster/backfill``) stay;
3. every run younger than ``keep_days`` stays, a failed one younger than ``failed_keep_days``;
4. a run with no partition stays (nothing says what it materialised);
5. a run that holds the latest materialisation of any (asset, partition) stays.

A failed run past ``failed_keep_days`` goes even if it was its partition's last attempt: what
the partition materialised before stays, and the UI's cached status keeps the partition's
*failed* mark (a rebuilt cache would drop it).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

STREAM_TAG = "figstream/stream"
BACKFILL_TAG = "dagster/backfill"
FINISHED = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


class Keep(StrEnum):
    """Why a run stays."""

    UNFINISHED = "unfinished"
    NOT_STREAMING = "not_streaming"
    BACKFILL = "backfill"
    YOUNG = "young"
    FAILED_RECENTLY = "failed_recently"
    NO_PARTITION = "no_partition"
    HOLDS_LATEST = "holds_latest"


@dataclass(frozen=True)
class RunRetention:
    keep_days: int = 7
    failed_keep_days: int = 30
    streaming_jobs: frozenset[str] = frozenset({"postings_job", "boards_job"})


@dataclass(frozen=True)
class RunFacts:
    """A run as the policy sees it. ``status``: a ``DagsterRunStatus`` value; ``created``:
    timezone-aware; ``partitions``: every partition key the run targets (a range expanded)."""

    run_id: str
    job_name: str
    status: str
    created: dt.datetime
    tags: Mapping[str, str] = field(default_factory=dict)
    partitions: tuple[str, ...] = ()


@dataclass
class PurgePlan:
    delete: list[str] = field(default_factory=list)
    kept: Counter[Keep] = field(default_factory=Counter)

    def summary(self) -> str:
        kept = ", ".join(f"{reason} {n}" for reason, n in sorted(self.kept.items())) or "none"
        return f"{len(self.delete)} runs to delete; kept: {kept}"


def reason_to_keep(run: RunFacts, now: dt.datetime, policy: RunRetention) -> Keep | None:
    """Rules 1-4: whether a run stays whatever the event log says (None: it is a candidate)."""
    if run.status not in FINISHED:
        return Keep.UNFINISHED
    if run.job_name not in policy.streaming_jobs or STREAM_TAG not in run.tags:
        return Keep.NOT_STREAMING
    if BACKFILL_TAG in run.tags:
        return Keep.BACKFILL
    age = now - run.created
    if age < dt.timedelta(days=policy.keep_days):
        return Keep.YOUNG
    if run.status == "FAILURE" and age < dt.timedelta(days=policy.failed_keep_days):
        return Keep.FAILED_RECENTLY
    if not run.partitions:
        return Keep.NO_PARTITION
    return None


def plan_purge(
    runs: Iterable[RunFacts],
    now: dt.datetime,
    policy: RunRetention,
    latest_holders: Collection[str],
) -> PurgePlan:
    """The runs to delete among ``runs``. ``latest_holders``: ids of the runs that hold the
    latest materialisation of some (asset, partition) that a candidate targets."""
    plan = PurgePlan()
    for run in runs:
        reason = reason_to_keep(run, now, policy)
        if reason is None and run.run_id in latest_holders:
            reason = Keep.HOLDS_LATEST
        if reason is None:
            plan.delete.append(run.run_id)
        else:
            plan.kept[reason] += 1
    return plan
