"""The streaming path on a real ``dagster dev``: sensors on the daemon, runs in run workers.

A controlled stream is published through ``Publisher``: realistic generated events re-timed
into the last two hours, hand-made jobs whose outcome is known (posted then updated, expired,
on a board that merges away, late), out-of-order and duplicate deliveries, and bad records of
every reason code. Once the sensors have taken every batch and no run is in flight, the books
must balance exactly (events in = raw_events + board_mergers + dead letters): by event id for
valid events, by (batch, line) and reason code for rejected records, not only by count. The
streamed job state and search index must also equal a recompute from scratch over every
materialised event, which is what catches a batch whose ingest ran but whose later steps
did not.

Then the platform crashes while a second wave is published: ``kill -9`` of a run worker in
the middle of its run, then ``kill -9`` of the daemon (``dagster dev`` then tears the rest
down itself), and a fresh ``dagster dev`` starts on the same Dagster and data homes. The
sensors must take every batch that landed meanwhile, no event may be materialised twice, and
the books must balance again. The killed run is re-run with no operator: by Dagster's run
retries, or, when the daemon died before it retried the run, by its stream's sensor
(``sensors.streams._resume_requests``) once ``resume_failed_after_seconds`` have passed.

A crash must not wedge the stream. If runs the crash left "in flight" stay so, or a dead run's
slot in the figstream_state pool is never freed, that is a product bug and the test fails,
naming it; it first clears each the way an operator would (cancel the dead runs, free the pool
slots), so that the failure also says whether the books balance after that.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from daemon_harness import (
    EPOCH,
    STREAMS,
    DagsterDev,
    Producer,
    assert_books_balance,
    bad_records,
    describe_runs,
    diagnostics,
    drift,
    envelope,
    generated,
    hunt_and_kill_a_run,
    merger,
    posting,
    search_index,
    settle,
    unfollowed,
    unwedge,
)

from figstream.ingest.generate import ABSORBED_BOARD, SURVIVING_BOARD
from figstream.storage.state import SqliteStateStore, state_path
from resources.run_launcher import WORKER_TAG

pytestmark = [pytest.mark.slow, pytest.mark.timeout(540)]


def test_books_balance_on_a_real_daemon_and_after_a_crash(spawn, figstream_env, tmp_path):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if now - dt.timedelta(hours=2) < EPOCH:
        pytest.skip("the clock is less than 2 h past the ledger epoch: no partitions to stream")
    home = Path(figstream_env["FIGSTREAM_HOME"])
    producer = Producer(home)
    ledger = producer.ledger

    def ago(minutes: float) -> dt.datetime:
        return now - dt.timedelta(minutes=minutes)

    opened = posting("e2e-open", "workwave", ago(100), "Staff Data Engineer")
    updated = posting("e2e-open", "workwave", ago(20), "Principal Data Engineer", "job.updated")
    doomed = posting("e2e-expired", "careerhub", ago(90), "Analytics Engineer")
    expiry = envelope(
        "job.expired", "careerhub", ago(10), {"job_id": "e2e-expired", "reason": "filled"}
    )
    absorbed = posting("e2e-absorbed", ABSORBED_BOARD, ago(80), "Platform Engineer")
    merged = merger(ago(30))
    late = posting("e2e-late", "talentpool", ago(110), "Site Reliability Engineer")
    bulk = generated(360, seed=11, start=ago(115), end=ago(3))
    bad, more_bad = bad_records(ago(5)), bad_records(ago(2))

    devs: list[DagsterDev] = []
    with diagnostics(devs, home, ledger):
        dev = DagsterDev(spawn, figstream_env, tmp_path / "dagster-dev-1.log")
        devs.append(dev)
        dev.wait_up()

        # Wave 1 lands at once, in event-time order but for the late and redelivered records.
        chunks = [bulk[i : i + 40] for i in range(0, 240, 40)]
        producer.batch([opened, doomed, absorbed, *chunks[0]])
        producer.batch([*chunks[1], chunks[1][7]])  # one event twice in one batch
        producer.batch([merged, *chunks[2]])
        producer.batch([updated, expiry, *chunks[3]])
        producer.batch([*chunks[4], *bad[:6]])
        producer.batch([late, *chunks[5], opened, merged, chunks[0][3], *bad[6:]])

        seen = settle(dev, home, ledger, timeout=150)
        assert seen.balanced(ledger), seen.describe(ledger)
        # After the first run of the location, runs fork from the pre-loaded worker.
        workers = Counter(
            {t["key"]: t["value"] for t in r["tags"]}.get(WORKER_TAG)
            for r in dev.runs()
            if r["jobName"] in STREAMS
        )
        assert workers["warm"] > 0, workers
        assert_books_balance(home, ledger)
        assert Counter(ledger.bad.values()) == Counter(code for _, code, _ in bad)
        assert drift(home) == (set(), set())
        index = search_index(home)
        assert {"e2e-open", "e2e-late"} <= index
        assert not {"e2e-expired", "e2e-absorbed"} & index
        rows = SqliteStateStore(state_path(home)).jobs(
            job_ids=["e2e-open", "e2e-expired", "e2e-absorbed", "e2e-late"]
        )
        jobs = {row["job_id"]: row for row in rows.to_pylist()}
        assert jobs["e2e-open"]["status"] == "active"
        assert jobs["e2e-open"]["title"] == "Principal Data Engineer"
        assert jobs["e2e-expired"]["status"] == "expired"
        assert (jobs["e2e-absorbed"]["status"], jobs["e2e-absorbed"]["merged_into"]) == (
            "merged",
            SURVIVING_BOARD,
        )
        assert jobs["e2e-late"]["status"] == "active"

        # Wave 2, published while the platform crashes. Each batch holds a new job (timed
        # hours back, out of order), generated events, and some redeliveries of wave 1.
        before = {r["runId"] for r in dev.runs()}
        new_jobs = [f"e2e-w2-{k}" for k in range(12)]
        pieces = [bulk[i : i + 10] for i in range(240, 360, 10)]
        wave2 = [
            [posting(job, "workwave", ago(5 + 9 * k), f"Data Engineer {k}"), *pieces[k]]
            for k, job in enumerate(new_jobs)
        ]
        wave2[1] += [chunks[2][0], chunks[2][1], merged]
        wave2[4] += more_bad[:2]
        wave2[9] += [more_bad[7], updated]

        def bait() -> None:
            job = f"e2e-bait-{len(new_jobs)}"
            new_jobs.append(job)
            producer.batch([posting(job, "workwave", ago(1), "Bait Engineer")])

        daemon_killed, published = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def publish_wave2() -> None:
            try:
                for k, records in enumerate(wave2):
                    if k == 4:  # the rest lands as the daemon dies and while it is down
                        daemon_killed.wait(timeout=180)
                    producer.batch(records)
                    time.sleep(1.0)
            except BaseException as exc:  # the main thread asserts on it
                errors.append(exc)
            finally:
                published.set()

        publisher = threading.Thread(target=publish_wave2, daemon=True)
        publisher.start()
        try:
            killed = hunt_and_kill_a_run(dev, before, ledger, bait)
            assert dev.kill(dev.daemon_pid())
        finally:
            daemon_killed.set()
        publisher.join(timeout=60)
        assert published.is_set() and not errors, errors
        print("killed in the middle of its run:", killed)
        assert killed["status"] == "FAILURE", killed
        # dagster dev notices that its daemon died and shuts the rest down.
        dev.wait_gone(timeout=60)
        restarted_at = time.time()

        dev = DagsterDev(spawn, figstream_env, tmp_path / "dagster-dev-2.log")
        devs.append(dev)
        dev.wait_up()
        bugs = unwedge(dev, restarted_at)
        # Retried by the daemon within seconds, or resumed by the sensor after 30 s.
        orphans = unfollowed(dev, timeout=120)
        assert not orphans, f"failed runs nothing re-ran: {describe_runs(orphans)}"
        seen = settle(dev, home, ledger, timeout=150)

        # Whatever the crash did: no event twice, and the sensors took every batch after it.
        assert not [i for i, n in Counter(seen.ids).items() if n > 1]
        state = SqliteStateStore(state_path(home))
        unindexed = [
            (key, stream)
            for key, streams in ledger.streams.items()
            for stream in streams
            if not state.partitions_for(stream, key)
        ]
        assert not unindexed, unindexed
        assert not dev.in_flight()

        lost, (differing, index_drift) = seen.lost(ledger), drift(home)
        broken = [r for r in dev.runs(("FAILURE", "CANCELED")) if r["jobName"] in STREAMS]
        assert not (lost or differing or index_drift), (
            f"after the restart ({describe_runs(broken)} failed; the one killed had reached "
            f"steps {killed['steps']}): {len(lost)} records neither materialised nor "
            f"dead-lettered, {len(differing)} jobs whose state misses events "
            f"{sorted(differing)[:5]}, search index off by {len(index_drift)} jobs; "
            f"what the crash left for an operator: {bugs or 'nothing'}"
        )
        assert_books_balance(home, ledger)
        assert drift(home) == (set(), set())
        index = search_index(home)
        assert set(new_jobs) <= index
        assert {"e2e-open", "e2e-late"} <= index
        assert not {"e2e-expired", "e2e-absorbed"} & index
        assert not dev.in_flight()
    assert not bugs, "the crash wedged the stream until an operator cleared it: " + " | ".join(bugs)
