"""The dead-letter store on DynamoDB: :class:`DynamoDeadLetterStore`, the aws profile's
:class:`~figstream.storage.deadletter.DeadLetterStore`, with the SQLite store's semantics.

One item per rejected record in ``config.table_name("deadletters")`` (created by
:func:`figstream.storage.dynamo_state.ensure_tables`), keyed by its id
(``"{batch_id}:{line_no}"``):

* ``add`` is a ``PutItem`` with ``attribute_not_exists(pk)``, so every run, retry and
  backfill that reads the same landed batch adds a record once, and the first add's stream,
  partition and time stay; two rows of one id in one call go in order (the first wins);
* ``mark_replayed`` is an ``UpdateItem`` with ``attribute_not_exists(replayed_at)``, so a
  second replay of the same ids marks nothing;
* ``list``, ``count`` and ``counts_by_code`` scan the table with a filter: it holds rejects
  only (a few per thousand events, and the operator replays them), and these are operator
  commands (``figstream dlq``), never a run's reads.

A DynamoDB item holds at most 400 KB. A payload (or a detail) over :data:`INLINE_BYTES` is
never lost and never refused: its bytes go to S3, in the profile's bucket under
``deadletters/blobs/<sha256>`` (content-addressed, so a second add of the same record writes
the same object), before the item that names it is put; reading the record reads them back.

Bad inputs tried (see ``tests/figstream/storage/test_deadletter.py``, run on both stores,
and ``tests/figstream/storage/test_dynamo_deadletter.py``): every bad input of the SQLite
store, a payload over DynamoDB's item limit, an id with characters S3 keys escape, a detail
with NUL and non-ASCII text, a negative limit.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from figstream.storage.aws import AwsConfig
from figstream.storage.deadletter import (
    COLUMNS,
    DeadLetter,
    DeadLetterStore,
    dead_letter_from_row,
    rows_to_add,
)
from figstream.storage.dynamo_state import (
    DEADLETTER_KIND,
    THREADS,
    Dynamo,
    _key,
    _n,
    _s,
    encode_rows,
    in_rounds,
)
from figstream.storage.sqlite import now_us

INLINE_BYTES = 128 * 1024  # larger payloads and details go to S3 (an item holds 400 KB)
BLOB_PREFIX = "deadletters/blobs/"
_BLOBS = ("payload", "detail")
_ORDER = COLUMNS.split(", ")  # the order dead_letter_from_row takes


class DynamoDeadLetterStore(DeadLetterStore):
    def __init__(self, config: AwsConfig, threads: int = THREADS) -> None:
        self.config = config
        self.db = Dynamo(config, threads)
        self.table = config.table_name(DEADLETTER_KIND)

    def __repr__(self) -> str:
        return (
            f"DynamoDeadLetterStore({self.config.prefix!r}, endpoint={self.config.endpoint_url!r})"
        )

    def request_counts(self) -> dict[str, int]:
        """DynamoDB calls this store made, per operation."""
        return self.db.counts()

    # blobs over the item limit

    def _s3(self) -> Any:
        return self.config.client("s3")

    def _put_blob(self, data: bytes) -> str:
        key = BLOB_PREFIX + hashlib.sha256(data).hexdigest()
        self._s3().put_object(Bucket=self.config.bucket_name, Key=key, Body=data)
        return key

    def _get_blob(self, key: str) -> bytes:
        return self._s3().get_object(Bucket=self.config.bucket_name, Key=key)["Body"].read()

    # writes

    def add(
        self, rows: pa.Table, *, stream: str | None = None, partition_key: str | None = None
    ) -> int:
        table = rows_to_add(rows, stream, partition_key)
        stamp = now_us()
        items = encode_rows(table)
        for item in items:
            item["pk"] = _key(item["id"]["S"])
            item["dead_lettered_at"] = _n(stamp)
        ids = table["id"].to_pylist()
        added = 0
        for round_ in in_rounds(list(range(len(ids))), lambda i: ids[i]):
            added += sum(self.db.each(lambda i: self._add(items[i]), round_))
        return added

    def _add(self, item: dict[str, Any]) -> bool:
        for name in _BLOBS:
            kind, value = next(iter(item[name].items()))
            data = value if kind == "B" else value.encode("utf-8", "surrogatepass")
            if len(data) > INLINE_BYTES:
                item[f"{name}_s3"] = _s(self._put_blob(data))
                del item[name]
        response = self.db.conditional(
            "put_item",
            TableName=self.table,
            Item=item,
            ConditionExpression="attribute_not_exists(pk)",
        )
        return not (response or {}).get("Failed")

    def mark_replayed(self, ids: Iterable[str], replay_key: str) -> int:
        if isinstance(ids, str):
            raise TypeError("ids must be an iterable of ids, not one string")
        stamp = now_us()

        def mark(id_: str) -> bool:
            response = self.db.conditional(
                "update_item",
                TableName=self.table,
                Key={"pk": _key(id_)},
                UpdateExpression="SET replayed_at = :at, replay_key = :key",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(replayed_at)",
                ExpressionAttributeValues={":at": _n(stamp), ":key": _s(replay_key)},
            )
            return not (response or {}).get("Failed")

        return sum(self.db.each(mark, builtins.list(dict.fromkeys(ids))))

    # reads

    def _record(self, item: dict[str, Any]) -> DeadLetter:
        for name in _BLOBS:
            if f"{name}_s3" in item:
                data = self._get_blob(item[f"{name}_s3"]["S"])
                item[name] = {"B": data} if name == "payload" else {"S": data.decode("utf-8")}
        values = []
        for name in _ORDER:
            held = item.get(name)
            if held is None:
                values.append(None)
            else:
                kind, value = next(iter(held.items()))
                values.append(int(value) if kind == "N" else value)
        return dead_letter_from_row(tuple(values))

    def _scan(
        self,
        code: str | None,
        stream: str | None,
        partition_key: str | None,
        include_replayed: bool,
        **request: Any,
    ) -> list[dict[str, Any]]:
        where, names, values = [], {}, {}
        for n, (column, value) in enumerate(
            (("code", code), ("stream", stream), ("partition_key", partition_key))
        ):
            if value is not None:
                where.append(f"#f{n} = :f{n}")
                names[f"#f{n}"] = column
                values[f":f{n}"] = _s(value)
        if not include_replayed:
            where.append("attribute_not_exists(replayed_at)")
        if where:
            request["FilterExpression"] = " AND ".join(where)
        if names:
            request["ExpressionAttributeNames"] = {**request.get("ExpressionAttributeNames", {}),
                                                   **names}  # fmt: skip
        if values:
            request["ExpressionAttributeValues"] = values
        return self.db.items("scan", TableName=self.table, ConsistentRead=True, **request)

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
        items = self._scan(code, stream, partition_key, include_replayed)
        items.sort(
            key=lambda i: (
                int(i["dead_lettered_at"]["N"]),
                i["batch_id"]["S"],
                int(i["line_no"]["N"]),
            ),
            reverse=newest_first,
        )
        return [self._record(item) for item in items[:limit]]

    def count(
        self,
        *,
        stream: str | None = None,
        partition_key: str | None = None,
        include_replayed: bool = True,
    ) -> int:
        items = self._scan(None, stream, partition_key, include_replayed, ProjectionExpression="pk")
        return len(items)

    def counts_by_code(
        self,
        *,
        stream: str | None = None,
        partition_key: str | None = None,
        include_replayed: bool = True,
    ) -> dict[str, int]:
        items = self._scan(
            None,
            stream,
            partition_key,
            include_replayed,
            ProjectionExpression="#code",
            ExpressionAttributeNames={"#code": "code"},
        )
        out: dict[str, int] = {}
        for item in items:
            out[item["code"]["S"]] = out.get(item["code"]["S"], 0) + 1
        return dict(sorted(out.items()))

    def get(self, id: str) -> DeadLetter | None:
        response = self.db.call(
            "get_item", TableName=self.table, Key={"pk": _key(id)}, ConsistentRead=True
        )
        item = response.get("Item")
        return None if item is None else self._record(item)
