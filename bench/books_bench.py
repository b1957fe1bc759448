"""What the books cost: the check over a week's catch-up, one hour's check, and booking in ingest.

    .venv/bin/python bench/books_bench.py [--quick] [--days 7] [--rounds 7] [--no-write]

* A week's catch-up: ``--days`` generated days (6,500 events a day, 1% bad, the generator's
  duplicates and late events; ``--quick``: one day of 2,000) replayed into a fresh local home,
  then :func:`figstream.streaming.books.books` over every hour of both streams, as the ingest
  asset's ``books`` check does after a range run (landing index, the books, every fragment's
  Parquet footer, the dead-letter store's counts by reason); median of 5.
* One hour, as a one-hour sensor run's check: ``hour_books`` of the busiest hour, median of 50.
* Booking in the ingest step: ``--rounds`` interleaved pairs, each on a fresh home, of the ingest
  step over a 10,000-event run (ten 1,000-line batches of one hour; ``trace_bench``'s events)
  with the books written and with ``record_batches`` a no-op; medians of wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from benchlib import ROOT, Recording, add_record_args, load_1m, logger, record, rerender
from trace_bench import HOUR, envelopes, land

sys.path.insert(0, str(ROOT))

NAME = "books"
log = logger(NAME)


def week(base: Path, days: int, per_day: int) -> dict:
    from figstream.ingest.dataset import generate
    from figstream.streaming import books, replay
    from figstream.streaming.stores import Stores

    home = base / "week"
    generate(home, start=date(2026, 11, 1), days=days, events_per_day=per_day, seed=16)
    stores = Stores.local(home, "2026-11-01-00:00")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    began = time.perf_counter()
    replay.replay(stores, start, start + timedelta(days=days), None)
    replay_s = time.perf_counter() - began
    hours = books.hours_between(start, start + timedelta(days=days))
    took, found = [], []
    for _ in range(5):
        began = time.perf_counter()
        found = books.books(stores, ["postings", "boards"], hours)
        took.append(time.perf_counter() - began)
    assert found and all(h.balanced for h in found), [books.describe(h) for h in found][:3]
    busiest = max(found, key=lambda h: h.landed)
    one = []
    for _ in range(50):
        began = time.perf_counter()
        books.hour_books(stores, busiest.stream, busiest.partition)
        one.append((time.perf_counter() - began) * 1000)
    return {
        "days": days, "events_per_day": per_day, "replay_s": round(replay_s, 1),
        "hours": len(found), "landed": sum(h.landed for h in found),
        "batches": sum(h.batches for h in found),
        "books_s_median": round(statistics.median(took), 3),
        "busiest_hour": {"partition": busiest.partition, "landed": busiest.landed,
                         "batches": busiest.batches,
                         "ms_median": round(statistics.median(one), 2)},
    }  # fmt: skip


def ingest_seconds(base: Path, lines: list[bytes], booked: bool, n: int) -> tuple[float, float]:
    """Wall and CPU seconds of one ingest step over ``lines`` on a fresh home."""
    from figstream.streaming import books, ingest, landing_index
    from figstream.streaming.stores import Stores

    stores = Stores.local(base / f"{'on' if booked else 'off'}-{n}", "2026-10-01-00:00")
    keys = land(stores, lines)
    landing_index.index_landing(stores, "postings", keys)
    held = books.record_batches
    if not booked:
        books.record_batches = lambda *args, **kwargs: 0
    try:
        began, cpu = time.perf_counter(), time.process_time()
        report = ingest.ingest(stores, "postings", HOUR, keys)
        took = time.perf_counter() - began, time.process_time() - cpu
    finally:
        books.record_batches = held
    assert report.records == len(lines)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one day of 2,000, 2 rounds")
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    add_record_args(parser)
    args = parser.parse_args()
    if args.rerender:
        rerender(NAME, rows)
        return
    days = args.days or (1 if args.quick else 7)
    per_day = 2000 if args.quick else 6500
    rounds = args.rounds or (2 if args.quick else 7)
    recording = Recording(NAME, args.wait_quiet)
    peak = load_1m()
    with tempfile.TemporaryDirectory(prefix="figstream-books-") as tmp:
        weekly = week(Path(tmp), days, per_day)
        log(f"books over {weekly['hours']} hours: {weekly['books_s_median']} s")
        peak = max(peak, load_1m())
        lines = envelopes(10_000, 16, "books")
        on, off = [], []
        for n in range(rounds):
            for booked in (True, False) if n % 2 == 0 else (False, True):  # alternating
                (on if booked else off).append(ingest_seconds(Path(tmp), lines, booked, n))
            peak = max(peak, load_1m())
            log(f"round {n}: ingest with books {on[-1]} s, without {off[-1]} s (wall, CPU)")
    result = recording.header("quick" if args.quick else "full", load_average_1m_during_max=peak)
    result["setup"] = {"days": days, "events_per_day": per_day, "rounds": rounds}
    result["catch_up"] = weekly
    wall = [statistics.median(s[0] for s in side) for side in (on, off)]
    cpu = [statistics.median(s[1] for s in side) for side in (on, off)]
    result["ingest_10k"] = {
        "with_books_s": [[round(w, 3), round(c, 3)] for w, c in on],
        "without_books_s": [[round(w, 3), round(c, 3)] for w, c in off],
        "with_books_median_s": round(wall[0], 3),
        "without_books_median_s": round(wall[1], 3),
        "with_books_median_cpu_s": round(cpu[0], 3),
        "without_books_median_cpu_s": round(cpu[1], 3),
    }
    record(NAME, result, rows, args.no_write)


def rows(r: dict) -> list[tuple[str, str, str]]:
    week_, ingest = r["catch_up"], r["ingest_10k"]
    busiest = week_["busiest_hour"]
    return [
        (
            f"books check over a catch-up of {week_['days']} days ({week_['hours']} stream-hours, "
            f"{week_['landed']:,} events), local, s (median of 5)",
            f"{week_['books_s_median']}",
            "-",
        ),
        (
            f"books of one hour ({busiest['landed']:,} events, {busiest['batches']} batches), "
            "local, ms (median of 50)",
            f"{busiest['ms_median']}",
            "-",
        ),
        (
            f"ingest step, 10k-event run, with / without booking, wall s / CPU s (median of "
            f"{r['setup']['rounds']}, load {r['machine']['load_average_1m_during_max']} at most)",
            f"{ingest['with_books_median_s']} / {ingest['without_books_median_s']}; "
            f"{ingest['with_books_median_cpu_s']} / {ingest['without_books_median_cpu_s']}",
            "-",
        ),
    ]


if __name__ == "__main__":
    main()
