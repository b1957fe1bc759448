"""Shared pieces of the benchmarks: machine facts, process groups, a temp Dagster dev, a
worktree of another commit, the live producer, and the recording of results.

Imported by the scripts next to it (``.venv/bin/python bench/<name>.py`` puts ``bench/`` on
``sys.path``). Nothing here times anything: each script decides what it measures. A recording
run stores its result in ``bench/results/<name>.json`` and replaces its own rows (same figure,
same machine) in its table of ``bench/README.md``; the reasoning goes in the commit message.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
README = ROOT / "bench" / "README.md"
RESULTS = ROOT / "bench" / "results"


def load_1m() -> float:
    return round(os.getloadavg()[0], 2)


def machine(**versions: str) -> dict[str, Any]:
    """nproc, CPU model, RAM and the library versions the figures depend on (plus
    ``versions``, e.g. ``numpy=np.__version__``)."""
    import dagster
    import orjson
    import pyarrow

    cpuinfo = Path("/proc/cpuinfo").read_text()
    meminfo = Path("/proc/meminfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem_kb = int(re.search(r"^MemTotal:\s*(\d+)", meminfo, re.M).group(1))
    return {
        "nproc": int(subprocess.run(["nproc"], capture_output=True, text=True).stdout),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "dagster": dagster.__version__,
        "pyarrow": pyarrow.__version__,
        "orjson": orjson.__version__,
        **versions,
        "platform": platform.platform(),
    }


def machine_cell(m: dict[str, Any]) -> str:
    """The machine as a README cell, e.g. ``Intel Xeon, 2 CPUs``; the rest is in the JSON."""
    model = re.sub(r"\((R|TM)\)|\bProcessor\b|\bCPU\b.*$|\b\d+-Core\b", "", m["cpu_model"])
    return f"{' '.join(model.split())}, {m['nproc']} CPUs"


def commit_of(tree: Path = ROOT) -> str:
    """The short commit checked out in ``tree``, ``+changes`` when tracked files differ."""
    git = ["git", "-C", str(tree)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    return head.stdout.strip() + ("+changes" if dirty else "")


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """A detached ``git worktree`` of ``ref`` in a temporary directory, removed on the way out:
    the other side of a side-by-side run."""
    base = Path(tempfile.mkdtemp(prefix="figstream-worktree-"))
    path = base / "tree"
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "--detach", str(path), ref], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "remove", "--force", str(path)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def logger(name: str) -> Callable[..., None]:
    """``print`` to stderr, prefixed with ``[name]``: stdout is kept for results."""

    def log(*parts: Any) -> None:
        print(f"[{name}]", *parts, file=sys.stderr, flush=True)

    return log


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``q`` in 0..100."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: list[float], digits: int = 2) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None, "min": None, "mean": None}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), digits),
        "p95": round(percentile(values, 95), digits),
        "max": round(max(values), digits),
        "min": round(min(values), digits),
        "mean": round(sum(values) / len(values), digits),
    }


def linear_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


# --- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(args: list[str], log: Path, **kwargs: Any) -> subprocess.Popen:
    """Start a process in its own session (its own process group), output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args, start_new_session=True, stdout=out, stderr=subprocess.STDOUT, **kwargs
        )


def descendants(pid: int) -> list[int]:
    """PIDs below ``pid`` (children, grandchildren...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def with_environment(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds ``marker`` (e.g. our DAGSTER_HOME=...),
    which finds what we started even after it was re-parented away from our tree."""
    needle = marker.encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes() + b"\0"
        except OSError:
            continue
        if needle in environ and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop(proc: subprocess.Popen, grace: float = 20.0, first: int = signal.SIGTERM) -> None:
    """Stop a process we started and everything below it: ``first`` signal to its group (and
    to any descendant that left the group), then SIGKILL to whatever is left, by PID."""
    if proc.poll() is not None and not descendants(proc.pid):
        return
    family = [proc.pid, *descendants(proc.pid)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, first)
    for pid in family[1:]:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) != proc.pid:
                os.kill(pid, first)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        if not any(_alive(pid) for pid in family):
            break
        time.sleep(0.2)
    for pid in family:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def stop_marked(marker: str, grace: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL, every live process carrying ``marker`` in its environment."""
    pids = with_environment(marker)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
    return pids


def temp_homes(base: Path) -> dict[str, str]:
    """A fresh FIGSTREAM_HOME and DAGSTER_HOME (with the local dagster.yaml) under ``base``;
    returns the environment for processes that use them."""
    home, dagster_home = base / "figstream_home", base / "dagster_home"
    home.mkdir(parents=True)
    dagster_home.mkdir(parents=True)
    shutil.copy(ROOT / "platform" / "local" / "dagster.yaml", dagster_home / "dagster.yaml")
    env = dict(os.environ)
    env.update(FIGSTREAM_HOME=str(home), DAGSTER_HOME=str(dagster_home), FIGSTREAM_PROFILE="local")
    env.pop("FIGSTREAM_LEDGER", None)
    env.pop("FIGSTREAM_ROUTING", None)
    return env


@contextlib.contextmanager
def dagster_dev(
    workspace: Path, env: dict[str, str], log: Path, timeout: float = 240.0
) -> Iterator[subprocess.Popen]:
    """``dagster dev -w workspace`` on a free loopback port until the webserver answers with
    every code location loaded; stopped (whole process tree) on the way out."""
    port = free_port()
    proc = spawn(
        [str(BIN / "dagster"), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
        log,
        cwd=ROOT,
        env=env,
    )
    try:
        _wait_loaded(proc, port, log, timeout)
        yield proc
    finally:
        stop(proc)
        # A run worker whose code server went first is re-parented out of our tree.
        stop_marked(f"DAGSTER_HOME={env['DAGSTER_HOME']}")


def start_producer(home: Path, env: dict[str, str], log: Path, *options: str) -> subprocess.Popen:
    """``figstream produce --home home *options`` in its own process group, output to ``log``."""
    command = [str(BIN / "figstream"), "produce", "--home", str(home), *options]
    return spawn(command, log, cwd=ROOT, env=env)


def stop_producer(proc: subprocess.Popen, log: Path) -> str:
    """Stop the producer as Ctrl-C would (it then reports); its ``produced ...`` line."""
    stop(proc, first=signal.SIGINT)
    lines = log.read_text().splitlines()
    return next((line for line in lines if line.startswith("produced ")), "")


_LOCATIONS = (
    '{"query": "{ workspaceOrError { ... on Workspace { locationEntries { name '
    'loadStatus locationOrLoadError { __typename } } } } }"}'
)


def _wait_loaded(proc: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/graphql"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited: {log.read_text()[-3000:]}")
        try:
            request = urllib.request.Request(
                url, data=_LOCATIONS.encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                body = json.loads(response.read())
            entries = body["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(
                e["loadStatus"] == "LOADED"
                and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                for e in entries
            ):
                return
            errors = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
            if errors:
                raise RuntimeError(f"code location failed to load: {errors}")
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, TypeError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"dagster dev not ready after {timeout:.0f} s")
        time.sleep(1.0)


# --- results ------------------------------------------------------------------------------------

Row = tuple[str, str, str]  # figure, value, target (with its verdict)
COLUMNS = ("figure", "value", "target", "machine", "command", "commit")


def write_results(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def table_rows(result: dict[str, Any], rows: list[Row]) -> list[list[str]]:
    """A bench's rows with the machine, command and commit of ``result``."""
    command = result.get("command") or f".venv/bin/python bench/{Path(sys.argv[0]).name}"
    run = [machine_cell(result["machine"]), f"`{command}`", result.get("commit", "not recorded")]
    return [[*row, *run] for row in rows]


def write_rows(name: str, rows: list[list[str]]) -> None:
    """Put ``rows`` in the table between ``<!-- {name}-bench:start/end -->`` of bench/README.md,
    replacing the rows of the same figure on the same machine and keeping the others."""
    start, end = f"<!-- {name}-bench:start -->", f"<!-- {name}-bench:end -->"
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    kept: list[list[str]] = []
    if start in text:
        old = text[text.index(start) + len(start) : text.index(end)].strip().splitlines()[2:]
        kept = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in old]
    new = {(row[0], row[3]) for row in rows}
    merged = [row for row in kept if (row[0], row[3]) not in new] + rows
    order: dict[str, int] = {}
    for row in kept + rows:  # figures keep their place; new ones go last
        order.setdefault(row[0], len(order))
    merged.sort(key=lambda row: (order[row[0]], row[3]))
    table = [
        "| " + " | ".join(COLUMNS) + " |",
        "| --- | ---: | --- | --- | --- | --- |",
        *("| " + " | ".join(row) + " |" for row in merged),
    ]
    section = "\n".join([start, *table, end])
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    README.write_text(text)


def record(
    name: str, result: dict[str, Any], rows: Callable[[dict], list[Row]], no_write: bool
) -> None:
    """The bench's rows to stderr; then either the result as JSON on stdout (``--no-write``: store
    it as ``bench/results/<name>.json`` and ``--rerender`` to make it the record) or the result
    written and its rows put in the README."""
    table = table_rows(result, rows(result))
    for row in table:
        print(" | ".join(row[:3]), file=sys.stderr)
    if no_write:
        print(json.dumps(result, indent=2))
    else:
        write_results(name, result)
        write_rows(name, table)


def rerender(name: str, rows: Callable[[dict], list[Row]], derive=None) -> None:
    """Rewrite a bench's results (with ``derive``'s figures) and README rows from the recorded
    results file, running nothing."""
    result = json.loads((RESULTS / f"{name}.json").read_text())
    if derive is not None:
        derive(result)
    record(name, result, rows, no_write=False)


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def verdict(target: str, met: bool | None) -> str:
    """A target cell: ``<= 10 s: met``."""
    return f"{target}: {'n/a' if met is None else 'met' if met else '**missed**'}"


# --- reading a Dagster instance after the fact ----------------------------------------------------


def sensor_ticks(instance: Any, after: float | None = None) -> dict[str, Any]:
    """Per sensor: ticks, tick duration (evaluation) and why ticks skipped, by reason prefix."""
    out: dict[str, Any] = {}
    for state in instance.all_instigator_state():
        if state.instigator_type.value != "SENSOR":
            continue
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after)
        durations = [
            t.end_timestamp - t.timestamp for t in ticks if t.end_timestamp and t.timestamp
        ]
        reasons: dict[str, int] = {}
        for t in ticks:
            reason = t.skip_reason or ("requested runs" if t.run_ids else t.status.value)
            key = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d[\d:T.Z/-]*", "#", reason)[:70]
            reasons[key] = reasons.get(key, 0) + 1
        out[state.instigator_name] = {
            "ticks": len(ticks),
            "evaluation_seconds": summary(durations, 3),
            "outcomes": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        }
    return out


def run_statuses(instance: Any) -> dict[str, dict[str, int]]:
    """Runs per job and status, e.g. ``{"postings_job": {"SUCCESS": 48}}``."""
    out: dict[str, dict[str, int]] = {}
    for record in instance.get_run_records():
        counts = out.setdefault(record.dagster_run.job_name, {})
        status = record.dagster_run.status.value
        counts[status] = counts.get(status, 0) + 1
    return out


def step_seconds(instance: Any, run_id: str) -> dict[str, float]:
    """Seconds from STEP_START to STEP_SUCCESS of each step of a run."""
    import dagster as dg

    marks: dict[str, dict[str, float]] = {}
    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
    for entry in instance.all_logs(run_id, of_type=kinds):
        which = (
            "start" if entry.dagster_event.event_type == dg.DagsterEventType.STEP_START else "end"
        )
        marks.setdefault(entry.step_key, {})[which] = entry.timestamp
    return {k: round(v["end"] - v["start"], 3) for k, v in marks.items() if len(v) == 2}


def wait_for_quiet(max_wait: float, threshold: float = 1.0, log=print) -> dict[str, Any]:
    """Wait (up to ``max_wait`` seconds) for the 1-minute load average to fall below
    ``threshold``; say how long it took and what the load was when we went ahead."""
    began = time.monotonic()
    while load_1m() >= threshold and time.monotonic() - began < max_wait:
        time.sleep(15)
    waited = round(time.monotonic() - began)
    if max_wait:
        log(f"waited {waited} s for load < {threshold}: now {load_1m()}")
    return {"waited_seconds": waited, "threshold": threshold, "load_1m": load_1m()}


def add_record_args(parser) -> None:
    """The options every recording bench shares: print only, re-render, wait for quiet."""
    parser.add_argument("--no-write", action="store_true", help="print only (the result as JSON)")
    parser.add_argument(
        "--rerender",
        action="store_true",
        help="rewrite the README rows from the recorded results, run nothing",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for a 1-minute load below 1.0",
    )


class Recording:
    """One run of a bench: waits for quiet if asked, then notes the machine, its load and the
    time before the work; ``header`` gives the first keys of the results file after it."""

    def __init__(self, name: str, wait_quiet: float = 0.0, **versions: str) -> None:
        self.name = name
        self.quiet = wait_for_quiet(wait_quiet, log=logger(name))
        self.facts = machine(**versions)
        self.load_before = load_1m()
        self.began = time.time()
        self.commit = commit_of()  # now: a long run may see HEAD move under it

    def header(self, mode: str, **load: Any) -> dict[str, Any]:
        """``load``: more load figures, e.g. ``load_average_1m_during_max``."""
        return {
            "bench": self.name,
            "mode": mode,
            "commit": self.commit,
            "command": " ".join(
                [".venv/bin/python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]
            ),
            "started_at": datetime.fromtimestamp(self.began, UTC).isoformat(),
            "wall_seconds": round(time.time() - self.began, 1),
            "machine": {
                **self.facts,
                "load_average_1m_before": self.load_before,
                "waited_for_quiet": self.quiet,
                "load_average_1m_after": load_1m(),
                **load,
            },
        }
