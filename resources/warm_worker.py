"""Pre-loaded run workers: a run starts in a fork of a process that has already imported the code.

A run worker that Dagster's default launcher starts is a fresh interpreter that imports Dagster,
pyarrow and the code location before it runs a single step: about 3 s on the 2-core machine,
most of the time from an event landing to the search index being updated, and CPU that a
sustained stream pays on every run. Here one process per code origin (the *zygote*) imports
all of that once, then forks a child per run. The child is an ordinary run worker: it runs
exactly what ``dagster api execute_run`` runs, in its own process, so a crash, a leak or a
``kill -9`` of one run touches no other.

What keeps a fork honest:

- The code location's own module (``definitions.py``) is dropped from ``sys.modules`` after
  the warm-up, so each run rebuilds its Definitions (about 30 ms): a ledger edit reaches the
  next run, as it does with a fresh process.
- Every other project module is checked for changes on disk (mtime and size) before each
  fork. Edited code makes the zygote answer ``stale`` and exit; the launcher then starts that
  run the default way and warms a new zygote.
- The zygote forks only while it is single-threaded, and the child restores the signal
  dispositions the zygote changed.

Protocol, one JSON object per line: the zygote writes ``{"ready": ...}`` once warm; the launcher
writes ``{"args": <serialised ExecuteRunArgs>}``; the zygote answers ``{"pid": N}`` (forked) or
``{"stale": reason}`` (and exits). End of input ends the zygote; its runs carry on.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# --- the zygote (runs in its own process) -----------------------------------------------------


def _top_module(pointer: Any) -> str | None:
    """The module the code pointer loads: it is rebuilt for every run."""
    python_file = getattr(pointer, "python_file", None)
    if python_file:
        return os.path.splitext(os.path.basename(python_file))[0]
    return getattr(pointer, "module", None)


def _project_files(working_directory: str | None) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every loaded module file under the code's working directory, except
    installed packages: what a code edit changes."""
    if not working_directory:
        return {}
    root = os.path.realpath(working_directory) + os.sep
    files = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        path = os.path.realpath(path)
        if path.startswith(root) and "site-packages" not in path:
            with contextlib.suppress(OSError):
                stat = os.stat(path)
                files[path] = (stat.st_mtime_ns, stat.st_size)
    return files


def changed_files(files: dict[str, tuple[int, int]]) -> list[str]:
    changed = []
    for path, seen in files.items():
        try:
            stat = os.stat(path)
        except OSError:
            changed.append(path)
            continue
        if (stat.st_mtime_ns, stat.st_size) != seen:
            changed.append(path)
    return changed


def _warm(origin: Any, preload: list[str]) -> dict[str, tuple[int, int]]:
    """Import and build the code location once, plus what a run imports lazily."""
    # The adapter imports the run worker's entry point and executor along with this.
    from resources.dagster_internals import recon_repository_from_origin

    for name in preload:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    recon_repository_from_origin(origin).get_definition()
    pointer = origin.code_pointer
    files = _project_files(getattr(pointer, "working_directory", None))
    top = _top_module(pointer)
    if top:
        module = sys.modules.pop(top, None)
        path = getattr(module, "__file__", None)
        if path:
            files.pop(os.path.realpath(path), None)
    return files


def _run_child(args_json: str, close: list[int]) -> None:
    """The forked run worker: ``dagster api execute_run`` in this process, then exit."""
    code = 1
    try:
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # the zygote's requests are not the run's input
        os.close(devnull)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        from resources.dagster_internals import execute_run_command

        try:
            execute_run_command.callback(input_json=args_json, compressed_input_json=None)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def zygote_main(argv: list[str]) -> int:
    from dagster import deserialize_value

    from resources.dagster_internals import RepositoryPythonOrigin

    origin = deserialize_value(argv[0], RepositoryPythonOrigin)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what runs print goes where a run worker's output goes
    requests = sys.stdin.buffer
    started = time.monotonic()
    files = _warm(origin, argv[1:])

    def send(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    # Children are reaped by the kernel; each child puts the default back for its own.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    send({"ready": True, "pid": os.getpid(), "warm_s": round(time.monotonic() - started, 3)})
    for line in requests:
        args_json = json.loads(line)["args"]
        changed = changed_files(files)
        if changed:
            send({"stale": f"code changed on disk: {', '.join(sorted(changed)[:3])}"})
            return 0
        if threading.active_count() != 1:
            send({"stale": f"{threading.active_count()} threads: not safe to fork"})
            return 0
        pid = os.fork()
        if pid == 0:
            _run_child(args_json, [replies.fileno()])
        send({"pid": pid})
    return 0


# --- the launcher's side ----------------------------------------------------------------------


class WorkerGone(RuntimeError):
    """The zygote died or stopped answering."""


class Zygote:
    """One zygote process for one code origin, driven by one launcher."""

    def __init__(self, origin: Any, preload: list[str]):
        from dagster import serialize_value

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [
                origin.executable_path or sys.executable,
                "-m",
                "resources.warm_worker",
                serialize_value(origin),
                *preload,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            # Its own process group (in the same session): a Ctrl-C of `dagster dev` (the
            # terminal's foreground group) reaches neither the zygote (no KeyboardInterrupt
            # traceback) nor the runs it forked, which finish what they started instead of
            # failing mid-step; the zygote then ends when its launcher goes (end of input).
            process_group=0,
        )
        self.ready_info: dict | None = None

    def _read(self, timeout: float) -> dict | None:
        stdout = self.process.stdout
        assert stdout is not None
        readable, _, _ = select.select([stdout], [], [], timeout)
        if not readable:
            return None
        line = stdout.readline()
        if not line:
            raise WorkerGone(f"zygote {self.process.pid} exited ({self.process.wait()})")
        return json.loads(line)

    def ready(self, timeout: float = 0.0) -> bool:
        if self.ready_info is None:
            self.ready_info = self._read(timeout)
        return self.ready_info is not None

    def fork(self, args_json: str, timeout: float) -> dict:
        """Ask for a run worker; ``{"pid": N}`` or ``{"stale": reason}``."""
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps({"args": args_json}).encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise WorkerGone(f"zygote {self.process.pid}: {error}") from error
        reply = self._read(timeout)
        if reply is None:
            raise WorkerGone(f"zygote {self.process.pid} did not answer within {timeout} s")
        return reply

    def stop(self, timeout: float = 5.0) -> None:
        """End the zygote (its runs carry on)."""
        with contextlib.suppress(OSError):
            if self.process.stdin:
                self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


class WarmWorkers:
    """The zygotes of one launcher, one per code origin, started on the first run of each.

    ``launch`` returns the forked worker's pid, or None with the reason when the run has to
    start the default way (the zygote failed to warm, or did not warm within ``warm_wait_s``).

    A run that finds no warm zygote (the first run of a code location, or the first after a code
    edit) waits for one to warm, up to ``warm_wait_s``, instead of starting the default way
    beside it: the default way is a cold interpreter of its own that imports the same code
    while the zygote does, so on two cores both took twice as long (a cold first run's first
    step began 15 s after the run was created, against ~5 s for one import alone).
    """

    RETRY_AFTER_FAILURE_S = 60.0

    def __init__(
        self,
        preload: list[str] | None = None,
        answer_timeout_s: float = 30.0,
        warm_wait_s: float = 60.0,
    ):
        self.preload = list(preload or [])
        self.answer_timeout_s = answer_timeout_s
        self.warm_wait_s = warm_wait_s
        self._lock = threading.Lock()
        self._zygotes: dict[str, Zygote] = {}
        self._failed_at: dict[str, float] = {}

    def _start(self, key: str, origin: Any) -> Zygote:
        self._zygotes[key] = zygote = Zygote(origin, self.preload)
        return zygote

    def warm(self, origin: Any) -> Zygote:
        """The origin's zygote, started if there is none (it warms in the background)."""
        from dagster import serialize_value

        key = serialize_value(origin)
        with self._lock:
            if key not in self._zygotes:
                self._start(key, origin)
            return self._zygotes[key]

    def launch(self, origin: Any, args_json: str) -> tuple[int | None, str]:
        from dagster import serialize_value

        key = serialize_value(origin)
        with self._lock:
            zygote = self._zygotes.get(key)
            if zygote is None:
                if time.monotonic() - self._failed_at.get(key, -1e9) < self.RETRY_AFTER_FAILURE_S:
                    return None, "the pre-loaded worker failed to start recently"
                zygote = self._start(key, origin)
            stale = None
            for _ in range(2):  # a stale zygote is replaced once, and the run waits for that one
                try:
                    if not zygote.ready(timeout=self.warm_wait_s):
                        return None, (
                            f"pre-loaded worker still warming up after {self.warm_wait_s:g} s"
                        )
                    reply = zygote.fork(args_json, self.answer_timeout_s)
                except (WorkerGone, ValueError) as error:
                    zygote.stop()
                    del self._zygotes[key]
                    self._failed_at[key] = time.monotonic()
                    return None, str(error)
                if "pid" in reply:
                    how = "forked from the pre-loaded worker"
                    if stale is not None:
                        how += f" (re-warmed: the previous one was stale, {stale})"
                    return int(reply["pid"]), how
                stale = reply.get("stale")
                zygote.stop()
                zygote = self._start(key, origin)
            return None, f"pre-loaded worker was stale twice ({reply.get('stale')}); re-warming"

    def close(self) -> None:
        with self._lock:
            for zygote in self._zygotes.values():
                zygote.stop()
            self._zygotes.clear()


if __name__ == "__main__":
    sys.exit(zygote_main(sys.argv[1:]))
