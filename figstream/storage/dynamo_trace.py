"""The trace index on DynamoDB: :class:`DynamoTraceIndex`, the aws profile's
:class:`~figstream.storage.trace.TraceIndex`, with the SQLite index's semantics call for call.

One on-demand table, ``config.table_name("trace")`` (created with the state store's tables by
``figstream aws setup``): partition key ``pk`` = ``#`` + event id, sort key ``sk`` =
``<batch id>#<line, zero-padded>``, so an event's deliveries are one ``Query`` in (batch, line)
order, whatever the table's size; the ingest step's look-up of the materialised deliveries
of its event ids (:meth:`DynamoTraceIndex.materialised`) is one such ``Query`` per id,
through the thread pool, as the claims are one ``PutItem`` per id. A row holds
:data:`~figstream.storage.trace.TRACE_SCHEMA`'s columns as plain attributes, ``expires_at``
in epoch seconds (rounded up) for DynamoDB's TTL reaper and ``expires_us``, which reads
compare, so a row expires at the instant the SQLite index's does. Writes are
``BatchWriteItem`` puts (a retried run replaces its own rows); moto never reaps, so
:meth:`DynamoTraceIndex.purge` deletes expired rows itself (a ``Scan``).

The run history lives in the same table, under partition keys that never start with ``#`` (an
event's always does): each (batch, partition, run) is two items, one under
``runs-of["<partition>","<batch>"]`` (sort key ``#`` + run id) and one under
``batches-of["<partition>","<run>"]`` (sort key ``#`` + batch id), so a batch's runs and a run's
batches of an hour are each one ``Query``. A run outside Dagster is run id ``""``.

Bad inputs tried (``tests/figstream/trace/test_trace_index.py``, run on both indexes): missing
columns, nulls in key columns, an unknown outcome, a naive timestamp, an empty event id, a
non-string id, NUL and non-ASCII text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa

from figstream.storage.aws import AwsConfig
from figstream.storage.dynamo_state import THREADS, Dynamo, _key, _n, decode_rows, encode_rows
from figstream.storage.sqlite import now_us
from figstream.storage.state import id_list
from figstream.storage.trace import (
    MATERIALISED_SCHEMA,
    NO_RUN,
    TRACE_SCHEMA,
    TRACE_TTL_S,
    TraceIndex,
    conform_both,
    run_pairs,
    run_rows,
    run_table,
)

TRACE_KIND = "trace"


def _sort_key(batch_id: str, line_no: int) -> dict[str, str]:
    return {"S": f"{batch_id}#{line_no:012d}"}


def _runs_of(batch_id: str, partition: str) -> dict[str, str]:
    return {"S": "runs-of" + orjson.dumps([partition, batch_id]).decode()}


def _batches_of(run_id: str, partition: str) -> dict[str, str]:
    return {"S": "batches-of" + orjson.dumps([partition, run_id]).decode()}


class DynamoTraceIndex(TraceIndex):
    def __init__(self, config: AwsConfig, ttl_s: int = TRACE_TTL_S, threads: int = THREADS):
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
            raise ValueError(f"ttl_s must be a positive number of seconds: {ttl_s!r}")
        self.config = config
        self.ttl_s = ttl_s
        self.db = Dynamo(config, threads)
        self.table = config.table_name(TRACE_KIND)

    def __repr__(self) -> str:
        return f"DynamoTraceIndex({self.config.prefix!r}, endpoint={self.config.endpoint_url!r})"

    def request_counts(self) -> dict[str, int]:
        """DynamoDB calls this index made, per operation."""
        return self.db.counts()

    def record(self, deliveries: pa.Table, batches: pa.Table) -> int:
        deliveries, batches = conform_both(deliveries, batches)
        if deliveries.num_rows == 0:
            return 0
        expires_us = now_us() + self.ttl_s * 1_000_000
        ttl = _n(-(-expires_us // 1_000_000))
        # Each item carries its batch's facts: one Query answers a lookup.
        shared = {
            (item["batch_id"]["S"], item["partition_key"]["S"]): item
            for item in encode_rows(batches)
        }
        # One put per key: BatchWriteItem refuses two writes of a key in one call.
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for item in encode_rows(deliveries):
            item.update(shared[(item["batch_id"]["S"], item["partition_key"]["S"])])
            key = _key(item["event_id"]["S"])
            sort = _sort_key(item["batch_id"]["S"], int(item["line_no"]["N"]))
            item.update(pk=key, sk=sort, expires_at=ttl, expires_us=_n(expires_us))
            latest[(key["S"], sort["S"])] = {"PutRequest": {"Item": item}}
        for batch, partition, run, at in run_rows(batches):
            fields = {
                "batch_id": {"S": batch}, "partition_key": {"S": partition},
                "run_id": {"S": run}, "recorded_at": _n(at),
                "expires_at": ttl, "expires_us": _n(expires_us),
            }  # fmt: skip
            for key, sort in ((_runs_of(batch, partition), _key(run)),
                              (_batches_of(run, partition), _key(batch))):  # fmt: skip
                latest[(key["S"], sort["S"])] = {
                    "PutRequest": {"Item": {**fields, "pk": key, "sk": sort}}
                }
        self.db.batch_write(self.table, list(latest.values()))
        return deliveries.num_rows

    def deliveries(self, event_id: str, now: int | None = None) -> pa.Table:
        if not isinstance(event_id, str):
            raise ValueError(f"event id must be a string, got {type(event_id).__name__}")
        stamp = now_us() if now is None else now
        items = self.db.items(
            "query",
            TableName=self.table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": _key(event_id)},
            ConsistentRead=True,
        )
        live = [item for item in items if int(item["expires_us"]["N"]) > stamp]
        return decode_rows(live, TRACE_SCHEMA)

    def materialised(self, event_ids: Sequence[str], since: int) -> pa.Table:
        ids = id_list(event_ids, "materialised")
        floor = _n(since + self.ttl_s * 1_000_000)

        def query(event_id: str) -> list[dict[str, Any]]:
            return self.db.items(
                "query",
                TableName=self.table,
                KeyConditionExpression="pk = :p",
                FilterExpression="outcome = :m AND expires_us >= :f",
                ExpressionAttributeValues={
                    ":p": _key(event_id), ":m": {"S": "materialised"}, ":f": floor,
                },
                ConsistentRead=True,
            )  # fmt: skip

        items = [item for found in self.db.each(query, ids) for item in found]
        return decode_rows(items, MATERIALISED_SCHEMA)

    def _live(self, pk: dict[str, str], stamp: int) -> list[dict[str, Any]]:
        items = self.db.items(
            "query",
            TableName=self.table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": pk},
            ConsistentRead=True,
        )
        return [item for item in items if int(item["expires_us"]["N"]) > stamp]

    def runs(self, batches: Sequence[tuple[str, str]], now: int | None = None) -> pa.Table:
        pairs = run_pairs(batches)
        stamp = now_us() if now is None else now
        found = self.db.each(lambda pair: self._live(_runs_of(*pair), stamp), pairs)
        rows = [
            (i["batch_id"]["S"], i["partition_key"]["S"], i["run_id"]["S"],
             int(i["recorded_at"]["N"]))
            for items in found for i in items
        ]  # fmt: skip
        return run_table(sorted(rows, key=lambda r: (r[0], r[1], r[3])))

    def run_batches(self, run_id: str | None, partition: str, now: int | None = None) -> list[str]:
        if not isinstance(partition, str) or not (run_id is None or isinstance(run_id, str)):
            raise ValueError("run_batches: the run id and partition must be strings")
        stamp = now_us() if now is None else now
        key = _batches_of(NO_RUN if run_id is None else run_id, partition)
        return sorted(i["batch_id"]["S"] for i in self._live(key, stamp))

    def purge(self, now: int | None = None, limit: int = 100_000) -> int:
        stamp = now_us() if now is None else now
        purged = 0
        for page in self.db.pages(
            "scan",
            TableName=self.table,
            ProjectionExpression="pk, sk",
            FilterExpression="expires_us <= :now",
            ExpressionAttributeValues={":now": _n(stamp)},
        ):
            keys = [{"DeleteRequest": {"Key": item}} for item in page][: limit - purged]
            if keys:
                self.db.batch_write(self.table, keys)
                # Counted as the SQLite index counts: deliveries, not the run history's items.
                purged += sum(k["DeleteRequest"]["Key"]["pk"]["S"].startswith("#") for k in keys)
            if purged >= limit:
                break
        return purged
