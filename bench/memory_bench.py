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
     event times for the lag metadata as the asset does, then ``clean``, ``dedupe`` and
     ``update_job_state`` over the whole range, then ``export_search_index``;
   * ``hourly`` mode, one hour after another (the same steps per partition, as per-hour runs
     do), in its own process.

The headline is the process's max RSS (``getrusage`` ``ru_maxrss``). Each phase also gets its
own peak: VmHWM is reset (``/proc/self/clear_refs``) before the phase and read after it, and
a sampler thread records the peak of Arrow's allocator (``pyarrow.total_allocated_bytes``).
Results: ``bench/results/memory.json`` and the memory section of ``bench/README.md``.
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
    add_record_args,
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

from figstream.streaming import cleaning, index_export, jobs, landing_index
from figstream.streaming import dedupe as streaming_dedupe
from figstream.streaming import ingest as streaming_ingest

BENCH = "memory"
TARGET_BYTES = 2**30
DAY = date(2026, 11, 20)
SEED = 42
MiB = 2**20


def status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)", text, re.M).group(1))


def reset_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")


class ArrowPeak(threading.Thread):
    """Samples Arrow's allocated bytes every 20 ms; ``take()`` returns and resets the peak.
    Past ``limit_kb`` of RSS or ``deadline`` it calls ``on_limit`` (the machine is shared)."""

    def __init__(self, limit_kb: int, deadline: float, on_limit) -> None:
        super().__init__(daemon=True)
        import pyarrow as pa

        self.pa = pa
        self.peak = 0
        self.running = True
        self.limit_kb, self.deadline, self.on_limit = limit_kb, deadline, on_limit

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.pa.total_allocated_bytes())
            if status_kb("VmRSS") > self.limit_kb:
                self.on_limit(f"RSS over {self.limit_kb // 1024} MiB")
            if time.monotonic() > self.deadline:
                self.on_limit("time limit reached")
            time.sleep(0.02)

    def take(self) -> int:
        peak, self.peak = max(self.peak, self.pa.total_allocated_bytes()), 0
        return peak


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
        original = getattr(owner, attr)

        def tracked(*args, **kwargs):
            frame = self.enter(name)
            try:
                return original(*args, **kwargs)
            finally:
                self.leave(frame)

        setattr(owner, attr, tracked)


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
    from assets.streaming import lag_metadata
    from figstream.ingest.landing import LANDING_PREFIX
    from figstream.migration.ledger import load_ledger
    from figstream.settings import ledger_path
    from resources.profiles import resources_for

    gc.collect()
    baseline_kb = status_kb("VmRSS")
    ledger = load_ledger(ledger_path())
    stores = resources_for("local", ledger)["streaming"].stores()
    peaks = Peaks()
    per_hour: list[dict] = []  # hourly mode: RSS after each partition

    def over_limit(why: str) -> None:
        open_frames = [f["name"] for f in peaks.stack]
        print(f"[memory] {why} in {open_frames}: stopping", file=sys.stderr)
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
    for attr in (
        "read_fragments",
        "_snapshot",
        "write_parquet",
        "assign",
        "job_state_rows",
        "_fingerprint",
        "_write_each",
        "_few_active",
        "_shadowed",
        "clean",
        "dedupe",
        "update_job_state",
        "export_search_index",
    ):
        peaks.wrap(steps, attr, f"streaming.{attr}")
    for attr in (
        "parse_batch",
        "dedupe_events",
        "clean_postings",
        "dedupe_postings",
        "apply_job_state",
        "search_index",
    ):
        peaks.wrap(transform, attr, f"transform.{attr}")
    for attr in ("upsert_jobs", "claim_batches", "index_batches"):
        peaks.wrap(stores.state, attr, f"state.{attr}")
    peaks.wrap(stores.dead_letters, "add", "dead_letters.add")
    worst = {"rss_kb": 0}

    def phase(name: str, fn, *args):
        arrow.take()
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
            }
        )
        print(f"[memory] {mode} {phases[-1]}", file=sys.stderr, flush=True)
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

    def ingest(stream: str, partitions: list[str]) -> dict:
        # As the ingest asset: every hour of the run, event times kept for lag metadata.
        totals = {"records": 0, "valid": 0, "dead_lettered": 0}
        times = []
        for partition in partitions:
            report = streaming_ingest.ingest(
                stores, stream, partition, stores.state.batches_for(stream, partition)
            )
            totals["records"] += report.records
            totals["valid"] += report.valid
            totals["dead_lettered"] += report.dead_lettered
            times.extend(report.event_times)
            sum(stores.state.batch_counts(stream, partition).values())
            stores.dead_letters.count(stream=stream, partition_key=partition)
        lag_metadata(times)
        return totals

    partitions = phase("index (sensor work)", index)
    postings, boards = partitions["postings"], partitions["boards"]
    counts: dict = {"postings_partitions": len(postings), "boards_partitions": len(boards)}
    if mode == "range":
        counts["ingest_postings"] = phase("ingest raw_events", ingest, "postings", postings)
        counts["ingest_boards"] = phase("ingest board_mergers", ingest, "boards", boards)
        counts["clean_rows"] = phase("clean (range)", cleaning.clean, stores, postings, None)
        dedupe = phase("dedupe (range)", streaming_dedupe.dedupe, stores, postings, None)
        counts["dedupe"] = vars(dedupe)
        state = phase("update_job_state (range)", jobs.update_job_state, stores, postings, None)
        counts["job_state"] = vars(state)
        index = phase("export_search_index", index_export.export_search_index, stores)
        counts["search_index_rows"] = index.rows
    else:

        def hourly() -> None:
            boards_set = set(boards)
            for partition in sorted(set(postings) | boards_set):
                if partition in boards_set:
                    ingest("boards", [partition])
                if partition in postings:
                    ingest("postings", [partition])
                    cleaning.clean(stores, [partition], None)
                    streaming_dedupe.dedupe(stores, [partition], None)
                jobs.update_job_state(stores, [partition], None)
                index_export.export_search_index(stores)
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
        for name in ("raw_events", "clean_postings", "deduped_postings", "job_state",
                     "postings_registry", "search_index")
    }  # fmt: skip
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
        print(f"[memory] generating {events:,} events into {data}", file=sys.stderr)
        out = run_child(["--child-generate", str(data), str(events)])
    out["landing_bytes"] = sum(p.stat().st_size for p in (data / "landing").rglob("*.jsonl"))
    print(f"[memory] generated {out}", file=sys.stderr)
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
        rerender(BENCH, readme, derive)
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
    quiet = wait_for_quiet(args.wait_quiet, log=lambda m: print(f"[{BENCH}] {m}", file=sys.stderr))
    facts = machine()
    load_before = load_1m()
    began = time.time()
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
    load_after = load_1m()
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
        **result_header(
            "memory",
            "quick" if events < 5_000_000 else "full",
            began,
            facts,
            load_before,
            quiet,
            load_after,
        ),
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
    print(f"[memory] max RSS {result['max_rss_mib']} MiB; fit {fit}", file=sys.stderr)
    if args.no_write:
        print(json.dumps(result, indent=2))
    else:
        write_results("memory", result)
        write_section("memory", readme(result))


def readme(r: dict) -> str:
    m, d = r["machine"], r["data"]

    def table(run: dict) -> str:
        return "\n".join(
            f"| {p['phase']} | {p['seconds']:.1f} | {p['vm_hwm_mib']:,.0f} | "
            f"{p['arrow_peak_mib']:,.0f} | {p['rss_after_mib']:,.0f} |"
            for p in run["phases"]
        )

    def calls(run: dict) -> str:
        inner = [kv for kv in run["calls"].items() if "." in kv[0]]  # not the phases
        top = sorted(inner, key=lambda kv: -kv[1]["rise_mib"])[:8]
        return ", ".join(
            f"`{name}` +{c['rise_mib']:,.0f} MiB (peak {c['peak_mib']:,.0f}, {c['calls']} calls, "
            f"{c['seconds']:.0f} s)"
            for name, c in top
        )

    def phase_of(run: dict, prefix: str) -> str:
        hit = next((p for p in run["phases"] if p["phase"].startswith(prefix)), None)
        return f"{hit['vm_hwm_mib']:,.0f} / {hit['seconds']:.0f} s" if hit else "-"

    sections = []
    for mode, run in r["runs"].items():
        verdict = "**met**" if r["target_met"][mode] else "**missed**"
        aborted = f" **Stopped early: {run['aborted']}.**" if run.get("aborted") else ""
        hours = run.get("rss_after_each_hour_mib") or run.get("counts", {}).get(
            "rss_after_each_hour_mib", []
        )
        if hours:
            picks = hours[:: max(1, len(hours) // 6)] + ([hours[-1]] if len(hours) > 1 else [])
            aborted += (
                " Peak so far after hour: "
                + ", ".join(
                    f"{h['partition'][11:16]} {h['peak_so_far_mib']:,.0f} MiB "
                    f"({h['seconds']:.0f} s)"
                    for h in picks
                )
                + "."
            )
        sections.append(
            f"**{mode}** mode ({d['events_per_day']:,} events): max RSS "
            f"**{run['max_rss_mib']:,.0f} MiB** (target 1,024 MiB {verdict}); baseline after "
            f"importing dagster and the code location {run['baseline_rss_mib']:,.0f} MiB; "
            f"{run['seconds']:.0f} s; load {run['load_1m_at_start']} at its start.{aborted}\n\n"
            "| phase | s | VmHWM MiB | Arrow peak MiB | RSS after MiB |\n"
            "| --- | ---: | ---: | ---: | ---: |\n" + table(run) + "\n\n"
            "Largest rise above the RSS at the call's entry, per function the steps call: "
            + calls(run)
            + "."
        )
    scaling = "\n"
    if r["scaling_range_mode"]:
        rows = "\n".join(
            f"| {x['events']:,} | {x['run']['max_rss_mib']:,.0f} | "
            f"{phase_of(x['run'], 'ingest raw')} | {phase_of(x['run'], 'clean')} | "
            f"{phase_of(x['run'], 'dedupe')} | {phase_of(x['run'], 'update_job_state')} |"
            for x in r["scaling_range_mode"]
        )
        fit = r["scaling_fit"] or {}
        scaling = (
            "\nGrowth with the size of the day (range mode; cells are VmHWM MiB / seconds):\n\n"
            "| events | max RSS MiB | ingest | clean | dedupe | update_job_state |\n"
            "| ---: | ---: | ---: | ---: | ---: | ---: |\n"
            + rows
            + (
                f"\n\nLinear fit: {fit['mib_per_million_events']} MiB per million events + "
                f"{fit['intercept_mib']} MiB, i.e. about {fit['extrapolated_max_rss_mib']:,.0f} "
                f"MiB at {d['events_per_day']:,}.\n\n"
                if fit
                else "\n\n(One size only: no fit.)\n\n"
            )
        )
    body = "\n\n".join(sections)
    guards = r["guards"]
    return f"""## Memory of one day (`bench/memory_bench.py`)

`.venv/bin/python bench/memory_bench.py` ({r["mode"]} run, {r["started_at"][:16]} UTC,
{r["wall_seconds"]:.0f} s): one generated day ({d["day"]}, seed {d["seed"]},
{d["events_per_day"]:,} events: {d["landing_records"]:,} landing records in
{d["batches"]:,} batches, {d["landing_bytes"] / 2**30:.2f} GiB) through the streaming steps,
in a fresh process per mode that first imports `definitions` like a run worker. Per phase:
VmHWM reset before and read after, Arrow allocator peak sampled every 20 ms. A child stops
past {guards["rss_limit_mib"]:,} MiB RSS or {guards["time_limit_min"]:g} min (shared machine).
Machine: {machine_line(m)}; {load_note(m)}.

{body}
{scaling}
Raw figures: `bench/results/memory.json`.
"""


def derive(result: dict) -> None:
    """Figures computed from the recorded ones (kept in the results file too)."""


if __name__ == "__main__":
    main()
