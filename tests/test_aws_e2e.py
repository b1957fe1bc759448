"""The aws profile end to end: a real ``dagster dev`` (webserver, daemon, code server) whose
instance is the machine's Postgres (``platform/aws/dagster.yaml``) and whose AWS is moto
server over HTTP. Events go in through EventBridge (``PutEvents``); the rules deliver them to
each stream's SQS queue; the stream sensors drain the queues into landing batches in S3 and
request runs; the runs validate through the validate-batch Lambda (a subprocess behind
``PipesLambdaClient``), claim event ids and write the state in DynamoDB, and dead-letter the
bad records there. The books must balance by event id.

Bad inputs sent: every kind of ``daemon_harness.bad_records`` (truncated JSON, bad encoding,
not an object, a missing field, wrong types, an unknown type and version, an invalid merger,
times outside the partitions), and a redelivered good event.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
import uuid

import pyarrow as pa
import pytest
from conftest import ROOT, stop_group
from daemon_harness import EPOCH, DagsterDev, bad_records, posting

from figstream.cli.aws import setup
from figstream.ingest.eventbridge import EventBridgePublisher
from figstream.ingest.routing import Router
from figstream.settings import routing_path
from figstream.storage.deadletter import DeadLetterStore
from figstream.storage.objects import ObjectStore, read_parquet
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
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(ROOT / "platform" / "aws" / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {
        **os.environ,
        **aws_environ(aws_config, invoker="subprocess"),
        "FIGSTREAM_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": database,
    }
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
        # Every event once, the state in DynamoDB (above), the runs in Postgres.
        runs = dev.runs()
        assert runs and all(r["status"] in ("SUCCESS", "STARTED", "QUEUED") for r in runs), runs
        assert any(r["status"] == "SUCCESS" for r in runs)
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=database)
        try:
            with conn.cursor() as cur:  # the runs the UI showed are the instance's rows
                cur.execute("SELECT count(*) FROM runs")
                assert cur.fetchone()[0] == len(runs)
        finally:
            conn.close()
    finally:
        if dev is not None:
            stop_group(dev.proc)  # before its database goes
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


def _ledger():
    from figstream.migration.ledger import load_ledger
    from figstream.settings import ledger_path

    return load_ledger(ledger_path())
