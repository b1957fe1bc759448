"""What the day-row fold (day-row retention) costs on a big state: the first fold of a store.

    .venv/bin/python bench/day_fold_bench.py [--jobs 5000000] [--second-rows 200000]
        [--max-jobs 500000] [--seeded DIR] [--no-write]

The state store is the run-cost bench's (``run_cost_bench.seed_state``: ``--jobs`` jobs, each
with one day row on one of the last 30 days), copied from ``--seeded DIR`` when it is kept
there. ``--second-rows`` jobs get a second day row, of yesterday, so that the fold has that
many jobs to join. Then ``fold_day_rows`` folds everything up to yesterday from 40 days ago, in
calls of at most ``--max-jobs`` jobs read (the hourly compaction's bound), as the compaction
would over successive runs. Reported: the whole fold's seconds, the longest call, the jobs
read and folded, and the day rows before and after.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchlib import ROOT, Recording, add_record_args, logger, record, rerender, verdict

sys.path.insert(0, str(ROOT))

NAME = "day-fold"
log = logger(NAME)


def add_second_rows(path: Path, jobs: int, day: str) -> None:
    from figstream.storage.state import DAY_SCHEMA

    columns = ", ".join(n for n in DAY_SCHEMA.names if n not in ("job_id", "day"))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        f"INSERT INTO job_days (job_id, day, {columns}, version)"
        f" SELECT job_id, ?, {columns}, 1 FROM job_days WHERE day < ? LIMIT ?",
        (day, day, jobs),
    )
    conn.execute("COMMIT")
    conn.close()


def day_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM job_days").fetchone()[0]
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5_000_000)
    parser.add_argument("--second-rows", type=int, default=200_000)
    parser.add_argument("--max-jobs", type=int, default=500_000, help="jobs read per call")
    parser.add_argument("--seeded", type=Path, help="reuse / keep the seeded state in DIR")
    add_record_args(parser)
    args = parser.parse_args()
    if args.rerender:
        rerender(NAME, rows)
        return
    from run_cost_bench import seeded_copy

    from figstream.storage.state import SqliteStateStore, state_path
    from figstream.streaming.day_fold import fold_day_rows

    recording = Recording(NAME, args.wait_quiet)
    today = datetime.now(UTC).date()
    through = (today - timedelta(days=1)).isoformat()
    epoch = (today - timedelta(days=40)).isoformat()
    with tempfile.TemporaryDirectory(prefix="figstream-fold-") as base:
        home = Path(base)
        seeded = seeded_copy(home, args.jobs, args.seeded)
        path = state_path(home)
        add_second_rows(path, args.second_rows, through)
        before = day_rows(path)
        state = SqliteStateStore(path)
        calls = []
        began = time.perf_counter()
        while True:
            start = time.perf_counter()
            report = fold_day_rows(state, through, epoch, args.max_jobs)
            calls.append({"seconds": round(time.perf_counter() - start, 2),
                          "jobs": report.jobs, "rows_removed": report.rows_removed})  # fmt: skip
            log(json.dumps(calls[-1]))
            if not report.more:
                break
        total = time.perf_counter() - began
        after = day_rows(path)
    result = recording.header("full")
    result["setup"] = {"jobs": args.jobs, "second_rows": args.second_rows,
                       "max_jobs": args.max_jobs, "through": through, "epoch": epoch}  # fmt: skip
    result["seeded"] = seeded
    result["summary"] = {
        "seconds": round(total, 1),
        "calls": len(calls),
        "longest_call_s": max(c["seconds"] for c in calls),
        "jobs_folded": sum(c["jobs"] for c in calls),
        "rows_removed": sum(c["rows_removed"] for c in calls),
        "day_rows_before": before,
        "day_rows_after": after,
    }
    result["calls"] = calls
    record(NAME, result, rows, args.no_write)


def rows(r: dict) -> list[tuple[str, str, str]]:
    s, setup = r["summary"], r["setup"]
    removed = s["day_rows_before"] - s["day_rows_after"]
    state = f"{setup['jobs']:,} jobs, {setup['second_rows']:,} of them with a second day row"
    return [
        (f"first fold of a state of {state}: whole fold, s", f"{s['seconds']:.1f}", "-"),
        (
            f"first fold, {state}: longest call ({setup['max_jobs']:,} jobs read a call), s",
            f"{s['longest_call_s']:.1f}",
            "-",
        ),
        (
            f"first fold, {state}: day rows before / after",
            f"{s['day_rows_before']:,} / {s['day_rows_after']:,}",
            verdict(f"after = before - {setup['second_rows']:,}", removed == setup["second_rows"]),
        ),
    ]


if __name__ == "__main__":
    main()
