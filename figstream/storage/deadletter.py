"""The dead-letter store: every rejected record, with its reason and exact bytes, replayable.

A bad record never fails a run: the run adds it here (:meth:`DeadLetterStore.add`) and carries
on. Its id is ``"{batch_id}:{line_no}"``, so the runs of every partition that reads the same
landed batch, retries and backfills all add the same record once: adding is idempotent and
the first add's stream, partition and time stay. Conservation counts
(:meth:`DeadLetterStore.count`) therefore never double count.

:func:`replay` re-validates selected records (with a fix where one is given), re-publishes
those that now pass into the landing zone as one new batch and marks them replayed with its
landing key; the rest stay, with their new reason reported. A conflicting redelivery (a valid
event whose id was delivered before with other content) is refused unless a fix gives it a new
event id. :class:`DeadLetterStore` is the
interface; :class:`SqliteDeadLetterStore` is the local implementation (WAL, busy timeout,
short transactions: see :mod:`figstream.storage.state`) and a DynamoDB one will follow
(``add`` is a put with ``attribute_not_exists(id)``, ``mark_replayed`` an update with
``attribute_not_exists(replayed_at)``).

Bad inputs tried (see ``tests/figstream/storage/test_deadletter.py``): payloads that are not
valid UTF-8 (kept byte for byte), a null payload, missing required columns, the same id twice in
one table and across calls, a fix that is still invalid, an unknown schema version, unknown ids,
a second replay of the same ids, a publisher that fails.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from figstream.events.validation import Rejection
from figstream.events.validation import validate as validate_record
from figstream.settings import data_home
from figstream.storage.sqlite import (
    BUSY_TIMEOUT_S,
    SIDE_CACHE_KIB,
    SqliteDatabase,
    chunks,
    conform,
    json_list,
    now_us,
    to_rows,
)
from figstream.storage.state import TS

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("line_no", pa.int64(), nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("partition_key", pa.string(), nullable=False),
        pa.field("event_id", pa.string()),
        pa.field("event_time", TS),
        pa.field("code", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("payload", pa.binary(), nullable=False),
    ]
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The reason of a valid event whose id was delivered before with other content (the ingest
# step's: figstream.streaming.ingest). Not a validation failure: the record is valid, and the
# first version of its event id stays materialised, so replay refuses it (see replay()).
CONFLICTING_REDELIVERY = "conflicting_redelivery"


def deadletter_path(home: Path | None = None) -> Path:
    """``$FIGSTREAM_HOME/state/deadletter.sqlite``."""
    return (home or data_home()) / "state" / "deadletter.sqlite"


def _time(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str  # f"{batch_id}:{line_no}"
    batch_id: str
    line_no: int
    stream: str
    partition_key: str
    event_id: str | None
    event_time: datetime | None
    code: str
    detail: str
    payload: bytes  # the exact original line, possibly not UTF-8
    dead_lettered_at: datetime
    replayed_at: datetime | None = None
    replay_key: str | None = None  # landing key(s) it was re-published to, comma-separated

    @property
    def replayed(self) -> bool:
        return self.replayed_at is not None

    def payload_text(self) -> str | None:
        """The payload as text, or None when it is not valid UTF-8."""
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError:
            return None


class UnknownDeadLetterError(KeyError):
    """Ids asked for that the store does not hold."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids = tuple(ids)
        super().__init__(", ".join(self.ids))

    def __str__(self) -> str:
        noun = "id" if len(self.ids) == 1 else "ids"
        return f"no dead letter with {noun} {', '.join(map(repr, self.ids))}"


class DeadLetterStore(ABC):
    @abstractmethod
    def add(
        self, rows: pa.Table, *, stream: str | None = None, partition_key: str | None = None
    ) -> int:
        """Add rejected records (:data:`DEAD_LETTER_SCHEMA`; ``stream``/``partition_key``
        fill those columns when the table lacks them). Returns how many were new."""

    @abstractmethod
    def list(
        self,
        *,
        code: str | None = None,
        stream: str | None = None,
        partition_key: str | None = None,
        include_replayed: bool = False,
        limit: int | None = 100,
        newest_first: bool = False,
    ) -> builtins.list[DeadLetter]:
        """Matching records, oldest first (then by batch and line), or the newest first (what
        a person looking for what just went wrong wants); ``limit=None``: all."""

    @abstractmethod
    def count(
        self,
        *,
        stream: str | None = None,
        partition_key: str | None = None,
        include_replayed: bool = True,
    ) -> int: ...

    @abstractmethod
    def counts_by_code(
        self,
        *,
        stream: str | None = None,
        partition_key: str | None = None,
        include_replayed: bool = True,
    ) -> dict[str, int]: ...

    @abstractmethod
    def get(self, id: str) -> DeadLetter | None: ...

    @abstractmethod
    def mark_replayed(self, ids: Iterable[str], replay_key: str) -> int:
        """Mark not-yet-replayed records as replayed to ``replay_key``; returns how many."""


def rows_to_add(rows: pa.Table, stream: str | None, partition_key: str | None) -> pa.Table:
    """:meth:`DeadLetterStore.add`'s rows checked (:data:`DEAD_LETTER_SCHEMA`, the given
    ``stream``/``partition_key`` filled in), with their ``id`` as the first column."""
    n = rows.num_rows
    for name, value in (("stream", stream), ("partition_key", partition_key)):
        if value is not None and name not in rows.column_names:
            rows = rows.append_column(name, pa.repeat(pa.scalar(value), n))
    if "event_id" not in rows.column_names:
        rows = rows.append_column("event_id", pa.nulls(n, pa.string()))
    if "event_time" not in rows.column_names:
        rows = rows.append_column("event_time", pa.nulls(n, TS))
    table = conform(rows, DEAD_LETTER_SCHEMA, "dead-letter add")
    ids = pc.binary_join_element_wise(table["batch_id"], table["line_no"].cast(pa.string()), ":")
    return table.add_column(0, "id", ids)


# --- SQLite -------------------------------------------------------------------------------------

_DDL = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY NOT NULL,
    batch_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    stream TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    event_id TEXT,
    event_time INTEGER,
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    dead_lettered_at INTEGER NOT NULL,
    replayed_at INTEGER,
    replay_key TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_code ON dead_letters (code);
CREATE INDEX IF NOT EXISTS dead_letters_partition ON dead_letters (stream, partition_key);
CREATE INDEX IF NOT EXISTS dead_letters_order ON dead_letters (dead_lettered_at, batch_id, line_no)
"""
COLUMNS = (
    "id, batch_id, line_no, stream, partition_key, event_id, event_time, code, detail, payload,"
    " dead_lettered_at, replayed_at, replay_key"
)


def dead_letter_from_row(row: tuple) -> DeadLetter:
    (id_, batch_id, line_no, stream, partition_key, event_id, event_time, code, detail,
     payload, dead_lettered_at, replayed_at, replay_key) = row  # fmt: skip
    return DeadLetter(
        id=id_,
        batch_id=batch_id,
        line_no=line_no,
        stream=stream,
        partition_key=partition_key,
        event_id=event_id,
        event_time=_time(event_time),
        code=code,
        detail=detail,
        payload=bytes(payload),
        dead_lettered_at=_time(dead_lettered_at),
        replayed_at=_time(replayed_at),
        replay_key=replay_key,
    )


def _filters(
    code: str | None, stream: str | None, partition_key: str | None, include_replayed: bool
) -> tuple[str, list[Any]]:
    where, params = [], []
    for column, value in (("code", code), ("stream", stream), ("partition_key", partition_key)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if not include_replayed:
        where.append("replayed_at IS NULL")
    return (" WHERE " + " AND ".join(where) if where else ""), params


class SqliteDeadLetterStore(DeadLetterStore):
    def __init__(self, path: str | Path, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._db = SqliteDatabase(self.path, _DDL, busy_timeout, cache_kib=SIDE_CACHE_KIB)

    def __repr__(self) -> str:
        return f"SqliteDeadLetterStore({str(self.path)!r})"

    def add(
        self, rows: pa.Table, *, stream: str | None = None, partition_key: str | None = None
    ) -> int:
        table = rows_to_add(rows, stream, partition_key)
        stamp = now_us()
        added = 0
        for chunk in chunks(to_rows(table)):
            with self._db.write() as conn:
                added += conn.executemany(
                    f"INSERT INTO dead_letters ({COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)"
                    " ON CONFLICT (id) DO NOTHING",
                    [(*row, stamp) for row in chunk],
                ).rowcount
        return added

    def list(
        self,
        *,
        code: str | None = None,
        stream: str | None = None,
        partition_key: str | None = None,
        include_replayed: bool = False,
        limit: int | None = 100,
        newest_first: bool = False,
    ) -> builtins.list[DeadLetter]:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        where, params = _filters(code, stream, partition_key, include_replayed)
        sql = f"SELECT {COLUMNS} FROM dead_letters{where}"
        order = " DESC" if newest_first else ""
        sql += f" ORDER BY dead_lettered_at{order}, batch_id{order}, line_no{order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._db.read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [dead_letter_from_row(row) for row in rows]

    def count(
        self,
        *,
        stream: str | None = None,
        partition_key: str | None = None,
        include_replayed: bool = True,
    ) -> int:
        where, params = _filters(None, stream, partition_key, include_replayed)
        with self._db.read() as conn:
            return conn.execute(f"SELECT count(*) FROM dead_letters{where}", params).fetchone()[0]

    def counts_by_code(
        self,
        *,
        stream: str | None = None,
        partition_key: str | None = None,
        include_replayed: bool = True,
    ) -> dict[str, int]:
        where, params = _filters(None, stream, partition_key, include_replayed)
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT code, count(*) FROM dead_letters{where} GROUP BY code ORDER BY code",
                params,
            ).fetchall()
        return dict(rows)

    def get(self, id: str) -> DeadLetter | None:
        with self._db.read() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM dead_letters WHERE id = ?", (id,)).fetchone()
        return None if row is None else dead_letter_from_row(row)

    def mark_replayed(self, ids: Iterable[str], replay_key: str) -> int:
        if isinstance(ids, str):
            raise TypeError("ids must be an iterable of ids, not one string")
        stamp = now_us()
        marked = 0
        for chunk in chunks(builtins.list(dict.fromkeys(ids))):
            with self._db.write() as conn:
                marked += conn.execute(
                    "UPDATE dead_letters SET replayed_at = ?, replay_key = ?"
                    " WHERE id IN (SELECT value FROM json_each(?)) AND replayed_at IS NULL",
                    (stamp, replay_key, json_list(chunk)),
                ).rowcount
        return marked


# --- replay -------------------------------------------------------------------------------------


class Publisher(Protocol):
    """What :func:`replay` needs of :class:`figstream.ingest.publish.Publisher`."""

    def publish(self, records: Iterable[bytes | dict]) -> list[str]: ...


@dataclass(frozen=True)
class ReplayReport:
    published: tuple[str, ...] = ()  # dead-letter ids re-published and marked replayed
    landing_keys: tuple[str, ...] = ()
    still_failing: dict[str, Rejection] = field(default_factory=dict)  # id -> new reason
    already_replayed: tuple[str, ...] = ()  # selected, but replayed before: left alone
    refused: dict[str, str] = field(default_factory=dict)  # id -> why (a conflicting version)

    @property
    def selected(self) -> int:
        return (len(self.published) + len(self.still_failing) + len(self.already_replayed)
                + len(self.refused))  # fmt: skip


def _refusal(record: DeadLetter, fix: bytes | str | None, checked: Any) -> str | None:
    """Why a conflicting redelivery may not be replayed as it is (None: it may). Its event
    id's first version stays materialised, so the same id would only be dead-lettered again
    (or, fixed back to the first version, dropped as a duplicate): it lands only as another
    event, under a new id the user's fix gives it."""
    if record.code != CONFLICTING_REDELIVERY:
        return None
    if fix is None:
        return (
            f"a conflicting redelivery of event {record.event_id}, whose first version stays "
            f"materialised; to land it as another event, replay it with a fix that gives it a "
            f"new event id"
        )
    if getattr(checked, "id", None) == record.event_id:
        return (
            f"the fix keeps event id {record.event_id}, whose first version stays "
            f"materialised; give it a new event id (to change the event, publish a "
            f"job.updated)"
        )
    return None


def _one_line(payload: bytes) -> bytes:
    """A fixed payload may be pretty-printed; a landed batch holds one record per line."""
    if b"\n" in payload:
        return orjson.dumps(orjson.loads(payload))
    return payload


def replay(
    store: DeadLetterStore,
    publisher: Publisher,
    validate: Callable[[bytes], Any] = validate_record,
    *,
    ids: Iterable[str] | None = None,
    code: str | None = None,
    fixes: Mapping[str, bytes | str] | None = None,
) -> ReplayReport:
    """Re-validate and re-publish dead letters; mark those that now pass as replayed.

    Selected: the ``ids``, the ids in ``fixes`` and every not-yet-replayed record with
    ``code``; with none of the three, every not-yet-replayed record. An unknown id raises
    :class:`UnknownDeadLetterError` before anything is published. A record already replayed
    is left alone, so a second replay of the same ids republishes nothing.

    Each selected record's payload (its fix where given, else the original bytes) goes through
    ``validate``; a :class:`~figstream.events.validation.Rejection` keeps it in the store with
    the new reason reported. The rest go to ``publisher.publish`` as one batch and are then marked
    replayed with the landing key(s).

    A ``conflicting_redelivery`` (:data:`CONFLICTING_REDELIVERY`: a valid event whose id was
    delivered before with other content) is refused, reported in ``refused`` and left in the
    store, unless its fix gives it a new event id: the first version of its id stays
    materialised, so replaying it under that id would only dead-letter it again.

    Publishing before marking makes delivery at-least-once: a crash between the two (or two
    concurrent replays of the same records) lands the same events twice. That cannot create
    duplicate materialised events, because every consumer dedupes by event id
    (:func:`figstream.streaming.table_ops.dedupe_events`); a fix that changes the event id is the
    operator's explicit choice of a new event.
    """
    fixes = dict(fixes or {})
    asked = builtins.list(dict.fromkeys([*(ids or ()), *fixes]))
    selected: dict[str, DeadLetter] = {}
    missing = []
    for id_ in asked:
        record = store.get(id_)
        if record is None:
            missing.append(id_)
        else:
            selected[id_] = record
    if missing:
        raise UnknownDeadLetterError(missing)
    if code is not None or not asked:
        for record in store.list(code=code, limit=None):
            selected.setdefault(record.id, record)

    passed: builtins.list[tuple[str, bytes]] = []
    failing: dict[str, Rejection] = {}
    refused: dict[str, str] = {}
    already = []
    for id_, record in selected.items():
        if record.replayed:
            already.append(id_)
            continue
        payload = fixes.get(id_, record.payload)
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        result = validate(payload)
        why = _refusal(record, fixes.get(id_), result)
        if why is not None:
            refused[id_] = why
        elif isinstance(result, Rejection):
            failing[id_] = result
        else:
            passed.append((id_, _one_line(payload)))
    keys: builtins.list[str] = []
    if passed:
        keys = builtins.list(publisher.publish([payload for _, payload in passed]))
        if not keys:
            raise RuntimeError("the publisher returned no landing key; nothing marked replayed")
        store.mark_replayed([id_ for id_, _ in passed], ",".join(keys))
    return ReplayReport(
        published=tuple(id_ for id_, _ in passed),
        landing_keys=tuple(keys),
        still_failing=failing,
        already_replayed=tuple(already),
        refused=refused,
    )
