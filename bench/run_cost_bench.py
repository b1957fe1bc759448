"""What one sensor-sized run costs as the state grows, in process, side by side with another commit.

    .venv/bin/python bench/run_cost_bench.py [--quick] [--events 900000] [--per-run 60]
        [--against REF] [--no-write]

The sustained bench (``sustained_bench.py``) says whether the platform keeps up under a real
daemon; this one says why, and quickly: it takes the daemon, the webserver and the producer out
and times the steps of the postings job themselves, run after run, while the state grows.

Each tree (this checkout and, with ``--against``, a ``git worktree`` of REF) gets a child process
and a fresh local home. Both children land the same seeded live stream (``--events`` records of
1,000-line batches whose event times advance 2,000 a second, as ``figstream produce`` lands
them at 2,000 events/s), then process it in runs of ``--per-run`` batches, as a sensor tick
would hand them over: the sensor's landing index, ingest of both streams, clean, cross-board
dedupe, job state and the search index. The parent steps the children in turn, one run each,
alternating which goes first, so both see the same machine load at the same state size.

A run's seconds = a + b * (state): the fitted slope (seconds per 100k events already in the
state) is the part of a run that grows with the state instead of with the run's own events,
the part that made the sustained bench fall behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from benchlib import (
    ROOT,
    Recording,
    add_record_args,
    commit_of,
    linear_slope,
    load_1m,
    logger,
    record,
    rerender,
    worktree,
)

NAME = "run-cost"
STEPS = ("index", "ingest", "boards", "clean", "dedupe", "job_state", "search_index")
log = logger(NAME)


# --- child: one tree, one home -------------------------------------------------------------------


def tree_layout() -> SimpleNamespace:
    """What a run calls, from the layout of the tree on ``sys.path``: sub-packages since
    60abf38, one ``figstream.streaming`` module before it (``--against`` an older commit)."""
    from figstream import streaming

    if hasattr(streaming, "Stores"):
        from figstream.generate import format_us
        from figstream.landing import parse_batch_key
        from figstream.publish import Publisher, _live_events

        steps = streaming
    else:
        from figstream.ingest.generate import format_us
        from figstream.ingest.landing import parse_batch_key
        from figstream.ingest.publish import Publisher, _live_events
        from figstream.streaming import (
            cleaning,
            dedupe,
            index_export,
            ingest,
            jobs,
            landing_index,
            stores,
        )

        steps = SimpleNamespace(Stores=stores.Stores)
        for module, name in (
            (landing_index, "index_landing"), (ingest, "ingest"), (cleaning, "clean"),
            (dedupe, "dedupe"), (jobs, "update_job_state"), (index_export, "export_search_index"),
        ):  # fmt: skip
            setattr(steps, name, getattr(module, name))
    return SimpleNamespace(
        steps=steps,
        format_us=format_us,
        parse_batch_key=parse_batch_key,
        Publisher=Publisher,
        live_events=_live_events,
    )


def child(tree: Path, home: Path, events: int, per_run: int, seed: int) -> None:
    sys.path.insert(0, str(tree))
    from datetime import UTC, datetime, timedelta

    import orjson

    layout = tree_layout()
    now = datetime.now(UTC)
    stores = layout.steps.Stores.local(home, (now - timedelta(days=1)).strftime("%Y-%m-%d-%H:00"))
    source = layout.live_events(seed, 2000)
    start_us = int((now - timedelta(seconds=events / 2000 + 60)).timestamp() * 1e6)
    lines = []
    for n in range(events):
        envelope = next(source)
        envelope["time"] = layout.format_us(start_us + n * 500)  # 2,000 events a second
        lines.append(orjson.dumps(envelope))
    keys = layout.Publisher(stores.objects, "bench-cost", 1000).publish(lines)
    del lines
    print(json.dumps({"landed": len(keys)}), flush=True)
    done = 0
    for command in sys.stdin:
        if command.strip() != "run" or done >= len(keys):
            break
        batch = keys[done : done + per_run]
        ids = [layout.parse_batch_key(k)[1] for k in batch]
        seconds, jobs = one_run(layout.steps, stores, batch, ids)
        done += len(batch)
        report = {
            "events_before": (done - len(batch)) * 1000,
            "batches": len(batch),
            "jobs": jobs,
            "seconds": seconds,
            "run_s": round(sum(seconds.values()), 3),
        }
        print(json.dumps(report), flush=True)


def one_run(steps, stores, batch: list[str], ids: list[str]) -> tuple[dict[str, float], int]:
    """The postings job's steps over ``batch`` (and the boards stream's ingest): seconds each."""
    seconds: dict[str, float] = {}

    def timed(name: str, fn, *args):
        began = time.perf_counter()
        out = fn(*args)
        seconds[name] = round(time.perf_counter() - began, 3)
        return out

    def ingest(stream: str, by_partition: dict[str, list[str]]) -> None:
        for partition, batch_keys in by_partition.items():
            steps.ingest(stores, stream, partition, batch_keys)

    touched = timed("index", steps.index_landing, stores, "postings", batch)
    boards = steps.index_landing(stores, "boards", batch)
    partitions = sorted(touched)
    timed("ingest", ingest, "postings", touched)
    timed("boards", ingest, "boards", boards)
    timed("clean", steps.clean, stores, partitions, ids)
    timed("dedupe", steps.dedupe, stores, partitions, ids)
    state = timed("job_state", steps.update_job_state, stores, partitions, ids)
    timed("search_index", steps.export_search_index, stores)
    return seconds, state.jobs


# --- parent ---------------------------------------------------------------------------------------


def fit(runs: list[dict]) -> dict:
    """Run seconds against the events already in the state: intercept and slope per 100k."""
    xs = [r["events_before"] / 100_000 for r in runs]
    ys = [r["run_s"] for r in runs]
    slope = linear_slope(xs, ys)
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return {
        "slope_s_per_100k": None if slope is None else round(slope, 3),
        "intercept_s": None if slope is None else round(mean_y - slope * mean_x, 3),
        "last_run_s": ys[-1],
        "last_steps_s": runs[-1]["seconds"],
        "total_s": round(sum(ys), 2),
    }


def alternate(trees: dict[str, Path], base: Path, events: int, args) -> tuple[dict, float]:
    """A child per tree; one run each in turn, alternating which goes first."""
    children = {}
    try:
        for name, tree in trees.items():
            cmd = [sys.executable, __file__, "--child", str(tree), str(base / f"home-{name}"),
                   "--events", str(events), "--per-run", str(args.per_run),
                   "--seed", str(args.seed)]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": str(tree)}
            children[name] = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tree
            )
        landed = {name: json.loads(p.stdout.readline())["landed"] for name, p in children.items()}
        log(f"landed {landed} batches; runs of {args.per_run}")
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        order = list(trees)
        peak_load = load_1m()
        for i in range(-(-min(landed.values()) // args.per_run)):
            for name in order if i % 2 == 0 else order[::-1]:
                children[name].stdin.write("run\n")
                children[name].stdin.flush()
                runs[name].append(json.loads(children[name].stdout.readline()))
            peak_load = max(peak_load, load_1m())
            log(f"run {i:3d}", "  ".join(f"{n} {runs[n][-1]['run_s']:6.2f}s" for n in order))
    finally:
        for proc in children.values():
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=60)
    return runs, peak_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="120k events instead of 900k")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--per-run", type=int, default=60, help="batches per run (of 1,000)")
    parser.add_argument("--against", default=None, metavar="REF", help="git ref to compare")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--child", nargs=2, metavar=("TREE", "HOME"), help=argparse.SUPPRESS)
    add_record_args(parser)
    args = parser.parse_args()
    events = args.events or (120_000 if args.quick else 900_000)
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), events, args.per_run, args.seed)
        return
    if args.rerender:
        rerender(NAME, rows)
        return
    recording = Recording(NAME, args.wait_quiet)
    with contextlib.ExitStack() as stack:
        trees = {"this": ROOT}
        if args.against:
            trees["against"] = stack.enter_context(worktree(args.against))
        commits = {name: commit_of(tree) for name, tree in trees.items()}
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="figstream-run-cost-")))
        runs, peak_load = alternate(trees, base, events, args)
    result = recording.header(
        "quick" if args.quick else "full", load_average_1m_during_max=peak_load
    )
    result["setup"] = {"events": events, "per_run": args.per_run, "seed": args.seed,
                       "commits": commits, "against": args.against}  # fmt: skip
    result["fit"] = {name: fit(r) for name, r in runs.items()}
    result["runs"] = runs
    log(json.dumps(result["fit"], indent=2))
    record(NAME, result, rows, args.no_write)


def rows(r: dict) -> list[tuple[str, str, str]]:
    """This tree's figures, with the ``--against`` tree's and the ratio beside them."""
    fits, commits = r["fit"], r["setup"]["commits"]
    events = f"{r['setup']['events'] / 1000:,.0f}k events"

    def cell(key: str, digits: int) -> str:
        this, other = fits["this"][key], fits.get("against", {}).get(key)
        if this is None:
            return "n/a"
        if other is None:
            return f"{this:.{digits}f}"
        return (
            f"{this:.{digits}f} (`{commits['against']}`: {other:.{digits}f}, {this / other:.2f}x)"
        )

    return [
        (f"run s per 100k events in the state, {events}", cell("slope_s_per_100k", 3), "-"),
        (f"all runs, s, {events}", cell("total_s", 1), "-"),
        (f"last run, s, {events}", cell("last_run_s", 2), "-"),
    ]


if __name__ == "__main__":
    main()
