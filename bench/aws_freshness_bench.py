"""Freshness on the aws profile next to the local profile, in one run: publish -> job_state.

    .venv/bin/python bench/aws_freshness_bench.py [--probes N] [--wait-quiet S] [--no-write]

Two ``dagster dev`` (the repo's ``workspace.yaml``), one after the other on fresh homes:

* ``local``: SQLite instance (``platform/local/dagster.yaml``), the landing zone a directory,
  SQLite state; a probe is one ``job.posted`` landed by ``Publisher``;
* ``aws``: Postgres instance (``platform/aws/dagster.yaml``, a fresh database on the machine's
  server) and moto server over HTTP (started and stopped here) as S3, EventBridge, SQS and
  DynamoDB, infrastructure from ``figstream aws setup``; a probe is one ``job.posted`` put on
  the bus (``EventBridgePublisher``), which the stream sensor drains from SQS. The ingest
  step validates in process (``FIGSTREAM_LAMBDA_INVOKER=in_process``), as the tests do.

A probe is timed from publish until the state store returns the job (polled every 0.1 s), one
at a time, with a random 1-3 s pause between probes and no background stream. The emulator's
own latency is the median of 100 ``GetItem`` and 100 ``SendMessage`` calls on it, timed alone.
Results: ``bench/results/aws_freshness.json`` and the table between the
``aws_freshness-bench`` markers of ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
from benchlib import (
    ROOT,
    Recording,
    add_record_args,
    dagster_dev,
    fmt,
    free_port,
    load_1m,
    logger,
    record,
    rerender,
    summary,
    temp_homes,
)

from figstream.events.envelope import format_time

BENCH = "aws_freshness"
POLL_S = 0.1
log = logger(BENCH)


def probe_event() -> tuple[str, dict]:
    job_id = f"fresh-{uuid.uuid4().hex[:12]}"
    event = {
        "id": str(uuid.uuid4()),
        "type": "job.posted",
        "source": "workwave",
        "version": 1,
        "time": format_time(datetime.now(UTC).replace(microsecond=0)),
        "data": {
            "job_id": job_id,
            "title": "Freshness Probe",
            "company": f"Probe {job_id}",
            "location": "Lisbon, PT",
            "employment_type": "full_time",
            "remote": True,
            "salary_min": 1,
            "salary_max": 2,
            "currency": "EUR",
            "url": f"https://workwave.example/jobs/{job_id}",
        },
    }
    return job_id, event


def run_probes(publish, state, probes: int, timeout: float, rng: random.Random) -> list:
    """Seconds from publish until ``state`` returns each probe's job (None: timed out)."""
    out: list[float | None] = []
    for i in range(probes + 1):  # the first is a warm-up: cold caches, the first sensor tick
        time.sleep(rng.uniform(1.0, 3.0))
        job_id, event = probe_event()
        began = time.monotonic()
        publish([orjson.dumps(event)])
        seconds = None
        while time.monotonic() - began < timeout:
            if state.get_jobs([job_id]).num_rows:
                seconds = round(time.monotonic() - began, 3)
                break
            time.sleep(POLL_S)
        log(f"probe {i}: {seconds}")
        if i:
            out.append(seconds)
    return out


def local_profile(base: Path, probes: int, timeout: float, rng: random.Random) -> list:
    from figstream.ingest.publish import Publisher
    from figstream.storage.objects import LocalObjectStore
    from figstream.storage.state import SqliteStateStore, state_path

    env = temp_homes(base / "local")
    home = Path(env["FIGSTREAM_HOME"])
    publisher = Publisher(LocalObjectStore(home), producer="bench")
    with dagster_dev(ROOT / "workspace.yaml", env, base / "local-dev.log"):
        return run_probes(
            publisher.publish, SqliteStateStore(state_path(home)), probes, timeout, rng
        )


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg2

    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    name = f"figstream_bench_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def emulator_latency(config, calls: int = 100) -> dict[str, float]:
    """Median milliseconds of one GetItem and one SendMessage on the emulator, alone."""
    from figstream.ingest.sqs_intake import queue_url

    db, sqs = config.client("dynamodb"), config.client("sqs")
    table = config.table_name("claims")
    url = queue_url(config, "postings", dlq=True)  # the DLQ: no sensor drains it

    def median_ms(call) -> float:
        times = []
        for _ in range(calls):
            began = time.perf_counter()
            call()
            times.append((time.perf_counter() - began) * 1000)
        return round(statistics.median(times), 2)

    out = {
        "get_item_ms": median_ms(lambda: db.get_item(TableName=table, Key={"pk": {"S": "x"}})),
        "send_message_ms": median_ms(lambda: sqs.send_message(QueueUrl=url, MessageBody="x")),
    }
    sqs.purge_queue(QueueUrl=url)
    return out


def aws_profile(base: Path, probes: int, timeout: float, rng: random.Random) -> tuple:
    from figstream.cli.aws import setup
    from figstream.ingest.eventbridge import EventBridgePublisher
    from figstream.ingest.routing import Router
    from figstream.settings import routing_path
    from figstream.storage.dynamo_state import DynamoStateStore
    from tests.aws_server import aws_environ, emulator_config, moto_server, set_credentials

    set_credentials()
    (base / "aws").mkdir()
    with moto_server(free_port(), base / "moto.log") as endpoint, postgres_database() as db:
        config = emulator_config(endpoint)
        setup(config, Router.from_file(routing_path()))
        env = temp_homes(base / "aws")
        dagster_home = Path(env["DAGSTER_HOME"])
        shutil.copy(ROOT / "platform" / "aws" / "dagster.yaml", dagster_home / "dagster.yaml")
        env.update(aws_environ(config, invoker="in_process"))
        env.update(
            DAGSTER_PG_HOST="127.0.0.1",
            DAGSTER_PG_PORT="5432",
            DAGSTER_PG_USER="postgres",
            DAGSTER_PG_PASSWORD="",
            DAGSTER_PG_DB=db,
        )
        latency = emulator_latency(config)
        log(f"emulator alone: {latency}")
        publisher = EventBridgePublisher(config, producer="bench")
        with dagster_dev(ROOT / "workspace.yaml", env, base / "aws-dev.log"):
            seconds = run_probes(publisher.publish, DynamoStateStore(config), probes, timeout, rng)
        return seconds, latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=15, help="probes per profile (15)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per probe")
    parser.add_argument("--seed", type=int, default=7)
    add_record_args(parser)
    args = parser.parse_args()
    if args.rerender:
        rerender(BENCH, rows)
        return
    rng = random.Random(args.seed)
    recording = Recording(BENCH, args.wait_quiet)
    base = Path(tempfile.mkdtemp(prefix="figstream-aws-freshness-"))
    saved = dict(os.environ)
    loads: list[float] = []
    try:
        local = local_profile(base, args.probes, args.timeout, rng)
        loads.append(load_1m())
        aws, latency = aws_profile(base, args.probes, args.timeout, rng)
        loads.append(load_1m())
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(base, ignore_errors=True)
    result = {
        **recording.header("full", load_average_1m_after_each=loads),
        "setup": {"probes_each": args.probes, "poll_seconds": POLL_S, "background_rate": 0},
        "seconds": {
            "local_publish_to_job_state": summary([s for s in local if s is not None]),
            "aws_publish_to_job_state": summary([s for s in aws if s is not None]),
        },
        "timeouts": {"local": local.count(None), "aws": aws.count(None)},
        "emulator_ms": latency,
        "probes": {"local": local, "aws": aws},
    }
    log(f"{result['seconds']}; emulator {latency}; timeouts {result['timeouts']}")
    record(BENCH, result, rows, args.no_write)


def rows(r: dict) -> list[tuple[str, str, str]]:
    s, n = r["seconds"], r["setup"]["probes_each"]
    local, aws = s["local_publish_to_job_state"], s["aws_publish_to_job_state"]
    load = ", ".join(f"{x:.1f}" for x in r["machine"].get("load_average_1m_after_each", []))
    return [
        (f"local: publish -> job_state p50 / p95, s, {n} probes",
         f"{fmt(local['p50'], 2)} / {fmt(local['p95'], 2)}", f"timeouts {r['timeouts']['local']}"),
        (f"aws (moto + Postgres): publish -> job_state p50 / p95, s, {n} probes",
         f"{fmt(aws['p50'], 2)} / {fmt(aws['p95'], 2)}", f"timeouts {r['timeouts']['aws']}"),
        ("moto alone: GetItem / SendMessage p50, ms",
         f"{r['emulator_ms']['get_item_ms']} / {r['emulator_ms']['send_message_ms']}",
         f"load 1m after each profile: {load}"),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
