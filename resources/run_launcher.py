"""The local run launcher: Dagster's default one, plus a worker health check.

``DefaultRunLauncher`` cannot tell whether a run's worker process is alive, so run monitoring
can only fail a run whose worker died with the host (``kill -9`` of ``dagster dev``, a reboot)
once its maximum runtime has passed. Meanwhile the stream sensors count it as in flight and
the state pool keeps its slot. On one machine the answer is cheap: the worker's pid is in the
run's "Started process for run (pid: N)" engine event. A worker that is gone, or a pid that a
process started after that event has taken over, is reported FAILED, so run monitoring fails
the run at once, run retries re-execute it, and its pool slot is freed.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the run's worker process and when it was started (the engine event's time)."""
    for record in reversed(instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)):
        data = record.dagster_event.engine_event_data if record.dagster_event else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None:
            return int(pid.value), record.timestamp
    return None


# A process that started this long after the worker's start event is another process.
PID_REUSE_SLACK_S = 30.0


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from /proc; None where that is unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        with open("/proc/stat", "rb") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
    except (OSError, StopIteration, ValueError):
        return None
    ticks = int(stat.rsplit(b")", 1)[1].split()[19])  # field 22: starttime, in clock ticks
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def worker_alive(pid: int, started: float) -> bool:
    """Whether ``pid`` is alive and is the process started at ``started`` (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    began = _started_at(pid)
    return began is None or began <= started + PID_REUSE_SLACK_S


class LocalRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose run workers run monitoring can check (one machine)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        found = worker_pid(self._instance, run.run_id)
        if found is None:
            # Not started yet (or not by this launcher): nothing says it is gone.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker pid recorded yet")
        pid, started = found
        if worker_alive(pid, started):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker pid {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"worker pid {pid} of run {run.run_id} is gone"
        )
