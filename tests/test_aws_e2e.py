"""The aws profile end to end: a real ``dagster dev`` (webserver, daemon, code server) whose
instance is the machine's Postgres (``platform/aws/dagster.yaml``) and whose AWS is moto
server over HTTP. Events go in through EventBridge (``PutEvents``); the rules deliver them to
each stream's SQS queue; the stream sensors drain the queues into landing batches in S3 and
request runs; the runs validate through the validate-batch Lambda (a subprocess behind
``PipesLambdaClient``), claim event ids and write the state in DynamoDB, and dead-letter the
bad records there. The books must balance by event id.

Then the crash of ``tests/test_streaming_e2e.py`` on this profile: ``kill -9`` of a run worker
in the middle of its run and of the daemon while events keep coming through EventBridge, a
fresh ``dagster dev`` on the same Postgres instance and AWS resources, and the books exact
again (every event once, every bad record dead-lettered once, job state and search index equal
to a recompute, every hour balanced, the queues and their DLQs empty).

Bad inputs sent: every kind of ``daemon_harness.bad_records`` (truncated JSON, bad encoding,
not an object, a missing field, wrong types, an unknown type and version, an invalid merger,
times outside the partitions), and a redelivered good event.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
import time
import uuid
from collections import Counter

import orjson
import pyarrow as pa
import pytest
from conftest import ROOT, stop_group
from daemon_harness import (
    EPOCH,
    STREAMS,
    DagsterDev,
    bad_records,
    describe_runs,
    drift_of,
    hunt_and_kill_a_run,
    merger,
    posting,
    unfollowed,
    unwedge,
)

from figstream.cli.aws import queue_status, setup
from figstream.events.envelope import parse_time
from figstream.ingest.eventbridge import EventBridgePublisher
from figstream.ingest.landing import LANDING_PREFIX, parse_batch_key
from figstream.ingest.routing import Router
from figstream.ingest.sqs_intake import queue_url
from figstream.settings import routing_path
from figstream.storage.deadletter import DeadLetterStore
from figstream.storage.objects import ObjectStore, read_parquet
from figstream.streaming import books, fragments, index_export, jobs, stores
from figstream.streaming import tables as streaming_tables
from tests.aws_server import aws_environ

pytestmark = pytest.mark.slow


def _pg_database() -> tuple[str, object]:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    name = f"figstream_e2e_{uuid.uuid4().hex[:10]}"
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    return name, conn


def _dev_env(aws_config, tmp_path, database: str, invoker: str) -> dict[str, str]:
    """``dagster dev``'s environment: the emulator, a Dagster home on the Postgres database."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "platform" / "aws" / "dagster.yaml", dagster_home / "dagster.yaml")
    return {
        **os.environ,
        **aws_environ(aws_config, invoker=invoker),
        "FIGSTREAM_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": database,
    }


def _drop(admin, database: str) -> None:
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    admin.close()


def _ids(objects: ObjectStore, table: str) -> list[str]:
    keys = [k for k in objects.list(f"tables/{table}/") if k.endswith(".parquet")]
    parts = [read_parquet(objects, k, columns=["event_id"]) for k in keys]
    return pa.concat_tables(parts)["event_id"].to_pylist() if parts else []


def test_sensor_driven_runs_on_postgres_against_the_emulator(
    aws_config, spawn, tmp_path, monkeypatch
):
    from resources.profiles import resources_for  # after aws_config set the environment

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if now - dt.timedelta(hours=2) < EPOCH:
        pytest.fail("the machine's clock is before the ledger's epoch")
    setup(aws_config, Router.from_file(routing_path()))
    database, admin = _pg_database()
    env = _dev_env(aws_config, tmp_path, database, invoker="subprocess")
    dev = None
    try:
        dev = DagsterDev(spawn, env, tmp_path / "dagster-dev.log")
        dev.wait_up()
        at = now - dt.timedelta(minutes=30)
        good = [
            posting(f"aws-e2e-{i}", "workwave", at + dt.timedelta(seconds=i), "Data Engineer")
            for i in range(12)
        ]
        bad = bad_records(at)
        publisher = EventBridgePublisher(aws_config, producer="e2e")
        publisher.publish([*good, *(line for line, _, _ in bad)])
        publisher.publish([good[0]])  # a redelivery: counted once

        streaming = resources_for("aws", _ledger())["streaming"].stores()
        letters: DeadLetterStore = streaming.dead_letters
        expected_dead = len(bad)
        deadline = time.monotonic() + 420
        while True:
            raw = _ids(streaming.objects, "raw_events")
            dead = letters.count()
            jobs = streaming.state.get_jobs([e["data"]["job_id"] for e in good]).num_rows
            balanced = sorted(raw) == sorted(e["id"] for e in good) and dead == expected_dead
            if balanced and jobs == len(good):  # job_state, a later step, has run too
                break
            assert time.monotonic() < deadline, (
                f"books did not balance: {len(raw)} materialised of {len(good)}, "
                f"{dead} dead letters of {expected_dead}, {jobs} jobs in the state\n{dev.tail()}"
            )
            time.sleep(3)
        codes = sorted(d.code for d in letters.list(limit=100))
        assert codes == sorted(code for _, code, _ in bad)
        # Every event once, the state in DynamoDB (above), the runs in Postgres. The run
        # that wrote the state may still be finishing its later steps: wait for it to end.
        while True:
            runs = dev.runs()
            assert all(r["status"] in ("SUCCESS", "STARTED", "QUEUED") for r in runs), runs
            if any(r["status"] == "SUCCESS" for r in runs):
                break
            assert time.monotonic() < deadline, f"no run succeeded: {runs}\n{dev.tail()}"
            time.sleep(2)
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=database)
        try:
            with conn.cursor() as cur:  # the runs the UI showed are the instance's rows
                cur.execute("SELECT run_id FROM runs")
                assert {r["runId"] for r in runs} <= {row[0] for row in cur.fetchall()}
        finally:
            conn.close()
    finally:
        if dev is not None:
            stop_group(dev.proc)  # before its database goes
        _drop(admin, database)


def _ledger():
    from figstream.migration.ledger import load_ledger
    from figstream.settings import ledger_path

    return load_ledger(ledger_path())


# A crash leaves the messages a killed sensor tick had received hidden for the queue's
# visibility timeout (120 s as deployed): shortened here so the test waits seconds for them.
CRASH_VISIBILITY = "15"


class LandedLedger:
    """What landed in S3, for ``hunt_and_kill_a_run``: on this profile the drain names the
    batches, so which events a run alone carries is read back from the landing zone."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    def only_in(self, partition: str, batch_ids: set[str]) -> list[str]:
        delivered: dict[str, set[str]] = {}
        hours: dict[str, str] = {}
        for key in self.objects.list(LANDING_PREFIX):
            batch_id = parse_batch_key(key)[1]
            for line in self.objects.get(key).splitlines():
                try:
                    event = orjson.loads(line)
                    hour = stores.hour_key(parse_time(event["time"]))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a bad record: nothing to lose by killing its run
                delivered.setdefault(event["id"], set()).add(batch_id)
                hours[event["id"]] = hour
        return [e for e, hour in hours.items() if hour == partition and delivered[e] <= batch_ids]


def _materialised(objects: ObjectStore) -> pa.Table:
    parts = []
    for table in stores.INGEST_TABLES.values():
        keys = objects.list(f"tables/{table}/")
        partitions = sorted({k.split("/")[2] for k in keys})
        parts.append(
            fragments.read_fragments(
                objects, table, partitions, None, streaming_tables.EVENTS_SCHEMA
            )
        )
    return pa.concat_tables(parts)


def _drift(streaming) -> tuple[set[str], set[str]]:
    """``daemon_harness.drift`` on the aws stores."""
    current = index_export.current_index(streaming.objects)["job_id"].to_pylist()
    return drift_of(
        _materialised(streaming.objects), jobs.read_state(streaming.state), set(current)
    )


def _streaming_runs(runs: list[dict]) -> list[dict]:
    # Not the daily rollups: one recomputes a month of days, minutes on a loaded machine.
    return [r for r in runs if r["jobName"] in STREAMS]


def _settle(dev: DagsterDev, config, streaming, good: set[str], dead: int, timeout: float) -> dict:
    """Wait until every good event is materialised, ``dead`` dead letters are stored, no
    stream run is in flight and both queues are empty, twice in a row; return what was seen last."""
    deadline = time.monotonic() + timeout
    calm = 0
    while True:
        ids = Counter(_materialised(streaming.objects)["event_id"].to_pylist())
        queues = [queue_status(config, s) for s in ("postings", "boards")]
        seen = {
            "ids": ids,
            "dead": streaming.dead_letters.count(),
            "queues": queues,
            "in_flight": describe_runs(_streaming_runs(dev.in_flight())),
        }
        done = set(ids) >= good and seen["dead"] >= dead and not seen["in_flight"]
        done = done and all(q["waiting"] == q["in_flight"] == 0 for q in queues)
        calm = calm + 1 if done else 0
        if calm == 2 or time.monotonic() > deadline:
            return seen
        time.sleep(2)


@pytest.mark.timeout(1200)
def test_kill_9_of_a_run_and_the_daemon_loses_nothing_on_the_aws_profile(
    aws_config, spawn, tmp_path
):
    """tests/test_streaming_e2e.py's crash on the aws profile: ``kill -9`` of a run worker in
    the middle of its run, then of the daemon, while events keep coming through EventBridge;
    a fresh ``dagster dev`` on the same Postgres instance and the same AWS resources must
    re-run the killed run with no operator, take every message the crash left in the queues,
    and the books must balance exactly (every event once, every bad record dead-lettered once
    with its reason, job state and search index equal to a recompute, every hour balanced)."""
    from resources.profiles import resources_for  # after aws_config set the environment

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if now - dt.timedelta(hours=2) < EPOCH:
        pytest.fail("the machine's clock is before the ledger's epoch")
    setup(aws_config, Router.from_file(routing_path()))
    sqs = aws_config.client("sqs")
    for stream in ("postings", "boards"):
        sqs.set_queue_attributes(
            QueueUrl=queue_url(aws_config, stream),
            Attributes={"VisibilityTimeout": CRASH_VISIBILITY},
        )
    streaming = resources_for("aws", _ledger())["streaming"].stores()
    database, admin = _pg_database()
    env = _dev_env(aws_config, tmp_path, database, invoker="in_process")
    publisher = EventBridgePublisher(aws_config, producer="e2e")

    def ago(minutes: float) -> dt.datetime:
        return now - dt.timedelta(minutes=minutes)

    good: list[dict] = []
    bad: list[tuple[bytes, str, str]] = []

    def publish(records: list, bad_ones=()) -> None:
        publisher.publish([*records, *(line for line, _, _ in bad_ones)])
        good.extend(r for r in records if r["id"] not in {g["id"] for g in good})
        bad.extend(bad_ones)

    devs: list[DagsterDev] = []
    started = time.monotonic()
    try:
        dev = DagsterDev(spawn, env, tmp_path / "dagster-dev-1.log")
        devs.append(dev)
        dev.wait_up()
        print(f"up at {time.monotonic() - started:.0f} s")
        wave1 = [
            posting(f"aws-crash-{i}", "workwave", ago(90 - i), f"Data Engineer {i}")
            for i in range(30)
        ]
        publish([*wave1, merger(ago(40))], bad_records(ago(5))[:6])
        publish([wave1[3], wave1[7]])  # redeliveries: counted once
        seen = _settle(dev, aws_config, streaming, {g["id"] for g in good}, len(bad), timeout=300)
        print(f"wave 1 settled at {time.monotonic() - started:.0f} s")
        assert set(seen["ids"]) == {g["id"] for g in good}, seen
        assert seen["dead"] == len(bad), seen

        # Wave 2 while the platform crashes: new jobs hours back, out of order, redeliveries.
        before = {r["runId"] for r in dev.runs()}
        wave2 = [
            [posting(f"aws-crash-w2-{k}", "workwave", ago(5 + 9 * k), f"Engineer {k}")]
            for k in range(8)
        ]
        wave2[1].append(wave1[0])
        daemon_killed, published = threading.Event(), threading.Event()
        errors: list[BaseException] = []
        baits = iter(range(1000))

        def bait() -> None:
            publish([posting(f"aws-crash-bait-{next(baits)}", "workwave", ago(1), "Bait")])

        def publish_wave2() -> None:
            try:
                for k, records in enumerate(wave2):
                    if k == 4:  # the rest lands as the daemon dies and while it is down
                        daemon_killed.wait(timeout=180)
                    publish(records, bad_records(ago(2))[7:8] if k == 5 else ())
                    time.sleep(1.0)
            except BaseException as exc:  # the main thread asserts on it
                errors.append(exc)
            finally:
                published.set()

        thread = threading.Thread(target=publish_wave2, daemon=True)
        thread.start()
        try:
            killed = hunt_and_kill_a_run(dev, before, LandedLedger(streaming.objects), bait)
            assert dev.kill(dev.daemon_pid())
        finally:
            daemon_killed.set()
        thread.join(timeout=60)
        assert published.is_set() and not errors, errors
        print(f"killed at {time.monotonic() - started:.0f} s in the middle of its run:", killed)
        assert killed["status"] == "FAILURE", killed
        dev.wait_gone(timeout=60)
        restarted_at = time.time()

        dev = DagsterDev(spawn, env, tmp_path / "dagster-dev-2.log")
        devs.append(dev)
        dev.wait_up()
        print(f"up again at {time.monotonic() - started:.0f} s")
        bugs = unwedge(dev, restarted_at)
        orphans = unfollowed(dev, timeout=120)
        print(f"unwedged at {time.monotonic() - started:.0f} s: {bugs}")
        assert not orphans, f"failed runs nothing re-ran: {describe_runs(orphans)}"
        seen = _settle(dev, aws_config, streaming, {g["id"] for g in good}, len(bad), timeout=180)
        print(f"settled at {time.monotonic() - started:.0f} s")

        twice = [i for i, n in seen["ids"].items() if n > 1]
        assert not twice, f"materialised more than once: {twice}"
        lost = {g["id"] for g in good} - set(seen["ids"])
        assert not lost, f"{len(lost)} events lost; {seen}"
        assert set(seen["ids"]) == {g["id"] for g in good}
        letters = streaming.dead_letters.list(limit=1000)
        assert Counter(d.code for d in letters) == Counter(code for _, code, _ in bad)
        assert all(q["dead_letters"] == 0 for q in seen["queues"]), seen["queues"]
        assert _drift(streaming) == (set(), set())
        partitions = sorted({stores.hour_key(parse_time(g["time"])) for g in good})
        hours = books.books(streaming, ("postings", "boards"), partitions)
        unbalanced = [books.describe(h) for h in hours if not h.balanced or h.pending]
        assert not unbalanced, unbalanced
        assert not _streaming_runs(dev.in_flight())
        broken = [r for r in dev.runs(("FAILURE", "CANCELED")) if r["jobName"] in STREAMS]
        print("failed or canceled stream runs:", describe_runs(broken))
    except BaseException:
        for one in devs:
            print(f"--- dagster dev on port {one.port}, tail of its log:\n{one.tail()}")
        raise
    finally:
        for one in devs:
            stop_group(one.proc)
        _drop(admin, database)
    assert not bugs, "the crash wedged the stream until an operator cleared it: " + " | ".join(bugs)
