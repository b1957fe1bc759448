"""What ``board_daily_stats`` of one day costs on a home with a few hundred thousand jobs.

    .venv/bin/python bench/daily_stats_bench.py [--jobs 300000] [--days 7] [--home DIR]

Builds (or reuses) a local home: ``--jobs`` jobs posted over ``--days`` days on 20 boards
(texts from small pools, so about a third of the jobs are cross-board duplicates), 40% updated
and 30% expired within two days, 10% of the salaries missing, and one board merged on the
fifth day. The events are written as one ingest fragment per hour and applied by the
streaming steps (clean, dedupe, job_state) over every hour. Then the stats of every day but
the last are computed, and a fresh child process times the last day alone and reports its
peak RSS (``ru_maxrss``). Only figstream calls that every version since the day rows has are
used, so the same script measures another tree: ``PYTHONPATH=<worktree> python ...``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

START = datetime(2026, 11, 1, tzinfo=UTC)
BOARDS = [f"board{n:02d}" for n in range(20)]
TITLES = [f"Title {n}" for n in range(40)]
COMPANIES = [f"Company {n}" for n in range(300)]
LOCATIONS = ["Berlin", "Paris", "Oslo", "Madrid", "Rome", "Vienna"]


def events_table(jobs: int, days: int, seed: int) -> pa.Table:
    from figstream.streaming import tables

    rng = np.random.default_rng(seed)
    span_us = days * 86_400 * 1_000_000
    start_us = int(START.timestamp() * 1_000_000)
    ids = np.array([f"job-{n:07d}" for n in range(jobs)], dtype=object)
    board = rng.integers(0, len(BOARDS), jobs)
    text = (
        rng.integers(0, len(TITLES), jobs),
        rng.integers(0, len(COMPANIES), jobs),
        rng.integers(0, len(LOCATIONS), jobs),
    )
    salary = np.where(rng.random(jobs) < 0.1, -1, rng.integers(30, 120, jobs) * 1000)
    posted = rng.integers(0, span_us - 3_600_000_000, jobs)
    parts = [(np.arange(jobs), posted, tables.POSTED)]
    updated = np.flatnonzero(rng.random(jobs) < 0.4)
    parts.append((updated, posted[updated] + rng.integers(1, 2 * 86_400_000_000, len(updated)),
                  tables.UPDATED))  # fmt: skip
    expired = np.flatnonzero(rng.random(jobs) < 0.3)
    parts.append((expired, posted[expired] + rng.integers(1, 2 * 86_400_000_000, len(expired)),
                  tables.EXPIRED))  # fmt: skip
    rows = []
    n = 0
    for which, when, kind in parts:
        keep = when < span_us
        which, when = which[keep], when[keep]
        k = len(which)
        posting = kind != tables.EXPIRED
        sal = salary[which]
        rows.append(
            {
                "event_id": [f"e{n + i:08d}" for i in range(k)],
                "event_type": [kind] * k,
                "source": [BOARDS[b] for b in board[which]],
                "version": [1] * k,
                "event_time": (when + start_us).tolist(),
                "job_id": ids[which].tolist(),
                "title": [TITLES[t] for t in text[0][which]] if posting else [None] * k,
                "company": [COMPANIES[t] for t in text[1][which]] if posting else [None] * k,
                "location": [LOCATIONS[t] for t in text[2][which]] if posting else [None] * k,
                "salary_min": [None if s < 0 else int(s) for s in sal] if posting else [None] * k,
                "url": [f"https://x.example/{j}" for j in ids[which]] if posting else [None] * k,
                "reason": [None] * k if posting else ["filled"] * k,
            }
        )
        n += k
    merger = {
        "event_id": ["merger-1"],
        "event_type": [tables.MERGED],
        "source": [BOARDS[0]],
        "version": [1],
        "event_time": [start_us + int(4.5 * 86_400_000_000)],
        "absorbed_board": [BOARDS[3]],
        "surviving_board": [BOARDS[0]],
    }
    out = []
    for part in [*rows, merger]:
        k = len(part["event_id"])
        columns = {}
        for field in tables.EVENTS_SCHEMA:
            values = part.get(field.name, [None] * k)
            if field.name == "event_time":
                columns[field.name] = pa.array(values, pa.int64()).cast(field.type)
            else:
                columns[field.name] = pa.array(values, field.type)
        out.append(pa.table(columns, schema=tables.EVENTS_SCHEMA))
    return pa.concat_tables(out)


def build(home: Path, jobs: int, days: int, seed: int) -> None:
    import pyarrow.compute as pc

    from figstream.streaming import cleaning, dedupe, fragments, tables
    from figstream.streaming import jobs as job_steps
    from figstream.streaming.stores import Stores

    stores = Stores.local(home, "2026-10-01-00:00")
    events = events_table(jobs, days, seed)
    hours = pc.strftime(events["event_time"], format="%Y-%m-%d-%H:00", locale="C")
    events = events.set_column(
        events.schema.get_field_index("batch_id"), "batch_id",
        pc.binary_join_element_wise("b-", pc.utf8_slice_codeunits(hours, 0, 13), ""),
    )  # fmt: skip
    events = events.set_column(
        events.schema.get_field_index("line_no"), "line_no", pa.array(range(events.num_rows))
    )
    merged = pc.equal(events["event_type"], tables.MERGED)
    fragments.write_each(stores.objects, "raw_events", events.filter(pc.invert(merged)))
    fragments.write_each(stores.objects, "board_mergers", events.filter(merged))
    partitions = sorted(set(hours.to_pylist()))
    cleaning.clean(stores, partitions, None)
    dedupe.dedupe(stores, partitions, None)
    job_steps.update_job_state(stores, partitions, None)
    all_days = [(START.date() + timedelta(days=d)).isoformat() for d in range(days)]
    from figstream.streaming import daily

    daily.board_daily_stats(stores, all_days[:-1], all_days[0])
    (home / "built.json").write_text(json.dumps({"jobs": jobs, "events": events.num_rows}))


def child(home: Path, day: str, epoch: str) -> None:
    from figstream.streaming import daily
    from figstream.streaming.stores import Stores

    stores = Stores.local(home, "2026-10-01-00:00")
    started = time.perf_counter()
    stats = daily.board_daily_stats(stores, [day], epoch)[day]
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    active = sum(stats["active_jobs"].to_pylist())
    print(json.dumps({"seconds": round(seconds, 3), "peak_rss_mib": round(peak, 1),
                      "active_jobs": active}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--child", nargs=3, metavar=("HOME", "DAY", "EPOCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], args.child[2])
        return
    home = args.home or Path(tempfile.mkdtemp(prefix="figstream-daily-bench-"))
    if not (home / "built.json").exists():
        started = time.perf_counter()
        build(home, args.jobs, args.days, args.seed)
        print(f"built {home} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    epoch = START.date().isoformat()
    day = (date.fromisoformat(epoch) + timedelta(days=args.days - 1)).isoformat()
    results = []
    for _ in range(args.rounds):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(home), day, epoch],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    built = json.loads((home / "built.json").read_text())
    print(json.dumps({"home": str(home), **built, "day": day, "runs": results}))


if __name__ == "__main__":
    main()
