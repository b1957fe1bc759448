"""The local run launcher's worker health check, against a real instance and real processes.

Bad inputs tried: no pid recorded yet, a worker that was killed, a pid taken over by a
process started later.
"""

import subprocess
import sys
import time

import dagster as dg
from conftest import ROOT
from dagster._core.events import EngineEventData
from dagster._core.launcher.base import WorkerStatus

from resources.run_launcher import LocalRunLauncher, worker_alive


def instance_with_launcher(tmp_path):
    (tmp_path / "dagster.yaml").write_text(
        (ROOT / "platform" / "local" / "dagster.yaml").read_text()
    )
    return dg.DagsterInstance.from_config(str(tmp_path))


def test_the_shipped_instance_uses_the_local_launcher(tmp_path):
    instance = instance_with_launcher(tmp_path)
    assert isinstance(instance.run_launcher, LocalRunLauncher)
    assert instance.run_launcher.supports_check_run_worker_health


def test_a_dead_worker_is_reported_failed_a_live_one_running(tmp_path):
    instance = instance_with_launcher(tmp_path)
    run = instance.create_run_for_job(dg.GraphDefinition("g").to_job())
    launcher = instance.run_launcher
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING  # no pid yet

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        instance.report_engine_event(
            f"Started process for run (pid: {worker.pid}).",
            run,
            EngineEventData.in_process(worker.pid),
        )
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    finally:
        worker.kill()
        worker.wait()
    result = launcher.check_run_worker_health(run)
    assert result.status == WorkerStatus.FAILED and str(worker.pid) in result.msg


def test_a_pid_taken_over_by_a_later_process_is_not_the_worker():
    me = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        assert worker_alive(me.pid, time.time())
        # The worker's start event is an hour older than this process: a reused pid.
        assert not worker_alive(me.pid, time.time() - 3600)
    finally:
        me.kill()
        me.wait()
