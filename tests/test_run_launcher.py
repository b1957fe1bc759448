"""The local run launcher: pre-loaded workers and the worker health check, against a real
instance and real processes.

Bad inputs tried: no pid recorded yet, a worker that was killed, a pid taken over by a
process started later, code edited under a warm worker, a code location that fails to
import, a run cancelled mid-step, the launcher going away with a run in flight.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from conftest import ROOT

from resources.dagster_internals import (
    EngineEventData,
    ExecuteRunArgs,
    LaunchRunContext,
    ReconstructableRepository,
    WorkerStatus,
)
from resources.run_launcher import WORKER_TAG, LocalRunLauncher, worker_alive


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


# --- pre-loaded workers -----------------------------------------------------------------------

FIXTURE = ROOT / "tests" / "launcher_fixture"
DONE = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@pytest.fixture
def code(tmp_path):
    """A copy of the fixture location, so that a test can edit it."""
    target = tmp_path / "code"
    shutil.copytree(FIXTURE, target)
    return target


def _recon(code: Path) -> ReconstructableRepository:
    return ReconstructableRepository.for_file(
        str(code / "location.py"), "defs", working_directory=str(code)
    )


def _create_run(instance, code: Path, out: Path, sleep: float = 0.0):
    job = _recon(code).get_reconstructable_job("report_job")
    config = {"ops": {"report": {"config": {"out": str(out), "sleep": sleep}}}}
    return instance.create_run_for_job(
        job.get_definition(), run_config=config, job_code_origin=job.get_python_origin()
    )


def _ready(launcher: LocalRunLauncher, code: Path):
    zygote = launcher.warm_workers.warm(_recon(code).get_python_origin())
    assert zygote.ready(timeout=60), "the pre-loaded worker did not warm up"
    return zygote


def _wait(instance, run_id: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.status in DONE:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout} s")


@pytest.fixture
def warm_launcher(tmp_path):
    instance = instance_with_launcher(tmp_path)
    yield instance, instance.run_launcher
    instance.run_launcher.dispose()


@pytest.mark.slow  # a warm worker process and real runs forked from it
def test_runs_fork_from_the_pre_loaded_worker_and_see_each_ledger_edit(warm_launcher, code):
    instance, launcher = warm_launcher
    zygote = _ready(launcher, code)
    outputs = []
    for stage in ("shadow", "migrated"):
        (code / "stage.txt").write_text(stage)  # read at import, as the ledger is
        out = code.parent / f"{stage}.json"
        run = _create_run(instance, code, out)
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        assert _wait(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_run_by_id(run.run_id).tags[WORKER_TAG] == "warm"
        outputs.append(json.loads(out.read_text()))
    assert [o["stage"] for o in outputs] == ["shadow", "migrated"]
    # Each run had a process of its own, forked from the one pre-loaded worker.
    assert {o["ppid"] for o in outputs} == {zygote.process.pid}
    assert len({o["pid"] for o in outputs}) == 2
    # The run's start event names the forked pid, so the health check watches the right one.
    assert launcher.check_run_worker_health(run).status == WorkerStatus.FAILED  # it exited


@pytest.mark.slow  # a warm worker process and real runs forked from it
def test_edited_code_retires_the_warm_worker_and_the_run_waits_for_one_with_the_edit(
    warm_launcher, code
):
    instance, launcher = warm_launcher
    first = _ready(launcher, code)
    (code / "location_lib.py").write_text("VERSION = 2\n")
    run = _create_run(instance, code, code.parent / "out.json")
    pid, why = launcher.warm_workers.launch(_recon(code).get_python_origin(), _args(instance, run))
    assert pid is not None, why
    assert "stale" in why and "location_lib.py" in why
    assert first.process.wait(10) == 0
    second = _ready(launcher, code)
    assert second is not first
    assert _wait(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    out = json.loads((code.parent / "out.json").read_text())
    assert out["lib"] == 2 and out["ppid"] == second.process.pid


@pytest.mark.slow  # a warm worker process and a real run forked from it
def test_the_first_run_waits_for_the_worker_to_warm_instead_of_starting_cold(warm_launcher, code):
    """No zygote yet: the first run starts one and is forked from it once warm, rather than a
    cold interpreter importing the same code beside it."""
    instance, launcher = warm_launcher
    run = _create_run(instance, code, code.parent / "out.json")
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    assert instance.get_run_by_id(run.run_id).tags[WORKER_TAG] == "warm"
    assert _wait(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    zygote = _ready(launcher, code)
    assert json.loads((code.parent / "out.json").read_text())["ppid"] == zygote.process.pid


@pytest.mark.slow  # a worker that never warms in time
def test_a_worker_slower_than_the_wait_lets_the_run_start_the_default_way(tmp_path, code):
    (tmp_path / "dagster.yaml").write_text(
        (ROOT / "platform" / "local" / "dagster.yaml")
        .read_text()
        .replace("warm_workers: true", "warm_workers: true\n    warm_wait_seconds: 0.01")
    )
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        pid, why = instance.run_launcher.warm_workers.launch(_recon(code).get_python_origin(), "{}")
        assert pid is None and "still warming up after 0.01 s" in why
    finally:
        instance.run_launcher.dispose()


@pytest.mark.slow  # a warm worker process and real runs forked from it
def test_a_location_that_fails_to_import_falls_back_and_is_not_retried_at_once(warm_launcher, code):
    _, launcher = warm_launcher
    (code / "location_lib.py").write_text("raise RuntimeError('broken on purpose')\n")
    origin = _recon(code).get_python_origin()
    zygote = launcher.warm_workers.warm(origin)
    with pytest.raises(Exception, match="exited"):
        zygote.ready(timeout=60)
    pid, why = launcher.warm_workers.launch(origin, "{}")
    assert pid is None and "exited" in why
    pid, why = launcher.warm_workers.launch(origin, "{}")
    assert pid is None and "failed to start recently" in why


@pytest.mark.slow  # a warm worker process and real runs forked from it
def test_a_warm_run_is_cancelled_by_terminate(warm_launcher, code):
    instance, launcher = warm_launcher
    _ready(launcher, code)
    run = _create_run(instance, code, code.parent / "out.json", sleep=120)
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    deadline = time.monotonic() + 60
    while instance.get_run_by_id(run.run_id).status != dg.DagsterRunStatus.STARTED:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.2)
    assert launcher.terminate(run.run_id)
    assert _wait(instance, run.run_id, timeout=30).status == dg.DagsterRunStatus.CANCELED
    assert not (code.parent / "out.json").exists()


@pytest.mark.slow  # a warm worker process and real runs forked from it
def test_runs_outlive_the_launcher_that_started_them(warm_launcher, code):
    instance, launcher = warm_launcher
    zygote = _ready(launcher, code)
    run = _create_run(instance, code, code.parent / "out.json", sleep=3)
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    launcher.dispose()
    assert zygote.process.poll() is not None  # the pre-loaded worker ended with its launcher
    assert _wait(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS


def _args(instance, run) -> str:
    return dg.serialize_value(
        ExecuteRunArgs(
            job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=instance.get_ref()
        )
    )


@pytest.mark.slow  # a warm worker process and real runs forked from it
def test_a_ctrl_c_of_dagster_dev_does_not_reach_the_warm_runs(warm_launcher, code):
    """Ctrl-C in a terminal sends SIGINT to its foreground process group: dagster dev's, whose
    launchers run in it (here the test's group). The zygote, and the runs it forks (a fork
    keeps its parent's group), are in a group of their own in the same session, so that
    signal reaches neither, and a run in flight finishes. (The signal itself is not sent:
    pytest's workers share its group.)"""
    instance, launcher = warm_launcher
    zygote = _ready(launcher, code)
    assert os.getpgid(zygote.process.pid) == zygote.process.pid != os.getpgid(0)
    assert os.getsid(zygote.process.pid) == os.getsid(0)
    run = _create_run(instance, code, code.parent / "out.json", sleep=1)
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    assert _wait(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert json.loads((code.parent / "out.json").read_text())["ppid"] == zygote.process.pid


def test_the_aws_launcher_takes_every_option_of_the_local_one():
    """RoutedRunLauncher's schema includes LocalRunLauncher's: each option reaches the local
    launcher (a new local option once broke loading the aws instance)."""
    from resources.aws_run_launcher import RoutedRunLauncher

    launcher = RoutedRunLauncher(
        warm_workers=True, preload=["json"], warm_wait_seconds=7.5, ecs_jobs=["j"]
    )
    try:
        assert launcher.warm_workers.warm_wait_s == 7.5
        assert launcher.warm_workers.preload == ["json"]
        assert launcher.ecs_jobs == ["j"]
        assert set(LocalRunLauncher.config_type()) <= set(RoutedRunLauncher.config_type())
    finally:
        launcher.dispose()
