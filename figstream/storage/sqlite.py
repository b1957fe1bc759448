"""SQLite plumbing shared by the state and dead-letter stores.

WAL mode, a busy timeout and short write transactions (``CHUNK_ROWS`` rows) keep concurrent
runs from blocking each other; ``conform``/``to_rows``/``from_rows`` convert Arrow tables to and
from rows.

Checkpoints are kept off the runs' path. SQLite's default has the committing connection copy
the WAL back into the file whenever the WAL passes 1,000 pages, which inside a streaming run
meant a checkpoint every few commits: random page writes across the whole file, plus an fsync,
a cost that grows with the state (at 2M jobs, 2.1x the write time of a 50k-job state, against
1.5x without the checkpoints). Writers here only checkpoint past ``WAL_AUTOCHECKPOINT_PAGES``
(a backstop, so a WAL without a checkpointer stays bounded), and :func:`checkpoint` copies the
WAL back from outside the runs (``sensors/maintenance.py`` calls it every few seconds on the
local profile; a PASSIVE checkpoint neither waits for nor blocks readers and writers).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

CHUNK_ROWS = 2000  # rows per write transaction: keeps the write lock short
BUSY_TIMEOUT_S = 30.0
# Page cache per connection (SQLite's default is 2 MiB): holds the upper levels of the big
# B-trees (job state, claims, registry) between a run's calls.
CACHE_KIB = 32 * 1024
# The other files a run writes (trace index, books, dead letters) are appended to and read by
# key, a page or two a lookup: a big cache there is only memory. Each kept connection fills its
# cache as its file grows, and four at 32 MiB were up to 128 MiB of a 5M-event day's peak (the
# run-worker's RSS target is 512 MiB); at 4 MiB the whole 1M-event day ran 35 MiB lower.
SIDE_CACHE_KIB = 4 * 1024
# A writer checkpoints only past 64 MiB of WAL (16,384 pages of 4 KiB), and a WAL file is
# truncated back to 64 MiB after a checkpoint that reset it.
WAL_AUTOCHECKPOINT_PAGES = 16_384
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
# A writer waiting for the write lock polls the gate (below) this often; SQLite's own busy
# handler sleeps 1, 2, 5 ... 100 ms between tries.
GATE_POLL_S = 0.0005


def now_us() -> int:
    return time.time_ns() // 1000


def conform(rows: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """``rows`` with exactly ``schema``'s columns, cast safely; ``ValueError`` says what is wrong.

    Extra columns are ignored. Fields marked non-nullable must have no nulls. Timestamps must
    carry a time zone (a naive time is ambiguous, as in
    :func:`~figstream.events.envelope.parse_time`).
    """
    missing = [name for name in schema.names if name not in rows.column_names]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")
    for field in schema:
        given = rows.schema.field(field.name).type
        if pa.types.is_timestamp(given) and given.tz is None:
            raise ValueError(f"{what}: column {field.name!r} is a naive timestamp; give a tz")
    loose = pa.schema([f.with_nullable(True) for f in schema])
    try:
        table = rows.select(schema.names).cast(loose)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{what}: {exc}") from None
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise ValueError(f"{what}: column {field.name!r} has nulls")
    return table


def _storage(column: pa.ChunkedArray) -> list[Any]:
    """Python values as SQLite stores them: times as int microseconds, bools as 0/1."""
    if pa.types.is_timestamp(column.type) or pa.types.is_boolean(column.type):
        column = column.cast(pa.int64())
    return column.to_pylist()


def to_rows(table: pa.Table) -> list[tuple]:
    return list(zip(*(_storage(c) for c in table.columns), strict=True))


def from_rows(rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    arrays = []
    for field, values in zip(schema, columns, strict=True):
        if pa.types.is_timestamp(field.type) or pa.types.is_boolean(field.type):
            arrays.append(pa.array(values, pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def chunks(items: Sequence[Any], size: int = CHUNK_ROWS) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SqliteDatabase:
    """One SQLite file in WAL mode: a fresh connection per call, short write transactions."""

    def __init__(
        self,
        path: str | Path,
        ddl: str,
        busy_timeout: float = BUSY_TIMEOUT_S,
        upgrade: Callable[[sqlite3.Connection], None] | None = None,
        cache_kib: int = CACHE_KIB,
    ) -> None:
        """Open (creating) the file and run ``ddl``, after ``upgrade`` (which brings a file an
        earlier version wrote up to date), in one write transaction. ``cache_kib``: each
        connection's page cache."""
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.cache_kib = cache_kib
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        conn = self._open()
        try:
            # Persistent in the file; the busy timeout covers a concurrent first open.
            conn.execute("PRAGMA journal_mode=WAL")
            # Not executescript(): it would commit outside the write-lock transaction.
            with self._transaction(conn):
                if upgrade is not None:
                    upgrade(conn)
                for statement in filter(str.strip, ddl.split(";")):
                    conn.execute(statement)
        finally:
            conn.close()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        # FULL: a commit the sensor relies on survives power loss, not only a crashed process.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA cache_size=-{int(self.cache_kib)}")
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        return conn

    def connect(self) -> sqlite3.Connection:
        """This thread's connection to the file (one per thread and process, kept between
        calls so that its page cache is: a fresh connection reads the B-trees' upper pages
        from the file on every call). After a fork the child opens its own."""
        held = getattr(self._local, "conn", None)
        if held is not None and self._local.pid == os.getpid():
            return held
        conn = self._open()
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _drop(self) -> None:
        """Forget this thread's connection (after an error that may have left it unusable)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and self._local.pid == os.getpid():
            with suppress(sqlite3.Error):
                conn.close()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that holds the write lock from its start, entered through the
        file's writer gate (:meth:`_gate`)."""
        conn = self.connect()
        gate = self._gate()
        try:
            with self._transaction(conn):
                yield conn
        except BaseException:
            if conn.in_transaction:
                self._drop()
            raise
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)

    def _gate(self) -> Any:
        """Take the file's writer gate: an exclusive ``flock`` on ``<file>-writer``, held for
        one write transaction. SQLite alone lets a waiting writer sleep in its busy handler
        (1, 2, 5 ... 100 ms between tries) while the holder commits and takes the lock again
        for its next transaction: two runs in flight then starved each other (the sustained
        bench's 2-in-flight run, 2026-12-04). Through the gate a waiter polls every
        ``GATE_POLL_S`` and gets the lock within a fraction of a millisecond of its release.
        Waiting longer than the busy timeout raises what SQLite raises. Returns the gate's file
        (this thread's, kept open like the connection; a crashed holder's lock dies with it)."""
        fd = getattr(self._local, "gate", None)
        if fd is None or self._local.gate_pid != os.getpid():
            opener = lambda name, flags: os.open(name, flags, 0o600)  # noqa: E731
            fd = open(f"{self.path}-writer", "ab", buffering=0, opener=opener)  # noqa: SIM115
            self._local.gate, self._local.gate_pid = fd, os.getpid()
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise sqlite3.OperationalError("database is locked") from None
                time.sleep(GATE_POLL_S)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot across its statements."""
        conn = self.connect()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                self._drop()
            raise


@dataclass(frozen=True)
class Checkpoint:
    """What one checkpoint of a file did: WAL frames it held, frames copied into the file."""

    path: Path
    wal_frames: int
    copied: int
    seconds: float

    @property
    def complete(self) -> bool:
        return self.copied == self.wal_frames


def checkpoint(path: str | Path, busy_timeout: float = 1.0) -> Checkpoint | None:
    """Copy ``path``'s WAL back into the file (a PASSIVE checkpoint: it copies what no reader
    still needs and waits for nobody). None when the file has no WAL to copy."""
    path = Path(path)
    wal = path.with_name(path.name + "-wal")
    if not path.exists() or not wal.exists() or wal.stat().st_size == 0:
        return None
    began = time.perf_counter()
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return Checkpoint(path, max(frames, 0), max(copied, 0), time.perf_counter() - began)


def delete_in_slices(db: SqliteDatabase, delete: str, stamp: int, limit: int) -> int:
    """Run ``delete`` (bound to ``stamp`` and a slice size) in slices of at most 10,000 rows,
    one short write transaction each, until it deletes nothing or ``limit`` rows are gone."""
    deleted = 0
    while deleted < limit:
        with db.write() as conn:
            count = conn.execute(delete, (stamp, min(10_000, limit - deleted))).rowcount
        deleted += count
        if not count:
            break
    return deleted


def json_list(values: Iterable[str]) -> str:
    """One bound parameter for ``IN (SELECT value FROM json_each(?))``: no variable limit."""
    return json.dumps(list(values))
