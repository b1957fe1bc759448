"""Time ``figstream.ingest.dataset.generate`` end to end (Faker pools, simulation, feed dump,
landing batches).

    .venv/bin/python bench/generate_bench.py                # 10 days x 100,000 = ~1M events
    .venv/bin/python bench/generate_bench.py --events-per-day 20000 --keep bench/out/gen

Target: 1,000,000 events in under 60 s on a 2-core machine, both outputs written.
Results: ``bench/results/generate.json`` and the generate table of ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

from benchlib import Recording, add_record_args, record, rerender, verdict

from figstream.ingest.dataset import generate

BENCH = "generate"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--events-per-day", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", type=Path, help="write here and keep the output")
    add_record_args(parser)
    args = parser.parse_args()
    if args.rerender:
        rerender(BENCH, rows)
        return

    recording = Recording(BENCH, args.wait_quiet)
    out = args.keep or Path(tempfile.mkdtemp(prefix="figstream-bench-"))
    try:
        began = time.perf_counter()
        summary = generate(
            out,
            start=date(2025, 1, 1),
            days=args.days,
            events_per_day=args.events_per_day,
            seed=args.seed,
            progress=False,
            overwrite=True,
        )
        elapsed = time.perf_counter() - began
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)
    result = {
        **recording.header("full" if summary.events >= 1_000_000 else "quick"),
        "events": summary.events,
        "landing_records": summary.landing_records,
        "batches": summary.batches,
        "feed_files": summary.feed_files,
        "bytes_written": size,
        "seconds": round(elapsed, 2),
        "events_per_second": round(summary.events / elapsed),
        "faker": summary.faker_version,
    }
    record(BENCH, result, rows, args.no_write)


def rows(r: dict) -> list[tuple[str, str, str]]:
    events = r["events"]
    target = verdict("< 60 s", r["seconds"] < 60) if events >= 1_000_000 else "-"
    return [
        (f"{events:,} events generated, s", f"{r['seconds']:.1f}", target),
        (f"{events:,} events generated, events/s", f"{r['events_per_second']:,}", "-"),
    ]


if __name__ == "__main__":
    main()
