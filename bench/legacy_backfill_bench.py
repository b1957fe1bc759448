"""A backfill of the legacy group through the UI's path, beside Luigi's own run of the same days.

    .venv/bin/python bench/legacy_backfill_bench.py [--days 30] [--events-per-day 3000]
        [--repeats 3] [--no-write]

One generated history (``figstream.ingest.dataset.generate``, seed 7, no bad records, from the
ledger's epoch), copied twice. The landing zone is removed from both copies: the stream sensors
then have nothing to do, and the feed-dump mirror keeps the boards' dumps, as Luigi reads them.

1. *Luigi alone*: one process, a ``luigi.build`` of every legacy task per day, in day order (the
   local scheduler, one worker): Luigi at its best on the same box; timed.
2. *Dagster*: ``dagster dev -w workspace.yaml`` on the other copy. The backfill is launched as the
   UI's Materialize button launches it (GraphQL ``launchPartitionBackfill`` of the legacy group's
   assets over the days), and timed until every day of every asset is materialised
   (``materialised``), and until the backfill's status says so (``completed``: the backfill
   daemon looks every 30 s, so this adds up to 30 s).

Each repeat is the whole of the above on fresh copies and a fresh ``dagster dev`` (so each
backfill is a cold start's). The backfill daemon looks for new backfills when it starts and every
30 s after, so a backfill launched the moment the UI answers always waits ~28 s; a user launches
at any point of that loop. The repeats launch 0, 10 and 20 s after the UI answers
(``--phases``), spreading the wait over the loop; the figures are the medians.

Target (issue 16): ``materialised`` <= 3x Luigi alone (medians). Results: ``bench/results/
legacy_backfill.json`` and the legacy-backfill table of ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

from benchlib import (
    BIN,
    ROOT,
    Recording,
    add_record_args,
    dagster_dev,
    fmt,
    logger,
    record,
    rerender,
    temp_homes,
    verdict,
)

BENCH = "legacy_backfill"
log = logger(BENCH)
SEED = 7
TARGET = 3.0

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions }
  }
}
"""
LEGACY_NODES = """
{ assetNodes(group: {groupName: "legacy", repositoryName: "__repository__",
                     repositoryLocationName: "figstream"}) {
    assetKey { path } isMaterializable
    assetPartitionStatuses { ... on TimePartitionStatuses {
      ranges { status startKey endKey } } }
} }
"""


def child_luigi(home: str, days: list[str], epoch: str) -> None:
    """Luigi alone: every legacy task of each day, in day order, in this process."""
    import luigi

    from legacy.pipeline import TASKS
    from resources.luigi_runner import LuigiRunner

    LuigiRunner(data_root=home, epoch=epoch).configure()
    began = time.perf_counter()
    # A build per day, every task of the day: Luigi at its best (one build of all 30 days' tasks
    # took 88.6 s where a build per day took 57.5 s, same machine and load).
    for day in days:
        tasks = [task(date=date.fromisoformat(day)) for task in TASKS]
        result = luigi.build(tasks, local_scheduler=True, workers=1, log_level="WARNING",
                             detailed_summary=True)  # fmt: skip
        if not result.scheduling_succeeded or not all(t.complete() for t in tasks):
            raise SystemExit(f"Luigi failed on {day}: {result.summary_text}")
    print(json.dumps({"seconds": round(time.perf_counter() - began, 2)}))


def graphql(port: int, query: str, **variables) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        out = json.loads(response.read())
    if out.get("errors"):
        raise RuntimeError(out["errors"])
    return out["data"]


def covered(nodes: list[dict], first: str, last: str) -> bool:
    """Every materialisable legacy asset has one materialised range holding ``first..last``."""
    for node in nodes:
        if not node["isMaterializable"]:
            continue
        ranges = (node["assetPartitionStatuses"] or {}).get("ranges") or []
        if not any(
            r["status"] == "MATERIALIZED" and r["startKey"] <= first and r["endKey"] >= last
            for r in ranges
        ):
            return False
    return True


def dagster_backfill(
    env: dict, days: list[str], work: Path, timeout: float, delay: float = 0.0
) -> dict:
    """Launch the backfill as the UI does, ``delay`` s after the UI answers (the backfill
    daemon's first look is when it starts, the next 30 s later: launched at once, a backfill
    always waits ~28 s for it; a user launches at any point of that loop). Poll only the
    backfill's status (cheap), every 2 s. Polling the
    assets' partition statuses every 0.5 s, as an earlier version did, loaded the 2-core machine
    with GraphQL work the runs then competed with; when the last day was materialised is read
    from the runs' event logs afterwards instead."""
    with dagster_dev(ROOT / "workspace.yaml", env, work / "dagster.log") as proc:
        port = int(proc.args[proc.args.index("-p") + 1])
        nodes = graphql(port, LEGACY_NODES)["assetNodes"]
        keys = [n["assetKey"] for n in nodes if n["isMaterializable"]]
        time.sleep(delay)
        params = {"assetSelection": keys, "partitionNames": days, "fromFailure": False}
        began, launched_at = time.monotonic(), time.time()
        launched = graphql(port, LAUNCH, params=params)["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {launched}")
        backfill_id = launched["backfillId"]
        completed = None
        status = "REQUESTED"
        while time.monotonic() - began < timeout and completed is None:
            time.sleep(2)
            status = graphql(port, BACKFILL, id=backfill_id)["partitionBackfillOrError"]["status"]
            if status not in ("REQUESTED", "CANCELING", "FAILING"):
                completed = time.monotonic() - began
        every_day = covered(graphql(port, LEGACY_NODES)["assetNodes"], days[0], days[-1])
    runs = run_summary(Path(env["DAGSTER_HOME"]))
    last = runs.pop("last_materialization")
    materialised = last - launched_at if every_day and last else None
    return {
        "assets": len(keys),
        "status": status,
        "materialised_seconds": None if materialised is None else round(materialised, 1),
        "completed_seconds": None if completed is None else round(completed, 1),
        **runs,
    }


def run_summary(dagster_home: Path) -> dict:
    """The backfill's runs, from the instance after ``dagster dev`` stopped: each run's time,
    and each step's, from the run's creation (the wait for the daemon to launch it is outside)."""
    code = """
import json, dagster as dg
with dg.DagsterInstance.get() as i:
    rs = [r for r in i.get_run_records() if r.dagster_run.tags.get('dagster/backfill')]
    rs.sort(key=lambda r: r.create_timestamp)
    out = {'runs': len(rs), 'run_seconds': [], 'steps': [], 'last_materialization': None,
           'statuses': sorted({r.dagster_run.status.value for r in rs})}
    for r in rs:
        run = r.dagster_run
        created = r.create_timestamp.timestamp()
        if r.end_time and r.start_time:
            out['run_seconds'].append(round(r.end_time - r.start_time, 1))
        starts, steps = {}, {}
        for e in i.all_logs(run.run_id):
            kind = e.dagster_event.event_type_value if e.dagster_event else None
            if kind == 'STEP_START':
                starts[e.step_key] = e.timestamp
            elif kind == 'STEP_SUCCESS':
                steps[e.step_key.split('__')[-1]] = [round(starts[e.step_key] - created, 1),
                                                     round(e.timestamp - starts[e.step_key], 1)]
            elif kind == 'ASSET_MATERIALIZATION':
                out['last_materialization'] = max(out['last_materialization'] or 0, e.timestamp)
        out['steps'].append({'partitions': [run.tags.get('dagster/asset_partition_range_start'),
                                            run.tags.get('dagster/asset_partition_range_end')],
                             'step: [started after creation, took] s': steps})
    print(json.dumps(out))
"""
    out = subprocess.run(
        [str(BIN / "python"), "-c", code],
        env={"DAGSTER_HOME": str(dagster_home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 1) if values else None


def _spread(values: list) -> str:
    values = [v for v in values if v is not None]
    return f"samples {', '.join(fmt(v) for v in values)}" if len(values) > 1 else "-"


def rows(result: dict) -> list[tuple[str, str, str]]:
    n = result["days"]
    ratio = result.get("ratio")
    # Older results hold one sample (no "repeats").
    samples = result.get("repeats") or [
        {"luigi_seconds": result["luigi_seconds"], "dagster": result["dagster"]}
    ]
    luigi = [r["luigi_seconds"] for r in samples]
    done = [r["dagster"]["materialised_seconds"] for r in samples]
    completed = [r["dagster"]["completed_seconds"] for r in samples]
    of = f"{n} days" + (f", median of {len(samples)}" if len(samples) > 1 else "")
    return [
        (f"Luigi alone, {of}, s", fmt(_median(luigi)), _spread(luigi)),
        (f"backfill through the daemon, {of}, until materialised, s", fmt(_median(done)),
         _spread(done)),
        (f"backfill, {of}, until the backfill says completed, s", fmt(_median(completed)),
         _spread(completed)),
        (f"backfill / Luigi alone, {of}", fmt(ratio, 2, "x"),
         verdict(f"<= {TARGET:g}x", None if ratio is None else ratio <= TARGET)),
        (f"runs of each backfill, {n} days",
         "/".join(str(r["dagster"]["runs"]) for r in samples), "-"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events-per-day", type=int, default=3000)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--repeats", type=int, default=3, help="fresh homes and dagster dev each")
    parser.add_argument(
        "--phases",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[0.0, 10.0, 20.0],
        help="seconds after the UI answers that each repeat launches (spread over the daemon's"
        " 30 s loop)",
    )
    parser.add_argument("--child-luigi", nargs=3, metavar=("HOME", "DAYS", "EPOCH"))
    add_record_args(parser)
    args = parser.parse_args()
    if args.child_luigi:
        home, days, epoch = args.child_luigi
        child_luigi(home, days.split(","), epoch)
        return
    if args.rerender:
        rerender(BENCH, rows)
        return
    from figstream.ingest.dataset import generate
    from figstream.migration.ledger import load_ledger
    from figstream.settings import ledger_path

    recording = Recording(BENCH, args.wait_quiet)
    epoch = load_ledger(ledger_path()).legacy_epoch
    days = [(epoch + timedelta(days=n)).isoformat() for n in range(args.days)]
    repeats = []
    with tempfile.TemporaryDirectory(prefix="legacy-backfill-") as tmp:
        base = Path(tmp) / "generated"
        base.mkdir()
        log(f"generating {args.days} days of {args.events_per_day:,} events")
        generate(base, start=epoch, days=args.days, events_per_day=args.events_per_day,
                 seed=SEED, bad_rate=0.0)  # fmt: skip
        shutil.rmtree(base / "landing")
        for n in range(args.repeats):
            work = Path(tmp) / f"repeat-{n}"
            work.mkdir()
            env = temp_homes(work)
            home = Path(env["FIGSTREAM_HOME"])
            shutil.rmtree(home)
            shutil.copytree(base, home)
            alone = work / "luigi_home"
            shutil.copytree(base, alone)
            log(f"repeat {n + 1}/{args.repeats}: Luigi alone")
            out = subprocess.run(
                [sys.executable, __file__, "--child-luigi", str(alone), ",".join(days),
                 str(epoch)],
                capture_output=True, text=True, check=True, cwd=ROOT,
            )  # fmt: skip
            luigi_seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
            log(f"Luigi alone: {luigi_seconds} s; now the backfill through dagster dev")
            delay = args.phases[n % len(args.phases)]
            dagster = dagster_backfill(env, days, work, args.timeout, delay)
            dagster["launched_after_ui_s"] = delay
            log(f"backfill: {dagster['materialised_seconds']} s, {dagster['runs']} run(s)")
            repeats.append({"luigi_seconds": luigi_seconds, "dagster": dagster})
            shutil.rmtree(work, ignore_errors=True)
    luigi_median = _median([r["luigi_seconds"] for r in repeats])
    took = _median([r["dagster"]["materialised_seconds"] for r in repeats])
    result = {
        **recording.header("full" if args.days >= 30 else "quick"),
        "days": args.days,
        "events_per_day": args.events_per_day,
        "luigi_seconds": luigi_median,
        "dagster": repeats[-1]["dagster"],
        "repeats": repeats,
        "ratio": None if took is None or not luigi_median else round(took / luigi_median, 2),
        "target": f"<= {TARGET:g}x Luigi alone (medians over the repeats)",
    }
    record(BENCH, result, rows, args.no_write)


if __name__ == "__main__":
    main()
