"""``figstream trace``'s lookup on a home holding 10M events, and what recording costs ingest.

    .venv/bin/python bench/trace_bench.py [--quick] [--events 10000000] [--lookups 2000]
        [--rounds 7] [--no-write]

Issue 18's target: the lookup is indexed, not a scan: at most 100 ms p95 with 10M events.

* The home: a local state store whose trace index is seeded directly (SQL, no Python rows) with
  ``--events`` deliveries (2% duplicates, 1% dead-lettered, over 28 days of hours and 10,000
  batches), in key order; then one real run of the postings steps (landing index, ingest,
  clean, dedupe, job_state, search-index changes) over 2,000 fresh events (1% bad, 2% delivered
  twice) lands in the same home, so the traced events have fragments, dead letters, job rows
  and index changes to find.
* Index lookup: ``TraceIndex.deliveries`` of ``--lookups`` seeded ids drawn at random, on one
  open index (the store's connection and page cache kept, as in a long-lived process).
* Full trace, as the CLI: for 200 of the run's events (postings, duplicates and dead letters),
  open the profile's stores and run ``trace_event`` (every keyed read: index, fragments of each
  asset, dead letter, job row, search-index change); the CLI's Python start-up is not counted.
* Ingest cost of recording: ``--rounds`` interleaved pairs, each on a fresh home, of the ingest
  step over a 10,000-event run (ten 1,000-line batches of one hour) with the trace index written
  and with it switched off (``record_group`` a no-op); medians of wall and CPU seconds (the
  CPU figure holds up better on a shared machine; the wall one includes the extra commit).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, Recording, add_record_args, load_1m, logger, record, rerender, verdict

sys.path.insert(0, str(ROOT))

NAME = "trace"
HOUR = "2026-11-02-10:00"
log = logger(NAME)


def seed_index(path: Path, events: int) -> dict[str, float]:
    """``events`` deliveries in the trace table of the state store at ``path``, by SQL alone."""
    import sqlite3

    from figstream.storage.state import SqliteStateStore
    from figstream.storage.trace import TRACE_TTL_S, SqliteTraceIndex

    SqliteStateStore(path)
    SqliteTraceIndex(path)  # the schemas
    began = time.perf_counter()
    now = int(time.time() * 1e6)
    expires = now + TRACE_TTL_S * 1_000_000
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.execute(
        f"""
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {events})
        INSERT INTO event_trace
        SELECT printf('seed-%010d', i), printf('20261101T000000000000Z-seed-%06d', i / 1000),
               i % 1000 + 1,
               printf('2026-11-%02d-%02d:00', 1 + (i / 360000) % 28, (i / 15000) % 24),
               CASE WHEN i % 100 = 0 THEN 'dead_lettered' WHEN i % 50 = 1 THEN 'duplicate'
                    ELSE 'materialised' END,
               CASE WHEN i % 50 = 1 THEN printf('20261101T000000000000Z-seed-%06d', i / 1000)
               END,
               CASE WHEN i % 100 = 0 THEN 'wrong_type' END, {expires}
        FROM n
        """
    )
    conn.execute(
        f"""
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {events})
        INSERT OR IGNORE INTO trace_batches
        SELECT printf('20261101T000000000000Z-seed-%06d', i / 1000),
               printf('2026-11-%02d-%02d:00', 1 + (i / 360000) % 28, (i / 15000) % 24),
               printf('landing/2026-11-01/20261101T000000000000Z-seed-%06d.jsonl', i / 1000),
               'postings', printf('run-%08d', i / 10000), {now}, {expires}
        FROM n WHERE i % 1000 = 0
        """
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"seed_s": round(time.perf_counter() - began, 1), "db_mb": path.stat().st_size >> 20}


def envelopes(count: int, seed: int, prefix: str) -> list[bytes]:
    """``count`` lines of job.posted events of :data:`HOUR`: 1% bad (a non-boolean ``remote``),
    2% a second delivery of an earlier event."""
    import orjson

    rng = random.Random(seed)
    lines: list[bytes] = []
    while len(lines) < count:
        n = len(lines)
        if n > 10 and rng.random() < 0.02:
            lines.append(lines[rng.randrange(n)])
            continue
        record = {
            "id": f"{prefix}-{n:07d}", "type": "job.posted", "source": "alpha", "version": 1,
            "time": f"2026-11-02T10:{n % 60:02d}:{n * 7 % 60:02d}Z",
            "data": {
                "job_id": f"{prefix}-job-{n:07d}", "board": "alpha", "title": f"Engineer {n}",
                "company": f"Company {n % 97}", "location": "Berlin",
                "employment_type": "full_time", "remote": "x" if rng.random() < 0.01 else False,
                "salary_min": 50000, "salary_max": 60000, "currency": "EUR",
                "url": f"https://alpha.example/{prefix}/{n}",
            },
        }  # fmt: skip
        lines.append(orjson.dumps(record))
    return lines


def land(stores, lines: list[bytes], per_batch: int = 1000) -> list[str]:
    from datetime import UTC, datetime, timedelta

    from figstream.ingest.landing import batch_key

    arrival = datetime.now(UTC)
    keys = []
    for seq, start in enumerate(range(0, len(lines), per_batch)):
        key = batch_key(arrival + timedelta(milliseconds=seq), "bench", seq)
        stores.objects.put(key, b"\n".join(lines[start : start + per_batch]))
        keys.append(key)
    return keys


def stream_run(stores, keys: list[str]) -> None:
    from figstream.streaming import cleaning, dedupe, index_export, ingest, jobs, landing_index

    landing_index.index_landing(stores, "postings", keys)
    ingest.ingest_range(stores, "postings", [HOUR], keys, run_id="bench-run")
    ids = [k.rsplit("/", 1)[1].removesuffix(".jsonl") for k in keys]
    for step in (cleaning.clean, dedupe.dedupe, jobs.update_job_state):
        step(stores, [HOUR], ids)
    index_export.export_changes(stores, [HOUR], ids)


def lookups(home: Path, events: int, count: int, seed: int) -> dict:
    from figstream.streaming.stores import Stores
    from figstream.streaming.trace import index_for
    from figstream.streaming.trace_lookup import Sources, trace_event

    stores = Stores.local(home, "2026-10-01-00:00")
    index = index_for(stores.state)
    rng = random.Random(seed)
    index_ms = []
    for _ in range(count):
        event_id = f"seed-{rng.randrange(events):010d}"
        began = time.perf_counter()
        found = index.deliveries(event_id)
        index_ms.append((time.perf_counter() - began) * 1000)
        assert found.num_rows == 1, event_id
    run_lines = envelopes(2000, seed, "run")
    stream_run(stores, land(stores, run_lines))
    import orjson

    ids = sorted({orjson.loads(line)["id"] for line in run_lines})
    traced_ms, outcomes = [], {}
    for event_id in rng.sample(ids, 200):
        began = time.perf_counter()
        found = trace_event(Sources.for_profile(home), event_id)
        traced_ms.append((time.perf_counter() - began) * 1000)
        for d in found["deliveries"]:
            outcomes[d["outcome"]] = outcomes.get(d["outcome"], 0) + 1
    return {"index_ms": summary_ms(index_ms), "trace_ms": summary_ms(traced_ms),
            "traced_outcomes": outcomes}  # fmt: skip


def summary_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered), 3),
        "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        "max": round(ordered[-1], 3),
    }


def ingest_seconds(base: Path, lines: list[bytes], traced: bool, n: int) -> tuple[float, float]:
    """Wall and CPU seconds of one ingest step over ``lines`` on a fresh home."""
    from figstream.streaming import ingest, landing_index, trace
    from figstream.streaming.stores import Stores

    stores = Stores.local(base / f"{'on' if traced else 'off'}-{n}", "2026-10-01-00:00")
    keys = land(stores, lines)
    landing_index.index_landing(stores, "postings", keys)
    held = trace.record_group
    if not traced:
        trace.record_group = lambda *args, **kwargs: 0
    try:
        began, cpu = time.perf_counter(), time.process_time()
        report = ingest.ingest(stores, "postings", HOUR, keys)
        took = time.perf_counter() - began, time.process_time() - cpu
    finally:
        trace.record_group = held
    assert report.records == len(lines)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200k events, 500 lookups, 2 rounds")
    parser.add_argument("--events", type=int, default=None, help="deliveries in the index")
    parser.add_argument("--lookups", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seed", type=int, default=18)
    add_record_args(parser)
    args = parser.parse_args()
    if args.rerender:
        rerender(NAME, rows)
        return
    events = args.events or (200_000 if args.quick else 10_000_000)
    count = args.lookups or (500 if args.quick else 2000)
    rounds = args.rounds or (2 if args.quick else 7)
    recording = Recording(NAME, args.wait_quiet)
    peak = load_1m()
    with tempfile.TemporaryDirectory(prefix="figstream-trace-") as tmp:
        from figstream.storage.state import state_path

        home = Path(tmp) / "home"
        seeded = seed_index(state_path(home), events)
        log(f"seeded {events:,} deliveries in {seeded['seed_s']} s ({seeded['db_mb']} MB)")
        peak = max(peak, load_1m())
        looked = lookups(home, events, count, args.seed)
        log(f"index {looked['index_ms']}, trace {looked['trace_ms']}")
        peak = max(peak, load_1m())
        lines = envelopes(10_000, args.seed, "ingest")
        on, off = [], []
        for n in range(rounds):
            for traced in (True, False) if n % 2 == 0 else (False, True):  # alternating
                (on if traced else off).append(ingest_seconds(Path(tmp), lines, traced, n))
            peak = max(peak, load_1m())
            log(f"round {n}: ingest with the index {on[-1]} s, without {off[-1]} s (wall, CPU)")
    result = recording.header("quick" if args.quick else "full", load_average_1m_during_max=peak)
    result["setup"] = {"events": events, "lookups": count, "rounds": rounds, "seed": args.seed}
    result["seed"] = seeded
    result.update(looked)
    wall = [statistics.median(s[0] for s in side) for side in (on, off)]
    cpu = [statistics.median(s[1] for s in side) for side in (on, off)]
    result["ingest_10k"] = {
        "with_index_s": [[round(w, 3), round(c, 3)] for w, c in on],
        "without_index_s": [[round(w, 3), round(c, 3)] for w, c in off],
        "with_index_median_s": round(wall[0], 3),
        "without_index_median_s": round(wall[1], 3),
        "ratio": round(wall[0] / wall[1], 3),
        "with_index_median_cpu_s": round(cpu[0], 3),
        "without_index_median_cpu_s": round(cpu[1], 3),
        "cpu_ratio": round(cpu[0] / cpu[1], 3),
    }
    record(NAME, result, rows, args.no_write)


def rows(r: dict) -> list[tuple[str, str, str]]:
    n = f"{r['setup']['events']:,}"
    ingest = r["ingest_10k"]
    return [
        (
            f"trace index lookup p50 / p95, ms ({n} events, {r['index_ms']['n']} ids)",
            f"{r['index_ms']['p50']} / {r['index_ms']['p95']}",
            verdict("p95 <= 100 ms", r["index_ms"]["p95"] <= 100),
        ),
        (
            f"full trace (stores opened, every keyed read) p50 / p95, ms ({n} events, 200 ids)",
            f"{r['trace_ms']['p50']} / {r['trace_ms']['p95']}",
            verdict("p95 <= 100 ms", r["trace_ms"]["p95"] <= 100),
        ),
        (
            f"ingest step, 10k-event run, with / without the trace index, wall s (median of "
            f"{r['setup']['rounds']}, load {r['machine']['load_average_1m_during_max']} at most)",
            f"{ingest['with_index_median_s']} / {ingest['without_index_median_s']}"
            f" ({ingest['ratio']}x)",
            "-",
        ),
        (
            "ingest step, 10k-event run, with / without the trace index, CPU s (median)",
            f"{ingest['with_index_median_cpu_s']} / {ingest['without_index_median_cpu_s']}"
            f" ({ingest['cpu_ratio']}x)",
            "-",
        ),
    ]


if __name__ == "__main__":
    main()
