"""The writer gate of a SQLite file: writers from other processes take turns promptly, a
waiter past the busy timeout gets SQLite's own error, and a holder that dies frees it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time

import pytest

from figstream.storage.sqlite import SqliteDatabase

DDL = "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)"


def _hold(path: str, seconds: float, held, release) -> None:
    db = SqliteDatabase(path, DDL)
    with db.write() as conn:
        conn.execute("INSERT INTO t (v) VALUES ('holder')")
        held.set()
        release.wait(seconds)


def _start_holder(path, seconds=30.0):
    ctx = multiprocessing.get_context("fork")
    held, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(path), seconds, held, release))
    proc.start()
    assert held.wait(10), "the holder never took the write lock"
    return proc, release


def test_a_waiting_writer_gets_in_as_soon_as_the_holder_commits(tmp_path):
    path = tmp_path / "gate.sqlite"
    db = SqliteDatabase(path, DDL)
    proc, release = _start_holder(path)
    try:
        began = time.monotonic()
        release_at = began + 0.35
        # Release from a timer in this process: the write below blocks until then.
        threading.Timer(0.35, release.set).start()
        with db.write() as conn:
            got = time.monotonic()
            conn.execute("INSERT INTO t (v) VALUES ('waiter')")
        assert got >= release_at - 0.01, "the waiter wrote while the holder held the lock"
        # SQLite's busy handler alone tries at 228, 328, 428 ms: 78 ms late here.
        assert got - release_at < 0.05, f"the waiter got in {got - release_at:.3f} s late"
    finally:
        release.set()
        proc.join(10)
    with db.read() as conn:
        rows = [v for (v,) in conn.execute("SELECT v FROM t ORDER BY k")]
    assert rows == ["holder", "waiter"]


def test_a_writer_waiting_past_the_busy_timeout_gets_database_is_locked(tmp_path):
    path = tmp_path / "gate.sqlite"
    impatient = SqliteDatabase(path, DDL, busy_timeout=0.2)
    proc, release = _start_holder(path)
    try:
        began = time.monotonic()
        with (
            pytest.raises(sqlite3.OperationalError, match="database is locked"),
            impatient.write() as conn,
        ):
            conn.execute("INSERT INTO t (v) VALUES ('never')")
        assert 0.15 < time.monotonic() - began < 5
        # The failed writer released nothing it did not hold, and can write once free.
        release.set()
        proc.join(10)
        with impatient.write() as conn:
            conn.execute("INSERT INTO t (v) VALUES ('after')")
    finally:
        release.set()
        proc.join(10)


def test_a_holder_killed_mid_transaction_frees_the_gate(tmp_path):
    path = tmp_path / "gate.sqlite"
    db = SqliteDatabase(path, DDL, busy_timeout=5.0)
    proc, _ = _start_holder(path, seconds=60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    with db.write() as conn:
        conn.execute("INSERT INTO t (v) VALUES ('after the kill')")
    with db.read() as conn:
        rows = [v for (v,) in conn.execute("SELECT v FROM t ORDER BY k")]
    assert rows == ["after the kill"], "the killed holder's transaction must roll back"


def test_writes_of_one_process_in_turn_reuse_the_gate(tmp_path):
    db = SqliteDatabase(tmp_path / "gate.sqlite", DDL)
    for i in range(50):
        with db.write() as conn:
            conn.execute("INSERT INTO t (v) VALUES (?)", (str(i),))
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 50
    assert (tmp_path / "gate.sqlite-writer").exists()
