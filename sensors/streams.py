"""One sensor per stream: landed batches in, one run per touched event-time hour out.

A tick lists the landing zone after the cursor (re-listing a short look-back window, see
``figstream.ingest.cursor``), reads each new batch once to learn which hours of its stream
it touches, records that in the landing index, and requests one run per touched hour naming
exactly those batches. The index is written before the cursor moves, and a batch is listed only
once it is durable, so a daemon restart can repeat a tick (idempotent runs) but never skip a batch.

A batch that became visible only after the listing moved past its key plus the look-back is
found by the reconciliation (``reconcile_every_seconds``): a sweep of the last few arrival days
against the landing index, at most :data:`RECONCILE_KEYS_PER_TICK` keys a tick, resumed across
ticks from the cursor. What a slice finds waits in the cursor and is taken on the next tick
exactly like new batches, so the index is never written ahead of the cursor that owes the runs.

An object under ``landing/`` that is not named as a batch (a stray file, a compressed copy) is
never read or indexed: each tick that lists it logs a warning naming it, and takes the batches
beside it as usual (it used to fail every tick, wedging the stream).

A run that failed is retried by Dagster's run retries (``run_retries`` in the instance config).
A failure that the retry daemon never handled (it was killed between the failure and its
retry, say) would leave the run's batches unprocessed for good: the sensor requests such a run
again itself (:func:`_resume_requests`), so a crash never needs an operator to balance the books.
"""

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import replace

import dagster as dg

from assets.streaming import config_ops
from figstream.ingest.cursor import LandingCursor
from figstream.ingest.landing import LANDING_PREFIX, parse_batch_key
from figstream.settings import StreamingSettings
from figstream.streaming import landing_index
from figstream.streaming import stores as streaming_stores
from figstream.streaming.stores import HOUR_FORMAT
from resources.dagster_internals import PARENT_RUN_ID_TAG, RETRY_NUMBER_TAG, RUN_KEY_TAG
from resources.stores import StreamingResources

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


# A failed run the sensor requests again carries the id of the run it resumes, and how many
# resumes its line has had; a line is resumed at most MAX_RESUMES times.
RESUMES_TAG, RESUME_ATTEMPT_TAG = "figstream/resumes", "figstream/resume_attempt"
MAX_RESUMES = 2
RESUME_HORIZON = dt.timedelta(days=1)  # failures older than this are left to an operator
# A reconciliation slice lists at most this many keys (one index read each, about 0.35 s on
# SQLite) and keeps at most LATE_PER_TICK late batches in the cursor for the next tick.
RECONCILE_KEYS_PER_TICK = 1000
LATE_PER_TICK = 50
# The lane of a stream's run: live (what the sensor takes, at once) or history (a catch-up's
# older hours, one run in flight at a time, below the live runs' priority for the state pool).
LANE_TAG, LIVE, HISTORY = "figstream/lane", "live", "history"
PRIORITY_TAG, HISTORY_PRIORITY = "dagster/priority", "-1"
HISTORY_CHUNKS_PER_TICK = 8  # owed chunks a tick looks at (empty ones are skipped over)
# Tags a resumed run keeps: those the sensor set (the partition is set by partition_key). Not
# what the launcher or Dagster added at launch (figstream/worker, retry and failure tags).
_KEPT_TAGS = (
    "figstream/stream",
    LANE_TAG,
    PRIORITY_TAG,
    "figstream/batches",
    "figstream/first_batch",
    "figstream/last_batch",
    "dagster/max_runtime",
    "dagster/asset_partition_range_start",
    "dagster/asset_partition_range_end",
)


# Dagster's strict tag values are at most 63 characters of [A-Za-z0-9_.-]; batch ids are of
# those characters, and a longer one (a 64-character producer) keeps its sortable prefix.
TAG_VALUE_MAX = 63


def _batch_tags(keys: list[str]) -> dict[str, str]:
    """The run's batches, compactly: how many, and the first and last id in landing order (the
    run config holds every key; a materialisation's metadata lists them)."""
    ids = sorted(parse_batch_key(key)[1] for key in keys)
    return {
        "figstream/batches": str(len(ids)),
        "figstream/first_batch": ids[0][:TAG_VALUE_MAX],
        "figstream/last_batch": ids[-1][:TAG_VALUE_MAX],
    }


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
        # At most max_runs_in_flight runs of a stream (1 by default): while one runs, a backlog
        # folds into the next, larger run rather than into a growing pile of runs, each paying
        # a whole state pass (backpressure). A trickle (new batches of at most
        # overlap_max_bytes) does not wait: it starts one run more, so at a low rate an event
        # is not held back by the run before it. Runs of a stream need no order: event ids are
        # claimed atomically and every state step is an order-insensitive merge.
        # Only the stream's own runs hold it back: a daily rollup in flight (which recomputes
        # its days, so its cost grows with the day) runs beside them instead of stalling the
        # stream for as long as it takes.
        # History runs (a catch-up's older hours) go one at a time beside the live ones: they
        # neither hold the live runs back nor count towards max_runs_in_flight.
        in_flight = dg.RunsFilter(
            job_name=job.name, tags={"figstream/stream": stream}, statuses=IN_FLIGHT
        )
        records = context.instance.get_run_records(in_flight, limit=settings.max_runs_in_flight + 4)
        stranded = _stranded_requests(records, settings)
        if stranded:
            # Launched again by their own run keys (the daemon launches a NOT_STARTED run it
            # finds under a requested key instead of creating one); nothing else this tick.
            keys = ", ".join(r.run_key or "" for r in stranded)
            context.log.info(
                f"{stream}: launching runs a dead tick created but never launched: {keys}"
            )
            return dg.SensorResult(run_requests=stranded, cursor=context.cursor)
        history_busy = [r for r in records if r.dagster_run.tags.get(LANE_TAG) == HISTORY]
        busy = [r for r in records if r.dagster_run.tags.get(LANE_TAG) != HISTORY]
        stores = streaming.stores()
        # aws: what EventBridge queued for the stream lands as one batch first (durable before
        # the messages are deleted), and this tick's listing takes it like any landed batch.
        drained = streaming.drain(stream, stores.objects)
        if drained is not None and (drained.received or drained.dlq_depth):
            context.log.info(f"{stream}: queue drained: {drained.to_dict()}")
        cursor = LandingCursor.loads(context.cursor)
        listed = stores.objects.list(LANDING_PREFIX, start_after=cursor.start_after(lookback))
        listed, strays = landing_index.split_batch_keys(listed)
        if strays:
            # Not a batch: never read, never indexed; said on every tick it is listed, so an
            # operator moves it away (or lands its records as a batch).
            context.log.warning(_stray_note(strays))
        cursor = cursor.resolve(listed, lookback, lambda keys: _indexed(stores, stream, keys))
        new = cursor.new_keys(listed)[: settings.max_batches_per_tick]
        # Late batches an earlier tick's reconciliation found are taken now, like new ones; a
        # slice of the sweep runs even while runs are in flight (it requests nothing).
        late = sorted(cursor.late)
        before = cursor.dumps()
        now = time.time()
        cursor, found = _reconcile(stores, stream, cursor, lookback, settings, now)
        if found:
            context.log.info(f"{stream}: reconciliation found {_late_note(found)}")
        if len(busy) >= settings.max_runs_in_flight and not (
            len(busy) == settings.max_runs_in_flight and _trickle(stores, new, settings)
        ):
            run = busy[0].dagster_run
            reason = (
                f"{len(busy)} runs of {stream} in flight (latest {run.run_id}, {run.status.value})"
            )
            if not history_busy:
                history, cursor = _history_requests(stores, stream, job, ops, cursor, settings, now)
                if history:
                    context.log.info(f"{reason}; requesting the next chunk of history")
                    return dg.SensorResult(run_requests=history, cursor=cursor.dumps())
            return _skip(reason, found, cursor, before)

        requests = _resume_requests(context.instance, stream, settings)
        # Daily rollups owed by earlier ticks: requested only once no stream run is in flight,
        # of this stream or another, and no history of this stream is owed, so that they see
        # every stream's output of their days (board_daily_stats reads both streams' state: the
        # boards stream, idle early in a catch-up, asked for a day's rollup while the postings
        # of that day were still being ingested, and legacy parity compared it to a partial
        # day); at most once per configured interval.
        idle = not busy and not history_busy and not cursor.history
        # Only days that have ended (UTC): a day's rollup costs what the day's jobs cost, so
        # one of the day in progress every few minutes grew with the day and took the cores
        # the live stream needed (2,000 events/s: 86 s, then 136 s, 10-15 minutes into the day,
        # and the backlog grew). Today stays due and is rolled up once it ends; a late event of
        # an ended day makes that day due again.
        ended = {day for day in cursor.days_due if day < _today(now)}
        if (
            stats_job is not None
            and idle
            and not _any_stream_in_flight(context.instance)
            and not _rollup_in_flight(context.instance, stream, stats_job)
            and ended
            and now - cursor.days_requested_at >= settings.daily_stats_every_seconds
        ):
            requests.append(_stats_request(stream, stats_job, sorted(ended), now))
            cursor = replace(cursor, days_due=cursor.days_due - ended, days_requested_at=now)

        taken = sorted({*new, *late})
        if not taken:
            if not history_busy:
                history, cursor = _history_requests(stores, stream, job, ops, cursor, settings, now)
                requests += history
            if requests:
                return dg.SensorResult(run_requests=requests, cursor=cursor.dumps())
            reason = f"no new batches after {cursor.watermark or 'the start'}"
            return _skip(reason, found, cursor, before)

        # The index is durable before the cursor moves past these batches.
        touched = landing_index.index_landing(stores, stream, taken)
        cursor = replace(cursor.advance(new, lookback), late=cursor.late - set(late))
        if late:
            context.log.info(f"{stream}: taking {_late_note(late)} the reconciliation found")
        if len(touched) > settings.max_runs_per_tick:
            # A catch-up: the live hours now, the history owed and requested a chunk at a time.
            floor = _live_floor(now, settings)
            history = {p: keys for p, keys in touched.items() if p < floor}
            touched = {p: keys for p, keys in touched.items() if p >= floor}
            cursor = cursor.owe_history(history, [k for keys in history.values() for k in keys])
            if history:
                context.log.info(
                    f"{stream}: catch-up of {len(history)} history hours "
                    f"({min(history)} to {max(history)}) owed, {len(touched)} live hours now"
                )
        cursor.days_due |= {_day(p) for p in touched}
        requests += _stream_requests(stream, job, ops, touched, taken, settings, now)
        if not history_busy:
            history_requests, cursor = _history_requests(
                stores, stream, job, ops, cursor, settings, now
            )
            requests += history_requests
        if not requests:
            return dg.SensorResult(
                skip_reason=f"{len(taken)} new batches ({len(late)} late), none with {stream} "
                "events",
                cursor=cursor.dumps(),
            )
        return dg.SensorResult(run_requests=requests, cursor=cursor.dumps())

    return _sensor


def _reconcile(
    stores: streaming_stores.Stores,
    stream: str,
    cursor: LandingCursor,
    lookback: dt.timedelta,
    settings: StreamingSettings,
    now: float,
) -> tuple[LandingCursor, list[str]]:
    """One slice of the reconciliation when one is due: the cursor after it, and what it found."""
    room = LATE_PER_TICK - len(cursor.late)
    if room <= 0 or not cursor.reconcile_due(now, settings.reconcile_every_seconds):
        return cursor, []
    sweep = landing_index.reconcile_slice(
        stores,
        stream,
        cursor.reconcile_from(settings.reconcile_days),
        cursor.start_after(lookback),
        limit=RECONCILE_KEYS_PER_TICK,
        max_found=room,
    )
    return cursor.reconciled(sweep.found, sweep.resume_after, now), sweep.found


def _indexed(stores: streaming_stores.Stores, stream: str, keys: list[str]) -> set[str]:
    """Those of ``keys`` the landing index holds for the stream (one point read each)."""
    return {key for key in keys if stores.state.partitions_for(stream, key)}


def _stray_note(keys: list[str]) -> str:
    return (
        f"{len(keys)} objects under {LANDING_PREFIX} are not landing batches and are left "
        f"unread (first {keys[0]!r}; a batch is named {LANDING_PREFIX}YYYY-MM-DD/"
        "YYYYMMDDTHHMMSSffffffZ-[producer-]NNNNNN.jsonl)"
    )


def _late_note(keys: list[str]) -> str:
    return f"{len(keys)} late batches (first {keys[0]})"


def _skip(reason: str, found: list[str], cursor: LandingCursor, before: str):
    """A skip that keeps what a reconciliation slice did to the cursor, and says what it found."""
    if found:
        reason += f"; reconciliation found {_late_note(found)}, taken next tick"
    if cursor.dumps() == before:
        return dg.SkipReason(reason)
    return dg.SensorResult(skip_reason=reason, cursor=cursor.dumps())


def _trickle(stores: streaming_stores.Stores, new: list[str], settings: StreamingSettings) -> bool:
    """Whether ``new`` batches are few enough bytes to start a run beside one in flight."""
    if not new or not settings.overlap_max_bytes:
        return False
    total = 0
    for key in new:
        total += stores.objects.size(key)
        if total > settings.overlap_max_bytes:
            return False
    return True


def _stranded_requests(
    records: Sequence[dg.RunRecord], settings: StreamingSettings
) -> list[dg.RunRequest]:
    """The stream's runs a tick created but never launched, requested again by their run keys.

    The daemon creates a sensor's run (NOT_STARTED) and then launches it; killed in between,
    it leaves a run that counts as in flight for ever and holds the stream back, and a later
    tick does not ask for the same run key again (its cursor has moved on, or the batches are
    taken under another key). With the default run coordinator a run is NOT_STARTED for a
    moment only, so one still NOT_STARTED ``resume_failed_after_seconds`` after it was created
    is such a leftover. Requesting its run key again makes the daemon launch that very run
    (``Run ... already created with the run key``), with its own batches, partition and tags.
    """
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=settings.resume_failed_after_seconds)
    out = []
    for record in records:
        run = record.dagster_run
        key = run.tags.get(RUN_KEY_TAG)
        if run.status != dg.DagsterRunStatus.NOT_STARTED or not key:
            continue
        if record.create_timestamp > cutoff:
            continue
        out.append(
            dg.RunRequest(
                run_key=key,
                job_name=run.job_name,
                run_config=run.run_config,
                partition_key=run.tags.get("dagster/partition"),
                tags={k: v for k, v in run.tags.items() if k in _KEPT_TAGS},
            )
        )
    return out


def _resume_requests(
    instance: dg.DagsterInstance, stream: str, settings: StreamingSettings
) -> list[dg.RunRequest]:
    """The stream's failed runs that nothing re-ran, requested again with the same batches.

    A failed run is resumed once ``resume_failed_after_seconds`` have passed since it failed
    with no retry of it launched (Dagster's retries are children of the run), while Dagster
    would still have retried it (its retry number is below ``run_retries.max_retries``: a
    line that used up its retries failing is left to an operator) and its line has been
    resumed fewer than :data:`MAX_RESUMES` times. The new run names the same batches and
    partition; every step is idempotent, so it is safe even if the retry comes after all.
    A cancelled run is not resumed: cancelling is a person's choice (re-execute it to process
    its batches).
    """
    now = dt.datetime.now(dt.UTC)
    failed = instance.get_run_records(
        dg.RunsFilter(
            tags={"figstream/stream": stream},
            statuses=[dg.DagsterRunStatus.FAILURE],
            updated_before=now - dt.timedelta(seconds=settings.resume_failed_after_seconds),
            updated_after=now - RESUME_HORIZON,
        ),
        limit=100,
    )
    max_retries = instance.run_retries_max_retries if instance.run_retries_enabled else 0
    runs = [
        r.dagster_run
        for r in failed
        if int(r.dagster_run.tags.get(RETRY_NUMBER_TAG, 0)) < max_retries
        and int(r.dagster_run.tags.get(RESUME_ATTEMPT_TAG, 0)) < MAX_RESUMES
    ]
    if not runs:
        return []
    ids = [run.run_id for run in runs]
    followed = {
        record.dagster_run.tags[tag]
        for tag in (PARENT_RUN_ID_TAG, RESUMES_TAG)
        for record in instance.get_run_records(dg.RunsFilter(tags={tag: ids}))
    }
    requests = []
    for run in runs:
        if run.run_id in followed:
            continue
        tags = {k: v for k, v in run.tags.items() if k in _KEPT_TAGS}
        tags[RESUMES_TAG] = run.run_id
        tags[RESUME_ATTEMPT_TAG] = str(int(run.tags.get(RESUME_ATTEMPT_TAG, 0)) + 1)
        requests.append(
            dg.RunRequest(
                run_key=f"resume:{run.run_id}",
                job_name=run.job_name,
                run_config=run.run_config,
                partition_key=run.tags.get("dagster/partition"),
                tags=tags,
            )
        )
    return requests


def _stream_requests(
    stream: str,
    job,
    ops: list[str],
    touched: dict[str, list[str]],
    taken: list[str],
    settings: StreamingSettings,
    now: float,
) -> list[dg.RunRequest]:
    if not touched:
        return []
    last = taken[-1].rsplit("/", 1)[1]
    # A run left STARTED by a hard crash (its worker gone with the host) would count as in
    # flight forever; run monitoring cancels a streaming run that outlives this.
    tags = {
        "figstream/stream": stream,
        "dagster/max_runtime": str(settings.max_run_seconds),
        LANE_TAG: LIVE,
    }
    if len(touched) > settings.max_runs_per_tick or (
        len(touched) > 1 and min(touched) >= _live_floor(now, settings)
    ):
        # More hours than runs a tick, or only live hours: one run over the range; each hour
        # still reads only the batches the index holds for it. Past an hour's end, batches keep
        # holding a few late lines of it for minutes: a run per live hour then paid a run's
        # fixed cost twice a tick and took both runs in flight (the sustained bench across
        # 04:00, b52babf: runs grew from 4.8 to 30-50 s and the backlog to 128k records).
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
                    **_batch_tags(keys),
                },
            )
        ]
    return [
        dg.RunRequest(
            run_key=f"{stream}:{partition}:{last}",
            job_name=job.name,
            partition_key=partition,
            run_config=_run_config(ops, keys),
            tags={**tags, **_batch_tags(keys)},
        )
        for partition, keys in sorted(touched.items())
    ]


def _live_floor(now: float, settings: StreamingSettings) -> str:
    """The oldest live hour: the clock's hour and the ``live_hours - 1`` before it."""
    hour = dt.datetime.fromtimestamp(now, dt.UTC).replace(minute=0, second=0, microsecond=0)
    return (hour - dt.timedelta(hours=settings.live_hours - 1)).strftime(HOUR_FORMAT)


def _history_requests(
    stores: streaming_stores.Stores,
    stream: str,
    job,
    ops: list[str],
    cursor: LandingCursor,
    settings: StreamingSettings,
    now: float,
) -> tuple[list[dg.RunRequest], LandingCursor]:
    """The next chunk of the history the cursor owes, as one run (none when nothing is owed):
    at most ``history_hours_per_run`` hours, over the batches the landing index holds for them
    within the owed key range. Called only while no history run of the stream is in flight."""
    for _ in range(HISTORY_CHUNKS_PER_TICK):  # empty chunks (gaps) are passed over
        if not cursor.history:
            return [], cursor
        first, last, lo, hi = cursor.history
        start = dt.datetime.strptime(first, HOUR_FORMAT)
        hours = [
            hour
            for n in range(settings.history_hours_per_run)
            if (hour := (start + dt.timedelta(hours=n)).strftime(HOUR_FORMAT)) <= last
        ]
        cursor = cursor.history_after(hours[-1])
        owed = {
            hour: keys
            for hour in hours
            if (
                keys := [
                    k
                    for k in stores.state.batches_for(stream, hour)
                    if lo <= parse_batch_key(k)[1] <= hi
                ]
            )
        }
        if not owed:
            continue
        cursor.days_due |= {_day(p) for p in owed}
        keys = sorted({k for batch in owed.values() for k in batch})
        start_hour, end_hour = min(owed), max(owed)
        tags = {
            "figstream/stream": stream,
            "dagster/max_runtime": str(settings.max_run_seconds),
            LANE_TAG: HISTORY,
            PRIORITY_TAG: HISTORY_PRIORITY,
            **_batch_tags(keys),
        }
        if start_hour != end_hour:
            tags["dagster/asset_partition_range_start"] = start_hour
            tags["dagster/asset_partition_range_end"] = end_hour
        request = dg.RunRequest(
            run_key=f"{stream}:history:{start_hour}...{end_hour}:{hi}",
            job_name=job.name,
            partition_key=start_hour if start_hour == end_hour else None,
            run_config=_run_config(ops, keys),
            tags=tags,
        )
        return [request], cursor
    return [], cursor


def _any_stream_in_flight(instance) -> bool:
    """Whether a run of any stream (live or history lane) is in flight."""
    return any(
        instance.get_run_records(dg.RunsFilter(tags={LANE_TAG: lane}, statuses=IN_FLIGHT), limit=1)
        for lane in (LIVE, HISTORY)
    )


def _rollup_in_flight(instance, stream: str, stats_job) -> bool:
    """Whether a daily rollup of the stream is still running (never two at once)."""
    rollups = dg.RunsFilter(
        job_name=stats_job.name, tags={"figstream/stream": stream}, statuses=IN_FLIGHT
    )
    return bool(instance.get_run_records(rollups, limit=1))


def _today(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()


def _stats_request(stream: str, stats_job, days: list[str], now: float) -> dg.RunRequest:
    # The stream's tag: the sensor sees the rollup in flight and asks for no other meanwhile.
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
