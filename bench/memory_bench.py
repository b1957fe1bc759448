"""Peak memory of processing one 5M-event day through the streaming steps.

    .venv/bin/python bench/memory_bench.py [--quick] [--events 5000000] [--mode range|hourly|both]
        [--data DIR] [--no-write]

A day is generated (``figstream.ingest.dataset.generate``, seed 42, in a child process of its own)
and then processed in a fresh child process that does what the platform does:

1. *index* (the stream sensors' work, in the daemon): ``assign`` every landing batch and record
   it with ``SqliteStateStore.index_batches``, per stream, 400 batches at a time (a tick's cap);
2. the run, as one process like a Dagster run worker (``definitions`` imported first, so the
   baseline holds dagster and the code location):

   * ``range`` mode, what a backfill of the day does (every streaming asset has
     ``BackfillPolicy.single_run()``, so the UI launches one run over the partition range):
     ``ingest`` per hour (``raw_events``; ``board_mergers`` likewise), keeping each hour's
     event times for the lag metadata as the asset does, then ``clean``, ``dedupe``,
     ``update_job_state`` and ``export_changes`` (the hourly index changes) over the range one
     hour at a time as the assets' ``hour_by_hour`` does (each hour's figures taken from its
     report, the report then dropped), then ``export_snapshot`` (the daily snapshot, streamed
     from the state store);
   * ``hourly`` mode, one hour after another (the same steps per partition, as per-hour runs
     do), in its own process.

The headline is the process's max RSS (``getrusage`` ``ru_maxrss``). Each phase also gets its
own peak: VmHWM is reset (``/proc/self/clear_refs``) before the phase and read after it, and
a sampler thread records the peak of Arrow's allocator (``pyarrow.total_allocated_bytes``).
Results: ``bench/results/memory.json`` and the memory table of ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

from benchlib import (
    BIN,
    ROOT,
    Recording,
    add_record_args,
    linear_slope,
    load_1m,
    logger,
    record,
    rerender,
    verdict,
)

BENCH = "memory"
log = logger(BENCH)
TARGET_BYTES = 512 * 2**20  # issue 19: a 5M-event day in 512 MiB
DAY = date(2026, 11, 20)
SEED = 42
MiB = 2**20


def status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)", text, re.M).group(1))


def reset_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _malloc_views():
    """glibc's ``mallinfo2`` and SQLite's ``sqlite3_memory_used`` (the library Python's
    sqlite3 module is linked to), or None where either is missing."""
    import _sqlite3
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                         "uordblks", "fordblks", "keepcost")
        ]  # fmt: skip

    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
        used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = MallInfo2
    used.restype = ctypes.c_int64
    return mallinfo2, used


class ArrowPeak(threading.Thread):
    """Samples Arrow's allocated bytes every 20 ms; ``take()`` returns and resets the peak.
    Past ``limit_kb`` of RSS or ``deadline`` it calls ``on_limit`` (the machine is shared).
    Where glibc and SQLite say, each sample also splits the heap (``at_peak()``: the sample of
    highest RSS since the last ``take``): malloc'd bytes in use, of which Arrow's and SQLite's
    (the rest: Python objects over 512 bytes, Parquet's own buffers), and free bytes the heap
    holds; RSS beyond the heap is code, Python's small-object arenas and thread stacks."""

    def __init__(self, limit_kb: int, deadline: float, on_limit) -> None:
        super().__init__(daemon=True)
        import pyarrow as pa

        self.pa = pa
        self.peak = 0
        self.worst: dict | None = None
        self.views = _malloc_views()
        self.running = True
        self.limit_kb, self.deadline, self.on_limit = limit_kb, deadline, on_limit

    def sample(self, rss_kb: int) -> dict:
        out = {"rss_mib": rss_kb / 1024, "arrow_mib": self.pa.total_allocated_bytes() / MiB}
        if self.views is not None:
            mallinfo2, sqlite_used = self.views
            info = mallinfo2()
            out |= {
                "sqlite_mib": sqlite_used() / MiB,
                "malloc_in_use_mib": info.uordblks / MiB,
                "malloc_free_held_mib": info.fordblks / MiB,
                "malloc_mmapped_mib": info.hblkhd / MiB,
            }
        return out

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.pa.total_allocated_bytes())
            rss = status_kb("VmRSS")
            if self.worst is None or rss / 1024 > self.worst["rss_mib"]:
                self.worst = self.sample(rss)
            if rss > self.limit_kb:
                self.on_limit(f"RSS over {self.limit_kb // 1024} MiB")
            if time.monotonic() > self.deadline:
                self.on_limit("time limit reached")
            time.sleep(0.02)

    def take(self) -> int:
        peak, self.peak = max(self.peak, self.pa.total_allocated_bytes()), 0
        return peak

    def at_peak(self) -> dict:
        worst, self.worst = self.worst or {}, None
        return {name: round(value, 1) for name, value in worst.items()}


# --- child: generate ----------------------------------------------------------------------------


def child_generate(root: Path, events: int) -> dict:
    from figstream.ingest.dataset import generate

    began = time.perf_counter()
    summary = generate(
        root, start=DAY, days=1, events_per_day=events, seed=SEED, progress=False, overwrite=True
    )
    return {
        "events": summary.events,
        "landing_records": summary.landing_records,
        "batches": summary.batches,
        "bad_total": summary.bad_total,
        "duplicates_delivered": summary.duplicates_delivered,
        "seconds": round(time.perf_counter() - began, 1),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


# --- child: process -----------------------------------------------------------------------------


class Peaks:
    """Nested peak tracking over VmHWM: a frame per phase or wrapped call. Entering a frame
    folds the current VmHWM into every open frame, then resets it; leaving folds it again. So
    each frame gets the process peak during its span, and ``rise`` (peak minus RSS at entry)
    is what the call itself added on top of what was already resident."""

    def __init__(self) -> None:
        self.stack: list[dict] = []
        self.calls: dict[str, dict] = {}

    def _fold(self) -> int:
        hwm = status_kb("VmHWM")
        for frame in self.stack:
            frame["peak"] = max(frame["peak"], hwm)
        return hwm

    def enter(self, name: str) -> dict:
        self._fold()
        reset_hwm()
        rss = status_kb("VmRSS")
        frame = {"name": name, "peak": rss, "rss_in": rss, "t": time.perf_counter()}
        self.stack.append(frame)
        return frame

    def leave(self, frame: dict) -> None:
        self._fold()
        self.stack.remove(frame)
        agg = self.calls.setdefault(
            frame["name"], {"calls": 0, "seconds": 0.0, "peak_mib": 0.0, "rise_mib": 0.0}
        )
        agg["calls"] += 1
        agg["seconds"] = round(agg["seconds"] + time.perf_counter() - frame["t"], 2)
        agg["peak_mib"] = max(agg["peak_mib"], round(frame["peak"] / 1024, 1))
        agg["rise_mib"] = max(agg["rise_mib"], round((frame["peak"] - frame["rss_in"]) / 1024, 1))

    def wrap(self, owner: object, attr: str, name: str) -> None:
        """Replace ``owner.attr`` (in this process only) by a tracked call of it."""
        setattr(owner, attr, self._tracked(getattr(owner, attr), name))

    def wrap_function(self, fn) -> None:
        """Track ``fn`` wherever a figstream module holds it: its own module, and every module
        that imported it by name (``from x import fn`` keeps a reference of its own)."""
        name = f"{fn.__module__.removeprefix('figstream.')}.{fn.__name__}"
        tracked = self._tracked(fn, name)
        for module_name, module in list(sys.modules.items()):
            if module_name.startswith("figstream"):
                for attr, value in list(vars(module).items()):
                    if value is fn:
                        setattr(module, attr, tracked)

    def _tracked(self, original, name: str):
        def tracked(*args, **kwargs):
            frame = self.enter(name)
            try:
                return original(*args, **kwargs)
            finally:
                self.leave(frame)

        return tracked


def child_process(home: Path, mode: str, limit_mib: int, time_limit_s: float) -> dict:
    os.environ["FIGSTREAM_HOME"] = str(home)
    os.environ.setdefault("FIGSTREAM_PROFILE", "local")
    phases: list[dict] = []
    began = time.perf_counter()
    import warnings

    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(ROOT))
    import pyarrow as pa

    import definitions  # noqa: F401  (what a run worker holds before its first step)
    from figstream.ingest.landing import LANDING_PREFIX
    from figstream.migration.ledger import load_ledger
    from figstream.settings import ledger_path
    from figstream.storage import objects, state
    from figstream.streaming import (
        cleaning,
        dedupe,
        fragments,
        index_export,
        ingest,
        jobs,
        landing_index,
        parse,
        table_ops,
    )
    from resources.profiles import resources_for

    gc.collect()
    baseline_kb = status_kb("VmRSS")
    ledger = load_ledger(ledger_path())
    stores = resources_for("local", ledger)["streaming"].stores()
    peaks = Peaks()
    per_hour: list[dict] = []  # hourly mode: RSS after each partition

    def over_limit(why: str) -> None:
        open_frames = [f["name"] for f in peaks.stack]
        log(f"{why} in {open_frames}: stopping")
        peaks._fold()
        partial = {
            "mode": mode,
            "aborted": f"{why} inside {' > '.join(open_frames)}",
            "max_rss_mib": round(max(f["peak"] for f in peaks.stack) / 1024, 1),
            "baseline_rss_mib": round(baseline_kb / 1024, 1),
            "seconds": round(time.perf_counter() - began, 1),
            "phases": phases,
            "calls": peaks.calls,
            "rss_after_each_hour_mib": per_hour,
            "open_frames": [
                {"name": f["name"], "rss_in_mib": round(f["rss_in"] / 1024, 1)} for f in peaks.stack
            ],
        }
        print(json.dumps(partial), flush=True)
        os._exit(3)

    arrow = ArrowPeak(limit_mib * 1024, time.monotonic() + time_limit_s, over_limit)
    arrow.start()
    # Where the memory goes: the functions the steps call, tracked in this process only.
    for fn in (
        fragments.read_fragments,
        objects.write_parquet,
        landing_index.assign,
        jobs._fingerprint,
        jobs.apply_to_jobs,
        fragments.write_each,
        cleaning.clean,
        dedupe.dedupe,
        jobs.update_job_state,
        index_export.export_changes,
        index_export.export_snapshot,
        parse.parse_batch,
        table_ops.dedupe_events,
        table_ops.clean_postings,
        table_ops.dedupe_postings,
        table_ops.apply_job_state,
        table_ops.search_index,
    ):
        peaks.wrap_function(fn)
    for attr in ("get_jobs", "put_jobs", "claim_batches", "index_batches", "iter_index"):
        peaks.wrap(stores.state, attr, f"state.{attr}")
    peaks.wrap(stores.dead_letters, "add", "dead_letters.add")
    worst = {"rss_kb": 0}

    def phase(name: str, fn, *args):
        arrow.take()
        arrow.at_peak()
        frame = peaks.enter(name)
        t = time.perf_counter()
        out = fn(*args)
        seconds = time.perf_counter() - t
        peaks.leave(frame)
        worst["rss_kb"] = max(worst["rss_kb"], frame["peak"])
        phases.append(
            {
                "phase": name,
                "seconds": round(seconds, 2),
                "vm_hwm_mib": round(frame["peak"] / 1024, 1),
                "rss_before_mib": round(frame["rss_in"] / 1024, 1),
                "rss_after_mib": round(status_kb("VmRSS") / 1024, 1),
                "arrow_peak_mib": round(arrow.take() / MiB, 1),
                "arrow_after_mib": round(pa.total_allocated_bytes() / MiB, 1),
                "at_peak": arrow.at_peak(),
            }
        )
        log(mode, phases[-1])
        return out

    def index() -> dict[str, list[str]]:
        keys = stores.objects.list(LANDING_PREFIX)
        partitions: dict[str, set[str]] = {"postings": set(), "boards": set()}
        for start in range(0, len(keys), 400):
            entries: dict[str, list] = {"postings": [], "boards": []}
            for key in keys[start : start + 400]:
                assigned = landing_index.assign(
                    stores.objects.get(key), key, stores.router, stores.first_partition
                )
                for (stream, partition), lines in assigned.items():
                    entries[stream].append((partition, key, len(lines)))
                    partitions[stream].add(partition)
            for stream, rows in entries.items():
                stores.state.index_batches(stream, rows)
        return {stream: sorted(p) for stream, p in partitions.items()}

    def ingest_hours(stream: str, partitions: list[str]) -> dict:
        # As the ingest asset: every hour of the run, event times kept for lag metadata.
        totals = {"records": 0, "valid": 0, "dead_lettered": 0}
        times = []
        for partition in partitions:
            report = ingest.ingest(
                stores, stream, partition, stores.state.batches_for(stream, partition)
            )
            totals["records"] += report.records
            totals["valid"] += report.valid
            totals["dead_lettered"] += report.dead_lettered
            times.extend(report.event_times)
            sum(stores.state.batch_counts(stream, partition).values())
            stores.dead_letters.count(stream=stream, partition_key=partition)
        ingest.IngestReport(event_times=times).lag_seconds()
        return totals

    def hour_by_hour(hours: list[str], step, figures) -> dict:
        # As the assets' hour_by_hour: the step for one hour at a time, that hour's figures
        # taken from its report and the report dropped; the counts add up over the range.
        totals: dict = {}
        for partition in hours:
            for name, value in figures(step([partition])).items():
                if type(value) is int:
                    totals[name] = totals.get(name, 0) + value
        return totals

    partitions = phase("index (sensor work)", index)
    postings, boards = partitions["postings"], partitions["boards"]
    counts: dict = {"postings_partitions": len(postings), "boards_partitions": len(boards)}
    if mode == "range":
        counts["ingest_postings"] = phase("ingest raw_events", ingest_hours, "postings", postings)
        counts["ingest_boards"] = phase("ingest board_mergers", ingest_hours, "boards", boards)
        counts["clean_rows"] = phase(
            "clean (range)",
            hour_by_hour,
            postings,
            lambda h: cleaning.clean(stores, h, None),
            lambda rows: {"rows": rows},
        )
        counts["dedupe"] = phase(
            "dedupe (range)", hour_by_hour, postings, lambda h: dedupe.dedupe(stores, h, None), vars
        )
        state_hours = sorted(set(postings) | set(boards))  # job_state reads both streams
        counts["job_state"] = phase(
            "update_job_state (range)",
            hour_by_hour,
            state_hours,
            lambda h: jobs.update_job_state(stores, h, None),
            lambda report: report.metadata(),
        )
        counts["search_index_changes"] = phase(
            "export_changes (range)",
            hour_by_hour,
            state_hours,
            lambda h: index_export.export_changes(stores, h, None),
            lambda report: {"upserts": report.upserts, "deletes": report.deletes},
        )
        day = postings[-1][:10]
        exported = phase("export_snapshot", index_export.export_snapshot, stores, day)
        counts["search_index_rows"] = exported.rows
    else:

        def hourly() -> None:
            boards_set = set(boards)
            for partition in sorted(set(postings) | boards_set):
                if partition in boards_set:
                    ingest_hours("boards", [partition])
                if partition in postings:
                    ingest_hours("postings", [partition])
                    cleaning.clean(stores, [partition], None)
                    dedupe.dedupe(stores, [partition], None)
                jobs.update_job_state(stores, [partition], None)
                index_export.export_changes(stores, [partition], None)
                peaks._fold()
                per_hour.append(
                    {
                        "partition": partition,
                        "rss_mib": round(status_kb("VmRSS") / 1024, 1),
                        "peak_so_far_mib": round(max(f["peak"] for f in peaks.stack) / 1024, 1),
                        "seconds": round(time.perf_counter() - began, 1),
                    }
                )

        phase("hourly runs (every step, one partition each)", hourly)
        counts["rss_after_each_hour_mib"] = per_hour
    arrow.running = False
    sizes = {
        name: sum(p.stat().st_size for p in (home / "tables" / name).rglob("*.parquet"))
        for name in ("raw_events", "clean_postings", "deduped_postings", "search_index",
                     "search_index_snapshot")
    }  # fmt: skip
    sizes["state_store"] = state.state_path(home).stat().st_size
    return {
        "mode": mode,
        # ru_maxrss is reset with VmHWM; the phases' peaks hold the process maximum.
        "max_rss_mib": round(
            max(worst["rss_kb"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024, 1
        ),
        "baseline_rss_mib": round(baseline_kb / 1024, 1),
        "calls": dict(sorted(peaks.calls.items(), key=lambda kv: -kv[1]["peak_mib"])),
        "seconds": round(time.perf_counter() - began, 1),
        "phases": phases,
        "counts": counts,
        "table_bytes": sizes,
    }


# --- parent -------------------------------------------------------------------------------------


def run_child(args: list[str]) -> dict:
    out = subprocess.run(
        [str(BIN / "python"), str(Path(__file__).resolve()), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"child {args} failed with exit code {out.returncode}")
    return json.loads(lines[-1])


def copy_tree(src: Path, dst: Path) -> None:
    """A fresh processing home: the landing zone only (hard links, batches are immutable)."""
    shutil.copytree(src / "landing", dst / "landing", copy_function=os.link)


def generated_day(data: Path, events: int) -> dict:
    """Generate a day of ``events`` into ``data`` (or reuse it if it is already there)."""
    manifest = data / "generate-manifest.json"
    if manifest.exists() and json.loads(manifest.read_text())["events_per_day"] == events:
        m = json.loads(manifest.read_text())
        out = {k: m[k] for k in ("events", "landing_records", "batches", "bad_total")}
        out["reused"] = str(data)
    else:
        log(f"generating {events:,} events into {data}")
        out = run_child(["--child-generate", str(data), str(events)])
    out["landing_bytes"] = sum(p.stat().st_size for p in (data / "landing").rglob("*.jsonl"))
    log(f"generated {out}")
    return out


def process(data: Path, base: Path, mode: str, args: argparse.Namespace) -> dict:
    home = base / f"home-{mode}"
    shutil.rmtree(home, ignore_errors=True)
    copy_tree(data, home)
    load = load_1m()
    try:
        run = run_child(
            ["--child-process", str(home), mode, "--rss-limit-mib", str(args.rss_limit_mib),
             "--time-limit-min", str(args.time_limit_min)]
        )  # fmt: skip
    finally:
        shutil.rmtree(home, ignore_errors=True)
    run["load_1m_at_start"] = load
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 events, no series")
    parser.add_argument("--events", type=int, default=None, help="events of the day (5M)")
    parser.add_argument("--mode", choices=["range", "hourly", "both"], default="both")
    parser.add_argument(
        "--series",
        default=None,
        help="comma-separated smaller days run in range mode first, for the growth with size "
        "(default 200000,500000,1000000; none with --quick)",
    )
    parser.add_argument("--data", type=Path, help="generate into / reuse DIR/<events>")
    parser.add_argument(
        "--rss-limit-mib",
        type=int,
        default=8192,
        help="stop a processing child past this RSS (the machine is shared)",
    )
    parser.add_argument(
        "--time-limit-min",
        type=float,
        default=45.0,
        help="stop a processing child after this many minutes",
    )
    add_record_args(parser)
    parser.add_argument("--child-generate", nargs=2, metavar=("ROOT", "EVENTS"))
    parser.add_argument("--child-process", nargs=2, metavar=("HOME", "MODE"))
    args = parser.parse_args()
    if args.rerender:
        rerender(BENCH, rows)
        return
    if args.child_generate:
        root, events = args.child_generate
        print(json.dumps(child_generate(Path(root), int(events))))
        return
    if args.child_process:
        home, mode = args.child_process
        limit_s = args.time_limit_min * 60
        print(json.dumps(child_process(Path(home), mode, args.rss_limit_mib, limit_s)))
        return

    events = args.events or (200_000 if args.quick else 5_000_000)
    series_arg = (
        args.series if args.series is not None else ("" if args.quick else "200000,500000,1000000")
    )
    series = [int(x) for x in series_arg.split(",") if x.strip()]
    recording = Recording(BENCH, args.wait_quiet)
    base = Path(tempfile.mkdtemp(prefix="figstream-memory-"))
    data_root = args.data or base / "generated"
    scaling = []
    runs = {}
    try:
        for size in series:
            day = generated_day(data_root / str(size), size)
            run = process(data_root / str(size), base, "range", args)
            scaling.append({"events": size, "data": day, "run": run})
            if args.data is None:
                shutil.rmtree(data_root / str(size), ignore_errors=True)
        data = generated_day(data_root / str(events), events)
        for mode in ("range", "hourly") if args.mode == "both" else (args.mode,):
            runs[mode] = process(data_root / str(events), base, mode, args)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    points = [
        (x["events"], x["run"]["max_rss_mib"]) for x in scaling if not x["run"].get("aborted")
    ]
    slope = linear_slope([p[0] for p in points], [p[1] for p in points]) if points else None
    fit = None
    if slope is not None:
        mean_x = sum(p[0] for p in points) / len(points)
        mean_y = sum(p[1] for p in points) / len(points)
        fit = {
            "mib_per_million_events": round(slope * 1e6, 1),
            "intercept_mib": round(mean_y - slope * mean_x, 1),
            "extrapolated_max_rss_mib": round(mean_y + slope * (events - mean_x), 1),
            "at_events": events,
        }
    result = {
        **recording.header("quick" if events < 5_000_000 else "full"),
        "data": {"day": DAY.isoformat(), "seed": SEED, "events_per_day": events, **data},
        "target_bytes": TARGET_BYTES,
        "guards": {"rss_limit_mib": args.rss_limit_mib, "time_limit_min": args.time_limit_min},
        "max_rss_mib": {mode: r["max_rss_mib"] for mode, r in runs.items()},
        "target_met": {
            mode: not r.get("aborted") and r["max_rss_mib"] * MiB <= TARGET_BYTES
            for mode, r in runs.items()
        },
        "runs": runs,
        "scaling_range_mode": scaling,
        "scaling_fit": fit,
    }
    log(f"max RSS {result['max_rss_mib']} MiB; fit {fit}")
    record(BENCH, result, rows, args.no_write)


def rows(r: dict) -> list[tuple[str, str, str]]:
    def mib(run: dict) -> str:
        return f"{run['max_rss_mib']:,.0f} MiB"

    out = []
    for mode, run in r["runs"].items():
        target = verdict("<= 512 MiB", r["target_met"][mode])
        if run.get("aborted"):
            target += f" (stopped: {run['aborted']})"
        out.append(
            (f"max RSS, {r['data']['events_per_day']:,}-event day, {mode}", mib(run), target)
        )
    for x in r["scaling_range_mode"]:
        out.append((f"max RSS, {x['events']:,}-event day, range", mib(x["run"]), "-"))
    if r["scaling_fit"]:
        fit = r["scaling_fit"]["mib_per_million_events"]
        out.append(("range runs, MiB per 1M events", f"{fit}", "-"))
    return out


if __name__ == "__main__":
    main()
