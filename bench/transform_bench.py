"""Throughput of the streaming transform core against bare pyarrow.json and the legacy tasks.

    .venv/bin/python bench/transform_bench.py [--events N] [--repeat R] [--no-write]
    .venv/bin/python bench/transform_bench.py --quick         # 50k events, 2 rounds, no legacy
    .venv/bin/python bench/transform_bench.py --readme-only   # README section from the JSON

One run, one machine, the same generated day (``figstream.ingest.generate``, seed 42):

(a) ``pyarrow.json.read_json`` of the *good* lines of the landing batches (pyarrow.json fails
    a whole read on one bad line, so the lines ``validate`` rejects are removed first, untimed).
    Measured per landing batch, as the stream delivers them, and as one blob.
(b) figstream: ``parse_batches`` (parse + validate + upcast) -> ``dedupe_events`` ->
    ``clean_postings`` (normalise) -> ``dedupe_postings`` over *all* landing lines, bad ones
    included, in passes of ``--batches-per-pass`` batches (about what an hourly run gets).
    Single process is the headline; the 2-process variant parses passes in a persistent pool
    of 2 workers with ``parse_in`` (batches and results through shared memory, results as
    Arrow IPC), and the parent does the rest. For comparison, the same pool with the results
    pickled back (``pool.map(parse_batches, ...)``, the earlier 2-process mode).
(c) legacy Luigi ExtractFeeds + CleanPostings + DedupePostings (``luigi.build``, local
    scheduler) on the feed dump of the same day generated with ``bad_rate=0``: legacy dies on
    the first bad record. (b) is measured on that clean day too, for a like-for-like ratio.

Best of ``--repeat`` interleaved rounds for (a) and (b); legacy runs once (it is slow).
Results go to ``bench/results/transform.json`` and to the transform section of
``bench/README.md``; ``--quick`` (a smaller day, for development) writes neither.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import load_1m, machine  # noqa: E402
from figstream.DROPPED import parse_in

from figstream.events.validation import Rejection, validate
from figstream.ingest.dataset import generate
from figstream.streaming.parse import parse_batches
from figstream.streaming.table_ops import clean_postings, dedupe_events, dedupe_postings

DAY = date(2026, 11, 20)
SEED = 42
README = ROOT / "bench" / "README.md"
RESULTS = ROOT / "bench" / "results" / "transform.json"
START, END = "<!-- transform-bench:start -->", "<!-- transform-bench:end -->"


def landing(root: Path) -> list[tuple[str, bytes]]:
    return [(p.stem, p.read_bytes()) for p in sorted((root / "landing").rglob("*.jsonl"))]


def count_lines(batches: list[tuple[str, bytes]]) -> int:
    return sum(1 for _, data in batches for line in data.split(b"\n") if line.strip())


def children_cpu() -> float:
    """CPU seconds used so far by this process's live children (the pool's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for child in multiprocessing.active_children():
        fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def interleaved(repeat: int, runs: dict) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Best wall time of each run, and the CPU seconds of that round (this process, worker
    processes). Rounds interleave the runs, so that a slow spell of a shared machine hits
    every measurement alike instead of one of them; the CPU split shows what a busy machine
    hides in wall time."""
    for fn in runs.values():
        fn()  # warm-up: first-call costs (lazy imports, memory pools, pool start) are not rates
    best = dict.fromkeys(runs, float("inf"))
    cpu = {name: [0.0, 0.0] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            began, parent, workers = time.perf_counter(), time.process_time(), children_cpu()
            fn()
            elapsed = time.perf_counter() - began
            if elapsed < best[name]:
                best[name] = elapsed
                cpu[name] = [time.process_time() - parent, children_cpu() - workers]
    return best, cpu


def passes(batches: list, size: int) -> list[list]:
    return [batches[i : i + size] for i in range(0, len(batches), size)]


def pipeline(parsed) -> None:
    valid = pa.concat_tables([p.valid for p in parsed])
    events = dedupe_events(valid)
    dedupe_postings(clean_postings(events))


def run_legacy(clean_root: Path) -> tuple[float, int]:
    os.environ["FIGSTREAM_HOME"] = str(clean_root)
    import luigi

    from legacy.pipeline import DedupePostings

    feed = clean_root / "feeds" / DAY.isoformat()
    events = sum(count_lines([(p.stem, p.read_bytes())]) for p in feed.glob("*.jsonl"))
    began = time.perf_counter()
    ok = luigi.build([DedupePostings(date=DAY)], local_scheduler=True, workers=1, log_level="ERROR")
    elapsed = time.perf_counter() - began
    if not ok:
        raise RuntimeError("the legacy tasks failed")
    return elapsed, events


def rate(events: int, seconds: float) -> float:
    return round(events / seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events of the day")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds, best kept")
    parser.add_argument("--batches-per-pass", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--quick", action="store_true", help="50k events, 2 rounds, no legacy, print only"
    )
    parser.add_argument(
        "--readme-only", action="store_true", help="rewrite the README section from the JSON"
    )
    args = parser.parse_args()
    if args.readme_only:
        write_readme(json.loads(RESULTS.read_text()))
        return
    if args.quick:
        args.events, args.repeat, args.no_write = 50_000, 2, True
    import luigi

    # Before the work, so the load average says how busy the machine was.
    facts = {
        **machine(numpy=np.__version__, luigi=luigi.__version__),
        "load_average_1m_at_start": load_1m(),
    }

    with tempfile.TemporaryDirectory(prefix="transform-bench-") as tmp:
        dirty_root, clean_root = Path(tmp) / "dirty", Path(tmp) / "clean"
        summary = generate(dirty_root, DAY, 1, args.events, seed=SEED, bad_rate=0.01)
        generate(clean_root, DAY, 1, args.events, seed=SEED, bad_rate=0.0)
        batches, clean_batches = landing(dirty_root), landing(clean_root)
        records = count_lines(batches)

        # (a) the same records, good lines only (pyarrow.json cannot skip a bad line)
        good = []
        for batch_id, data in batches:
            lines = [ln for ln in data.split(b"\n") if ln.strip()]
            keep = [ln for ln in lines if not isinstance(validate(ln), Rejection)]
            good.append((batch_id, b"\n".join(keep) + b"\n"))
        good_lines = sum(data.count(b"\n") for _, data in good)
        blob = b"".join(data for _, data in good)
        work = passes(batches, args.batches_per_pass)
        clean_work = passes(clean_batches, args.batches_per_pass)
        clean_records = count_lines(clean_batches)

        # Spawned, not forked: forked workers would share the parent's heap copy-on-write, and
        # every page the parent then writes would be copied, slowing the 1-process figures.
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            best, cpu = interleaved(
                args.repeat,
                {
                    # (a) the same records, good lines only (pyarrow.json cannot skip a bad one)
                    "a_batch": lambda: [pj.read_json(io.BytesIO(d)) for _, d in good],
                    "a_blob": lambda: pj.read_json(io.BytesIO(blob)),
                    # (b) figstream over every landing line, in passes
                    "b_single": lambda: pipeline([parse_batches(p) for p in work]),
                    "b_pool": lambda: pipeline(list(parse_in(pool, work))),
                    "b_pool_pickled": lambda: pipeline(list(pool.map(parse_batches, work))),
                    "b_clean": lambda: pipeline([parse_batches(p) for p in clean_work]),
                },
            )
        a_batch, a_blob = best["a_batch"], best["a_blob"]
        b_single, b_pool, b_clean = best["b_single"], best["b_pool"], best["b_clean"]
        b_pickled = best["b_pool_pickled"]

        # (c) legacy on the clean feed dump
        c_seconds, c_events = run_legacy(clean_root) if not args.quick else (float("nan"), 0)

    a_batch_rate, a_blob_rate = rate(good_lines, a_batch), rate(good_lines, a_blob)
    b_rate, b_pool_rate = rate(records, b_single), rate(records, b_pool)
    b_pickled_rate = rate(records, b_pickled)
    b_clean_rate = rate(clean_records, b_clean)
    c_rate = rate(c_events, c_seconds) if c_events else float("nan")
    result = {
        "machine": facts,
        "data": {
            "day": DAY.isoformat(),
            "seed": SEED,
            "events_per_day": args.events,
            "landing_records": records,
            "landing_batches": len(batches),
            "bad_records_generated": summary.bad_total,
            "good_lines": good_lines,
            "batches_per_pass": args.batches_per_pass,
            "rounds": args.repeat,
            "legacy_feed_events": c_events,
            "clean_landing_records": clean_records,
        },
        "events_per_second": {
            "a_pyarrow_json_per_batch": a_batch_rate,
            "a_pyarrow_json_one_blob": a_blob_rate,
            "b_figstream_single_process": b_rate,
            "b_figstream_2_processes": b_pool_rate,
            "b_figstream_2_processes_results_pickled": b_pickled_rate,
            "b_figstream_single_process_clean_day": b_clean_rate,
            "c_legacy_luigi_clean_day": c_rate,
        },
        "seconds": {
            "a_per_batch": round(a_batch, 3),
            "a_one_blob": round(a_blob, 3),
            "b_single": round(b_single, 3),
            "b_2_processes": round(b_pool, 3),
            "b_2_processes_results_pickled": round(b_pickled, 3),
            "b_clean_day": round(b_clean, 3),
            "c_legacy": round(c_seconds, 3),
        },
        "cpu_seconds_parent_workers": {
            name: [round(v, 3) for v in cpu[name]]
            for name in ("b_single", "b_pool", "b_pool_pickled")
        },
        "ratios": {
            "b_over_a_per_batch": round(b_rate / a_batch_rate, 3),
            "b_over_a_one_blob": round(b_rate / a_blob_rate, 3),
            "b_2_processes_over_a_per_batch": round(b_pool_rate / a_batch_rate, 3),
            "b_2_processes_over_a_one_blob": round(b_pool_rate / a_blob_rate, 3),
            "b_clean_over_c_legacy": round(b_clean_rate / c_rate, 1),
            "b_over_c_legacy": round(b_rate / c_rate, 1),
        },
        "targets": {
            "b_over_a >= 0.40": None,
            "b_over_c >= 20": None,
            "b >= 250k events/s": None,
        },
    }
    ratios = result["ratios"]
    result["targets"] = {
        "b_over_a >= 0.40": {
            "per_batch": ratios["b_over_a_per_batch"] >= 0.40,
            "one_blob": ratios["b_over_a_one_blob"] >= 0.40,
        },
        "b_over_c >= 20": ratios["b_clean_over_c_legacy"] >= 20,
        "b >= 250k events/s": {
            "single_process": b_rate >= 250_000,
            "2_processes": b_pool_rate >= 250_000,
        },
    }
    print(json.dumps(result, indent=2))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        write_readme(result)


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def write_readme(r: dict) -> None:
    m, d, e, ra = r["machine"], r["data"], r["events_per_second"], r["ratios"]
    cpu = {name: [v * 1000 for v in pair] for name, pair in r["cpu_seconds_parent_workers"].items()}

    rows = [
        (
            "(a)",
            "`pyarrow.json.read_json`, good lines only, per landing batch",
            "a_pyarrow_json_per_batch",
        ),
        ("(a)", "same, the whole day as one blob (2 threads)", "a_pyarrow_json_one_blob"),
        (
            "(b)",
            "figstream parse+validate+upcast+normalise+dedupe, 1 process",
            "b_figstream_single_process",
        ),
        (
            "(b)",
            "same, parsing in 2 worker processes (`parse_in`, shared memory)",
            "b_figstream_2_processes",
        ),
        (
            "(b)",
            "same, 2 workers with results pickled back (the earlier mode)",
            "b_figstream_2_processes_results_pickled",
        ),
        (
            "(b)",
            "same as 1 process, on the clean day legacy runs on",
            "b_figstream_single_process_clean_day",
        ),
        (
            "(c)",
            "legacy ExtractFeeds+CleanPostings+DedupePostings, clean day",
            "c_legacy_luigi_clean_day",
        ),
    ]
    table = "\n".join(
        ["| | what | events/s |", "| --- | --- | ---: |"]
        + [f"| {tag} | {what} | {e[key] / 1000:,.0f}k |" for tag, what, key in rows]
    )
    one, shm, pickled = cpu["b_single"], cpu["b_pool"], cpu["b_pool_pickled"]

    section = f"""{START}
## Transform core (`bench/transform_bench.py`)

`.venv/bin/python bench/transform_bench.py --events {d["events_per_day"]}` — one run, one
machine, the same generated day ({d["day"]}, seed {d["seed"]}, `bad_rate=0.01`):
{d["landing_records"]:,} landing records in {d["landing_batches"]} batches (duplicates and
{d["bad_records_generated"]:,} bad records included). Best of {d["rounds"]} interleaved rounds
for (a) and (b); legacy once.
Machine: {m["nproc"]} CPUs ({m["cpu_model"]}), {m["ram_gib"]} GiB RAM, Python {m["python"]},
pyarrow {m["pyarrow"]}, numpy {m["numpy"]}, orjson {m["orjson"]}, luigi {m["luigi"]}; 1-minute
load average {m["load_average_1m_at_start"]} at the start (other work shares these 2 CPUs).

{table}

Ratios: (b)/(a) = **{ra["b_over_a_per_batch"]}** against per-batch reads (2 processes:
**{ra["b_2_processes_over_a_per_batch"]}**) and **{ra["b_over_a_one_blob"]}** against the
one-blob read (2 processes: {ra["b_2_processes_over_a_one_blob"]}); (b)/(c) =
**{ra["b_clean_over_c_legacy"]}x** on the clean day ({ra["b_over_c_legacy"]}x with the dirty
day's figure).

CPU of the best round, this process + the 2 workers: 1 process {one[0]:,.0f} ms; `parse_in`
{shm[0]:,.0f} + {shm[1]:,.0f} ms; results pickled {pickled[0]:,.0f} + {pickled[1]:,.0f} ms.
The parent's share is mostly what must wait for the last pass (dedupe by event id,
normalisation, dedupe keys, the registry), so the wall time is about workers / 2 + parent
({shm[1] / 2 + shm[0]:,.0f} ms here, {r["seconds"]["b_2_processes"] * 1000:,.0f} ms measured).

How it was measured: (a) reads only the lines `validate` accepts, because one bad line fails a
whole `pyarrow.json` read; it builds Arrow columns and checks nothing. (b) reads every landing
line, in passes of {d["batches_per_pass"]} batches, and does the full job: msgspec per line
(orjson for the lines it refuses), the vectorised checks, `validate` for the suspicious
remainder (exact reason codes), dead letters, dedupe by event id, text normalisation and
dedupe keys, and the cross-board registry. The 2-process row runs `transform.parse_in` on a
persistent pool of 2 spawned workers: each pass's batches go to a worker through a file in
`/dev/shm`, the worker writes (valid, rejected) as Arrow IPC to another, and the parent
memory-maps it (nothing pickled but file names, no copy) and does the rest. (c) runs
`luigi.build` on the feed dump of the same day generated with `bad_rate=0`, since legacy fails
the night on the first bad record; (b) on that clean day is the like-for-like figure.

Targets: (b)/(a) >= 0.40 {verdict(ra["b_over_a_per_batch"] >= 0.4)} against per-batch reads,
{verdict(ra["b_over_a_one_blob"] >= 0.4)} against the one-blob read; (b)/(c) >= 20x
{verdict(ra["b_clean_over_c_legacy"] >= 20)} (not chased: see below); (b) >= 250k events/s
{verdict(e["b_figstream_single_process"] >= 250_000)} in 1 process,
{verdict(e["b_figstream_2_processes"] >= 250_000)} with 2.

Where the time goes (1 process, CPU per line): msgspec decoding each line into a typed struct
per event type (unknown fields forbidden) ~0.55 us; moving values into Arrow columns ~0.75 us
(reading struct slots ~0.3, Arrow conversion ~0.45); the numpy checks over Arrow buffers,
times included, ~0.35 us; freeing the objects ~0.15 us; splitting lines ~0.2 us; then dedupe,
normalisation and the registry ~0.95 us an event. Lines msgspec refuses go to the orjson path,
and `validate` still decides every rejection and its reason, so the reason codes are the ones
the equivalence tests pin down. Legacy is not slow per event (stdlib json and csv,
{1e6 / e["c_legacy_luigi_clean_day"]:.0f} us an event for the three tasks), so 20x would leave
{1e6 / e["c_legacy_luigi_clean_day"] / 20:.1f} us an event for everything: about what
`pyarrow.json` alone costs to build columns, with no checks at all.

Kept from earlier rounds: the cyclic GC paused while parsing, a numpy ISO-8601 parser, hash
counting so that only repeated keys get sorted, passes of several batches. Kept from this
round (CPU-time A/B against the previous code in one process, same data): the `data` fields
go to Arrow as one struct array built from row tuples instead of transposed in Python (parse
-5 to -8%); the first-row-per-key helper numbers keys with one `dictionary_encode` and sorts
the repeated rows on that number, not the string (dedupe by event id 23 -> 19 ms on this day,
the job-id and dedupe-key passes over its postings 40 -> 21 and 53 -> 25 ms); non-ASCII and
`|`/`\\` found with numpy over the string buffer (casefold 3.5 -> 0.7 ms a column, dedupe
keys 22 -> 12 ms); in all +9 to +11% events/s of CPU (e.g. 278k -> 308k). In the 2-process
mode, shared memory both ways (the CPU line above: less in the parent and in the workers
than with pickled results).

Tried and dropped: `pyarrow.json` as the fast path (2.0-2.2 us a line on clean passes, and at
1% bad lines nearly every pass holds one that fails the whole read); building Arrow strings
from joined values (0.44 against 0.26 us a row for 10 columns); one msgspec call per pass on
the lines joined as a JSON array (`Decoder(list[...])`): 0.98 against 0.91 us a line for split
plus per-line calls on clean lines, so no gain even before the retries that the pass's ~0.7%
refused lines would need; results pickled back from the workers (the row above: the parent
reads a 60 MB pipe and unpickles). Separate A/B runs of the 2-process variants (CPU per run,
parent + workers, medians of 8 at load ~2.5): shared memory both ways 321 + 720 ms; batches
pickled to the workers 320 + 780 ms; normalising and dedupe keys in the workers too, the
parent keeping only dedupe by event id and the registry, 276 + 780 ms (the postings travel
as a third table, and the registry, which must see the whole day, stays in the parent: a
wash, dropped); normalising each pass in the parent as it arrives 399 + 690 ms. Also
dropped: the parent parsing too, with one worker (the tail still waits for the last pass),
and a pool per call (starting 2 spawned workers takes ~3 s, six times the day's parse).
Figures move by up to a third between runs on this shared VM, so compare the ratios within one
run. Raw figures: `bench/results/transform.json`.
{END}"""
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    if START in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    README.write_text(text)


if __name__ == "__main__":
    main()
