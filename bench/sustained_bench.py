"""Sustained load into the real daemon: 2,000 events/s for 10 minutes (30 for issue 19's
targets: ``--minutes 30``), backlog every 10 s.

    .venv/bin/python bench/sustained_bench.py [--quick] [--minutes 10] [--rate 2000]
        [--source produce|pregen] [--no-write]

One ``dagster dev -w workspace.yaml`` (the repository's own workspace) on a temporary
FIGSTREAM_HOME and DAGSTER_HOME (``platform/local/dagster.yaml`` copied in). After a warm-up
batch has gone through, a source lands events at ``--rate`` for ``--minutes``:

* ``produce``: the live producer, ``figstream produce`` in its own process (what ``make dev``
  runs), whose own report gives the rate it achieved next to the daemon;
* ``pregen``: the same kind of stream (``figstream.ingest.publish._live_events`` envelopes, the
  producer's late, duplicate and bad-record rates) generated into a file *before* the clock
  starts; during the run a thread only stamps event times (now, or minutes late) and lands a
  batch every second through ``Publisher``. It takes the producer's own CPU out of the picture.

Before ``dagster dev`` starts, ``produce()`` runs alone for 15 s at the same rate: its
achieved rate and CPU seconds per second say whether it can sustain the rate at all.

Every 10 s (and after the source stops, until the backlog drains or ``--drain`` seconds pass):

* landed: records in landing batches (every line of every batch, counted once per batch);
* ingested: records of the batches whose ingest fragment exists (landing index record counts,
  per stream and hour), exact at batch granularity: backlog = landed - ingested;
* rows + dead letters: rows in ``raw_events``/``board_mergers`` fragments plus dead letters,
  the conservation view; landed - (rows + dead letters) also holds the dropped duplicate
  deliveries, so it never reaches 0;
* runs by status, the search index snapshot's age, the 1-minute load average.

Results: ``bench/results/sustained.json`` and the sustained table of ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import os
import random
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from benchlib import (
    BIN,
    ROOT,
    Recording,
    add_record_args,
    dagster_dev,
    fmt,
    linear_slope,
    load_1m,
    logger,
    record,
    rerender,
    run_statuses,
    sensor_ticks,
    start_producer,
    step_seconds,
    stop_producer,
    summary,
    temp_homes,
    verdict,
)

from figstream.ingest.publish import Publisher
from figstream.storage.deadletter import SqliteDeadLetterStore, deadletter_path
from figstream.storage.objects import LocalObjectStore
from figstream.storage.state import state_path
from figstream.streaming.index_export import CHANGES
from figstream.streaming.stores import INGEST_TABLES, fragment_key

BENCH = "sustained"
SAMPLE_EVERY_S = 10.0
CALIBRATE_S = 15.0
# Placeholders of a pre-generated line's event time, replaced when the line lands.
NOW_MARK = b"1999-12-31T23:59:59.999999Z"
LATE_MARK = b"1999-12-31T23:59:58.999999Z"
log = logger(BENCH)


# --- sources ------------------------------------------------------------------------------------


def calibrate_produce(rate: float, env: dict[str, str], base: Path) -> dict:
    """``produce()`` alone for a few seconds: achieved rate and CPU seconds per second."""
    code = (
        "import json, resource, sys\n"
        "from figstream.ingest.publish import produce\n"
        "from figstream.storage.objects import LocalObjectStore\n"
        f"s = produce(LocalObjectStore(sys.argv[1]), rate={rate}, duration={CALIBRATE_S},"
        " seed=3, producer='calibrate')\n"
        "u = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print(json.dumps({'achieved_rate': round(s.achieved_rate, 1), 'events': s.events,"
        " 'cpu_seconds': round(u.ru_utime + u.ru_stime, 2)}))\n"
    )
    target = base / "calibrate"
    out = subprocess.run(
        [str(BIN / "python"), "-c", code, str(target)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    shutil.rmtree(target, ignore_errors=True)
    result = orjson.loads(out.stdout.strip().splitlines()[-1])
    result["cpu_per_second"] = round(result["cpu_seconds"] / CALIBRATE_S, 3)
    result["seconds"] = CALIBRATE_S
    result["load_1m"] = load_1m()
    return result


def pregenerate(path: Path, events: int, rate: float, seed: int) -> dict:
    """Lines of a live stream with placeholder event times, in landing order."""
    from figstream.ingest.generate import (
        BAD_KINDS,
        DUPLICATE_RATE,
        LATE_MINUTES_RATE,
        corrupt_record,
    )
    from figstream.ingest.publish import _live_events

    timing = random.Random(f"bench/pregen/{seed}")
    corrupt = random.Random(f"bench/pregen-corrupt/{seed}")
    kinds = tuple(BAD_KINDS)
    source = _live_events(seed, rate)
    redeliver: list[tuple[int, int, bytes]] = []  # (due line number, n, line)
    counts = {"events": 0, "bad": 0, "late": 0, "duplicates": 0}
    now_mark, late_mark = NOW_MARK.decode(), LATE_MARK.decode()
    written = 0
    with path.open("wb") as out:
        for n in range(events):
            env = next(source)
            late = timing.random() < LATE_MINUTES_RATE
            env["time"] = late_mark if late else now_mark
            counts["late"] += late
            if timing.random() < 0.005 and env["type"] != "board.merged":
                line = corrupt_record(env, kinds[timing.randrange(len(kinds))], corrupt)
                counts["bad"] += 1
            else:
                line = orjson.dumps(env)
            out.write(line + b"\n")
            written += 1
            counts["events"] += 1
            if timing.random() < DUPLICATE_RATE:
                delay = int(timing.uniform(0.2, 3.0) * rate)
                heapq.heappush(redeliver, (written + delay, n, line))
            while redeliver and redeliver[0][0] <= written:
                out.write(heapq.heappop(redeliver)[2] + b"\n")
                written += 1
                counts["duplicates"] += 1
    counts["lines"] = written
    return counts


class PregenSource(threading.Thread):
    """Lands ``rate`` lines of the pre-generated file each second, times stamped at landing."""

    def __init__(self, home: Path, path: Path, rate: float, seconds: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.publisher = Publisher(LocalObjectStore(home), producer="bench-pregen")
        self.path, self.rate, self.seconds = path, rate, seconds
        self.random = random.Random(f"bench/pregen-late/{seed}")
        self.landed = 0
        self.behind_seconds = 0.0
        self.elapsed = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the bench, not lost in the thread
            self.error = exc

    def _run(self) -> None:
        started = time.monotonic()
        due_total = int(self.rate * self.seconds)
        with self.path.open("rb") as source:
            tick = 1
            while self.landed < due_total:
                wake = started + tick
                delay = wake - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    self.behind_seconds = max(self.behind_seconds, -delay)
                due = min(int(self.rate * tick), due_total) - self.landed
                lines = [source.readline() for _ in range(due)]
                lines = [ln for ln in lines if ln]
                if not lines:
                    break
                now = datetime.now(UTC)
                late = now - timedelta(seconds=self.random.uniform(60, 300))
                blob = b"".join(lines)
                blob = blob.replace(NOW_MARK, _stamp(now)).replace(LATE_MARK, _stamp(late))
                self.publisher.publish(blob.rstrip(b"\n").split(b"\n"))
                self.landed += len(lines)
                tick += 1
        self.elapsed = time.monotonic() - started


def _stamp(moment: datetime) -> bytes:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


# --- counting -----------------------------------------------------------------------------------


class Counter:
    """Landed, ingested, rows and dead letters of a FIGSTREAM_HOME, incrementally."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.landed_files: dict[str, int] = {}
        self.ingested: dict[tuple[str, str, str], int] = {}
        self.rows: dict[str, tuple[int, int]] = {}  # path -> (mtime_ns, rows)

    def landed(self) -> int:
        for day in sorted((self.home / "landing").glob("*")):
            for entry in os.scandir(day):
                if entry.name.endswith(".jsonl") and entry.path not in self.landed_files:
                    with open(entry.path, "rb") as f:
                        data = f.read()
                    self.landed_files[entry.path] = sum(1 for ln in data.split(b"\n") if ln.strip())
        return sum(self.landed_files.values())

    def ingested_records(self) -> int:
        db = state_path(self.home)
        if not db.exists():
            return 0
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute(
                "SELECT stream, partition_key, batch_key, record_count FROM landing_index"
            ).fetchall()
        finally:
            conn.close()
        for stream, partition, batch, count in rows:
            key = (stream, partition, batch)
            if key in self.ingested:
                continue
            batch_id = batch.rsplit("/", 1)[1].removesuffix(".jsonl")
            if (self.home / fragment_key(INGEST_TABLES[stream], partition, batch_id)).exists():
                self.ingested[key] = count
        return sum(self.ingested.values())

    def fragment_rows(self) -> int:
        for table in INGEST_TABLES.values():
            for path in (self.home / "tables" / table).glob("*/*.parquet"):
                try:
                    mtime = path.stat().st_mtime_ns
                    if self.rows.get(str(path), (None,))[0] != mtime:
                        self.rows[str(path)] = (mtime, pq.read_metadata(path).num_rows)
                except (OSError, ValueError):
                    continue
        return sum(rows for _, rows in self.rows.values())

    def dead_letters(self) -> int:
        if not deadletter_path(self.home).exists():
            return 0
        return SqliteDeadLetterStore(deadletter_path(self.home)).count()

    def index_age(self) -> float | None:
        """Seconds since the latest search-index change was written."""
        hours = sorted((self.home / "tables" / CHANGES).glob("*"))[-2:]
        times = []
        for path in (p for hour in hours for p in hour.glob("*.parquet")):
            with contextlib.suppress(OSError):
                times.append(path.stat().st_mtime)
        return round(time.time() - max(times), 1) if times else None


IN_FLIGHT = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}


def sample(counter: Counter, instance, t0: float) -> dict:
    landed = counter.landed()
    ingested = counter.ingested_records()
    rows = counter.fragment_rows()
    dead = counter.dead_letters()
    runs: dict[str, int] = {}
    for counts in run_statuses(instance).values():
        for status, n in counts.items():
            runs[status] = runs.get(status, 0) + n
    return {
        "t": round(time.monotonic() - t0, 1),
        "landed": landed,
        "ingested": ingested,
        "backlog": landed - ingested,
        "rows": rows,
        "dead_letters": dead,
        "backlog_rows_view": landed - rows - dead,
        "runs_done": sum(v for k, v in runs.items() if k not in IN_FLIGHT),
        "runs_in_flight": sum(v for k, v in runs.items() if k in IN_FLIGHT),
        "runs_failed": runs.get("FAILURE", 0),
        "index_age_s": counter.index_age(),
        "load_1m": load_1m(),
    }


def run_profile(instance) -> dict:
    """postings_job runs over time: duration, batches, and step seconds of the first and last."""
    import dagster as dg

    runs = [
        r
        for r in instance.get_run_records(filters=dg.RunsFilter(job_name="postings_job"))
        if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS and r.end_time and r.start_time
    ]
    runs.sort(key=lambda r: r.create_timestamp.timestamp())
    if not runs:
        return {}
    t0 = runs[0].create_timestamp.timestamp()
    timeline = [
        {
            "created_s": round(r.create_timestamp.timestamp() - t0, 1),
            "launch_s": round(r.start_time - r.create_timestamp.timestamp(), 2),
            "run_s": round(r.end_time - r.start_time, 2),
            "batches": int(r.dagster_run.tags.get("figstream/batches", 0)),
            "partition": r.dagster_run.tags.get("dagster/partition")
            or (
                r.dagster_run.tags.get("dagster/asset_partition_range_start", "")
                + "..."
                + r.dagster_run.tags.get("dagster/asset_partition_range_end", "")
            ),
        }
        for r in runs
    ]
    k = min(5, max(1, len(runs) // 4))

    def steps(group: list) -> dict[str, float | None]:
        per: dict[str, list[float]] = {}
        for r in group:
            for step, seconds in step_seconds(instance, r.dagster_run.run_id).items():
                per.setdefault(step, []).append(seconds)
        return {s: summary(v)["p50"] for s, v in per.items()}

    return {
        "runs": len(runs),
        "first_runs_step_p50_s": steps(runs[:k]),
        "last_runs_step_p50_s": steps(runs[-k:]),
        "first_runs_run_s_p50": summary([t["run_s"] for t in timeline[:k]])["p50"],
        "last_runs_run_s_p50": summary([t["run_s"] for t in timeline[-k:]])["p50"],
        "launch_s": summary([t["launch_s"] for t in timeline]),
        "run_s": summary([t["run_s"] for t in timeline]),
        "batches_per_run": summary([t["batches"] for t in timeline]),
        "timeline": timeline,
    }


def wait_for(predicate, timeout: float, every: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 minute instead of 10")
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--source", choices=["produce", "pregen"], default="produce")
    parser.add_argument("--drain", type=float, default=None, help="max seconds to drain")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    add_record_args(parser)
    args = parser.parse_args()
    if args.rerender:
        rerender(BENCH, rows, derive)
        return
    minutes = args.minutes or (1.0 if args.quick else 10.0)
    seconds = minutes * 60
    drain_limit = args.drain or max(120.0, seconds / 2)

    recording = Recording(BENCH, args.wait_quiet)
    base = Path(tempfile.mkdtemp(prefix="figstream-sustained-"))
    env = temp_homes(base)
    home, dagster_home = Path(env["FIGSTREAM_HOME"]), Path(env["DAGSTER_HOME"])
    os.environ.update(env)
    log(f"homes under {base}; load {recording.load_before}; {args.source} at {args.rate:g}/s")

    calibration = calibrate_produce(args.rate, env, base)
    log(f"produce() alone: {calibration}")
    pregen_counts = None
    pregen_file = base / "pregen.jsonl"
    if args.source == "pregen":
        t = time.perf_counter()
        pregen_counts = pregenerate(pregen_file, int(args.rate * seconds), args.rate, args.seed)
        pregen_counts["seconds"] = round(time.perf_counter() - t, 1)
        log(f"pre-generated {pregen_counts}")

    import dagster as dg

    samples: list[dict] = []
    source_report: dict = {}
    counter = Counter(home)
    try:
        with dagster_dev(ROOT / "workspace.yaml", env, base / "dev.log"):
            instance = dg.DagsterInstance.from_config(str(dagster_home))
            # Warm-up: one small batch through the whole path before the clock starts.
            Publisher(LocalObjectStore(home), producer="bench-warmup").publish(
                [orjson.loads(pregen_line()) for _ in range(1)]
            )
            warm = wait_for(lambda: counter.ingested_records() >= 1, 240)
            log(f"warm-up through: {warm}")
            t0 = time.monotonic()
            if args.source == "produce":
                proc = start_producer(
                    home, env, base / "producer.log",
                    "--rate", str(args.rate), "--duration", str(seconds),
                    "--seed", str(args.seed), "--producer", "bench-live",
                )  # fmt: skip
                running = lambda: proc.poll() is None  # noqa: E731
            else:
                thread = PregenSource(home, pregen_file, args.rate, seconds, args.seed)
                thread.start()
                running = thread.is_alive
            produce_end = None
            try:
                next_at = t0
                while True:
                    next_at += SAMPLE_EVERY_S
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    s = sample(counter, instance, t0)
                    s["producing"] = produce_end is None
                    samples.append(s)
                    log(s)
                    if produce_end is None and not running():
                        produce_end = time.monotonic() - t0
                        log(f"source done at {produce_end:.1f} s")
                    if produce_end is not None and (
                        (s["backlog"] == 0 and s["runs_in_flight"] == 0)
                        or time.monotonic() - t0 - produce_end > drain_limit
                    ):
                        break
            finally:
                if args.source == "produce":
                    line = stop_producer(proc, base / "producer.log")
                    found = re.search(r"([\d,.]+) events/s", line)
                    source_report = {
                        "kind": "produce",
                        "report": line,
                        "achieved_rate": float(found.group(1).replace(",", "")) if found else None,
                    }
                else:
                    thread.join(timeout=30)
                    source_report = {
                        "kind": "pregen",
                        "landed": thread.landed,
                        "elapsed_seconds": round(thread.elapsed, 1),
                        "achieved_rate": round(thread.landed / thread.elapsed, 1)
                        if thread.elapsed
                        else None,
                        "max_seconds_behind_schedule": round(thread.behind_seconds, 2),
                        "error": repr(thread.error) if thread.error else None,
                    }
            profile = run_profile(instance)
            ticks = sensor_ticks(instance)
    finally:
        if args.keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    producing = [s for s in samples if s["producing"]]
    xs = [s["t"] for s in producing]
    ys = [s["backlog"] for s in producing]
    half = [s for s in producing if s["t"] >= (xs[-1] / 2 if xs else 0)]
    slope = linear_slope(xs, ys)
    slope_half = linear_slope([s["t"] for s in half], [s["backlog"] for s in half])
    grows = slope_half is not None and slope_half > 0.005 * args.rate
    drained = bool(samples) and samples[-1]["backlog"] == 0
    end_t = produce_end if produce_end is not None else (xs[-1] if xs else 0)
    drain_s = round(samples[-1]["t"] - end_t, 1) if drained and samples else None
    last_prod = producing[-1] if producing else {}
    ingest_rate = (
        round((last_prod["ingested"] - producing[0]["ingested"]) / (xs[-1] - xs[0]), 1)
        if len(producing) > 1
        else None
    )
    landed_rate = (
        round((last_prod["landed"] - producing[0]["landed"]) / (xs[-1] - xs[0]), 1)
        if len(producing) > 1
        else None
    )
    result = {
        **recording.header(
            "quick" if minutes < 10 else "full",
            load_average_1m_during_max=max((s["load_1m"] for s in samples), default=None),
        ),
        "setup": {
            "rate": args.rate,
            "minutes": minutes,
            "source": args.source,
            "sample_every_seconds": SAMPLE_EVERY_S,
            "drain_limit_seconds": drain_limit,
            "workspace": "workspace.yaml",
            "dagster_yaml": "platform/local/dagster.yaml",
        },
        "produce_alone": calibration,
        "pregenerated": pregen_counts,
        "source": source_report,
        "summary": {
            "landed_rate_per_s": landed_rate,
            "ingested_rate_per_s": ingest_rate,
            "backlog_slope_per_s": round(slope, 2) if slope is not None else None,
            "backlog_slope_second_half_per_s": round(slope_half, 2)
            if slope_half is not None
            else None,
            "backlog_grows": grows,
            "backlog_at_source_end": last_prod.get("backlog"),
            "backlog_max": max(ys, default=None),
            "backlog_max_seconds_of_input": round(max(ys, default=0) / args.rate, 1),
            "drained": drained,
            "drain_seconds": drain_s,
            "runs_failed": samples[-1]["runs_failed"] if samples else None,
            "landed_total": samples[-1]["landed"] if samples else None,
            "ingested_total": samples[-1]["ingested"] if samples else None,
        },
        "runs": profile,
        "sensors": ticks,
        "samples": samples,
    }
    derive(result)
    log(orjson.dumps(result["summary"]).decode())
    record(BENCH, result, rows, args.no_write)


def pregen_line() -> bytes:
    """One good job.posted line timed now (the warm-up batch)."""
    from figstream.ingest.publish import _live_events

    env = next(_live_events(99, 1.0))
    env["time"] = _stamp(datetime.now(UTC)).decode()
    env["id"] = f"bench-warmup-{env['id']}"
    return orjson.dumps(env)


def rows(r: dict) -> list[tuple[str, str, str]]:
    s, setup, runs = r["summary"], r["setup"], r["runs"]
    load = f"{setup['rate']:,.0f} ev/s x {setup['minutes']:g} min"
    drained = f"{s['drain_seconds']:g}" if s["drained"] else "not drained"
    steady = verdict(f"<= {0.005 * setup['rate']:g} (0.5% of the rate)", not s["backlog_grows"])
    out = [
        (f"backlog slope, second half, records/s, {load}",
         fmt(s["backlog_slope_second_half_per_s"]), steady),
        (f"backlog max, records, {load}", f"{s['backlog_max']:,}", "-"),
        (f"drained after the source stopped, s, {load}", drained, "-"),
        (f"last runs, run s p50, {load}", fmt(runs.get("last_runs_run_s_p50")), "-"),
        (f"failed runs, {load}", f"{s['runs_failed']}", verdict("0", s["runs_failed"] == 0)),
    ]  # fmt: skip
    last20 = s.get("backlog_slope_last_20_min_per_s")
    flat = s.get("run_s_last_5_min_over_min_5_to_10")
    if setup["minutes"] >= 30 and last20 is not None:
        out.append((f"backlog slope, last 20 min, records/s, {load}", fmt(last20, 2),
                    verdict("<= 0", last20 <= 0)))  # fmt: skip
    if flat is not None:
        out.append((f"run s, last 5 min / minutes 5-10 (p50), {load}", fmt(flat, 2),
                    verdict("<= 1.25", flat <= 1.25)))  # fmt: skip
    return out


def derive(result: dict) -> None:
    """Figures computed from the recorded ones (kept in the results file too): the backlog's
    peak per minute of production, which shows its trend through the run-cycle sawtooth; and
    issue 19's targets: the backlog's slope over the last 20 minutes of production (over the
    second half when the run is shorter than 30 minutes), and the runs of the last 5 minutes
    against those of minutes 5-10 (median run seconds)."""
    summary_ = result["summary"]
    length = result["setup"]["minutes"] * 60
    peaks: dict[int, int] = {}
    for s in result["samples"]:
        if s["producing"] and s["t"] <= length + 1:
            minute = int((s["t"] - 1) // 60)
            peaks[minute] = max(peaks.get(minute, 0), s["backlog"])
    summary_["backlog_peak_per_minute"] = [peaks[m] for m in sorted(peaks)]
    since = length - 1200 if length >= 1800 else length / 2
    tail = [s for s in result["samples"] if s["producing"] and s["t"] >= since]
    slope = linear_slope([s["t"] for s in tail], [s["backlog"] for s in tail])
    summary_["backlog_slope_last_20_min_per_s"] = None if slope is None else round(slope, 2)
    timeline = result["runs"].get("timeline", [])
    early = [t["run_s"] for t in timeline if 300 <= t["created_s"] < 600]
    late = [t["run_s"] for t in timeline if length - 300 <= t["created_s"] < length]
    if early and late:
        ratio = summary(late)["p50"] / summary(early)["p50"]
        summary_["run_s_last_5_min_over_min_5_to_10"] = round(ratio, 2)
    else:
        summary_["run_s_last_5_min_over_min_5_to_10"] = None


if __name__ == "__main__":
    main()
