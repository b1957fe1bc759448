"""One sensor per stream: landed batches in, one run per touched event-time hour out.

A tick lists the landing zone after the cursor (re-listing a short look-back window, see
``figstream.cursor``), reads each new batch once to learn which hours of its stream it touches,
records that in the landing index, and requests one run per touched hour naming exactly those
batches. The index is written before the cursor moves, and a batch is listed only once it is
durable, so a daemon restart can repeat a tick (idempotent runs) but never skip a batch.
"""

import datetime as dt
import time
from dataclasses import replace

import dagster as dg

from assets.streaming import config_ops
from figstream import streaming as steps
from figstream.cursor import LandingCursor
from figstream.landing import LANDING_PREFIX
from figstream.settings import StreamingSettings
from resources.stores import StreamingResources

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _run_config(ops: list[str], keys: list[str]) -> dict:
    return {"ops": {op: {"config": {"batch_keys": keys}} for op in ops}}


def _day(partition: str) -> str:
    return partition[:10]


def stream_sensor(
    stream: str, job, stats_job, settings: StreamingSettings, present: set[str] | None = None
) -> dg.SensorDefinition:
    """``present``: the streaming assets that run (the ledger's choice); all when None.
    Without a ``stats_job`` (board_daily_stats does not run) no daily rollups are asked for."""
    lookback = dt.timedelta(seconds=settings.lookback_seconds)
    ops = config_ops(stream, present)

    @dg.sensor(
        name=f"{stream}_sensor",
        jobs=[j for j in (job, stats_job) if j is not None],
        minimum_interval_seconds=1,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests a {job.name} run per event-time hour touched by new batches.",
    )
    def _sensor(context: dg.SensorEvaluationContext, streaming: StreamingResources):
        # At most max_runs_in_flight runs of a stream (1 by default): while one runs, new batches
        # fold into the next, larger run rather than into a growing pile of runs, each paying a
        # whole state pass (backpressure). Runs of a stream need no order: event ids are
        # claimed atomically and every state step is an order-insensitive merge.
        busy = context.instance.get_run_records(
            dg.RunsFilter(tags={"figstream/stream": stream}, statuses=IN_FLIGHT),
            limit=settings.max_runs_in_flight,
        )
        if len(busy) >= settings.max_runs_in_flight:
            run = busy[0].dagster_run
            return dg.SkipReason(
                f"{len(busy)} runs of {stream} in flight (latest {run.run_id}, {run.status.value})"
            )

        stores = streaming.stores()
        cursor = LandingCursor.loads(context.cursor)
        requests: list[dg.RunRequest] = []
        # Daily rollups owed by earlier ticks: requested only now that no run of the stream
        # is in flight, so they see those runs' output; at most once per configured interval.
        now = time.time()
        idle = not busy
        if (
            stats_job is not None
            and idle
            and cursor.days_due
            and now - cursor.days_requested_at >= settings.daily_stats_every_seconds
        ):
            requests.append(_stats_request(stream, stats_job, sorted(cursor.days_due), now))
            cursor = replace(cursor, days_due=set(), days_requested_at=now)

        listed = stores.objects.list(LANDING_PREFIX, start_after=cursor.start_after(lookback))
        new = cursor.new_keys(listed)[: settings.max_batches_per_tick]
        if not new:
            if requests:
                return dg.SensorResult(run_requests=requests, cursor=cursor.dumps())
            return dg.SkipReason(f"no new batches after {cursor.watermark or 'the start'}")

        # The index is durable before the cursor moves past these batches.
        touched = steps.index_landing(stores, stream, new)
        cursor = cursor.advance(new, lookback)
        cursor.days_due |= {_day(p) for p in touched}
        requests += _stream_requests(stream, job, ops, touched, new, settings)
        if not requests:
            return dg.SensorResult(
                skip_reason=f"{len(new)} new batches, none with {stream} events",
                cursor=cursor.dumps(),
            )
        return dg.SensorResult(run_requests=requests, cursor=cursor.dumps())

    return _sensor


def _stream_requests(
    stream: str,
    job,
    ops: list[str],
    touched: dict[str, list[str]],
    new: list[str],
    settings: StreamingSettings,
) -> list[dg.RunRequest]:
    if not touched:
        return []
    last = new[-1].rsplit("/", 1)[1]
    # A run left STARTED by a hard crash (its worker gone with the host) would count as in
    # flight forever; run monitoring cancels a streaming run that outlives this.
    tags = {"figstream/stream": stream, "dagster/max_runtime": str(settings.max_run_seconds)}
    if len(touched) > settings.max_runs_per_tick:
        # A catch-up (history landing at once): one run over the touched range instead of a
        # run per hour; each hour still reads only the batches the index holds for it.
        first, final = min(touched), max(touched)
        keys = sorted({k for batch in touched.values() for k in batch})
        return [
            dg.RunRequest(
                run_key=f"{stream}:{first}...{final}:{last}",
                job_name=job.name,
                run_config=_run_config(ops, keys),
                tags={
                    **tags,
                    "dagster/asset_partition_range_start": first,
                    "dagster/asset_partition_range_end": final,
                    "figstream/batches": str(len(new)),
                },
            )
        ]
    return [
        dg.RunRequest(
            run_key=f"{stream}:{partition}:{last}",
            job_name=job.name,
            partition_key=partition,
            run_config=_run_config(ops, keys),
            tags={**tags, "figstream/batches": str(len(keys))},
        )
        for partition, keys in sorted(touched.items())
    ]


def _stats_request(stream: str, stats_job, days: list[str], now: float) -> dg.RunRequest:
    # The stream's tag: the sensor waits for the rollup like for any run of its stream.
    tags = {"figstream/stream": stream}
    if len(days) > 1:
        tags |= {
            "dagster/asset_partition_range_start": days[0],
            "dagster/asset_partition_range_end": days[-1],
        }
    return dg.RunRequest(
        run_key=f"{stream}:stats:{days[0]}...{days[-1]}:{int(now)}",
        job_name=stats_job.name,
        partition_key=days[0] if len(days) == 1 else None,
        tags=tags,
    )
