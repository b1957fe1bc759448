"""A real ``dagster dev`` for end-to-end tests, and the books of what it materialised.

``DagsterDev`` starts ``dagster dev`` in its own process group and talks to it over GraphQL;
``Producer`` publishes a controlled stream; ``books``/``assert_books_balance`` check
conservation (events in = raw_events + board_mergers + dead letters) by event id, and by
(batch, line) and reason code for rejected records.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
import requests
from conftest import BIN, ROOT, free_port

from figstream.events.envelope import format_time, parse_time
from figstream.ingest.generate import ABSORBED_BOARD, SURVIVING_BOARD, EventStream
from figstream.ingest.landing import parse_batch_key
from figstream.ingest.publish import Publisher
from figstream.settings import load_yaml
from figstream.storage.deadletter import SqliteDeadLetterStore, deadletter_path
from figstream.storage.objects import LocalObjectStore
from figstream.storage.state import SqliteStateStore, state_path
from figstream.streaming import fragments, index_export, jobs, stores, table_ops
from figstream.streaming import tables as streaming_tables

EPOCH = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)  # legacy_epoch of platform/migration_ledger.yaml
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
STREAMS = ("postings_job", "boards_job")
STATE_POOL = "figstream_state"  # assets/streaming.py
WORKER_PID = re.compile(r"Executing steps in process \(pid: (\d+)\)")
# Run monitoring fails a run that has not started this long after its launch (a launch that a
# daemon crash cut short); the local instance's setting, which the tests hold it to.
_INSTANCE = load_yaml((ROOT / "platform" / "local" / "dagster.yaml").read_text(encoding="utf-8"))
START_TIMEOUT_S = float(_INSTANCE["run_monitoring"]["start_timeout_seconds"])

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter, limit: 1000) {
    __typename
    ... on Runs { results { runId status jobName creationTime runConfigYaml tags { key value } } }
    ... on PythonError { message }
  }
}
"""
RUN_DETAIL = """
query Run($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on MessageEvent { message } } }
  }
  runOrError(runId: $runId) { ... on Run { status stepStats { stepKey status } } }
}
"""
LAST_TICK = """
query Tick($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 1) { timestamp status } } }
  }
}
"""
POOL = """
query Pool($pool: String!) {
  instance {
    concurrencyLimit(concurrencyKey: $pool) {
      claimedSlots { runId stepKey }
      pendingSteps { runId stepKey }
    }
  }
}
"""
FREE_SLOTS = "mutation Free($runId: String!) { freeConcurrencySlotsForRun(runId: $runId) }"
CANCEL = """
mutation Cancel($runIds: [String!]!) {
  terminateRuns(runIds: $runIds, terminatePolicy: MARK_AS_CANCELED_IMMEDIATELY) { __typename }
}
"""


def envelope(kind: str, board: str, at: dt.datetime, data: dict) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "type": kind,
        "source": board,
        "version": 1,
        "time": format_time(at),
        "data": data,
    }


def posting(job_id: str, board: str, at: dt.datetime, title: str, kind="job.posted") -> dict:
    # A company of its own, so no other job shares its cross-board dedupe key.
    data = {
        "job_id": job_id,
        "title": title,
        "company": f"Figstream E2E {job_id}",
        "location": "Lisbon, PT",
        "employment_type": "full_time",
        "remote": True,
        "salary_min": 70_000,
        "salary_max": 90_000,
        "currency": "EUR",
        "url": f"https://{board}.example/jobs/{job_id}",
    }
    return envelope(kind, board, at, data)


def merger(at: dt.datetime, absorbed=ABSORBED_BOARD, surviving=SURVIVING_BOARD) -> dict:
    data = {"absorbed_board": absorbed, "surviving_board": surviving}
    return envelope("board.merged", surviving, at, data)


def bad_records(at: dt.datetime) -> list[tuple[bytes, str, str]]:
    """(line, expected reason code, stream it is routed to): every kind of bad record."""

    def fresh() -> dict:
        return posting(f"e2e-bad-{uuid.uuid4().hex[:8]}", "workwave", at, "Data Engineer")

    def with_data(**changes) -> dict:
        record = fresh()
        return {**record, "data": {**record["data"], **changes}}

    def line(record: dict) -> bytes:
        return orjson.dumps(record)

    truncated = line(fresh())
    latin1 = line(with_data(title="Café Engineer")).replace("é".encode(), "é".encode("latin-1"))
    before_epoch = format_time(EPOCH - dt.timedelta(days=2))
    ahead = format_time(at + dt.timedelta(hours=3))
    return [
        (truncated[: len(truncated) // 2], "malformed_json", "postings"),
        (latin1, "bad_encoding", "postings"),
        (b"[1, 2, 3]", "not_an_object", "postings"),
        (line({k: v for k, v in fresh().items() if k != "source"}), "missing_field", "postings"),
        (line({**fresh(), "version": "1"}), "wrong_type", "postings"),
        (line(with_data(remote="yes")), "wrong_type", "postings"),
        (line({**fresh(), "type": "job.deleted"}), "unknown_type", "postings"),
        (line({**fresh(), "version": 99}), "unknown_version", "postings"),
        (line(merger(at, "workwave", "workwave")), "invalid_value", "boards"),
        # Valid events timed outside [first partition, arrival hour]: dead-lettered on purpose.
        (line({**fresh(), "time": before_epoch}), "time_outside_window", "postings"),
        (line({**fresh(), "time": ahead}), "time_outside_window", "postings"),
    ]


def generated(count: int, seed: int, start: dt.datetime, end: dt.datetime) -> list[dict]:
    """Good events of the seeded generator (no merger), re-timed in order into [start, end)."""
    stream = EventStream(
        EPOCH.date(), days=1, events_per_day=count, seed=seed, bad_rate=0.0, merger_day=10**9
    )
    events = [orjson.loads(record.line) for record in stream]
    for i, event in enumerate(events):
        event["time"] = format_time(start + (end - start) * i / len(events))
    return events


@dataclass
class Ledger:
    """What was published: each distinct event once, and where each bad record landed."""

    events: dict[str, str] = field(default_factory=dict)  # event id -> stream
    bad: dict[tuple[str, int], str] = field(default_factory=dict)  # (batch id, line) -> code
    streams: dict[str, set[str]] = field(default_factory=dict)  # landing key -> its streams
    delivered_in: dict[str, set[str]] = field(default_factory=dict)  # event id -> batch ids
    hours: dict[str, str] = field(default_factory=dict)  # event id -> event-time partition
    deliveries: int = 0

    def only_in(self, partition: str, batch_ids: set[str]) -> list[str]:
        """Events of ``partition`` that were delivered in none but ``batch_ids``."""
        return [
            event
            for event, hour in self.hours.items()
            if hour == partition and self.delivered_in[event] <= batch_ids
        ]


class Producer:
    def __init__(self, home: Path) -> None:
        self.publisher = Publisher(LocalObjectStore(home), producer="e2e", batch_size=100_000)
        self.ledger = Ledger()
        self._lock = threading.Lock()

    def batch(self, items: list[dict | tuple[bytes, str, str]]) -> str:
        """Land good envelopes and (line, code, stream) bad records as one batch."""
        lines = [orjson.dumps(item) if isinstance(item, dict) else item[0] for item in items]
        with self._lock:
            (key,) = self.publisher.publish(lines)
            _, batch_id = parse_batch_key(key)
            streams = self.ledger.streams.setdefault(key, set())
            for line_no, item in enumerate(items, start=1):
                if isinstance(item, dict):
                    stream = "boards" if item["type"] == "board.merged" else "postings"
                    self.ledger.events[item["id"]] = stream
                    self.ledger.delivered_in.setdefault(item["id"], set()).add(batch_id)
                    self.ledger.hours[item["id"]] = stores.hour_key(parse_time(item["time"]))
                else:
                    _, code, stream = item
                    self.ledger.bad[(batch_id, line_no)] = code
                streams.add(stream)
            self.ledger.deliveries += len(items)
        return key


def e2e_start(env: dict[str, str]) -> tuple[dt.datetime, Path, Producer]:
    """The clock (to the second), the data home and its producer for an end-to-end test;
    skipped when the clock is under 2 h past the ledger epoch (no partitions to stream)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if now - dt.timedelta(hours=2) < EPOCH:
        pytest.skip("the clock is less than 2 h past the ledger epoch: no partitions to stream")
    home = Path(env["FIGSTREAM_HOME"])
    return now, home, Producer(home)


def partitions(home: Path, table: str) -> list[str]:
    root = home / "tables" / table
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def ingested(home: Path) -> dict[str, pa.Table]:
    """Every row of every fragment of raw_events and of board_mergers."""
    objects = LocalObjectStore(home)
    return {
        table: fragments.read_fragments(
            objects, table, partitions(home, table), None, streaming_tables.EVENTS_SCHEMA
        )
        for table in stores.INGEST_TABLES.values()
    }


def materialised(home: Path) -> pa.Table:
    return pa.concat_tables(ingested(home).values())


@dataclass
class Books:
    raw: list[str]  # event ids in raw_events
    mergers: list[str]  # event ids in board_mergers
    dead: dict[tuple[str, int], str]  # (batch id, line) -> reason code
    without_reason: list[str]

    @property
    def ids(self) -> list[str]:
        return self.raw + self.mergers

    @property
    def total(self) -> int:
        return len(self.raw) + len(self.mergers) + len(self.dead)

    def balanced(self, ledger: Ledger) -> bool:
        return self.total == len(ledger.events) + len(ledger.bad)

    def lost(self, ledger: Ledger) -> set:
        """Event ids not materialised, and (batch, line) of bad records not dead-lettered."""
        return (set(ledger.events) - set(self.ids)) | (set(ledger.bad) - set(self.dead))

    def describe(self, ledger: Ledger) -> str:
        return (
            f"published {len(ledger.events)} distinct events and {len(ledger.bad)} bad records "
            f"in {ledger.deliveries} deliveries; materialised {len(self.raw)} raw_events + "
            f"{len(self.mergers)} board_mergers rows, dead-lettered {len(self.dead)}"
        )


def books(home: Path) -> Books:
    tables = ingested(home)
    letters = SqliteDeadLetterStore(deadletter_path(home)).list(limit=None)
    return Books(
        raw=tables["raw_events"]["event_id"].to_pylist(),
        mergers=tables["board_mergers"]["event_id"].to_pylist(),
        dead={(d.batch_id, d.line_no): d.code for d in letters},
        without_reason=[d.id for d in letters if not (d.code and d.detail and d.partition_key)],
    )


def assert_books_balance(home: Path, ledger: Ledger) -> Books:
    """Conservation, exactly: every event once, every bad record once with its reason."""
    seen = books(home)
    twice = [i for i, n in Counter(seen.ids).items() if n > 1]
    assert not twice, f"materialised more than once: {twice}"
    by_stream = {s: {e for e, of in ledger.events.items() if of == s} for s in stores.INGEST_TABLES}
    assert set(seen.raw) == by_stream["postings"], seen.describe(ledger)
    assert set(seen.mergers) == by_stream["boards"], seen.describe(ledger)
    assert seen.dead == ledger.bad, seen.describe(ledger)
    assert not seen.without_reason
    assert seen.total == len(ledger.events) + len(ledger.bad), seen.describe(ledger)
    return seen


def drift(home: Path) -> tuple[set[str], set[str]]:
    """Job ids whose streamed state differs from a recompute over every materialised event,
    and job ids in exactly one of the streamed and the recomputed search index."""
    events = materialised(home)
    streamed = jobs.read_state(SqliteStateStore(state_path(home)))
    return drift_of(events, streamed, search_index(home))


def drift_of(events: pa.Table, streamed: pa.Table, index_ids: set[str]) -> tuple[set, set]:
    """:func:`drift` of any profile: ``events`` every materialised event, ``streamed`` the
    stored job state, ``index_ids`` the job ids of the search index a consumer builds."""
    expected = table_ops.apply_job_state(None, events)
    columns = ["kind", "job_id", "status", "last_event_id", "title", "merged_into"]

    def rows(table: pa.Table) -> dict[str, dict]:
        table = table.select(columns).cast(expected.select(columns).schema)
        return {r["job_id"]: r for r in table.to_pylist()}

    want, have = rows(expected), rows(streamed)
    differing = {job for job in want.keys() | have.keys() if want.get(job) != have.get(job)}
    duplicates = table_ops.dedupe_postings(table_ops.clean_postings(events)).duplicates
    index = set(table_ops.search_index(expected, duplicates)["job_id"].to_pylist())
    return differing, index ^ index_ids


def search_index(home: Path) -> set[str]:
    """The job ids of the search index a consumer builds (latest snapshot plus changes)."""
    index = index_export.current_index(LocalObjectStore(home))
    return set(index["job_id"].to_pylist())


class DagsterDev:
    """One ``dagster dev`` process group, its GraphQL API and its processes."""

    def __init__(
        self, spawn, env: dict[str, str], log: Path, command: tuple[str, ...] = ("dagster", "dev")
    ) -> None:
        """``command``: what serves the UI, ``dagster dev`` (webserver and daemon) by default;
        ``("dagster-webserver",)`` for the webserver alone, as a deployment runs it."""
        self.log_path = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [*command[1:], "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)]
        with log.open("a") as out:
            self.proc = spawn(
                [str(BIN / command[0]), *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pgid = self.proc.pid  # spawn starts a new session: the leader's pid names the group

    def wait_up(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"dagster dev exited\n{self.tail()}"
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/server_info", timeout=2).ok:
                    return
            assert time.monotonic() < deadline, f"dagster dev did not come up\n{self.tail()}"
            time.sleep(0.5)

    def tail(self, lines: int = 80) -> str:
        noise = ("Warning: ", "return fn(*args", "return callback(*args")
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(
            [line for line in text if line and not any(n in line for n in noise)][-lines:]
        )

    def graphql(self, query: str, **variables) -> dict:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30
        )
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def runs(self, statuses: tuple[str, ...] = ()) -> list[dict]:
        result = self.graphql(RUNS, filter={"statuses": list(statuses)} if statuses else {})
        assert result["runsOrError"]["__typename"] == "Runs", result
        return result["runsOrError"]["results"]

    def in_flight(self, ignore: set[str] = frozenset()) -> list[dict]:
        return [r for r in self.runs(IN_FLIGHT) if r["runId"] not in ignore]

    def skipped_since(self, moment: float) -> bool:
        """True if each stream sensor's latest tick skipped (asked for nothing) after moment."""
        for stream in ("postings", "boards"):
            selector = {
                "repositoryLocationName": "figstream",
                "repositoryName": "__repository__",
                "sensorName": f"{stream}_sensor",
            }
            sensor = self.graphql(LAST_TICK, selector=selector)["sensorOrError"]
            if "sensorState" not in sensor:
                # An error in the sensor's place (the webserver's first query on a pooled
                # connection from before a Postgres restart fails once): not settled yet.
                return False
            ticks = sensor["sensorState"]["ticks"]
            if not ticks or ticks[0]["status"] != "SKIPPED" or ticks[0]["timestamp"] < moment:
                return False
        return True

    def run_detail(self, run_id: str) -> tuple[int | None, str, dict[str, str]]:
        """(run worker pid, run status, step -> status) of a run."""
        data = self.graphql(RUN_DETAIL, runId=run_id)
        pid = None
        for event in data["logsForRun"].get("events", []):
            found = WORKER_PID.search(event.get("message", ""))
            pid = int(found.group(1)) if found else pid
        run = data["runOrError"]
        return pid, run["status"], {s["stepKey"]: s["status"] for s in run["stepStats"]}

    def processes(self) -> dict[int, str]:
        """pid -> command line of every live process of this group (all of them ours)."""
        out = subprocess.run(
            ["ps", "-o", "pid=,stat=,args=", "-g", str(self.pgid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        rows = (line.split(None, 2) for line in out.splitlines())
        return {int(pid): args for pid, stat, args in rows if not stat.startswith("Z")}

    def kill(self, pid: int) -> bool:
        """SIGKILL one process, only if it belongs to this group; False if it is gone."""
        if pid not in self.processes():
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def daemon_pid(self) -> int:
        pids = [p for p, args in self.processes().items() if "dagster._daemon run" in args]
        assert len(pids) == 1, self.processes()
        return pids[0]

    def wait_gone(self, timeout: float) -> None:
        """Wait until every process of the group has exited, then SIGKILL what is left."""
        deadline = time.monotonic() + timeout
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        if self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
            # Run workers fork from a zygote in a process group of its own (same session).
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def settle(dev: DagsterDev, home: Path, ledger: Ledger, timeout: float) -> Books:
    """Wait until the books balance with no run in flight (two polls in a row), or until
    nothing moves: every batch indexed, no run in flight, the books unchanged, and both
    sensors ticked since and asked for nothing."""
    state = SqliteStateStore(state_path(home))
    deadline = time.monotonic() + timeout
    previous, quiet_since = None, None
    while time.monotonic() < deadline:
        seen = books(home)
        idle = not dev.in_flight()
        if idle and seen.balanced(ledger) and previous is not None and previous.balanced(ledger):
            return seen
        if idle and previous is not None and seen.total == previous.total:
            quiet_since = quiet_since or time.time()
            indexed = all(
                state.partitions_for(stream, key)
                for key, streams in ledger.streams.items()
                for stream in streams
            )
            if indexed and dev.skipped_since(quiet_since):
                return seen
        else:
            quiet_since = None
        previous = seen if idle else None
        time.sleep(1)
    return books(home)


def hunt_and_kill_a_run(
    dev: DagsterDev, before: set[str], ledger: Ledger, bait: Callable[[], object]
) -> dict:
    """SIGKILL the worker of a postings run while it is STARTED; wait until the run ends.

    Only a run that is the sole carrier of some event of its partition is worth killing (one
    of only redelivered events would lose nothing). A run is STARTED for about a second here,
    so one may finish first; when nothing is in flight, ``bait`` lands another batch.
    """
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "no postings run was caught in the middle of its run"
        runs = [r for r in dev.in_flight(before) if r["jobName"] == "postings_job"]
        if not runs:
            bait()
            time.sleep(3)
        for run in runs:
            tags = {t["key"]: t["value"] for t in run["tags"]}
            batch_ids = batch_ids_of(run)
            partition = tags.get("dagster/partition")
            if run["status"] != "STARTED" or not ledger.only_in(partition, batch_ids):
                continue
            pid, _, _ = dev.run_detail(run["runId"])
            if pid is None or not dev.kill(pid):
                continue
            # The code server notices that its run worker died and fails the run.
            until = time.monotonic() + 30
            while True:
                _, status, steps_done = dev.run_detail(run["runId"])
                if status not in IN_FLIGHT or time.monotonic() > until:
                    break
                time.sleep(0.5)
            return {
                "run_id": run["runId"],
                "pid": pid,
                "status": status,
                "partition": partition,
                "batch_ids": sorted(batch_ids),
                "steps": steps_done,
            }
        time.sleep(0.2)


def batch_ids_of(run: dict) -> set[str]:
    config = load_yaml(run["runConfigYaml"]) or {}
    keys = {k for op in config.get("ops", {}).values() for k in op["config"]["batch_keys"]}
    return {parse_batch_key(k)[1] for k in keys}


def describe_runs(runs: list[dict]) -> str:
    def partition(run: dict) -> str | None:
        return {t["key"]: t["value"] for t in run["tags"]}.get("dagster/partition")

    return ", ".join(f"{r['runId']} {r['jobName']} {partition(r)} {r['status']}" for r in runs)


def unfollowed(dev: DagsterDev, timeout: float) -> list[dict]:
    """Wait until every failed stream run has a follower: Dagster's retry (a child run) or its
    sensor's resume (a run tagged ``figstream/resumes``). Returns those still without one."""
    deadline = time.monotonic() + timeout
    while True:
        runs = dev.runs()
        followed = {
            tag["value"]
            for run in runs
            for tag in run["tags"]
            if tag["key"] in ("dagster/parent_run_id", "figstream/resumes")
        }
        orphans = [
            r
            for r in runs
            if r["status"] == "FAILURE" and r["jobName"] in STREAMS and r["runId"] not in followed
        ]
        if not orphans or time.monotonic() > deadline:
            return orphans
        time.sleep(2)


def _worker_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unwedge(dev: DagsterDev, restarted_at: float) -> list[str]:
    """Report what a crash left behind that would stop the stream for good, and clear it as
    an operator would: runs still "in flight" whose processes died with the old dagster dev
    (the sensors count them against max_runs_in_flight), and pool slots or queued steps of
    runs that are over (every later run of the pool waits behind them)."""
    bugs = []
    # Run monitoring (every 5 s) fails a run whose worker died with the old dagster dev
    # (resources/run_launcher.py); give it a few polls before calling what is left a bug.
    # A worker that outlived the old dagster dev (a forked run worker is not in its process
    # group's reach once forked off) is not wedged: it finishes, slowly on a loaded machine
    # (queued on the state pool, say), so its run gets longer before it counts as stuck.
    # A run whose launch the crash cut short (created, or STARTING with no worker) is failed
    # START_TIMEOUT_S after its launch: a bug only if it is still in flight a few polls later.
    start = time.monotonic()
    while True:
        stale = [r for r in dev.in_flight() if r["creationTime"] < restarted_at]
        waited = time.monotonic() - start
        alive = [r for r in stale if _worker_alive(dev.run_detail(r["runId"])[0])]
        unstarted = [
            r
            for r in stale
            if r["status"] in ("NOT_STARTED", "STARTING")
            and time.time() < r["creationTime"] + START_TIMEOUT_S + 15
        ]
        if not stale or waited > 180 or (waited > 45 and not alive and not unstarted):
            break
        time.sleep(2)
    if stale:
        bugs.append(f"runs the crash left in flight stay so for ever: {describe_runs(stale)}")
        dev.graphql(CANCEL, runIds=[r["runId"] for r in stale])
    # The instance frees a finished run's slots free_slots_after_run_end_seconds (10 s) after
    # its end, at the next daemon pass: only slots still held well after that are a bug.
    deadline = time.monotonic() + 45
    while True:
        pool = dev.graphql(POOL, pool=STATE_POOL)["instance"]["concurrencyLimit"]
        over = {r["runId"]: r for r in dev.runs(("FAILURE", "CANCELED"))}
        held = {
            (claim["runId"], claim["stepKey"])
            for claim in pool["claimedSlots"] + pool["pendingSteps"]
            if claim["runId"] in over
        }
        if not held or time.monotonic() > deadline:
            break
        time.sleep(2)
    if held:
        bugs.append(
            f"pool {STATE_POOL} keeps slots or queued steps {sorted(held)} of runs that are over "
            f"({describe_runs([over[r] for r, _ in held])}): every later run waits on it for ever"
        )
        for run_id in {r for r, _ in held}:
            assert dev.graphql(FREE_SLOTS, runId=run_id)["freeConcurrencySlotsForRun"]
    return bugs


@contextlib.contextmanager
def diagnostics(devs: list[DagsterDev], home: Path, ledger: Ledger):
    """On failure, print what the platform did (pytest shows it with the failure)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            print(books(home).describe(ledger))
        for dev in devs:
            print(f"--- dagster dev on port {dev.port} (pgid {dev.pgid}), tail of its log:")
            print(dev.tail())
            with contextlib.suppress(Exception):
                for run in dev.runs():
                    tags = {t["key"]: t["value"] for t in run["tags"]}
                    partition = tags.get("dagster/partition")
                    follows = tags.get("dagster/parent_run_id") or tags.get("figstream/resumes")
                    print(run["runId"], run["jobName"], run["status"], partition, follows or "")
        raise
