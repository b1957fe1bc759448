"""Faults of the platform's own services under a real ``dagster dev``, the books exact after each.

One ``dagster dev`` session (the local profile; its Dagster instance on a private Postgres
server this test starts with ``initdb`` on a free port, never the machine's shared one), while a
producer lands batches:

1. the code location is reloaded (GraphQL ``reloadRepositoryLocation``) three times while the
   sensors tick: every landed batch is taken by exactly one sensor run, ticks go on after each
   reload, and the books balance;
2. the Postgres server restarts (``pg_ctl restart -m fast``) while a postings run is in the
   middle of its run: a run that failed for it is retried or resumed with no operator,
   ``dagster dev`` stays up, and the books balance;
3. the webserver is killed with ``kill -9`` (found by pid among the children of the
   ``dagster dev`` process this test started) while runs are in flight. ``dagster dev`` is a
   supervisor that stops its daemon when its webserver dies (``dagster/_cli/dev.py``), so the
   platform recovers the way a supervisor would make it: a fresh ``dagster dev`` on the same
   homes. The runs in flight at the kill end (finished by their own workers, or re-run), the
   new webserver shows them, and the books balance, with job state and search index equal to a
   recompute.

A deployment runs the webserver and the daemon as services of their own (docs/deploy-aws.md):
there ``kill -9`` of the webserver leaves the daemon running. The second test starts them so
(the local instance), kills the webserver while a run is in flight, lands batches while it is
down, and checks the daemon took and ran them all before a new webserver shows those runs.

The third kills the daemon in the middle of launching a run (STARTING, no worker yet): run
monitoring must fail that run within the instance's start timeout, and Dagster or the sensor
re-run it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import BIN, ROOT, free_port
from daemon_harness import (
    IN_FLIGHT,
    START_TIMEOUT_S,
    STREAMS,
    DagsterDev,
    assert_books_balance,
    bad_records,
    batch_ids_of,
    books,
    describe_runs,
    diagnostics,
    drift,
    e2e_start,
    generated,
    posting,
    settle,
    unfollowed,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
RELOAD = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry { locationOrLoadError { __typename } }
    ... on Error { message }
  }
}
"""
TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 1000) { timestamp status runIds } } }
  }
}
"""


class PrivatePostgres:
    """A Postgres server of this test's own: a data directory made by ``initdb`` in a fresh
    temporary directory, served on a free loopback port by the ``postgres`` user (initdb
    refuses root), started, restarted and stopped with ``pg_ctl`` on that directory only."""

    def __init__(self) -> None:
        assert PG_BIN is not None
        self.root = Path(tempfile.mkdtemp(prefix="figstream-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                           "--no-sync"])  # fmt: skip
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, args: list[str]) -> None:
        command = ["runuser", "-u", "postgres", "--", str(PG_BIN / args[0]), *args[1:]]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def _pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "server.log")
        self._as_postgres(["pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", *args])

    def start(self) -> None:
        self._pg_ctl("start")

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if PG_BIN is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql: no server can run")
    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _selector(stream: str) -> dict:
    return {
        "repositoryLocationName": "figstream",
        "repositoryName": "__repository__",
        "sensorName": f"{stream}_sensor",
    }


def ticks(dev: DagsterDev, stream: str) -> list[dict] | None:
    """The sensor's ticks; None when the webserver answered with an error in its place (during
    a reload), which the caller asks again."""
    sensor = dev.graphql(TICKS, selector=_selector(stream))["sensorOrError"]
    return sensor["sensorState"]["ticks"] if "sensorState" in sensor else None


def reload(dev: DagsterDev) -> float:
    """Reload the code location; returns when the webserver has it loaded again."""
    # The reload starts a new code server and loads the definitions: slow on a loaded machine.
    response = requests.post(
        f"{dev.url}/graphql",
        json={"query": RELOAD, "variables": {"name": "figstream"}},
        timeout=180,
    )
    answer = response.json()["data"]["reloadRepositoryLocation"]
    loaded = answer.get("locationOrLoadError") or {}
    assert loaded.get("__typename") == "RepositoryLocation", answer
    return time.time()


def taken_once(dev: DagsterDev) -> Counter:
    """(stream job, partition, batch id) -> how many sensor runs named it: retries and resumes
    re-run a run, so they are left out; every other run is a tick's request."""
    counts: Counter = Counter()
    for run in dev.runs():
        tags = {t["key"]: t["value"] for t in run["tags"]}
        if run["jobName"] not in STREAMS or {"dagster/parent_run_id", "figstream/resumes"} & set(
            tags
        ):
            continue
        for batch in batch_ids_of(run):
            counts[(run["jobName"], tags.get("dagster/partition"), batch)] += 1
    return counts


def wait_for_a_started_run(dev: DagsterDev, before: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in dev.in_flight(before) if r["jobName"] == "postings_job"]
        started = [r for r in runs if r["status"] == "STARTED"]
        if started:
            return started[0]
        time.sleep(0.2)
    raise AssertionError(f"no postings run started within {timeout} s")


def answering_again(dev: DagsterDev, timeout: float = 60) -> int:
    """Query runs until the webserver answers three times in a row; returns how many queries
    failed first. A pooled connection from before a Postgres restart fails its first query
    (SQLAlchemy then discards the pool's old connections): the UI shows that error once."""
    deadline, failures, answers = time.monotonic() + timeout, 0, 0
    while answers < 3:
        assert time.monotonic() < deadline, f"the webserver still fails after {failures} tries"
        try:
            dev.runs()
            answers += 1
        except AssertionError:
            failures, answers = failures + 1, 0
            time.sleep(1)
    return failures


def children(pid: int, marker: str) -> list[int]:
    """The live children of process ``pid`` whose command line holds ``marker``."""
    out = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    rows = [line.split(None, 1) for line in out.splitlines() if line.strip()]
    return [int(child) for child, args in rows if marker in args]


def webserver_pid(dev: DagsterDev) -> int:
    """The webserver among the children of the dagster dev process this test started."""
    pids = children(dev.proc.pid, "-m dagster_webserver")
    assert len(pids) == 1, dev.processes()
    return pids[0]


def test_reload_postgres_restart_and_webserver_kill_lose_nothing(
    spawn, figstream_env, tmp_path, private_postgres
):
    now, home, producer = e2e_start(figstream_env)
    ledger = producer.ledger
    dagster_yaml = Path(figstream_env["DAGSTER_HOME"]) / "dagster.yaml"
    with dagster_yaml.open("a") as out:
        out.write(f"storage:\n  postgres:\n    postgres_url: {private_postgres.url}\n")

    def ago(minutes: float) -> dt.datetime:
        return now - dt.timedelta(minutes=minutes)

    bulk = generated(4800, seed=23, start=ago(110), end=ago(2))
    bad = bad_records(ago(4))
    devs: list[DagsterDev] = []
    with diagnostics(devs, home, ledger):
        dev = DagsterDev(spawn, figstream_env, tmp_path / "dagster-dev-1.log")
        devs.append(dev)
        dev.wait_up()

        # 1. Three reloads of the code location while batches land and the sensors tick.
        landed = threading.Event()

        def trickle() -> None:
            try:
                for k in range(16):
                    records = bulk[k * 20 : (k + 1) * 20]
                    if k == 5:
                        records += bad[:6]
                    producer.batch(records)
                    time.sleep(1.0)
            finally:
                landed.set()

        threading.Thread(target=trickle, daemon=True).start()
        reloads = []
        for _ in range(3):
            time.sleep(4)
            reloads.append(reload(dev))
        assert landed.wait(timeout=120)
        seen = settle(dev, home, ledger, timeout=180)
        assert seen.balanced(ledger), seen.describe(ledger)
        assert_books_balance(home, ledger)
        twice = {k: n for k, n in taken_once(dev).items() if n > 1}
        assert not twice, f"batches taken by more than one sensor run: {twice}"
        for stream in ("postings", "boards"):
            # The books can balance before a sensor's first tick on the reloaded code (its last
            # tick may have come just before the last reload): wait for one, bounded.
            deadline = time.monotonic() + 90
            while True:
                history = ticks(dev, stream) or []
                after = [t for t in history if t["timestamp"] > reloads[-1]]
                if after:
                    break
                assert time.monotonic() < deadline, (
                    f"{stream}_sensor did not tick within 90 s of the last reload"
                )
                time.sleep(2)
            failed = [t for t in history if t["status"] == "FAILURE"]
            print(f"{stream}_sensor: {len(history)} ticks, {len(failed)} failed, reloads at "
                  f"{[round(r - reloads[0], 1) for r in reloads]}")  # fmt: skip

        # 2. Postgres restarts while a postings run is in the middle of its run.
        before = {r["runId"] for r in dev.runs()}
        producer.batch(bulk[320:2400])
        producer.batch([*bulk[2400:2410], *bad[6:]])
        caught = wait_for_a_started_run(dev, before)
        restarted_at = time.time()
        private_postgres.restart()
        print(f"Postgres restarted in {time.time() - restarted_at:.1f} s during {caught['runId']}")
        for k in range(4):  # more lands while the instance reconnects
            producer.batch(bulk[2410 + k * 40 : 2450 + k * 40])
            time.sleep(1.0)
        print(f"webserver queries that failed after the restart: {answering_again(dev)}")
        assert dev.proc.poll() is None, "dagster dev died with the Postgres restart"
        orphans = unfollowed(dev, timeout=150)
        assert not orphans, f"failed runs nothing re-ran: {describe_runs(orphans)}"
        # A run launched while the instance reconnects can stay STARTING until run monitoring
        # fails it (Dagster's start timeout, 180 s), and its sensor then requests it again
        # (resume_failed_after_seconds, 30): seen once in CI, where the books balanced only
        # after that. So the window covers that path, and a run it failed must have a follower.
        seen = settle(dev, home, ledger, timeout=330)
        assert seen.balanced(ledger), seen.describe(ledger)
        orphans = unfollowed(dev, timeout=60)
        assert not orphans, f"failed runs nothing re-ran: {describe_runs(orphans)}"
        assert_books_balance(home, ledger)
        outcome = {r["runId"]: r["status"] for r in dev.runs()}[caught["runId"]]
        print(f"the run caught by the restart ended {outcome}")

        # 3. kill -9 of the webserver while runs are in flight.
        before = {r["runId"] for r in dev.runs()}
        producer.batch(bulk[2570:4800])
        first = wait_for_a_started_run(dev, before)
        flying = {r["runId"] for r in dev.in_flight(before)} | {first["runId"]}
        pid = webserver_pid(dev)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        producer.batch([posting("faults-e2e-after-kill", "workwave", ago(1), "Data Engineer")])
        # dagster dev notices within 5 s and stops its daemon; the run workers are not its.
        with contextlib.suppress(subprocess.TimeoutExpired):
            dev.proc.wait(timeout=90)
        print(f"dagster dev exited {dev.proc.returncode} {time.monotonic() - killed_at:.0f} s "
              f"after its webserver was killed")  # fmt: skip
        dev.wait_gone(timeout=30)

        dev = DagsterDev(spawn, figstream_env, tmp_path / "dagster-dev-2.log")
        devs.append(dev)
        dev.wait_up()
        shown = {r["runId"]: r["status"] for r in dev.runs()}
        assert flying <= shown.keys(), (
            f"runs in flight at the kill not shown: {flying - set(shown)}"
        )
        orphans = unfollowed(dev, timeout=150)
        assert not orphans, f"failed runs nothing re-ran: {describe_runs(orphans)}"
        seen = settle(dev, home, ledger, timeout=180)
        assert not dev.in_flight()
        final = {r["runId"]: r["status"] for r in dev.runs()}
        print("runs in flight at the kill ended:", {run: final[run] for run in flying})
        assert not [run for run in flying if final[run] in IN_FLIGHT]
        assert seen.balanced(ledger), seen.describe(ledger)
        assert_books_balance(home, ledger)
        assert drift(home) == (set(), set())
        # A tick the kill cut short may be taken again (idempotent): said, not a failure.
        again = {k: n for k, n in taken_once(dev).items() if n > 1}
        print(f"batches taken again after the restart: {len(again)}")


def _balanced_from_files(home: Path, ledger, timeout: float):
    """Wait until the books balance, read from the data home alone (no UI to ask)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = books(home)
        if seen.balanced(ledger) or time.monotonic() > deadline:
            return seen
        time.sleep(1)


def test_kill_9_of_a_deployed_webserver_leaves_the_daemon_running(spawn, figstream_env, tmp_path):
    now, home, producer = e2e_start(figstream_env)
    ledger = producer.ledger
    bulk = generated(3000, seed=29, start=now - dt.timedelta(minutes=100), end=now)
    bad = bad_records(now - dt.timedelta(minutes=3))
    devs: list[DagsterDev] = []
    # The instance's storage is created once here: a daemon and a webserver started together on
    # a fresh DAGSTER_HOME both create its SQLite tables, and the loser dies ("table
    # alembic_version already exists": the daemon, once, in CI).
    import dagster as dg

    with dg.DagsterInstance.from_config(figstream_env["DAGSTER_HOME"]) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        instance.get_latest_materialization_event(dg.AssetKey("figstream_storage_ready"))
    with diagnostics(devs, home, ledger), (tmp_path / "daemon.log").open("a") as daemon_log:
        daemon = spawn(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=ROOT,
            env=figstream_env,
            stdout=daemon_log,
            stderr=subprocess.STDOUT,
        )
        web = DagsterDev(spawn, figstream_env, tmp_path / "webserver-1.log", ("dagster-webserver",))
        devs.append(web)
        web.wait_up()
        producer.batch(bulk[:100])
        seen = settle(web, home, ledger, timeout=180)
        assert seen.balanced(ledger), seen.describe(ledger)

        before = {r["runId"] for r in web.runs()}
        producer.batch(bulk[100:2000])
        caught = wait_for_a_started_run(web, before)
        web.kill(web.proc.pid)
        killed_at = time.time()
        # While the UI is down: more batches, good and bad, for the daemon alone.
        for k in range(5):
            producer.batch([*bulk[2000 + k * 200 : 2200 + k * 200], *bad[k * 2 : k * 2 + 2]])
            time.sleep(1.0)
        seen = _balanced_from_files(home, ledger, timeout=180)
        assert daemon.poll() is None, "the daemon died with the webserver"
        assert seen.balanced(ledger), seen.describe(ledger)
        restarted_at = time.time()

        web = DagsterDev(spawn, figstream_env, tmp_path / "webserver-2.log", ("dagster-webserver",))
        devs.append(web)
        web.wait_up()
        runs = {r["runId"]: r for r in web.runs()}
        assert runs[caught["runId"]]["status"] == "SUCCESS", describe_runs([runs[caught["runId"]]])
        meanwhile = [r for r in runs.values() if killed_at < r["creationTime"] < restarted_at]
        assert meanwhile, "no run was launched while the webserver was down"
        print(f"runs launched while the webserver was down: {describe_runs(meanwhile)}")
        seen = settle(web, home, ledger, timeout=120)
        assert not web.in_flight()
        assert_books_balance(home, ledger)
        assert drift(home) == (set(), set())


def daemon_zygote(dev: DagsterDev) -> int:
    """The daemon's pre-loaded run worker (resources/warm_worker.py): a child of the daemon of
    the ``dagster dev`` this test started, in a process group of its own."""
    deadline = time.monotonic() + 60
    while len(pids := children(dev.daemon_pid(), "-m resources.warm_worker")) != 1:
        assert time.monotonic() < deadline, f"pre-loaded workers under the daemon: {pids}"
        time.sleep(0.5)
    return pids[0]


def test_a_launch_cut_short_by_a_daemon_crash_is_failed_and_re_run(spawn, figstream_env, tmp_path):
    """The daemon dies in the middle of launching a run: the run is STARTING and no worker will
    ever run it. Run monitoring must fail it within its start timeout of the launch (it holds a
    slot of its stream's runs in flight until then), Dagster or the sensor must re-run its
    batches with no operator, and the books must balance.

    The window is made wide and certain: the daemon's pre-loaded worker is stopped (SIGSTOP),
    so the launcher waits on it for an answer (up to 30 s) with the run STARTING, and the daemon
    is killed then; the stopped worker is killed with it, as a host crash would take both."""
    now, home, producer = e2e_start(figstream_env)
    ledger = producer.ledger
    bulk = generated(900, seed=31, start=now - dt.timedelta(minutes=100), end=now)
    devs: list[DagsterDev] = []
    with diagnostics(devs, home, ledger):
        dev = DagsterDev(spawn, figstream_env, tmp_path / "dagster-dev-1.log")
        devs.append(dev)
        dev.wait_up()
        producer.batch(bulk[:100])
        seen = settle(dev, home, ledger, timeout=180)
        assert seen.balanced(ledger), seen.describe(ledger)

        zygote = daemon_zygote(dev)
        os.kill(zygote, signal.SIGSTOP)
        before = {r["runId"] for r in dev.runs()}
        producer.batch(bulk[100:400])
        deadline = time.monotonic() + 60
        while not (starting := [r for r in dev.in_flight(before) if r["status"] == "STARTING"]):
            assert time.monotonic() < deadline, "no run was launched for the batch"
            time.sleep(0.2)
        stuck = starting[0]
        assert dev.kill(dev.daemon_pid())
        os.kill(zygote, signal.SIGKILL)
        dev.wait_gone(timeout=60)
        producer.batch(bulk[400:900])  # lands while the platform is down

        dev = DagsterDev(spawn, figstream_env, tmp_path / "dagster-dev-2.log")
        devs.append(dev)
        dev.wait_up()
        up_at = time.time()
        # No worker ever ran it (it may already be failed, if the restart took a minute).
        assert not dev.run_detail(stuck["runId"])[2], "the run the crash cut short ran steps"
        # Failed at the first monitoring pass after its start timeout (or after the restart,
        # if that took longer), not Dagster's default three minutes.
        bound = max(stuck["creationTime"] + START_TIMEOUT_S, up_at) + 20
        while (status := dev.run_detail(stuck["runId"])[1]) in IN_FLIGHT:
            assert time.time() < bound, (
                f"run {stuck['runId']} still {status} {time.time() - stuck['creationTime']:.0f} s "
                f"after its launch; the start timeout is {START_TIMEOUT_S:.0f} s"
            )
            time.sleep(1)
        ended = time.time() - stuck["creationTime"]
        print(f"the run the crash cut short ended {status} {ended:.0f} s after its launch")
        assert status == "FAILURE", status
        orphans = unfollowed(dev, timeout=120)
        assert not orphans, f"failed runs nothing re-ran: {describe_runs(orphans)}"
        seen = settle(dev, home, ledger, timeout=180)
        assert seen.balanced(ledger), seen.describe(ledger)
        assert not dev.in_flight()
        assert_books_balance(home, ledger)
        assert drift(home) == (set(), set())
