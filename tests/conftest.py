"""Shared fixtures: free loopback ports and process-group lifecycle for real servers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Live processes of a session (``ps -s``), zombies left out."""
    out = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-s", str(sid)], capture_output=True, text=True, check=False
    ).stdout
    rows = (line.split() for line in out.splitlines())
    return [int(pid) for pid, stat in rows if not stat.startswith("Z")]


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop a process and everything it started: SIGTERM to its group, then SIGKILL; then
    whatever is left of its session (started with ``start_new_session``), such as the run
    workers a warm zygote forked in a process group of its own."""
    if proc.poll() is not None:
        return
    pgid, sid = os.getpgid(proc.pid), os.getsid(proc.pid)
    try:
        _stop_group(proc, pgid, grace)
    finally:
        if sid == proc.pid:  # a session leader: nothing outside what it started shares it
            for pid in session_pids(sid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _stop_group(proc: subprocess.Popen, pgid: int, grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader may exit before its children: wait for the whole group to go.
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with a test that starts real processes (the ``spawn`` fixture: ``dagster dev``,
    the webserver) run first, the rest in collection order. They are the longest files: under
    ``make test-slow`` (``--no-loadscope-reorder``: xdist hands files out in this order) one
    that started last would run on while the other worker has nothing left to do."""
    heavy = {item.path for item in items if "spawn" in getattr(item, "fixturenames", ())}
    items.sort(key=lambda item: item.path not in heavy)  # stable: a file's tests stay together


@pytest.fixture(autouse=True)
def _no_disposed_instance_in_context() -> Iterator[None]:
    """Each test starts and ends with no current defs-state storage: Dagster leaves a disposed
    instance's there after ``with dg.instance_for_test()`` (resources/dagster_internals.py),
    and a later test's definitions load would ask it."""
    from resources.dagster_internals import forget_defs_state_storage

    forget_defs_state_storage()
    yield
    forget_defs_state_storage()


@pytest.fixture
def spawn() -> Iterator:
    """Start processes in their own process group; stop exactly those groups afterwards."""
    started: list[subprocess.Popen] = []

    def _spawn(args: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        started.append(proc)
        return proc

    yield _spawn
    for proc in reversed(started):
        stop_group(proc)


@pytest.fixture
def figstream_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess with its own data home and Dagster home."""
    home = tmp_path / "figstream_home"
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(
        (ROOT / "platform" / "local" / "dagster.yaml").read_text()
    )
    env = dict(os.environ)
    env.update(FIGSTREAM_HOME=str(home), DAGSTER_HOME=str(dagster_home), FIGSTREAM_PROFILE="local")
    return env


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One moto server (real HTTP on 127.0.0.1) per test process; stopped at the end."""
    from tests.aws_server import moto_server, set_credentials

    set_credentials()
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with moto_server(free_port(), log) as endpoint:
        yield endpoint


@pytest.fixture
def aws_config(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """An AwsConfig on the emulator with this test's own name prefix, also set in the
    environment (``FIGSTREAM_PROFILE=aws``) for code that reads it from there."""
    from tests.aws_server import aws_environ, emulator_config

    config = emulator_config(moto_endpoint)
    for key, value in aws_environ(config).items():
        monkeypatch.setenv(key, value)
    return config
