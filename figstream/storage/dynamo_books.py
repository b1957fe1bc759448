"""The books on DynamoDB: :class:`DynamoBooks`, the aws profile's
:class:`~figstream.storage.books.BooksLedger`, with the SQLite ledger's semantics call for call.

One on-demand table, ``config.table_name("books")`` (created with the state store's tables by
``figstream aws setup``): partition key ``pk`` = ``#`` + stream, sort key ``sk`` =
``<partition key>#<batch id>``, so an hour, or a range of hours, is one ``Query`` in
(partition, batch) order. The ingest step writes a row per batch it took (a few per run), so
one key per stream is far below a partition's write limit. Writes are ``BatchWriteItem`` puts:
a re-run replaces its own rows.
"""

from __future__ import annotations

import pyarrow as pa

from figstream.storage.aws import AwsConfig
from figstream.storage.books import BOOK_SCHEMA, BooksLedger, conform_books
from figstream.storage.dynamo_state import THREADS, Dynamo, _key, decode_rows, encode_rows

BOOKS_KIND = "books"


def _sort_key(partition_key: str, batch_id: str) -> dict[str, str]:
    return {"S": f"{partition_key}#{batch_id}"}


class DynamoBooks(BooksLedger):
    def __init__(self, config: AwsConfig, threads: int = THREADS) -> None:
        self.config = config
        self.db = Dynamo(config, threads)
        self.table = config.table_name(BOOKS_KIND)

    def __repr__(self) -> str:
        return f"DynamoBooks({self.config.prefix!r}, endpoint={self.config.endpoint_url!r})"

    def record(self, rows: pa.Table) -> int:
        table = conform_books(rows)
        if table.num_rows == 0:
            return 0
        latest = {}  # one put per key: BatchWriteItem refuses two writes of a key in one call
        for item in encode_rows(table):
            key = _key(item["stream"]["S"])
            sort = _sort_key(item["partition_key"]["S"], item["batch_id"]["S"])
            item.update(pk=key, sk=sort)
            latest[(key["S"], sort["S"])] = {"PutRequest": {"Item": item}}
        self.db.batch_write(self.table, list(latest.values()))
        return table.num_rows

    def rows(self, stream: str, first: str, last: str) -> pa.Table:
        items = self.db.items(
            "query",
            TableName=self.table,
            # "#" sorts before every batch id character, "~" after: the whole of each hour.
            KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b",
            ExpressionAttributeValues={
                ":p": _key(stream),
                ":a": {"S": f"{first}#"},
                ":b": {"S": f"{last}#~"},
            },
            ConsistentRead=True,
        )
        return decode_rows(items, BOOK_SCHEMA)

    def delete(self, stream: str, partition_key: str, batch_id: str) -> int:
        # The calls the ingest roles already make (BatchGetItem, BatchWriteItem): no DeleteItem.
        key = {"pk": _key(stream), "sk": _sort_key(partition_key, batch_id)}
        if not self.db.batch_get(self.table, [key], "pk"):
            return 0
        self.db.batch_write(self.table, [{"DeleteRequest": {"Key": key}}])
        return 1
