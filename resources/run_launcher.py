"""The local run launcher: Dagster's default one, plus pre-loaded workers and a health check.

Runs start in a fork of a pre-loaded worker (:mod:`resources.warm_worker`). The first run of a
code location, and the first after a code change, waits for its worker to warm (up to
``warm_wait_seconds``); a run starts the default way (a fresh process from the code server) only
when no worker warms in that time or the worker failed to start.

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
import signal
import time
from pathlib import Path

import dagster as dg

from resources.dagster_internals import (
    CheckRunHealthResult,
    ExecuteRunArgs,
    LaunchRunContext,
    WorkerStatus,
)
from resources.warm_worker import WarmWorkers

WORKER_TAG = "figstream/worker"
# How long terminate waits for a just-launched run's worker to say its pid.
TERMINATE_WAIT_S = 10.0


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the run's worker process and when it was started (the engine event's time)."""
    for record in reversed(instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)):
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


class LocalRunLauncher(dg.DefaultRunLauncher):
    """``DefaultRunLauncher`` that starts runs in pre-loaded workers where it can, and whose
    run workers run monitoring can check (one machine)."""

    def __init__(
        self,
        inst_data=None,
        warm_workers: bool = True,
        preload: list | None = None,
        warm_wait_seconds: float = 60.0,
    ):
        super().__init__(inst_data=inst_data)
        self.warm_workers = (
            WarmWorkers(preload, warm_wait_s=warm_wait_seconds) if warm_workers else None
        )

    @classmethod
    def config_type(cls):
        return {
            "warm_workers": dg.Field(bool, is_required=False, default_value=True),
            # Modules a run imports lazily, imported once in the pre-loaded worker.
            "preload": dg.Field([str], is_required=False, default_value=[]),
            # How long a run waits for a warming worker before it starts the default way.
            "warm_wait_seconds": dg.Field(float, is_required=False, default_value=60.0),
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        if self.warm_workers is None or origin is None:
            super().launch_run(context)
            return
        args = ExecuteRunArgs(
            job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref()
        )
        # Tagged before the fork, so that this write never queues behind the run's own.
        self._instance.add_run_tags(run.run_id, {WORKER_TAG: "warm"})
        pid, why = self.warm_workers.launch(origin.repository_origin, dg.serialize_value(args))
        if pid is None:
            super().launch_run(context)
            self._instance.add_run_tags(run.run_id, {WORKER_TAG: "default"})
            self._instance.report_engine_event(
                f"Started the default way: {why}.", run, cls=self.__class__
            )
            return
        self._run_ids.add(run.run_id)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished or run.tags.get(WORKER_TAG) != "warm":
            return super().terminate(run_id)
        self._instance.report_run_canceling(run)
        deadline = time.monotonic() + TERMINATE_WAIT_S
        while (found := worker_pid(self._instance, run_id)) is None:
            if time.monotonic() > deadline:
                self._instance.report_engine_event(
                    "The run's worker never started; nothing to terminate.", run, cls=self.__class__
                )
                return False
            time.sleep(0.2)
        try:
            # What the code server does to a run it cancels: the worker turns the interrupt
            # into a cancelled run.
            os.kill(found[0], signal.SIGINT)
        except ProcessLookupError:
            self._instance.report_engine_event(
                f"Run worker pid {found[0]} is gone; nothing to terminate.", run, cls=self.__class__
            )
            return False
        return True

    def dispose(self) -> None:
        if self.warm_workers is not None:
            self.warm_workers.close()
        super().dispose()

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
