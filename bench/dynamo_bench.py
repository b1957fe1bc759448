"""The DynamoDB state store's write path against moto server, and its requests per 1,000 events.

    .venv/bin/python bench/dynamo_bench.py [--quick] [--items 4000] [--events 10000]
        [--rounds 3] [--no-write]

Issue 15's benchmark: items/s of the store's writes per run, and the DynamoDB requests a
realistic run makes per 1,000 events (what the cost model multiplies by the price of a
request). One moto server (real HTTP on 127.0.0.1, started and stopped here by PID) and fresh
tables per measurement.

* Write path, per round: ``put_jobs`` of ``--items`` new jobs (conditional ``PutItem`` through
  the store's 16-thread pool), the same jobs again at the version read (``version = :read``),
  ``claim_batches`` of ``--items`` ids by parallel ``PutItem``, by ``PutItem`` one at a time and
  by ``TransactWriteItems`` of 100 one at a time (moto fails concurrent transactions with 500s),
  ``register`` (conditional ``UpdateItem``), and an unconditional ``BatchWriteItem`` of 25 a
  call as the reference a batch write gives.
* Requests per 1,000 events: two ``--events``-event runs of the postings job's steps (the
  landing index, ingest of both streams, clean, dedupe, job_state, search-index changes) over
  DynamoDB state, the events from ``run_cost_bench.run_events`` (new postings, and updates and
  expiries aimed at the jobs the first run created); the second run is the one reported, per
  step and per operation, counted by the store's request counter.

moto is one Python process: its latency, not DynamoDB's, sets the items/s (see the emulator's
own figure, a ``GetItem`` round trip, in the results).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, Recording, add_record_args, free_port, load_1m, logger, record, rerender

sys.path.insert(0, str(ROOT))

NAME = "dynamo"
STEPS = ("index", "ingest", "boards", "clean", "dedupe", "job_state", "search_index")
log = logger(NAME)


def fresh_store(endpoint: str, **kwargs):
    from figstream.storage.dynamo_state import DynamoStateStore, ensure_tables
    from tests.aws_server import emulator_config

    config = emulator_config(endpoint)
    ensure_tables(config)
    return DynamoStateStore(config, **kwargs)


def rate(items: int, fn, *args) -> dict[str, float]:
    began = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - began
    return {"items": items, "seconds": round(seconds, 3), "items_per_s": round(items / seconds)}


def write_round(endpoint: str, items: int, n: int) -> dict[str, dict]:
    import pyarrow as pa

    from figstream.storage.state import REGISTRY_SCHEMA, VERSIONED_SCHEMA

    store = fresh_store(endpoint)
    now = int(time.time() * 1e6)
    ts = pa.array([now] * items, pa.int64()).cast(VERSIONED_SCHEMA.field("posted_at").type)
    ids = pa.array([f"r{n}-job-{i:07d}" for i in range(items)])
    base = {
        "job_id": ids,
        "board": pa.array(["hireloop"] * items),
        "title": pa.array([f"Engineer {i}" for i in range(items)]),
        "status": pa.array(["active"] * items),
        "posted_at": ts,
        "last_event_time": ts,
        "last_event_id": pa.array([f"e{i:032x}" for i in range(items)]),
    }

    def rows(version: int) -> pa.Table:
        cols = {**base, "version": pa.array([version] * items, pa.int64())}
        return pa.table(
            {f.name: cols.get(f.name, pa.nulls(items, f.type)) for f in VERSIONED_SCHEMA},
            schema=VERSIONED_SCHEMA,
        )

    out = {
        "put_jobs_new": rate(items, store.put_jobs, rows(0)),
        "put_jobs_update": rate(items, store.put_jobs, rows(1)),
    }
    claims = [(f"batch-{n}", [f"2026-12-02-18:00/{n}-{i:032x}" for i in range(items)])]
    out["claims_put"] = rate(items, store.claim_batches, claims)
    # moto answers concurrent TransactWriteItems with 500s: transactions go one at a time,
    # beside single puts one at a time for the like-for-like figure.
    serial = fresh_store(endpoint, threads=1)
    out["claims_put_serial"] = rate(items, serial.claim_batches, claims)
    transact = fresh_store(endpoint, claim_mode="transact", threads=1)
    out["claims_transact"] = rate(items, transact.claim_batches, claims)
    registry = pa.table(
        {
            "job_id": ids,
            "dedupe_key": pa.array([f"k{i % (items // 2)}" for i in range(items)]),
            "board": base["board"],
            "event_time": base["posted_at"],
            "event_id": base["last_event_id"],
        },
        schema=pa.schema(list(REGISTRY_SCHEMA)[:-1]),
    )
    out["register"] = rate(items, store.register, registry)
    batch = [
        {"PutRequest": {"Item": {"pk": {"S": f"#plain-{n}-{i}"}, "v": {"N": str(i)}}}}
        for i in range(items)
    ]
    out["batch_write_item"] = rate(items, store.db.batch_write, store.tables["mergers"], batch)
    return out


def emulator_round_trip(endpoint: str, calls: int = 200) -> float:
    """Median milliseconds of one GetItem on the emulator: its own latency."""
    store = fresh_store(endpoint)
    client, table = store.db.client, store.tables["claims"]
    times = []
    for i in range(calls):
        began = time.perf_counter()
        client.get_item(TableName=table, Key={"pk": {"S": f"#{i}"}})
        times.append(time.perf_counter() - began)
    return round(statistics.median(times) * 1000, 2)


def events_run(endpoint: str, events: int, seed: int) -> dict:
    """Two runs of the postings job's steps over DynamoDB state; the second one's requests."""
    from datetime import UTC, datetime, timedelta

    from run_cost_bench import run_events

    from figstream.ingest.landing import parse_batch_key
    from figstream.ingest.publish import Publisher
    from figstream.streaming import cleaning, dedupe, index_export, ingest, landing_index
    from figstream.streaming import jobs as state_step
    from figstream.streaming.stores import Stores

    with tempfile.TemporaryDirectory(prefix="figstream-dynamo-") as tmp:
        home = Path(tmp)
        first = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%d-%H:00")
        stores = Stores.local(home, first)
        stores.state = state = fresh_store(endpoint)
        publisher = Publisher(stores.objects, "bench-dynamo", 1000)
        created = 0
        report: dict = {}
        for n in range(2):
            lines = run_events(max(created, events), events, seed + n, new_from=created)
            batch = publisher.publish(lines)
            ids = [parse_batch_key(k)[1] for k in batch]
            requests: dict[str, dict[str, int]] = {}
            seconds: dict[str, float] = {}

            def step(name, fn, *args, requests=requests, seconds=seconds):
                before = state.request_counts()
                began = time.perf_counter()
                out = fn(*args)
                seconds[name] = round(time.perf_counter() - began, 3)
                after = state.request_counts()
                requests[name] = {
                    op: after[op] - before.get(op, 0)
                    for op in sorted(after)
                    if after[op] - before.get(op, 0)
                }
                return out

            def ingest_all(stream: str, by_partition: dict[str, list[str]]) -> None:
                for partition, keys in by_partition.items():
                    ingest.ingest(stores, stream, partition, keys)

            touched = step("index", landing_index.index_landing, stores, "postings", batch)
            boards = landing_index.index_landing(stores, "boards", batch)
            hours = sorted(touched)
            step("ingest", ingest_all, "postings", touched)
            step("boards", ingest_all, "boards", boards)
            step("clean", cleaning.clean, stores, hours, ids)
            step("dedupe", dedupe.dedupe, stores, hours, ids)
            applied = step("job_state", state_step.update_job_state, stores, hours, ids)
            step("search_index", index_export.export_changes, stores, hours, ids)
            created += sum(b'"job.posted"' in line for line in lines)
            by_op: dict[str, int] = {}
            for counts in requests.values():
                for op, k in counts.items():
                    by_op[op] = by_op.get(op, 0) + k
            total = sum(by_op.values())
            report = {
                "events": events,
                "jobs_in_state_before": created - sum(b'"job.posted"' in x for x in lines),
                "applied": applied.events,
                "inserted": applied.inserted,
                "updated": applied.updated,
                "requests": total,
                "requests_per_1000_events": round(total * 1000 / events, 1),
                "per_1000_by_operation": {
                    op: round(k * 1000 / events, 1) for op, k in sorted(by_op.items())
                },
                "per_1000_by_step": {
                    s: round(sum(c.values()) * 1000 / events, 1) for s, c in requests.items()
                },
                "requests_by_step": requests,
                "seconds": seconds,
            }
            log(f"run {n}: {total} requests, {report['requests_per_1000_events']} per 1k events")
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 items, 2,000 events, 2 rounds")
    parser.add_argument("--items", type=int, default=None, help="items a write measurement")
    parser.add_argument("--events", type=int, default=None, help="events a run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seed", type=int, default=11)
    add_record_args(parser)
    args = parser.parse_args()
    if args.rerender:
        rerender(NAME, rows)
        return
    items = args.items or (1000 if args.quick else 4000)
    events = args.events or (2000 if args.quick else 10_000)
    rounds = args.rounds or (2 if args.quick else 3)
    recording = Recording(NAME, args.wait_quiet)
    from tests.aws_server import moto_server, set_credentials

    set_credentials()
    peak = load_1m()
    with (
        tempfile.TemporaryDirectory(prefix="figstream-moto-") as tmp,
        moto_server(free_port(), Path(tmp) / "moto.log") as endpoint,
    ):
        round_trip = emulator_round_trip(endpoint)
        writes = []
        for n in range(rounds):
            writes.append(write_round(endpoint, items, n))
            peak = max(peak, load_1m())
            log(f"round {n}: " + ", ".join(
                    f"{k} {v['items_per_s']}/s" for k, v in writes[-1].items()
                ))  # fmt: skip
        run = events_run(endpoint, events, args.seed)
        peak = max(peak, load_1m())
    result = recording.header("quick" if args.quick else "full", load_average_1m_during_max=peak)
    result["setup"] = {"items": items, "events": events, "rounds": rounds, "seed": args.seed}
    result["emulator_get_item_ms_median"] = round_trip
    result["writes_items_per_s_median"] = {
        k: round(statistics.median(w[k]["items_per_s"] for w in writes)) for k in writes[0]
    }
    result["writes"] = writes
    result["run"] = run
    record(NAME, result, rows, args.no_write)


def rows(r: dict) -> list[tuple[str, str, str]]:
    w = r["writes_items_per_s_median"]
    items, ms = r["setup"]["items"], r["emulator_get_item_ms_median"]
    on = f"moto server (GetItem {ms} ms)"
    run = r["run"]
    ops = ", ".join(f"{k} {v}" for k, v in run["per_1000_by_operation"].items())
    steps = ", ".join(f"{k} {v}" for k, v in run["per_1000_by_step"].items() if v)
    best = max(("claims_put", "claims_put_serial", "claims_transact"), key=lambda k: w[k])
    faster = f"{on}; fastest claims: {best}"
    figures = [
        ("put_jobs_new", "put_jobs, {n} new jobs (conditional PutItem, 16 threads)", on),
        ("put_jobs_update", "put_jobs, {n} updates at the version read", on),
        ("claims_put", "claims, {n} ids by parallel PutItem", on),
        ("claims_put_serial", "claims, {n} ids by PutItem one at a time", on),
        ("claims_transact", "claims, {n} ids by TransactWriteItems of 100, one at a time", faster),
        ("register", "register, {n} first postings (conditional UpdateItem)", on),
        ("batch_write_item", "BatchWriteItem of 25, {n} unconditional items", on),
    ]
    out = [(f"{text.format(n=f'{items:,}')}, items/s", str(w[k]), t) for k, text, t in figures]
    before = run["jobs_in_state_before"]
    out.append(
        (
            f"DynamoDB requests per 1,000 events ({run['events']:,}-event run, {before:,} jobs)",
            str(run["requests_per_1000_events"]),
            f"by operation: {ops}; by step: {steps}",
        )
    )
    return out


if __name__ == "__main__":
    main()
