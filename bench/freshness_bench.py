"""Freshness under a real ``dagster dev``: publish -> visible, figstream next to a floor.

    .venv/bin/python bench/freshness_bench.py [--quick] [--probes N] [--rate 20] [--no-write]

One ``dagster dev`` (webserver, daemon, code servers) on a temporary FIGSTREAM_HOME and
DAGSTER_HOME (``platform/local/dagster.yaml`` copied in), with the workspace
``bench/floor/workspace.yaml``: the figstream code location and a floor location side by side,
so both sensors share one daemon, one instance and one run launcher. A background producer
(``figstream produce --rate 20``) keeps the stream realistic.

Probes alternate (figstream, floor, floor, figstream, ...) with a random 1-5 s pause between
them, one at a time:

* figstream: one ``job.posted`` with a unique job id and event time = now, published through
  ``figstream.ingest.publish.Publisher``; measured until the job id is in
  ``tables/search_index/snapshot.parquet`` and until ``SqliteStateStore.jobs`` returns it;
* floor: a marker file in the floor sensor's directory; measured until the one-asset run has
  written the marker id (``bench/floor/definitions.py``).

Both are polled every 0.1 s. Afterwards the Dagster instance says where each probe's time
went: publish -> run created (sensor), created -> RUN_START (launch: process spawn, imports,
code load), RUN_START -> the last step's success (steps), and the rest (observation).
Results: ``bench/results/freshness.json`` and the freshness table of ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from benchlib import (
    BIN,
    ROOT,
    Recording,
    add_record_args,
    dagster_dev,
    fmt,
    load_1m,
    logger,
    record,
    rerender,
    run_statuses,
    sensor_ticks,
    start_producer,
    stop_producer,
    summary,
    temp_homes,
    verdict,
)

from figstream.events.envelope import format_time
from figstream.settings import streaming_settings
from figstream.storage.objects import LocalObjectStore
from figstream.storage.state import SqliteStateStore, state_path
from figstream.streaming.index_export import CHANGES
from resources.run_launcher import WORKER_TAG

BENCH = "freshness"
POLL_S = 0.1
TARGET_RATIO = 1.3
TARGET_P95_S, AIM_P95_S = 10.0, 6.0
FIG_STEPS = ["raw_events", "clean_postings", "deduped_postings", "job_state", "search_index"]
log = logger(BENCH)


class FigstreamProbe:
    def __init__(self, home: Path) -> None:
        self.publisher_store = LocalObjectStore(home)
        from figstream.ingest.publish import Publisher

        self.publisher = Publisher(self.publisher_store, producer="bench-probe")
        self.state = SqliteStateStore(state_path(home))
        self.changes = home / "tables" / CHANGES
        self._read: set[Path] = set()
        self._upserted: set[str] = set()

    def _in_index(self, job_id: str, hour: str) -> bool:
        """Whether an index change (an upsert of the job) was written in its hour."""
        for path in sorted((self.changes / hour).glob("*.parquet")):
            if path in self._read:
                continue
            try:
                table = pq.read_table(path, columns=["job_id", "op"])
            except OSError:
                continue  # being replaced: read it next poll
            self._read.add(path)
            upserts = table.filter(pc.equal(table["op"], "upsert"))
            self._upserted |= set(upserts["job_id"].to_pylist())
        return job_id in self._upserted

    def run(self, timeout: float) -> dict:
        token = uuid.uuid4().hex[:12]
        job_id = f"bench-{token}"
        envelope = {
            "id": f"bench-probe-{token}",
            "type": "job.posted",
            "source": "hireloop",
            "version": 1,
            "time": format_time(datetime.now(UTC)),
            "data": {
                "job_id": job_id,
                "title": f"Freshness probe {token}",
                "company": f"Bench {token}",
                "location": "Probe City",
                "employment_type": "full_time",
                "remote": True,
                "url": f"https://example.org/{token}",
            },
        }
        hour = datetime.now(UTC).strftime("%Y-%m-%d-%H:00")
        published = time.time()
        start = time.monotonic()
        [key] = self.publisher.publish([envelope])
        seen: dict[str, float] = {}
        while len(seen) < 2 and time.monotonic() - start < timeout:
            if "job_state" not in seen and self.state.jobs(job_ids=[job_id]).num_rows:
                seen["job_state"] = time.monotonic() - start
            if "search_index" not in seen and self._in_index(job_id, hour):
                seen["search_index"] = time.monotonic() - start
            if len(seen) < 2:
                time.sleep(POLL_S)
        return {
            "kind": "figstream",
            "job_id": job_id,
            "batch_key": key,
            "published_at": published,
            "to_search_index_s": round(seen["search_index"], 3) if "search_index" in seen else None,
            "to_job_state_s": round(seen["job_state"], 3) if "job_state" in seen else None,
        }


class FloorProbe:
    def __init__(self, floor: Path) -> None:
        self.markers = floor / "markers"
        self.out = floor / "out"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.seq = 0

    def run(self, timeout: float) -> dict:
        self.seq += 1
        marker_id = uuid.uuid4().hex[:12]
        tmp = self.markers / f".{marker_id}.tmp"
        tmp.write_text(marker_id)
        published = time.time()
        start = time.monotonic()
        tmp.rename(self.markers / f"{self.seq:06d}-{marker_id}.marker")
        target = self.out / f"{marker_id}.txt"
        elapsed = None
        while time.monotonic() - start < timeout:
            if target.exists():
                elapsed = time.monotonic() - start
                break
            time.sleep(POLL_S)
        return {
            "kind": "floor",
            "marker_id": marker_id,
            "published_at": published,
            "visible_s": round(elapsed, 3) if elapsed is not None else None,
        }


def import_times(env: dict[str, str], rounds: int) -> dict:
    """Wall seconds of a fresh interpreter importing dagster alone, and the figstream code
    location (what every run worker pays before its first step), interleaved."""
    python = str(BIN / "python")
    floor_env = {**env, "PYTHONPATH": str(ROOT / "bench" / "floor")}
    cases = {
        "import dagster": ([python, "-c", "import dagster"], env),
        "import figstream definitions": ([python, "-W", "ignore", "-c", "import definitions"], env),
        "import floor definitions": ([python, "-c", "import definitions"], floor_env),
    }
    cwd = {"import floor definitions": ROOT / "bench" / "floor"}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (args, case_env) in cases.items():
            began = time.perf_counter()
            subprocess.run(args, cwd=cwd.get(name, ROOT), env=case_env, check=True)
            times[name].append(time.perf_counter() - began)
    return {name: round(statistics.median(v), 2) for name, v in times.items()}


def breakdown(dagster_home: Path, probes: list[dict]) -> dict:
    """Where each probe's time went, from the instance's run records and event logs."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    records = instance.get_run_records()
    by_job: dict[str, list] = {}
    for run_record in records:
        by_job.setdefault(run_record.dagster_run.job_name, []).append(run_record)
    for runs in by_job.values():
        runs.sort(key=lambda r: r.create_timestamp.timestamp())
    wanted = {
        dg.DagsterEventType.ENGINE_EVENT,
        dg.DagsterEventType.RUN_START,
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
    }

    def events(run_id: str) -> dict:
        out: dict = {"steps": {}}
        for entry in instance.all_logs(run_id, of_type=wanted):
            kind = entry.dagster_event.event_type
            if kind == dg.DagsterEventType.ENGINE_EVENT:
                # The run worker's first words: interpreter up, dagster imported, run loaded.
                if "process_started" not in out and (entry.message or "").startswith(
                    "Started process for run"
                ):
                    out["process_started"] = entry.timestamp
            elif kind == dg.DagsterEventType.RUN_START:
                out["run_start"] = entry.timestamp
            elif kind == dg.DagsterEventType.STEP_START:
                out["steps"].setdefault(entry.step_key, {})["start"] = entry.timestamp
            else:
                out["steps"].setdefault(entry.step_key, {})["success"] = entry.timestamp
        return out

    def in_flight(runs: list, at: float) -> int:
        return sum(
            1
            for r in runs
            if r.create_timestamp.timestamp() <= at and (r.end_time is None or r.end_time > at)
        )

    postings = by_job.get("postings_job", [])
    stats_runs = by_job.get("board_daily_stats_job", [])
    floor_runs = by_job.get("floor_job", [])
    for probe in probes:
        at = probe["published_at"]
        if probe["kind"] == "figstream":
            runs, last_step = postings, "search_index"
            match = next(
                (
                    r
                    for r in runs
                    if probe["batch_key"]
                    in r.dagster_run.run_config.get("ops", {})
                    .get("raw_events", {})
                    .get("config", {})
                    .get("batch_keys", [])
                ),
                None,
            )
            visible = probe["to_search_index_s"]
        else:
            runs, last_step = floor_runs, "floor_marker"
            match = next(
                (r for r in runs if r.dagster_run.tags.get("floor/marker") == probe["marker_id"]),
                None,
            )
            visible = probe["visible_s"]
        probe["runs_in_flight_at_publish"] = in_flight(runs, at)
        probe["stats_run_in_flight_at_publish"] = in_flight(stats_runs, at) > 0
        if match is None:
            continue
        created = match.create_timestamp.timestamp()
        log = events(match.dagster_run.run_id)
        probe["run_id"] = match.dagster_run.run_id
        probe["run_batches"] = int(match.dagster_run.tags.get("figstream/batches", 1))
        probe["sensor_s"] = round(created - at, 3)
        if "process_started" in log:
            probe["spawn_s"] = round(log["process_started"] - created, 3)
            if "run_start" in log:
                probe["load_s"] = round(log["run_start"] - log["process_started"], 3)
        if "run_start" in log:
            probe["launch_s"] = round(log["run_start"] - created, 3)
            done = log["steps"].get(last_step, {}).get("success")
            if done is not None:
                probe["steps_s"] = round(done - log["run_start"], 3)
                if visible is not None:
                    probe["observe_s"] = round(at + visible - done, 3)
        probe["step_s"] = {
            step: round(t["success"] - t["start"], 3)
            for step, t in log["steps"].items()
            if "start" in t and "success" in t
        }

    def durations(runs: list) -> list[float]:
        return [
            r.end_time - r.create_timestamp.timestamp()
            for r in runs
            if r.end_time is not None and r.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        ]

    workers: dict[str, dict[str, int]] = {}
    for job, runs in by_job.items():
        for r in runs:
            how = r.dagster_run.tags.get(WORKER_TAG, "untagged")
            counts = workers.setdefault(job, {})
            counts[how] = counts.get(how, 0) + 1
    return {
        "sensors": sensor_ticks(instance),
        "run_statuses": run_statuses(instance),
        "run_workers": workers,
        "postings_run_created_to_end_s": summary(durations(postings)),
        "floor_run_created_to_end_s": summary(durations(floor_runs)),
        "stats_runs": len(stats_runs),
    }


def phase_medians(probes: list[dict], kind: str) -> dict:
    mine = [p for p in probes if p["kind"] == kind]
    out = {}
    for name in ("sensor_s", "launch_s", "spawn_s", "load_s", "steps_s", "observe_s"):
        values = [p[name] for p in mine if p.get(name) is not None]
        out[name] = summary(values)
    steps: dict[str, list[float]] = {}
    for p in mine:
        for step, seconds in p.get("step_s", {}).items():
            steps.setdefault(step, []).append(seconds)
    out["per_step_p50_s"] = {s: summary(v)["p50"] for s, v in steps.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 probes of each kind")
    parser.add_argument("--probes", type=int, default=None, help="probes of each kind (20)")
    parser.add_argument("--rate", type=float, default=20.0, help="background events/s")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per probe")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    add_record_args(parser)
    args = parser.parse_args()
    if args.rerender:
        rerender(BENCH, rows)
        return
    probes_each = args.probes or (5 if args.quick else 20)
    rng = random.Random(args.seed)
    import dagster as dg

    recording = Recording(BENCH, args.wait_quiet)
    base = Path(tempfile.mkdtemp(prefix="figstream-freshness-"))
    env = temp_homes(base)
    home, dagster_home = Path(env["FIGSTREAM_HOME"]), Path(env["DAGSTER_HOME"])
    env["FIGSTREAM_BENCH_FLOOR_DIR"] = str(base / "floor")
    os.environ.update(env)
    log(f"homes under {base}; load {recording.load_before}")
    imports = import_times(env, rounds=1 if args.quick else 3)
    log(f"import times {imports}")

    probes: list[dict] = []
    warmup: list[dict] = []
    produced = ""
    load_during: list[float] = []
    try:
        with dagster_dev(ROOT / "bench" / "floor" / "workspace.yaml", env, base / "dev.log"):
            producer = start_producer(
                home, env, base / "producer.log",
                "--rate", str(args.rate), "--seed", str(args.seed), "--producer", "bench-bg",
            )  # fmt: skip
            try:
                fig, floor = FigstreamProbe(home), FloorProbe(base / "floor")
                # First runs pay for cold caches and the first sensor evaluation.
                warmup = [fig.run(240.0), floor.run(240.0)]
                log(f"warm-up {warmup}")
                for i in range(probes_each):
                    pair = (fig, floor) if i % 2 == 0 else (floor, fig)
                    for probe in pair:
                        time.sleep(rng.uniform(1.0, 5.0))
                        load_during.append(load_1m())
                        result = probe.run(args.timeout)
                        result["index"] = i
                        probes.append(result)
                        log(i, result)
            finally:
                produced = stop_producer(producer, base / "producer.log")
            # Let the last runs finish before the instance is read and dev stops.
            time.sleep(3)
            # Runs still in flight now are killed with dev and recorded as failures then.
            instance = dg.DagsterInstance.from_config(str(dagster_home))
            before_stop = run_statuses(instance)
        details = breakdown(dagster_home, warmup + probes)
        details["run_statuses_before_stop"] = before_stop
    finally:
        if args.keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    fig_index = [p["to_search_index_s"] for p in probes if p["kind"] == "figstream"]
    fig_state = [p["to_job_state_s"] for p in probes if p["kind"] == "figstream"]
    floor_vis = [p["visible_s"] for p in probes if p["kind"] == "floor"]
    timeouts = sum(v is None for v in fig_index + fig_state + floor_vis)
    fig_s = summary([v for v in fig_index if v is not None])
    state_s = summary([v for v in fig_state if v is not None])
    floor_s = summary([v for v in floor_vis if v is not None])
    ratio = round(fig_s["p95"] / floor_s["p95"], 2) if fig_s["p95"] and floor_s["p95"] else None
    ratio_p50 = round(fig_s["p50"] / floor_s["p50"], 2) if fig_s["p50"] and floor_s["p50"] else None
    result = {
        **recording.header(
            "quick" if probes_each < 20 else "full",
            load_average_1m_during_max=max(load_during, default=None),
        ),
        "setup": {
            "probes_each": probes_each,
            "background_rate": args.rate,
            "max_runs_in_flight": streaming_settings().max_runs_in_flight,
            "overlap_max_bytes": streaming_settings().overlap_max_bytes,
            "poll_seconds": POLL_S,
            "workspace": "bench/floor/workspace.yaml",
            "dagster_yaml": "platform/local/dagster.yaml",
            "background_producer": produced,
        },
        "seconds": {
            "figstream_publish_to_search_index": fig_s,
            "figstream_publish_to_job_state": state_s,
            "floor_marker_to_output": floor_s,
        },
        "ratios": {
            "figstream_p95_over_floor_p95": ratio,
            "figstream_p50_over_floor_p50": ratio_p50,
        },
        "targets": {
            "ratio_p95 <= 1.3": ratio is not None and ratio <= TARGET_RATIO and not timeouts,
            "figstream_p95 <= 10 s": fig_s["p95"] is not None
            and fig_s["p95"] <= TARGET_P95_S
            and not timeouts,
            "figstream_p95 <= 6 s (aim)": fig_s["p95"] is not None and fig_s["p95"] <= AIM_P95_S,
        },
        "timeouts": timeouts,
        "phases": {
            "figstream": phase_medians(probes, "figstream"),
            "floor": phase_medians(probes, "floor"),
        },
        "instance": details,
        "import_seconds": imports,
        "warmup": warmup,
        "probes": probes,
    }
    log(
        f"figstream->search_index {fig_s}; ->job_state {state_s}; floor {floor_s}; "
        f"ratio p95 {ratio}; phases {result['phases']}"
    )
    record(BENCH, result, rows, args.no_write)


def rows(r: dict) -> list[tuple[str, str, str]]:
    s, t = r["seconds"], r["targets"]
    fig, floor = s["figstream_publish_to_search_index"], s["floor_marker_to_output"]
    ratio = r["ratios"]["figstream_p95_over_floor_p95"]
    probes = f"{r['setup']['probes_each']} probes each"
    out = [
        (f"publish -> search index p95, s, {probes}", fmt(fig["p95"], 2),
         verdict("<= 10", t["figstream_p95 <= 10 s"]) + "; "
         + verdict("aim <= 6", t["figstream_p95 <= 6 s (aim)"])),
        (f"publish -> search index p50, s, {probes}", fmt(fig["p50"], 2), "-"),
        (f"floor (a one-asset run) p95, s, {probes}", fmt(floor["p95"], 2), "-"),
        (f"figstream p95 / floor p95, {probes}", fmt(ratio, 2),
         verdict("<= 1.3", t["ratio_p95 <= 1.3"])),
        (f"probes timed out, {probes}", f"{r['timeouts']}", "-"),
    ]  # fmt: skip
    state = s.get("figstream_publish_to_job_state", {}).get("p95")
    if state is not None and floor["p95"]:
        state_ratio = state / floor["p95"]
        out.append((f"publish -> job_state p95, s, {probes}", fmt(state, 2),
                    verdict("<= 6", state <= 6)))  # fmt: skip
        out.append((f"job_state p95 / floor p95, {probes}", fmt(state_ratio, 2),
                    verdict("<= 1.2 (issue 19)", state_ratio <= 1.2)))  # fmt: skip
    return out


if __name__ == "__main__":
    main()
