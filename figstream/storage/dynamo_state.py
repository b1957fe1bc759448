"""The state store on DynamoDB: :class:`DynamoStateStore`, the aws profile's
:class:`~figstream.storage.state.StateStore`, with the SQLite store's semantics call for call.

One table per kind of row (``config.table_name(kind)``), every one on-demand:

==========  ==============================  ============================  ======================
kind        key (``pk`` / ``sk``)           secondary indexes             conditional writes
==========  ==============================  ============================  ======================
jobs        shard of the job id /          ``board`` (board, job):      ``PutItem``:
            job id                          KEYS_ONLY                     ``attribute_not_exists``
                                                                          or ``version = :read``
claims      claim key                       none; TTL on ``expires_at``  ``PutItem``: absent or
                                                                          expired
registry    job id                          ``key`` (dedupe key, job),   ``UpdateItem``: the
                                            ``original`` (duplicate_of,  earlier (event_time,
                                            job; sparse)                 event_id) wins
mergers     board                           none (a handful: ``Scan``)   ``PutItem``: the later
                                                                          (merged_at, event id)
landing     (stream, partition) / batch    ``batch`` (stream,           ``PutItem``: absent
                                            batch + partition)
days        shard of the job id /          ``day`` (day, sk), ``board``  ``PutItem``:
            job id NUL day                  (board, sk): KEYS_ONLY        ``attribute_not_exists``
                                                                          or ``version = :read``
merger_days board / day                     none (a handful: ``Scan``)   ``PutItem``: the later
                                                                          (merged_at, event id)
==========  ==============================  ============================  ======================

Why it is built this way:

* Jobs are keyed by (``JOB_SHARDS`` shards of a stable hash, job id), so every job is a point
  read or write, and ``iter_jobs``/``iter_index`` stream the table in job_id order (the daily
  snapshot's contract) by querying each shard in key order and merging the shards, one page
  of each in memory. 16 shards take 16,000 job writes/s before DynamoDB splits them for heat.
* An original's registry row is flagged ``has_dups`` before any row names it, so
  ``duplicates_of`` (asked for every job a search-index run touches) reads the jobs' rows in
  batches of 100 and queries the original index only for the flagged ones.
* Key attributes carry a one-character prefix (``#``) because DynamoDB refuses an empty
  string as a key, and a job id, a board or a partition (``""``: a batch with no records of a
  stream) may be one; the row's own values are kept as plain attributes, typed by the Arrow
  schemas in :mod:`figstream.storage.state`: strings ``S`` (empty, NUL and non-ASCII text
  kept), integers and microsecond times ``N`` (exact as integers: no floats, no ``Decimal``
  surprises, since the low-level client hands numbers back as strings), booleans ``BOOL``; a
  null is an absent attribute, so an item written before a column existed (v2's
  ``salary_period``, ``city``, ``region``, ``country_code`` and the structure register of a
  job row) reads it as null, with no conversion.
* A claim holds its claimant's batch and content digest (``digest``, absent for a claim made
  without one), which a failed condition hands back (``ALL_OLD``) with no second read.
* A claim holds ``expires_at`` in epoch seconds (rounded up), the attribute DynamoDB's TTL
  reaper reads, and ``expires_us`` in microseconds, which the condition reads, so a claim
  expires at exactly the instant the SQLite store's does. moto never reaps, so
  :meth:`DynamoStateStore.purge_claims` deletes expired claims itself (a ``Scan``).
* DynamoDB has no conditional batch write, so the conditional writes go out as single calls
  through a small thread pool (``THREADS``); ``claim_mode="transact"`` claims through
  ``TransactWriteItems`` of up to 100 instead (``bench/dynamo_bench.py`` measures both). Two
  writes of one key in one call go in rounds, in the call's order, as SQLite applies them.
* ``BatchGetItem``/``BatchWriteItem`` resend ``UnprocessedKeys``/``UnprocessedItems`` with a
  bounded back-off (:func:`batch_get`, :func:`batch_write`); throttling and 5xx are retried by
  botocore's retry mode (:meth:`AwsConfig.client_config`), never by a loop here.
* Every call is counted per operation: :meth:`DynamoStateStore.request_counts`.

Reads of a step's rows are strongly consistent (``BatchGetItem``/``Query`` on the table);
reads through a secondary index (``board_jobs``' ids, ``key_members``, ``duplicates_of``,
``partitions_for``, ``indexed_batches``) are eventually consistent on real DynamoDB, as every
GSI is (moto's are immediate): a board's rows are re-read from the table, and a key recomputed
from a member that has not reached the index yet is recomputed again by the next posting under
the key.

Bad inputs tried (see ``tests/figstream/storage/test_state.py``, run on both stores, and
``tests/figstream/storage/test_dynamo_state.py``): every bad input of the SQLite store, an
empty job id, board and partition (key attributes DynamoDB refuses empty), a claim mode that
does not exist, a claim horizon that is not a positive integer, a table created twice, a
``BatchWriteItem`` whose items come back unprocessed.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from figstream.storage.aws import AwsConfig
from figstream.storage.sqlite import conform, now_us
from figstream.storage.state import (
    CLAIM_TTL_S,
    DAY_SCHEMA,
    DAY_VERSIONED_SCHEMA,
    INDEX_COLUMNS,
    INDEX_ROW_SCHEMA,
    JOB_SCHEMA,
    JOB_STATE_SCHEMA,
    MERGER_DAY_SCHEMA,
    MERGER_SCHEMA,
    REGISTRY_SCHEMA,
    VERSIONED_SCHEMA,
    Claims,
    DayFold,
    StateStore,
    claim_lists,
    day_keys,
    fold_deletes,
    id_list,
    landing_entries,
    versioned_rows,
)

JOB_SHARDS = 16  # fixed for a table's life: a job's shard is part of its key
THREADS = 16  # concurrent single-item calls (the client keeps 32 connections)
BATCH_GET = 100  # BatchGetItem's limit
BATCH_WRITE = 25  # BatchWriteItem's limit
TRANSACT = 100  # TransactWriteItems' limit
UNPROCESSED_ROUNDS = 8  # resends of unprocessed items before a call gives up
CLAIM_MODES = ("put", "transact")
STATE_KINDS = ("jobs", "claims", "registry", "mergers", "landing", "days", "merger_days")
DEADLETTER_KIND = "deadletters"
TTL_ATTRIBUTE = "expires_at"  # on the claims table
P = "#"  # key prefix: DynamoDB refuses empty strings as keys
ClaimPair = tuple[str, tuple[str, "str | None"]]  # claim key, (batch id, digest)


class DynamoError(RuntimeError):
    """A DynamoDB call that could not complete (items still unprocessed after the resends)."""


# --- values: Arrow rows <-> DynamoDB attribute values -------------------------------------------


def _kind(field: pa.Field) -> str:
    if pa.types.is_boolean(field.type):
        return "BOOL"
    if pa.types.is_integer(field.type) or pa.types.is_timestamp(field.type):
        return "N"
    if pa.types.is_binary(field.type):
        return "B"
    return "S"


def encode_rows(table: pa.Table) -> list[dict[str, Any]]:
    """DynamoDB items (attribute values) of a table's rows; a null is an absent attribute."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            column = column.cast(pa.int64())
        columns.append((field.name, _kind(field), column.to_pylist()))
    items = []
    for i in range(table.num_rows):
        item = {}
        for name, kind, values in columns:
            value = values[i]
            if value is None:
                continue
            item[name] = {kind: str(value) if kind == "N" else value}
        items.append(item)
    return items


def decode_rows(items: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` from DynamoDB items (an absent attribute: null)."""
    arrays = []
    for field in schema:
        kind = _kind(field)
        values = []
        for item in items:
            held = item.get(field.name)
            if held is None or "NULL" in held:
                values.append(None)
            elif kind == "N":
                values.append(int(held["N"]))
            else:
                values.append(held[kind])
        if pa.types.is_timestamp(field.type):
            arrays.append(pa.array(values, pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _key(value: str) -> dict[str, str]:
    return {"S": P + value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def shard(job_id: str) -> str:
    return f"s{zlib.crc32(job_id.encode('utf-8', 'surrogatepass')) % JOB_SHARDS:02d}"


# --- tables -----------------------------------------------------------------------------------


def _table(
    name: str, keys: dict[str, str], indexes: Sequence[tuple[str, dict[str, str], str]] = ()
) -> dict[str, Any]:
    """A CreateTable request: ``keys`` {attribute: HASH|RANGE}; indexes (name, keys, projection)."""
    attributes = dict.fromkeys(keys, "S")
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": a, "KeyType": t} for a, t in keys.items()],
        "BillingMode": "PAY_PER_REQUEST",
    }
    gsis = []
    for index, index_keys, projection in indexes:
        attributes.update(dict.fromkeys(index_keys, "S"))
        gsis.append(
            {
                "IndexName": index,
                "KeySchema": [{"AttributeName": a, "KeyType": t} for a, t in index_keys.items()],
                "Projection": {"ProjectionType": projection},
            }
        )
    if gsis:
        request["GlobalSecondaryIndexes"] = gsis
    request["AttributeDefinitions"] = [
        {"AttributeName": a, "AttributeType": t} for a, t in attributes.items()
    ]
    return request


def table_definitions(config: AwsConfig) -> list[dict[str, Any]]:
    """The CreateTable requests of every table the state and dead-letter stores use (for
    :func:`ensure_tables`, an infra command and the IAM policy). TTL is not part of a
    CreateTable request: :data:`TTL_ATTRIBUTE` on the claims table (:func:`ttl_settings`)."""
    name = config.table_name
    hash_range = {"pk": "HASH", "sk": "RANGE"}
    return [
        _table(
            name("jobs"), hash_range, [("board", {"board_k": "HASH", "sk": "RANGE"}, "KEYS_ONLY")]
        ),
        _table(name("claims"), {"pk": "HASH"}),
        _table(
            name("registry"),
            {"pk": "HASH"},
            [
                ("key", {"key_k": "HASH", "pk": "RANGE"}, "ALL"),
                ("original", {"orig_k": "HASH", "pk": "RANGE"}, "ALL"),
            ],
        ),
        _table(name("mergers"), {"pk": "HASH"}),
        _table(
            name("landing"),
            hash_range,
            [("batch", {"stream_k": "HASH", "batch_k": "RANGE"}, "ALL")],
        ),
        _table(
            name("days"),
            hash_range,
            [
                ("day", {"day_k": "HASH", "sk": "RANGE"}, "KEYS_ONLY"),
                ("board", {"board_k": "HASH", "sk": "RANGE"}, "KEYS_ONLY"),
            ],
        ),
        _table(name("merger_days"), hash_range),
        _table(name(DEADLETTER_KIND), {"pk": "HASH"}),
        _table(name("redirects"), {"pk": "HASH"}),  # figstream.storage.dynamo_redirects
        _table(name("trace"), hash_range),  # figstream.storage.dynamo_trace
        _table(name("books"), hash_range),  # figstream.storage.dynamo_books
    ]


def ttl_settings(config: AwsConfig) -> dict[str, str]:
    """Table name -> its TTL attribute (UpdateTimeToLive)."""
    return {config.table_name(kind): TTL_ATTRIBUTE for kind in ("claims", "trace")}


def ensure_tables(config: AwsConfig) -> list[str]:
    """Create every table of :func:`table_definitions` that does not exist yet (idempotent),
    wait until each is active, and enable TTL on the claims. Returns the table names."""
    client = config.client("dynamodb")
    names = []
    for request in table_definitions(config):
        name = request["TableName"]
        names.append(name)
        # Created before (or by a concurrent caller): fine.
        with contextlib.suppress(client.exceptions.ResourceInUseException):
            client.create_table(**request)
    waiter = client.get_waiter("table_exists")
    for name in names:
        waiter.wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    for name, attribute in ttl_settings(config).items():
        held = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if held.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
            continue
        client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
        )
    return names


# --- calls: counted, batched, resent ------------------------------------------------------------


class Dynamo:
    """One store's DynamoDB calls: each counted per operation, the single-item ones fanned
    out over a small thread pool, the batch ones with their unprocessed items resent."""

    def __init__(self, config: AwsConfig, threads: int = THREADS) -> None:
        self.config = config
        self.threads = threads
        self._init()

    def _init(self) -> None:
        self.client = self.config.client("dynamodb")
        self.errors = self.client.exceptions
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init()

    def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """``client.<operation>(**kwargs)`` (snake_case), counted."""
        with self._lock:
            self._counts[operation] += 1
        return getattr(self.client, operation)(**kwargs)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def each(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` of every item, concurrently, results in the items' order."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, "figstream-dynamo")
        return list(self._pool.map(fn, items))

    def conditional(self, operation: str, **kwargs: Any) -> dict[str, Any] | None:
        """A conditional write: its response, or None when the condition failed."""
        try:
            return self.call(operation, **kwargs)
        except self.errors.ConditionalCheckFailedException as exc:
            return {"Failed": True, "Item": exc.response.get("Item")}

    def batch_get(
        self, table: str, keys: Sequence[dict[str, Any]], projection: str | None = None
    ) -> list[dict[str, Any]]:
        """Every stored item of ``keys`` (strongly consistent), in no particular order."""
        chunks = [keys[i : i + BATCH_GET] for i in range(0, len(keys), BATCH_GET)]
        return [item for part in self.each(lambda c: self._get(table, c, projection), chunks)
                for item in part]  # fmt: skip

    def _get(self, table: str, keys: Sequence[dict], projection: str | None) -> list[dict]:
        request: dict[str, Any] = {"Keys": list(keys), "ConsistentRead": True}
        if projection:
            names = [n.strip() for n in projection.split(",")]
            request["ProjectionExpression"] = ", ".join(f"#p{i}" for i in range(len(names)))
            request["ExpressionAttributeNames"] = {f"#p{i}": n for i, n in enumerate(names)}
        out: list[dict] = []
        pending: dict[str, Any] = {table: request}
        for attempt in range(UNPROCESSED_ROUNDS + 1):
            response = self.call("batch_get_item", RequestItems=pending)
            out += response.get("Responses", {}).get(table, [])
            pending = response.get("UnprocessedKeys") or {}
            if not pending:
                return out
            _back_off(attempt)
        raise DynamoError(f"BatchGetItem on {table}: keys still unprocessed after resends")

    def batch_write(self, table: str, requests: Sequence[dict[str, Any]]) -> None:
        """``BatchWriteItem`` of Put/Delete requests, 25 a call, unprocessed ones resent."""
        chunks = [requests[i : i + BATCH_WRITE] for i in range(0, len(requests), BATCH_WRITE)]
        self.each(lambda c: self._write(table, c), chunks)

    def _write(self, table: str, requests: Sequence[dict]) -> None:
        pending: dict[str, Any] = {table: list(requests)}
        for attempt in range(UNPROCESSED_ROUNDS + 1):
            response = self.call("batch_write_item", RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                return
            _back_off(attempt)
        raise DynamoError(f"BatchWriteItem on {table}: items still unprocessed after resends")

    def pages(self, operation: str, **kwargs: Any) -> Iterator[list[dict[str, Any]]]:
        """The items of a Query or Scan, a page at a time."""
        while True:
            response = self.call(operation, **kwargs)
            yield response.get("Items", [])
            after = response.get("LastEvaluatedKey")
            if not after:
                return
            kwargs["ExclusiveStartKey"] = after

    def items(self, operation: str, **kwargs: Any) -> list[dict[str, Any]]:
        return [item for page in self.pages(operation, **kwargs) for item in page]


def _back_off(attempt: int) -> None:
    time.sleep(min(1.0, 0.05 * 2**attempt))


def in_rounds(items: Sequence[Any], key: Callable[[Any], str]) -> list[list[Any]]:
    """Items split so that no round holds a key twice, each key's items in order over the
    rounds: the writes of a round may run concurrently and still apply in the call's order."""
    rounds: list[list[Any]] = []
    seen: Counter[str] = Counter()
    for item in items:
        k = key(item)
        n = seen[k]
        seen[k] += 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(item)
    return rounds


def _same_count(stream: str, partition_key: str, batch_key: str, stored: int, count: int) -> None:
    if stored != count:
        raise ValueError(
            f"index_batches: batch {batch_key!r} of {stream}/{partition_key} "
            f"is indexed with {stored} records, not {count}; batches are immutable"
        )


# --- the store ---------------------------------------------------------------------------------

_JOB_NAMES = JOB_SCHEMA.names
_INDEX_SCHEMA = pa.schema([JOB_SCHEMA.field(n) for n in INDEX_COLUMNS])
_NEWER_MERGER = (
    "attribute_not_exists(pk) OR merged_at < :at OR (merged_at = :at AND merger_event_id < :id)"
)
_EARLIER_POSTING = (
    "attribute_not_exists(pk) OR event_time > :t OR (event_time = :t AND event_id > :e)"
)


class DynamoStateStore(StateStore):
    def __init__(
        self,
        config: AwsConfig,
        claim_ttl_s: int = CLAIM_TTL_S,
        claim_mode: str = "put",
        threads: int = THREADS,
    ) -> None:
        if isinstance(claim_ttl_s, bool) or not isinstance(claim_ttl_s, int) or claim_ttl_s <= 0:
            raise ValueError(f"claim_ttl_s must be a positive number of seconds: {claim_ttl_s!r}")
        if claim_mode not in CLAIM_MODES:
            raise ValueError(f"claim_mode {claim_mode!r} is not one of {', '.join(CLAIM_MODES)}")
        self.config = config
        self.claim_ttl_s = claim_ttl_s
        self.claim_mode = claim_mode
        self.db = Dynamo(config, threads)
        self.tables = {kind: config.table_name(kind) for kind in STATE_KINDS}

    def __repr__(self) -> str:
        return f"DynamoStateStore({self.config.prefix!r}, endpoint={self.config.endpoint_url!r})"

    def request_counts(self) -> dict[str, int]:
        """DynamoDB calls this store made, per operation (e.g. ``put_item``)."""
        return self.db.counts()

    # event claims

    def claim_versions(
        self, claims: Sequence[Claims], now: int | None = None
    ) -> list[dict[str, tuple[str, str | None]]]:
        wanted = claim_lists(claims)
        stamp = now_us() if now is None else now
        expires = stamp + self.claim_ttl_s * 1_000_000
        first: dict[str, tuple[str, str | None]] = {}  # an id's first claimant in this call
        for i, ids in enumerate(wanted):
            for event_id, digest in ids.items():
                first.setdefault(event_id, (claims[i][0], digest))
        pairs = list(first.items())
        if self.claim_mode == "transact":
            owners = self._claim_transact(pairs, stamp, expires)
        else:
            results = self.db.each(lambda pair: self._claim_put(pair, stamp, expires), pairs)
            owners = dict(zip(first, results, strict=True))
        return [{event_id: owners[event_id] for event_id in ids} for ids in wanted]

    def _claim_item(self, pair: ClaimPair, stamp: int, expires: int) -> dict:
        event_id, (batch_id, digest) = pair
        item = {
            "pk": _key(event_id),
            "batch_id": _s(batch_id),
            "claimed_at": _n(stamp),
            "expires_us": _n(expires),
            TTL_ATTRIBUTE: _n(-(-expires // 1_000_000)),  # epoch seconds, rounded up
        }
        if digest is not None:
            item["digest"] = _s(digest)
        return item

    _CLAIM_CONDITION = "attribute_not_exists(pk) OR expires_us <= :now"

    def _claim_put(self, pair: ClaimPair, stamp: int, expires: int) -> tuple[str, str | None]:
        response = self.db.conditional(
            "put_item",
            TableName=self.tables["claims"],
            Item=self._claim_item(pair, stamp, expires),
            ConditionExpression=self._CLAIM_CONDITION,
            ExpressionAttributeValues={":now": _n(stamp)},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        if response is None or not response.get("Failed"):
            return pair[1]
        return self._owner(pair[0], response.get("Item"))

    def _owner(self, event_id: str, item: dict | None) -> tuple[str, str | None]:
        if item is None:  # an emulator that does not return the item: read it
            got = self.db.batch_get(self.tables["claims"], [{"pk": _key(event_id)}])
            item = got[0]
        return item["batch_id"]["S"], item["digest"]["S"] if "digest" in item else None

    def _claim_transact(
        self, pairs: list[ClaimPair], stamp: int, expires: int
    ) -> dict[str, tuple[str, str | None]]:
        owners: dict[str, tuple[str, str | None]] = {}
        chunks = [pairs[i : i + TRANSACT] for i in range(0, len(pairs), TRANSACT)]
        for part in self.db.each(lambda c: self._transact(c, stamp, expires), chunks):
            owners.update(part)
        return owners

    def _transact(
        self, pairs: list[ClaimPair], stamp: int, expires: int
    ) -> dict[str, tuple[str, str | None]]:
        """One TransactWriteItems of conditional puts; when it is cancelled, the ids whose
        condition failed are owned by their stored claim and the rest go again."""
        owners: dict[str, tuple[str, str | None]] = {}
        pending = list(pairs)
        for attempt in range(UNPROCESSED_ROUNDS + 1):
            if not pending:
                return owners
            puts = [
                {
                    "Put": {
                        "TableName": self.tables["claims"],
                        "Item": self._claim_item(pair, stamp, expires),
                        "ConditionExpression": self._CLAIM_CONDITION,
                        "ExpressionAttributeValues": {":now": _n(stamp)},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                }
                for pair in pending
            ]
            try:
                self.db.call("transact_write_items", TransactItems=puts)
            except self.db.errors.TransactionCanceledException as exc:
                reasons = exc.response.get("CancellationReasons") or []
                again = []
                for pair, reason in zip(pending, reasons, strict=False):
                    if reason.get("Code") == "ConditionalCheckFailed":
                        owners[pair[0]] = self._owner(pair[0], reason.get("Item"))
                    else:
                        again.append(pair)
                if len(reasons) != len(pending):
                    again = [p for p in pending if p[0] not in owners]
                pending = again
                if not any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
                    _back_off(attempt)  # a conflict with another transaction: wait, resend
                continue
            owners.update(pending)
            return owners
        raise DynamoError("TransactWriteItems of claims kept being cancelled")

    def drop_claims(self, keys: Iterable[str]) -> int:
        wanted = id_list(keys, "drop_claims")
        table = self.tables["claims"]
        held = self.db.batch_get(table, [{"pk": _key(k)} for k in wanted], "pk")
        self.db.batch_write(table, [{"DeleteRequest": {"Key": {"pk": i["pk"]}}} for i in held])
        return len(held)

    def purge_claims(self, now: int | None = None, limit: int = 100_000) -> int:
        stamp = now_us() if now is None else now
        table = self.tables["claims"]
        expired: list[dict] = []
        for page in self.db.pages(
            "scan",
            TableName=table,
            ProjectionExpression="pk",
            FilterExpression="expires_us <= :now",
            ExpressionAttributeValues={":now": _n(stamp)},
        ):
            expired += page
            if len(expired) >= limit:
                break
        expired = expired[:limit]
        self.db.batch_write(table, [{"DeleteRequest": {"Key": {"pk": i["pk"]}}} for i in expired])
        return len(expired)

    # job state

    def _job_key(self, job_id: str) -> dict[str, Any]:
        return {"pk": _s(shard(job_id)), "sk": _key(job_id)}

    def _jobs(self, job_ids: list[str], schema: pa.Schema = VERSIONED_SCHEMA) -> pa.Table:
        items = self.db.batch_get(self.tables["jobs"], [self._job_key(j) for j in job_ids])
        return decode_rows(items, schema).sort_by("job_id")

    def get_jobs(self, job_ids: Iterable[str]) -> pa.Table:
        return self._jobs(id_list(job_ids, "get_jobs"))

    def put_jobs(self, rows: pa.Table) -> list[str]:
        table = versioned_rows(rows, VERSIONED_SCHEMA, "put_jobs")
        items = encode_rows(table)
        jobs = table["job_id"].to_pylist()
        refused: set[int] = set()
        for round_ in in_rounds(list(range(len(jobs))), lambda i: jobs[i]):
            done = self.db.each(lambda i: self._put_job(jobs[i], items[i]), round_)
            refused.update(i for i, ok in zip(round_, done, strict=True) if not ok)
        return [jobs[i] for i in sorted(refused)]

    def _put_job(self, job_id: str, item: dict[str, Any]) -> bool:
        return self._put_versioned("jobs", self._job_key(job_id), item)

    def _put_versioned(self, kind: str, key: dict[str, Any], item: dict[str, Any]) -> bool:
        """``PutItem`` of a row read at ``version`` (0: absent), only if it still is."""
        response = self.db.conditional("put_item", **self._versioned_put(kind, key, item))
        return not (response or {}).get("Failed")

    def _versioned_put(
        self, kind: str, key: dict[str, Any], item: dict[str, Any]
    ) -> dict[str, Any]:
        """The conditional ``Put`` of a row read at its ``version`` attribute (popped)."""
        read = int(item.pop("version")["N"])
        item.update(key, version=_n(read + 1))
        if "board" in item:
            item["board_k"] = _key(item["board"]["S"])
        request: dict[str, Any] = {"TableName": self.tables[kind], "Item": item}
        if read == 0:
            request["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            request["ConditionExpression"] = "version = :read"
            request["ExpressionAttributeValues"] = {":read": _n(read)}
        return request

    def board_jobs(self, board: str, batch_rows: int = 10_000) -> Iterator[pa.Table]:
        ids: list[str] = []
        for page in self.db.pages(
            "query",
            TableName=self.tables["jobs"],
            IndexName="board",
            KeyConditionExpression="board_k = :b",
            ExpressionAttributeValues={":b": _key(board)},
            Limit=min(batch_rows, 1000),
        ):
            ids += [item["sk"]["S"][1:] for item in page]
            while len(ids) >= batch_rows:
                yield from self._board_rows(board, ids[:batch_rows])
                ids = ids[batch_rows:]
        if ids:
            yield from self._board_rows(board, ids)

    def _board_rows(self, board: str, ids: list[str]) -> Iterator[pa.Table]:
        rows = self._jobs(ids)  # the index is eventually consistent: the table decides
        rows = rows.filter(pc.fill_null(pc.equal(rows["board"], board), False))
        if rows.num_rows:
            yield rows

    def jobs(
        self,
        *,
        board: str | None = None,
        job_ids: Iterable[str] | None = None,
        status: str | None = None,
    ) -> pa.Table:
        if job_ids is not None:
            parts: Iterable[pa.Table] = [self._jobs(id_list(job_ids, "jobs"))]
        elif board is not None:
            parts = self.board_jobs(board)
        else:
            parts = self.iter_jobs()
        out = []
        for part in parts:
            if board is not None:
                part = part.filter(pc.fill_null(pc.equal(part["board"], board), False))
            if status is not None:
                part = part.filter(pc.fill_null(pc.equal(part["status"], status), False))
            part = part.rename_columns(
                ["reason" if n == "expired_reason" else n for n in part.column_names]
            )
            out.append(part.select(JOB_STATE_SCHEMA.names).cast(JOB_STATE_SCHEMA))
        return pa.concat_tables([JOB_STATE_SCHEMA.empty_table(), *out]).combine_chunks()

    def _shard_items(
        self, name: str, page_rows: int, kind: str = "jobs"
    ) -> Iterator[dict[str, Any]]:
        for page in self.db.pages(
            "query",
            TableName=self.tables[kind],
            KeyConditionExpression="pk = :s",
            ExpressionAttributeValues={":s": _s(name)},
            ConsistentRead=True,
            Limit=page_rows,
        ):
            yield from page

    def _iter_items(self, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
        """Every job item in job_id order, ``batch_rows`` at a time: the shards' queries
        (each in key order) merged, one page of each shard held at a time."""
        page_rows = max(100, min(1000, batch_rows // JOB_SHARDS))
        streams = [self._shard_items(f"s{i:02d}", page_rows) for i in range(JOB_SHARDS)]
        batch: list[dict[str, Any]] = []
        for item in heapq.merge(*streams, key=lambda item: item["sk"]["S"]):
            batch.append(item)
            if len(batch) >= batch_rows:
                yield batch
                batch = []
        if batch:
            yield batch

    def iter_jobs(self, batch_rows: int = 50_000) -> Iterator[pa.Table]:
        for items in self._iter_items(batch_rows):
            yield decode_rows(items, JOB_SCHEMA)

    def mergers(self) -> pa.Table:
        items = self.db.items("scan", TableName=self.tables["mergers"], ConsistentRead=True)
        return decode_rows(items, MERGER_SCHEMA).sort_by("board")

    def put_mergers(self, rows: pa.Table) -> int:
        table = conform(rows, MERGER_SCHEMA, "put_mergers")
        stored = 0
        for row, item in zip(table.to_pylist(), encode_rows(table), strict=True):
            stored += self._put_merger("mergers", {"pk": _key(row["board"])}, item)
        return stored

    def _put_merger(self, kind: str, key: dict[str, Any], item: dict[str, Any]) -> bool:
        """``PutItem`` of a merger, only if it is later than the one stored under ``key``."""
        response = self.db.conditional(
            "put_item",
            TableName=self.tables[kind],
            Item={**item, **key},
            ConditionExpression=_NEWER_MERGER,
            ExpressionAttributeValues={":at": item["merged_at"], ":id": item["merger_event_id"]},
        )
        return not (response or {}).get("Failed")

    # day components

    _DAY_FLAG = {"pk": _s("#meta"), "sk": _s("#day_rows_done")}  # no shard is named "#meta"

    @staticmethod
    def _day_key(job_id: str, day: str) -> dict[str, Any]:
        # NUL sorts first, so a job's rows are contiguous and in day order under its shard.
        return {"pk": _s(shard(job_id)), "sk": _key(f"{job_id}\x00{day}")}

    def get_job_days(self, keys: Iterable[tuple[str, str]]) -> pa.Table:
        wanted = day_keys(keys, "get_job_days")
        items = self.db.batch_get(self.tables["days"], [self._day_key(*k) for k in wanted])
        rows = decode_rows(items, DAY_VERSIONED_SCHEMA)
        return rows.sort_by([("job_id", "ascending"), ("day", "ascending")])

    def put_job_days(self, rows: pa.Table) -> list[tuple[str, str]]:
        table = versioned_rows(rows, DAY_VERSIONED_SCHEMA, "put_job_days")
        items = encode_rows(table)
        keys = list(zip(table["job_id"].to_pylist(), table["day"].to_pylist(), strict=True))
        refused: set[int] = set()
        for round_ in in_rounds(list(range(len(keys))), lambda i: "\x00".join(keys[i])):
            done = self.db.each(lambda i: self._put_day(keys[i], items[i]), round_)
            refused.update(i for i, ok in zip(round_, done, strict=True) if not ok)
        return [keys[i] for i in sorted(refused)]

    def _put_day(self, key: tuple[str, str], item: dict[str, Any]) -> bool:
        return self._put_versioned("days", {**self._day_key(*key), "day_k": _key(key[1])}, item)

    def fold_job_days(self, rows: pa.Table, gone: Iterable[tuple[str, str, int]]) -> list[str]:
        """One ``TransactWriteItems`` per job: its row's conditional ``Put`` and the
        conditional ``Delete`` of each folded row (a job with more rows than a transaction
        holds takes several, each writing the whole join again: a refusal between them leaves
        rows that the join already holds, which reads the same)."""
        table = versioned_rows(rows, DAY_VERSIONED_SCHEMA, "fold_job_days")
        deletes = fold_deletes(table, gone)
        items = encode_rows(table)
        keys = list(zip(table["job_id"].to_pylist(), table["day"].to_pylist(), strict=True))
        done = self.db.each(
            lambda i: self._fold_job(keys[i], items[i], deletes.get(keys[i][0], [])),
            list(range(len(keys))),
        )
        return [keys[i][0] for i, ok in enumerate(done) if not ok]

    def _fold_job(
        self, key: tuple[str, str], item: dict[str, Any], old: list[tuple[str, int]]
    ) -> bool:
        version = int(item["version"]["N"])
        for start in range(0, max(len(old), 1), TRANSACT - 1):
            put = dict(item, version=_n(version))
            where = {**self._day_key(*key), "day_k": _key(key[1])}
            request = self._versioned_put("days", where, put)
            actions: list[dict[str, Any]] = [{"Put": request}]
            for day, held in old[start : start + TRANSACT - 1]:
                actions.append(
                    {
                        "Delete": {
                            "TableName": self.tables["days"],
                            "Key": self._day_key(key[0], day),
                            "ConditionExpression": "version = :read",
                            "ExpressionAttributeValues": {":read": _n(held)},
                        }
                    }
                )
            try:
                self.db.call("transact_write_items", TransactItems=actions)
            except self.db.errors.TransactionCanceledException:
                return False
            version += 1
        return True

    _FOLD_FLAG = {"pk": _s("#meta"), "sk": _s("#day_fold")}

    def day_fold(self) -> DayFold:
        held = self.db.batch_get(self.tables["days"], [self._FOLD_FLAG])
        item = held[0] if held else {}
        return DayFold(**{f: item[f]["S"] if f in item else None for f in ("horizon", "done")})

    def set_day_fold(self, fold: DayFold) -> None:
        """A read of the flag and a ``PutItem`` (the compaction run is its one writer)."""
        held = self.day_fold()
        item = dict(self._FOLD_FLAG)
        for field in ("horizon", "done"):
            days = [d for d in (getattr(held, field), getattr(fold, field)) if d is not None]
            if days:
                item[field] = _s(max(days))
        self.db.call("put_item", TableName=self.tables["days"], Item=item)

    def _job_day_items(self, job_id: str, until: str) -> list[dict[str, Any]]:
        items = self.db.items(
            "query",
            TableName=self.tables["days"],
            KeyConditionExpression="pk = :s AND sk BETWEEN :a AND :b",
            ExpressionAttributeValues={
                ":s": _s(shard(job_id)),
                ":a": _key(f"{job_id}\x00"),
                ":b": _key(f"{job_id}\x00{until}"),
            },
            ConsistentRead=True,
        )
        return [i for i in items if i["job_id"]["S"] == job_id]

    def job_days(self, job_ids: Iterable[str], until: str) -> pa.Table:
        """One ``Query`` per job (its rows up to ``until``), fanned out."""
        self.check_as_of(until)
        ids = id_list(job_ids, "job_days")
        parts = self.db.each(lambda j: self._job_day_items(j, until), ids)
        rows = decode_rows([i for part in parts for i in part], DAY_SCHEMA)
        return rows.sort_by([("job_id", "ascending"), ("day", "ascending")])

    def _index_ids(self, index: str, attribute: str, value: str, batch_rows: int):
        batch: list[str] = []
        last = None
        for page in self.db.pages(
            "query",
            TableName=self.tables["days"],
            IndexName=index,
            KeyConditionExpression=f"{attribute} = :v",
            ExpressionAttributeValues={":v": _key(value)},
            Limit=min(batch_rows, 1000),
        ):
            for item in page:
                job_id = item["sk"]["S"][1:].rsplit("\x00", 1)[0]
                if job_id != last:  # the index is in sk order: a job's rows are together
                    batch.append(job_id)
                    last = job_id
            while len(batch) >= batch_rows:
                yield batch[:batch_rows]
                batch = batch[batch_rows:]
        if batch:
            yield batch

    def day_job_ids(self, day: str, batch_rows: int = 10_000) -> Iterator[list[str]]:
        return self._index_ids("day", "day_k", day, batch_rows)

    def board_day_job_ids(self, board: str, batch_rows: int = 10_000) -> Iterator[list[str]]:
        return self._index_ids("board", "board_k", board, batch_rows)

    def iter_job_days(self, until: str, batch_jobs: int = 20_000) -> Iterator[pa.Table]:
        """The shards queried in key order and merged, as :meth:`iter_jobs` does."""
        self.check_as_of(until)
        streams = [self._shard_items(f"s{i:02d}", 1000, "days") for i in range(JOB_SHARDS)]
        batch: list[dict[str, Any]] = []
        jobs, last = 0, None
        for item in heapq.merge(*streams, key=lambda item: item["sk"]["S"]):
            job_id = item["job_id"]["S"]
            if job_id != last:
                if jobs >= batch_jobs:
                    yield self._days_until(batch, until)
                    batch, jobs = [], 0
                jobs, last = jobs + 1, job_id
            batch.append(item)
        if batch:
            yield self._days_until(batch, until)

    @staticmethod
    def _days_until(items: list[dict[str, Any]], until: str) -> pa.Table:
        rows = decode_rows(items, DAY_SCHEMA)
        return rows.filter(pc.less_equal(rows["day"], until))

    def put_merger_days(self, rows: pa.Table) -> int:
        table = conform(rows, MERGER_DAY_SCHEMA, "put_merger_days")
        stored = 0
        for row, item in zip(table.to_pylist(), encode_rows(table), strict=True):
            key = {"pk": _key(row["board"]), "sk": _s(row["day"])}
            stored += self._put_merger("merger_days", key, item)
        return stored

    def merger_days(self, until: str) -> pa.Table:
        items = self.db.items("scan", TableName=self.tables["merger_days"], ConsistentRead=True)
        rows = decode_rows(items, MERGER_DAY_SCHEMA)
        rows = rows.filter(pc.less_equal(rows["day"], until))
        return rows.sort_by([("board", "ascending"), ("day", "ascending")])

    def day_rows_pending(self) -> bool:
        """A ``GetItem`` of the done flag; without it, a store with jobs is pending (one
        ``Scan`` of one item), and one without is flagged done (it has nothing to build)."""
        if getattr(self, "_days_done", False):
            return False
        if self.db.batch_get(self.tables["days"], [self._DAY_FLAG], "pk"):
            self._days_done = True
            return False
        held = self.db.call(
            "scan", TableName=self.tables["jobs"], Limit=1, ProjectionExpression="pk"
        )
        if held.get("Items"):
            return True
        self.day_rows_done()
        return False

    def day_rows_done(self) -> None:
        self.db.call("put_item", TableName=self.tables["days"], Item=dict(self._DAY_FLAG))
        self._days_done = True

    # the dedupe registry

    def _registry_rows(self, items: list[dict[str, Any]]) -> pa.Table:
        return decode_rows(items, REGISTRY_SCHEMA).sort_by("job_id")

    def first_postings(self, job_ids: Iterable[str]) -> pa.Table:
        ids = id_list(job_ids, "first_postings")
        items = self.db.batch_get(self.tables["registry"], [{"pk": _key(j)} for j in ids])
        return self._registry_rows(items)

    def register(self, rows: pa.Table) -> int:
        schema = pa.schema(list(REGISTRY_SCHEMA)[:-1])
        table = conform(rows, schema, "register")
        items = encode_rows(table)
        jobs = table["job_id"].to_pylist()
        stored = 0
        for round_ in in_rounds(list(range(len(jobs))), lambda i: jobs[i]):
            stored += sum(self.db.each(lambda i: self._register(jobs[i], items[i]), round_))
        return stored

    def _register(self, job_id: str, item: dict[str, Any]) -> bool:
        values = {
            ":j": item["job_id"],
            ":k": item["dedupe_key"],
            ":key_k": _key(item["dedupe_key"]["S"]),
            ":t": item["event_time"],
            ":e": item["event_id"],
        }
        update = "SET job_id = :j, dedupe_key = :k, key_k = :key_k, event_time = :t, event_id = :e"
        if "board" in item:
            update += ", board = :b"
            values[":b"] = item["board"]
        else:
            update += " REMOVE board"
        response = self.db.conditional(
            "update_item",
            TableName=self.tables["registry"],
            Key={"pk": _key(job_id)},
            UpdateExpression=update,
            ConditionExpression=_EARLIER_POSTING,
            ExpressionAttributeValues=values,
        )
        return not (response or {}).get("Failed")

    def _query_each(self, index: str, attribute: str, values: list[str]) -> pa.Table:
        def members(value: str) -> list[dict]:
            return self.db.items(
                "query",
                TableName=self.tables["registry"],
                IndexName=index,
                KeyConditionExpression=f"{attribute} = :v",
                ExpressionAttributeValues={":v": _key(value)},
            )

        return self._registry_rows([i for part in self.db.each(members, values) for i in part])

    def key_members(self, dedupe_keys: Iterable[str]) -> pa.Table:
        return self._query_each("key", "key_k", id_list(dedupe_keys, "key_members"))

    def duplicates_of(self, job_ids: Iterable[str]) -> pa.Table:
        """One ``BatchGetItem`` per 100 jobs, then a ``Query`` of the original index for
        only those flagged ``has_dups`` (nearly every job is no one's original)."""
        ids = id_list(job_ids, "duplicates_of")
        rows = self.db.batch_get(
            self.tables["registry"], [{"pk": _key(j)} for j in ids], "job_id, has_dups"
        )
        flagged = sorted(i["job_id"]["S"] for i in rows if "has_dups" in i)
        return self._query_each("original", "orig_k", flagged)

    def set_duplicates(self, pairs: Sequence[tuple[str, str | None]]) -> int:
        """The originals are flagged ``has_dups`` first, so a row never names an original
        that :meth:`duplicates_of` would skip. A flag stays when its duplicates go (it only
        costs that original a query)."""
        pairs = list(pairs)
        originals = sorted({original for _, original in pairs if original is not None})
        self.db.each(self._flag_original, originals)
        changed = 0
        for round_ in in_rounds(pairs, lambda pair: pair[0]):
            changed += sum(self.db.each(self._set_duplicate, round_))
        return changed

    def _flag_original(self, job_id: str) -> None:
        self.db.conditional(
            "update_item",
            TableName=self.tables["registry"],
            Key={"pk": _key(job_id)},
            UpdateExpression="SET has_dups = :t",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(has_dups)",
            ExpressionAttributeValues={":t": {"BOOL": True}},
        )

    def _set_duplicate(self, pair: tuple[str, str | None]) -> bool:
        job_id, original = pair
        request: dict[str, Any] = {
            "TableName": self.tables["registry"],
            "Key": {"pk": _key(job_id)},
        }
        if original is None:
            request.update(
                UpdateExpression="REMOVE duplicate_of, orig_k",
                ConditionExpression="attribute_exists(pk) AND attribute_exists(duplicate_of)",
            )
        else:
            request.update(
                UpdateExpression="SET duplicate_of = :d, orig_k = :g",
                ConditionExpression=(
                    "attribute_exists(pk) AND"
                    " (attribute_not_exists(duplicate_of) OR duplicate_of <> :d)"
                ),
                ExpressionAttributeValues={":d": _s(original), ":g": _key(original)},
            )
        response = self.db.conditional("update_item", **request)
        return not (response or {}).get("Failed")

    def registry(self) -> pa.Table:
        items = self.db.items("scan", TableName=self.tables["registry"], ConsistentRead=True)
        table = decode_rows(items, REGISTRY_SCHEMA)
        return table.sort_by([("event_time", "ascending"), ("event_id", "ascending")])

    def counts(self) -> dict[str, int]:
        """Two full scans (a count of everything): for checks and views, not runs."""
        jobs = active = 0
        for page in self.db.pages(
            "scan",
            TableName=self.tables["jobs"],
            ProjectionExpression="#s",
            ExpressionAttributeNames={"#s": "status"},
            ConsistentRead=True,
        ):
            jobs += len(page)
            active += sum(item["status"]["S"] == "active" for item in page)
        registered = duplicates = 0
        for page in self.db.pages(
            "scan", TableName=self.tables["registry"], ProjectionExpression="pk, duplicate_of",
            ConsistentRead=True,
        ):  # fmt: skip
            registered += len(page)
            duplicates += sum("duplicate_of" in item for item in page)
        return {"jobs": jobs, "active": active, "registered": registered, "duplicates": duplicates}

    # the search index

    def _visible(self, rows: pa.Table) -> pa.Array:
        """Whether each job row is shown: active, and not a duplicate of an active job."""
        active = pc.fill_null(pc.equal(rows["status"], "active"), False)
        shown = rows["job_id"].filter(active).to_pylist()
        originals: dict[str, str] = {}
        if shown:
            items = self.db.batch_get(
                self.tables["registry"], [{"pk": _key(j)} for j in shown], "job_id, duplicate_of"
            )
            originals = {
                i["job_id"]["S"]: i["duplicate_of"]["S"] for i in items if "duplicate_of" in i
            }
        hidden: set[str] = set()
        if originals:
            wanted = sorted(set(originals.values()))
            statuses = self.db.batch_get(
                self.tables["jobs"], [self._job_key(j) for j in wanted], "job_id, status"
            )
            live = {i["job_id"]["S"] for i in statuses if i["status"]["S"] == "active"}
            hidden = {job for job, original in originals.items() if original in live}
        flags = [
            ok and job not in hidden
            for job, ok in zip(rows["job_id"].to_pylist(), active.to_pylist(), strict=True)
        ]
        return pa.array(flags, pa.bool_())

    def index_rows(self, job_ids: Iterable[str]) -> pa.Table:
        rows = self._jobs(id_list(job_ids, "index_rows"))
        out = rows.select(INDEX_COLUMNS).append_column("visible", self._visible(rows))
        return out.cast(INDEX_ROW_SCHEMA)

    def iter_index(self, batch_rows: int = 50_000) -> Iterator[pa.Table]:
        for rows in self.iter_jobs(batch_rows):
            shown = rows.filter(self._visible(rows)).select(INDEX_COLUMNS).cast(_INDEX_SCHEMA)
            if shown.num_rows:
                yield shown

    # the landing index

    @staticmethod
    def _landing_pk(stream: str, partition_key: str) -> dict[str, str]:
        return _key(json.dumps([stream, partition_key], ensure_ascii=False))

    def index_batches(self, stream: str, entries: Iterable[tuple[str, str, int]]) -> int:
        """Entries already indexed are read first, so a call that contradicts one is refused
        before anything of it is written (as SQLite's transaction refuses it); an entry a
        concurrent caller indexes in between is still compared, by the conditional put."""
        wanted = landing_entries(entries)
        table = self.tables["landing"]

        def key(partition_key: str, batch_key: str) -> dict[str, Any]:
            return {"pk": self._landing_pk(stream, partition_key), "sk": _key(batch_key)}

        held = self.db.batch_get(table, [key(*k) for k in wanted], "pk, sk, record_count")
        stored = {(i["pk"]["S"], i["sk"]["S"]): int(i["record_count"]["N"]) for i in held}
        new = []
        for (partition_key, batch_key), count in wanted.items():
            k = key(partition_key, batch_key)
            was = stored.get((k["pk"]["S"], k["sk"]["S"]))
            if was is None:
                new.append(((partition_key, batch_key), count))
            else:
                _same_count(stream, partition_key, batch_key, was, count)
        stamp = now_us()

        def put(entry: tuple[tuple[str, str], int]) -> bool:
            (partition_key, batch_key), count = entry
            response = self.db.conditional(
                "put_item",
                TableName=table,
                Item={
                    **key(partition_key, batch_key),
                    "stream_k": _key(stream),
                    "batch_k": _key(f"{batch_key}\x00{partition_key}"),
                    "stream": _s(stream),
                    "partition_key": _s(partition_key),
                    "batch_key": _s(batch_key),
                    "record_count": _n(count),
                    "indexed_at": _n(stamp),
                },
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            if not (response or {}).get("Failed"):
                return True
            item = response.get("Item") or self.db.batch_get(table, [key(*entry[0])])[0]
            _same_count(stream, partition_key, batch_key, int(item["record_count"]["N"]), count)
            return False

        return sum(self.db.each(put, new))

    def batches_for(self, stream: str, partition_key: str) -> list[str]:
        return list(self.batch_counts(stream, partition_key))

    def _by_batch(self, stream: str, batch_key: str | None = None) -> list[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": self.tables["landing"],
            "IndexName": "batch",
            "KeyConditionExpression": "stream_k = :s",
            "ExpressionAttributeValues": {":s": _key(stream)},
            "ProjectionExpression": "batch_key, partition_key",
        }
        if batch_key is not None:
            request["KeyConditionExpression"] += " AND begins_with(batch_k, :b)"
            request["ExpressionAttributeValues"][":b"] = _key(f"{batch_key}\x00")
        items = self.db.items("query", **request)
        if batch_key is not None:
            items = [i for i in items if i["batch_key"]["S"] == batch_key]
        return items

    def indexed_batches(self, stream: str) -> set[str]:
        return {item["batch_key"]["S"] for item in self._by_batch(stream)}

    def batch_counts(self, stream: str, partition_key: str) -> dict[str, int]:
        items = self.db.items(
            "query",
            TableName=self.tables["landing"],
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": self._landing_pk(stream, partition_key)},
            ProjectionExpression="batch_key, record_count",
            ConsistentRead=True,
        )
        return {i["batch_key"]["S"]: int(i["record_count"]["N"]) for i in items}

    def partitions_for(self, stream: str, batch_key: str) -> list[str]:
        return sorted(item["partition_key"]["S"] for item in self._by_batch(stream, batch_key))
