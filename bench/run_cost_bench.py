"""What one sensor run costs against states of different sizes, side by side in one run.

    .venv/bin/python bench/run_cost_bench.py [--quick] [--sizes 50000,500000,5000000]
        [--events 10000] [--rounds 3] [--seeded DIR [--seed-only]] [--no-write]

Issue 19's target: the same 10k-event sensor run takes, with 5M jobs in the state, at most
1.25x what it takes with 50k. A run's cost should be what its events cost.

Each size gets a child process and a fresh local home whose state store is seeded directly
(SQL, no Python rows) with that many jobs: each with a first posting in the dedupe registry
(10% of them duplicates of another job), and two expiring event-id claims a job, scoped by
the hours of the last 14 days, as ingest claims them. Then every
round lands one fresh 10k-event run per home (ten 1,000-line batches from the seeded
simulation: new postings, and updates and expiries aimed at jobs drawn uniformly from the
whole seeded state, the worst case for locality) and runs the postings job's steps over it,
as a sensor run does: the landing index, ingest of both streams, clean, dedupe, job_state and
the search-index changes. The homes take their turn in a rotating order, so each sees the same
machine load. Board mergers are left out: a merger re-derives every job of the board it
absorbs, a cost that is its board's size by nature.

Reported per size: the median run and step seconds over the rounds, and the child's peak RSS.
After each run the child checkpoints the state store's WAL, as the daemon's
``sqlite_checkpoint_sensor`` does between runs, and reports that time on its own: it is
machine work the state's size drives, but not a run's.

Seeding 5M jobs takes about 6 minutes on the AMD machine, the runs a minute or two. With
``--seeded DIR`` each size's seeded file is kept in DIR and copied into the fresh home of a
later bench (``--seed-only`` seeds and stops), so the seeding need not share the quiet window
the timed runs need.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, Recording, add_record_args, load_1m, logger, record, rerender

NAME = "run-cost"
STEPS = ("index", "ingest", "boards", "clean", "dedupe", "job_state", "search_index")
log = logger(NAME)
BOARDS = ("hireloop", "jobnest", "workwave", "talentpool", "careerhub")


# --- child: one state size, one home -------------------------------------------------------------


def seed_state(path: Path, jobs: int) -> dict[str, float]:
    """``jobs`` job rows, a day row, their registry rows and two claims each, written by SQL
    alone."""
    import sqlite3

    from figstream.storage.state import SqliteStateStore

    SqliteStateStore(path)  # the schema
    began = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    boards = ", ".join(f"('{b}', {i})" for i, b in enumerate(BOARDS))
    now_us = int(time.time() * 1e6)
    day_us = 86_400 * 1_000_000
    conn.execute(
        f"""
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {jobs}),
        b(board, k) AS (VALUES {boards})
        INSERT INTO job_state (job_id, board, title, company, location, employment_type,
            remote, salary_min, salary_max, currency, url, dedupe_key, status, posted_at,
            updated_at, posting_event_id, expired_at, expired_reason, expiry_event_id,
            merged_into, merged_at, merger_event_id, last_event_time, last_event_id, version,
            salary_period, city, country_code)
        SELECT printf('%s-%07d', b.board, n.i), b.board,
               printf('Senior Engineer %d', n.i % 997), printf('Company %d', n.i % 50021),
               printf('City %d', n.i % 211), 'full_time', n.i % 2, 40000 + n.i % 60000,
               90000 + n.i % 60000, 'EUR', printf('https://%s.example/jobs/%07d', b.board, n.i),
               printf('k%09d', n.i), 'active',
               {now_us} - (n.i % 30) * {day_us}, {now_us} - (n.i % 30) * {day_us},
               printf('%032x', n.i), NULL, NULL, NULL, NULL, NULL, NULL,
               {now_us} - (n.i % 30) * {day_us}, printf('%032x', n.i), 1,
               'year', printf('City %d', n.i % 211), 'DE'
        FROM n JOIN b ON b.k = n.i % {len(BOARDS)}
        """
    )
    # Each job's day row (the store keeps one per job and day it had events): the day of its
    # last event, so the day rows are as many as the jobs, the least a real history holds.
    from figstream.storage.state import DAY_SCHEMA

    day_columns = ", ".join(DAY_SCHEMA.names)
    row_columns = ", ".join(n for n in DAY_SCHEMA.names if n not in ("job_id", "day"))
    conn.execute(
        f"INSERT INTO job_days ({day_columns}, version) SELECT job_id,"
        f" date(last_event_time / 1000000, 'unixepoch'), {row_columns}, 1 FROM job_state"
    )
    dups = jobs // 10  # the last 10% share their key with a job of the first 10%
    conn.execute(
        f"""
        INSERT INTO registry
        SELECT job_id,
               CASE WHEN rowid_ >= {jobs - dups} THEN printf('k%09d', rowid_ - {jobs - dups})
                    ELSE dedupe_key END,
               board, posted_at, posting_event_id,
               CASE WHEN rowid_ >= {jobs - dups} THEN
                   printf('%s-%07d', '{BOARDS[0]}', 0) END
        FROM (SELECT *, CAST(substr(job_id, -7) AS INTEGER) AS rowid_ FROM job_state)
        """
    )
    conn.execute(
        "UPDATE registry SET duplicate_of = (SELECT r.job_id FROM registry r WHERE"
        " r.dedupe_key = registry.dedupe_key AND r.job_id <> registry.job_id LIMIT 1)"
        " WHERE duplicate_of IS NOT NULL"
    )
    conn.execute(
        f"""
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {2 * jobs})
        INSERT INTO event_claims (event_id, batch_id, claimed_at, expires_at)
        SELECT strftime('%Y-%m-%d-%H:00', {now_us // 1_000_000} - (i % 336) * 3600, 'unixepoch')
               || '/' || lower(hex(randomblob(16))), 'seed', {now_us}, {now_us + 14 * day_us}
        FROM n
        """
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"seed_s": round(time.perf_counter() - began, 1), "db_mb": path.stat().st_size >> 20}


def run_events(jobs: int, events: int, seed: int, new_from: int) -> list[bytes]:
    """``events`` envelopes of the simulation without mergers, re-aimed: postings at new jobs
    (numbered from ``new_from``), updates and expiries at jobs drawn from the seeded state, each
    from its job's board."""
    import random
    from datetime import UTC, datetime

    import orjson

    from figstream.ingest.generate import EventStream, format_us

    rng = random.Random(seed)
    stream = EventStream(
        datetime.now(UTC).date(), days=10_000, events_per_day=200_000, seed=seed,
        bad_rate=0.0, merger_day=10**9,
    )  # fmt: skip
    start_us = int(time.time() * 1e6) - events * 500 - 60_000_000
    out, fresh = [], new_from
    for simulated in stream:
        envelope = orjson.loads(simulated.line)
        if envelope["type"] == "board.merged":
            continue
        n = len(out)
        if envelope["type"] == "job.posted":
            board = BOARDS[fresh % len(BOARDS)]
            envelope["data"]["job_id"] = f"{board}-{fresh:07d}"
            fresh += 1
        else:
            pick = rng.randrange(jobs)
            board = BOARDS[pick % len(BOARDS)]
            envelope["data"]["job_id"] = f"{board}-{pick:07d}"
        # From the job's own board: an event from another one would move the job to it (an
        # update of its board's indexes that no real board's stream causes).
        envelope["source"] = board
        envelope["time"] = format_us(start_us + n * 500)  # 2,000 events a second
        out.append(orjson.dumps(envelope))
        if len(out) == events:
            return out
    raise AssertionError("the simulation ended")


def seeded_copy(home: Path, jobs: int, kept: Path | None) -> dict:
    """Seed ``home``'s state store with ``jobs`` jobs, or copy the one kept in ``kept``
    (seeding it there first when it is not)."""
    from figstream.storage.state import state_path

    target = state_path(home)
    if kept is None:
        return seed_state(target, jobs)
    source, marker = kept / f"state-{jobs}.sqlite", kept / f"state-{jobs}.json"
    if not marker.exists():  # the marker is written last: a stopped seeding is redone
        kept.mkdir(parents=True, exist_ok=True)
        for stale in kept.glob(f"state-{jobs}.sqlite*"):
            stale.unlink()
        marker.write_text(json.dumps(seed_state(source, jobs)))
    target.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    shutil.copyfile(source, target)
    return {**json.loads(marker.read_text()), "copy_s": round(time.perf_counter() - began, 1)}


def child(home: Path, jobs: int, events: int, seed: int, kept: Path | None = None) -> None:
    from datetime import UTC, datetime, timedelta

    from figstream.ingest.landing import parse_batch_key
    from figstream.ingest.publish import Publisher
    from figstream.storage.sqlite import checkpoint
    from figstream.storage.state import state_path
    from figstream.streaming import cleaning, dedupe, index_export, ingest, landing_index
    from figstream.streaming import jobs as state_step
    from figstream.streaming.stores import Stores

    seeded = seeded_copy(home, jobs, kept)
    print(json.dumps(seeded), flush=True)
    first = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%d-%H:00")
    stores = Stores.local(home, first)
    publisher = Publisher(stores.objects, "bench-cost", 1000)
    for n, command in enumerate(sys.stdin):
        if command.strip() != "run":
            break
        lines = run_events(jobs, events, seed + n, new_from=jobs + n * events)
        batch = publisher.publish(lines)
        ids = [parse_batch_key(k)[1] for k in batch]
        seconds: dict[str, float] = {}

        def timed(name: str, fn, *args, seconds=seconds):
            began = time.perf_counter()
            out = fn(*args)
            seconds[name] = round(time.perf_counter() - began, 3)
            return out

        def ingest_all(stream: str, by_partition: dict[str, list[str]]) -> None:
            for partition, keys in by_partition.items():
                ingest.ingest(stores, stream, partition, keys)

        touched = timed("index", landing_index.index_landing, stores, "postings", batch)
        boards = landing_index.index_landing(stores, "boards", batch)
        hours = sorted(touched)
        timed("ingest", ingest_all, "postings", touched)
        timed("boards", ingest_all, "boards", boards)
        timed("clean", cleaning.clean, stores, hours, ids)
        timed("dedupe", dedupe.dedupe, stores, hours, ids)
        state = timed("job_state", state_step.update_job_state, stores, hours, ids)
        timed("search_index", index_export.export_changes, stores, hours, ids)
        # The WAL's copy back into the file, off the run's path (sensors/maintenance.py does
        # it between runs in the daemon): timed on its own, not part of the run.
        copied = checkpoint(state_path(home))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
        report = {
            "seconds": seconds,
            "run_s": round(sum(seconds.values()), 3),
            "applied": state.events,
            "updated": state.updated,
            "inserted": state.inserted,
            "peak_rss_mib": rss,
            "checkpoint_s": round(copied.seconds, 3) if copied else 0.0,
            "checkpoint_pages": copied.copied if copied else 0,
        }
        print(json.dumps(report), flush=True)


# --- parent ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 20k,200k,1M and 2 rounds")
    parser.add_argument("--sizes", default=None, help="jobs in each state, comma-separated")
    parser.add_argument("--events", type=int, default=10_000, help="events a run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--seeded", type=Path, help="keep / reuse the seeded states in DIR")
    parser.add_argument("--seed-only", action="store_true", help="with --seeded: seed, stop")
    parser.add_argument("--child", nargs=2, metavar=("HOME", "JOBS"), help=argparse.SUPPRESS)
    add_record_args(parser)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), args.events, args.seed, args.seeded)
        return
    if args.seed_only and not args.seeded:
        parser.error("--seed-only needs --seeded DIR")
    if args.rerender:
        rerender(NAME, rows)
        return
    default = "20000,200000,1000000" if args.quick else "50000,500000,5000000"
    sizes = [int(s) for s in (args.sizes or default).split(",")]
    rounds = args.rounds or (2 if args.quick else 3)
    recording = Recording(NAME, args.wait_quiet)
    runs: dict[int, list[dict]] = {size: [] for size in sizes}
    seeded: dict[int, dict] = {}
    peak_load = load_1m()
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="figstream-cost-")))
        children = {}
        for size in sizes:
            cmd = [sys.executable, __file__, "--child", str(base / f"home-{size}"), str(size),
                   "--events", str(args.events), "--seed", str(args.seed)]  # fmt: skip
            if args.seeded:
                cmd += ["--seeded", str(args.seeded.resolve())]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            children[size] = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
            )
            seeded[size] = json.loads(children[size].stdout.readline())  # one seeding at a time
            log(f"{size:,} jobs seeded: {seeded[size]}")
            if args.seed_only:
                children[size].stdin.close()
                children[size].wait(timeout=120)
        if args.seed_only:
            return
        try:
            for r in range(rounds):
                order = sizes[r % len(sizes) :] + sizes[: r % len(sizes)]
                for size in order:
                    children[size].stdin.write("run\n")
                    children[size].stdin.flush()
                    runs[size].append(json.loads(children[size].stdout.readline()))
                    peak_load = max(peak_load, load_1m())
                log(f"round {r}", "  ".join(f"{s:,}: {runs[s][-1]['run_s']:.2f}s" for s in sizes))
        finally:
            for proc in children.values():
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(timeout=120)
    result = recording.header(
        "quick" if args.quick else "full", load_average_1m_during_max=peak_load
    )
    result["setup"] = {"sizes": sizes, "events": args.events, "rounds": rounds, "seed": args.seed}
    result["seeded"] = {str(s): v for s, v in seeded.items()}
    result["summary"] = {str(s): summarise(r) for s, r in runs.items()}
    result["runs"] = {str(s): r for s, r in runs.items()}
    log(json.dumps(result["summary"], indent=2))
    record(NAME, result, rows, args.no_write)


def summarise(runs: list[dict]) -> dict:
    return {
        "run_s_median": round(statistics.median(r["run_s"] for r in runs), 3),
        "steps_s_median": {
            step: round(statistics.median(r["seconds"][step] for r in runs), 3) for step in STEPS
        },
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        # Older records have no checkpoint figure (the runs checkpointed inside themselves).
        "checkpoint_s_median": round(statistics.median(r.get("checkpoint_s", 0) for r in runs), 3),
    }


def rows(r: dict) -> list[tuple[str, str, str]]:
    sizes = r["setup"]["sizes"]
    summary = r["summary"]
    small, big = summary[str(sizes[0])], summary[str(sizes[-1])]
    ratio = big["run_s_median"] / small["run_s_median"]
    events = f"{r['setup']['events'] / 1000:,.0f}k-event run"
    out = []
    for size in sizes:
        s = summary[str(size)]
        steps = ", ".join(f"{k} {v:.2f}" for k, v in s["steps_s_median"].items())
        out.append(
            (
                f"{events}, {size:,} jobs in the state, median s ({steps})",
                f"{s['run_s_median']:.2f}",
                f"peak RSS {s['peak_rss_mib']} MiB",
            )
        )
        if s.get("checkpoint_s_median"):
            out.append(
                (
                    f"{events}, {size:,} jobs: WAL checkpoint after the run (off its path), s",
                    f"{s['checkpoint_s_median']:.2f}",
                    "-",
                )
            )
    met = "met" if ratio <= 1.25 else "**missed**"
    out.append(
        (f"run time at {sizes[-1]:,} jobs / at {sizes[0]:,}", f"{ratio:.2f}x", f"<= 1.25x: {met}")
    )
    return out


if __name__ == "__main__":
    main()
