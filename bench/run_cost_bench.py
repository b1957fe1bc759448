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
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    ROOT,
    add_record_args,
    fmt,
    linear_slope,
    load_1m,
    load_note,
    machine,
    machine_line,
    rerender,
    result_header,
    wait_for_quiet,
    write_results,
    write_section,
)

from figstream.streaming import cleaning, dedupe, index_export, landing_index
from figstream.streaming import ingest as streaming_ingest
from figstream.streaming import jobs as streaming_jobs
from figstream.streaming import stores as streaming_stores

NAME = "run-cost"
STEPS = ("index", "ingest", "boards", "clean", "dedupe", "job_state", "search_index")


# --- child: one tree, one home -------------------------------------------------------------------


def child(tree: Path, home: Path, events: int, per_run: int, seed: int) -> None:
    sys.path.insert(0, str(tree))
    from datetime import UTC, datetime, timedelta

    import orjson

    from figstream.ingest.generate import format_us
    from figstream.ingest.landing import parse_batch_key
    from figstream.ingest.publish import Publisher, _live_events

    now = datetime.now(UTC)
    stores = streaming_stores.Stores.local(
        home, (now - timedelta(days=1)).strftime("%Y-%m-%d-%H:00")
    )
    source = _live_events(seed, 2000)
    start_us = int((now - timedelta(seconds=events / 2000 + 60)).timestamp() * 1e6)
    lines = []
    for n in range(events):
        envelope = next(source)
        envelope["time"] = format_us(start_us + n * 500)  # 2,000 events a second
        lines.append(orjson.dumps(envelope))
    keys = Publisher(stores.objects, "bench-cost", 1000).publish(lines)
    del lines
    print(json.dumps({"landed": len(keys)}), flush=True)
    done = 0
    for command in sys.stdin:
        if command.strip() != "run" or done >= len(keys):
            break
        batch = keys[done : done + per_run]
        seconds, jobs = one_run(steps, stores, batch, [parse_batch_key(k)[1] for k in batch])
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
            streaming_ingest.ingest(stores, stream, partition, batch_keys)

    touched = timed("index", landing_index.index_landing, stores, "postings", batch)
    boards = landing_index.index_landing(stores, "boards", batch)
    partitions = sorted(touched)
    timed("ingest", ingest, "postings", touched)
    timed("boards", ingest, "boards", boards)
    timed("clean", cleaning.clean, stores, partitions, ids)
    timed("dedupe", dedupe.dedupe, stores, partitions, ids)
    state = timed("job_state", streaming_jobs.update_job_state, stores, partitions, ids)
    timed("search_index", index_export.export_search_index, stores)
    return seconds, state.jobs


# --- parent ---------------------------------------------------------------------------------------


def worktree(ref: str, base: Path) -> Path:
    path = base / "against"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
        check=True,
        capture_output=True,
    )
    return path


def commit_of(tree: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out.stdout.strip() + ("+changes" if dirty else "")


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
        rerender(NAME, readme)
        return
    began, quiet = time.time(), wait_for_quiet(args.wait_quiet)
    load_before = load_1m()
    base = Path(tempfile.mkdtemp(prefix="figstream-run-cost-"))
    trees = {"this": ROOT}
    if args.against:
        trees["against"] = worktree(args.against, base)
    commits = {name: commit_of(tree) for name, tree in trees.items()}
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
        print(f"landed {landed} batches; runs of {args.per_run}", flush=True)
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        order = list(trees)
        peak_load = load_1m()
        for i in range(-(-min(landed.values()) // args.per_run)):
            for name in order if i % 2 == 0 else order[::-1]:
                children[name].stdin.write("run\n")
                children[name].stdin.flush()
                runs[name].append(json.loads(children[name].stdout.readline()))
            peak_load = max(peak_load, load_1m())
            line = "  ".join(f"{name} {runs[name][-1]['run_s']:6.2f}s" for name in order)
            print(f"run {i:3d} {line}", flush=True)
    finally:
        for proc in children.values():
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=60)
        if args.against:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees["against"])],
                capture_output=True,
            )
    result = result_header(
        NAME, "quick" if args.quick else "full", began, machine(), load_before, quiet, load_1m(),
        load_average_1m_during_max=peak_load,
    )  # fmt: skip
    result["setup"] = {"events": events, "per_run": args.per_run, "seed": args.seed,
                       "commits": commits, "against": args.against}  # fmt: skip
    result["fit"] = {name: fit(r) for name, r in runs.items()}
    result["runs"] = runs
    print(json.dumps(result["fit"], indent=2))
    if not args.no_write:
        write_results(NAME, result)
        write_section(NAME, readme(result))


def readme(r: dict) -> str:
    setup, m = r["setup"], r["machine"]
    names = list(r["fit"])
    rows = []
    for i in range(len(r["runs"][names[0]])):
        cells = [f"{r['runs'][names[0]][i]['events_before']:,}"]
        for name in names:
            run = r["runs"][name][i]
            cells.append(f"{run['run_s']:.2f}")
            cells += [
                f"{run['seconds'][step]:.2f}" for step in ("job_state", "dedupe", "search_index")
            ]
        rows.append("| " + " | ".join(cells) + " |")
    head = "| state (events) | " + " | ".join(
        f"{setup['commits'][n]} run s | job_state | dedupe | index" for n in names
    ) + " |"  # fmt: skip
    rule = "| ---: " * (1 + 4 * len(names)) + "|"
    fits = "; ".join(
        f"`{setup['commits'][n]}`: {fmt(f['intercept_s'], 2)} s + "
        f"{fmt(f['slope_s_per_100k'], 3)} s per 100k events in the state, last run "
        f"{f['last_run_s']:.2f} s, all runs {f['total_s']:.1f} s"
        for n, f in r["fit"].items()
    )
    ratio = ""
    if len(names) == 2:
        a, b = (r["fit"][n] for n in names)
        ratio = (
            f" Ratio of the totals, `{setup['commits'][names[0]]}` / "
            f"`{setup['commits'][names[1]]}`: **{a['total_s'] / b['total_s']:.2f}**; of the "
            f"slopes: **{a['slope_s_per_100k'] / b['slope_s_per_100k']:.2f}**."
        )
    against = f" --against {setup['against']}" if setup["against"] else ""
    return f"""## Run cost against the state (`bench/run_cost_bench.py`)

`.venv/bin/python bench/run_cost_bench.py{against}` ({r["mode"]} run,
{r["started_at"][:16]} UTC): {setup["events"]:,} events of one seeded live stream
(seed {setup["seed"]}) in 1,000-line batches, processed in process, in runs of
{setup["per_run"]} batches (what a sensor hands one run at 2,000 events/s and ~30 s a run):
landing index, ingest of both streams, clean, dedupe, job state, search index. Each commit in
its own process and home; the runs alternate between them, so both see the same load at the
same state size.
Machine: {machine_line(m)}; {load_note(m)}.

Fit of run seconds against the events already in the state: {fits}.{ratio}

{head}
{rule}
{chr(10).join(rows)}

Raw figures, every step of every run: `bench/results/run-cost.json`.
"""


if __name__ == "__main__":
    main()
