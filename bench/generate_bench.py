"""Time ``figstream.ingest.generate`` end to end (Faker pools, simulation, feed dump, landing batches).

    .venv/bin/python bench/generate_bench.py                # 10 days x 100,000 = ~1M events
    .venv/bin/python bench/generate_bench.py --events-per-day 20000 --keep bench/out/gen

Target: 1,000,000 events in under 60 s on a 2-core machine, both outputs written.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import orjson

from figstream.ingest.dataset import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--events-per-day", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", type=Path, help="write here and keep the output")
    args = parser.parse_args()

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
        "bench": "generate",
        "events": summary.events,
        "landing_records": summary.landing_records,
        "batches": summary.batches,
        "feed_files": summary.feed_files,
        "bytes_written": size,
        "seconds": round(elapsed, 2),
        "events_per_second": round(summary.events / elapsed),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "faker": summary.faker_version,
    }
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
