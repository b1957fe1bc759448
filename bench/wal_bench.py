"""What one sustained-sized streaming run writes to the state store's file, B-tree by B-tree.

    .venv/bin/python bench/wal_bench.py [--jobs 1000000] [--hour-events 1200000]
        [--events 100000] [--batch-lines 667] [--seeded DIR] [--no-write]

The sustained bench's runs grow to ~150 batches (~100k events) at 2,000 events/s, and each costs
~0.3 s a batch, with ``job_state`` and ``raw_events`` most of it. This bench rebuilds one such
run outside the daemon to see where that goes: a fresh home whose state store holds ``--jobs``
jobs (the run-cost bench's seeding, ``--seeded DIR`` to reuse it), then ``--hour-events`` events
ingested into the current hours (as half an hour of the sustained stream leaves the claims, the
trace index and the books), then one ``--events`` run of ``--batch-lines``-line batches
executed in process as the sensor asks for it (``postings_job``, its batch keys as run config).

During the measured run the writers' automatic checkpoint is off (so the write-ahead log keeps
every frame the run appended) and afterwards the log is read: frames (page writes) and distinct
pages, each attributed to the B-tree (table or index) that owns the page (SQLite's ``dbstat``).
A frame is one page image (4 KiB) written at a commit or a cache spill; a page written in two
commits is two frames. Reported: the step seconds, frames and MiB per event, and the B-trees.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchlib import ROOT, Recording, add_record_args, logger, record, rerender

sys.path.insert(0, str(ROOT))

NAME = "wal"
log = logger(NAME)


def wal_frames(wal: Path) -> tuple[collections.Counter, int]:
    """Frames per page number in a WAL file, and the commits it holds."""
    frames: collections.Counter = collections.Counter()
    commits = 0
    with open(wal, "rb") as f:
        page_size = struct.unpack(">I", f.read(32)[8:12])[0]
        while len(header := f.read(24)) == 24:
            page, commit = struct.unpack(">II", header[:8])
            f.seek(page_size, 1)
            frames[page] += 1
            commits += bool(commit)
    return frames, commits


def owners(db: Path) -> dict[int, str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute("SELECT pageno, name FROM dbstat"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--hour-events", type=int, default=1_200_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-lines", type=int, default=667)
    parser.add_argument("--seeded", type=Path, help="reuse / keep the seeded state in DIR")
    add_record_args(parser)
    args = parser.parse_args()
    if args.rerender:
        rerender(NAME, rows)
        return
    recording = Recording(NAME, args.wait_quiet)
    with tempfile.TemporaryDirectory(prefix="figstream-wal-") as base:
        result = measure(Path(base), args)
    record(NAME, {**recording.header("full"), **result}, rows, args.no_write)


def measure(home: Path, args: argparse.Namespace) -> dict:
    os.environ["FIGSTREAM_HOME"] = str(home)
    from run_cost_bench import run_events, seeded_copy

    import figstream.storage.sqlite as sqlite_plumbing
    from figstream.ingest.publish import Publisher
    from figstream.storage.state import state_path
    from figstream.streaming import ingest, landing_index
    from figstream.streaming.stores import Stores

    seeded = seeded_copy(home, args.jobs, args.seeded)
    log(f"seeded {seeded}")
    first = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%d-%H:00")
    stores = Stores.local(home, first)
    publisher = Publisher(stores.objects, "bench-wal", args.batch_lines)
    fresh = args.jobs + 10_000_000  # new postings' job numbers, clear of the seeded ones

    def land(n: int, seed: int) -> dict[str, list[str]]:
        nonlocal fresh
        keys = publisher.publish(run_events(args.jobs, n, seed, new_from=fresh))
        fresh += n
        landing_index.index_landing(stores, "boards", keys)
        return landing_index.index_landing(stores, "postings", keys)

    began = time.perf_counter()
    for n in range(0, args.hour_events, args.events):
        for partition, keys in land(min(args.events, args.hour_events - n), 100 + n).items():
            ingest.ingest(stores, "postings", partition, keys)
    prebuild_s = round(time.perf_counter() - began, 1)
    log(f"ingested {args.hour_events:,} events first in {prebuild_s} s")

    touched = land(args.events, int(time.time()))  # the sensor's indexing, before the count
    path = state_path(home)
    sqlite_plumbing.checkpoint(path)
    # Every frame the run appends stays in the log: the run's connections (opened by the job's
    # resources, after this) never checkpoint it.
    sqlite_plumbing.WAL_AUTOCHECKPOINT_PAGES = 1 << 30
    import dagster as dg

    import definitions
    from assets.streaming import config_ops

    steps = config_ops("postings")  # what the sensor's run config names, as it builds it
    job = definitions.defs.resolve_job_def("postings_job")
    instance = dg.DagsterInstance.ephemeral()
    seconds: dict[str, float] = collections.Counter()
    began = time.perf_counter()
    batches = 0
    for partition, keys in sorted(touched.items()):
        batches += len(keys)
        config = {"ops": {op: {"config": {"batch_keys": keys}} for op in steps}}
        run = job.execute_in_process(run_config=config, partition_key=partition, instance=instance)
        for event in run.all_events:
            if event.event_type_value == "STEP_SUCCESS":
                seconds[event.step_key] += event.event_specific_data.duration_ms / 1000
    run_s = time.perf_counter() - began
    copy = home / "copy.sqlite"
    shutil.copyfile(path, copy)
    shutil.copyfile(f"{path}-wal", f"{copy}-wal")
    frames, commits = wal_frames(Path(f"{copy}-wal"))
    owner = owners(copy)
    by_tree: collections.Counter = collections.Counter()
    distinct: collections.Counter = collections.Counter()
    for page, n in frames.items():
        name = owner.get(page, "(freed)")
        by_tree[name] += n
        distinct[name] += 1
    total = sum(frames.values())
    events = args.events
    return {
        "setup": {
            "jobs": args.jobs,
            "hour_events": args.hour_events,
            "events": events,
            "batch_lines": args.batch_lines,
            "batches": batches,
            "partitions": len(touched),
        },
        "seeded": seeded,
        "prebuild_s": prebuild_s,
        "summary": {
            "run_s": round(run_s, 1),
            "steps_s": {step: round(seconds[step], 2) for step in steps},
            "frames": total,
            "distinct_pages": len(frames),
            "commits": commits,
            "frames_per_event": round(total / events, 2),
            "wal_mib": round(total * 4096 / 2**20),
            "wal_kib_per_event": round(total * 4 / events, 1),
        },
        "trees": [
            {
                "name": name,
                "frames": n,
                "distinct": distinct[name],
                "frames_per_event": round(n / events, 2),
            }
            for name, n in by_tree.most_common()
        ],
    }


def rows(r: dict) -> list[tuple[str, str, str]]:
    s, setup = r["summary"], r["setup"]
    what = (
        f"{setup['events'] // 1000}k-event run ({setup['batches']} batches), "
        f"{setup['jobs'] / 1e6:g}M jobs, {setup['hour_events'] / 1e6:g}M events before"
    )
    out = [
        (f"{what}: run s (raw_events, job_state)",
         f"{s['run_s']} ({s['steps_s']['raw_events']}, {s['steps_s']['job_state']})", "-"),
        (f"{what}: WAL frames a event (MiB in all)",
         f"{s['frames_per_event']} ({s['wal_mib']:,})", "-"),
    ]  # fmt: skip
    for tree in r["trees"][:8]:
        out.append((
            f"{what}: frames a event, {tree['name']} (distinct pages)",
            f"{tree['frames_per_event']} ({tree['distinct']:,})", "-",
        ))  # fmt: skip
    return out


if __name__ == "__main__":
    main()
