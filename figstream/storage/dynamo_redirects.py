"""The SEO redirect map on DynamoDB (the aws profile): one item per redirected request key.

Table ``config.table_name("redirects")`` (created by ``figstream aws setup`` with the other
tables: :func:`figstream.storage.dynamo_state.table_definitions`), keyed by ``pk``, the key the
CDN looks up (``host/path?query``), holding ``location`` (the 301's target) and ``day`` (the
map's day). An edge function or a web server can answer a request with one ``GetItem``.

:meth:`DynamoRedirectMap.publish` makes the table equal to a day's map: it reads the keys held
(one Scan), writes only what changed and deletes what left the map (expired, or live again),
25 a ``BatchWriteItem``. A marker item (:data:`META_KEY`) records the day published, and an
older day is refused (:class:`PublishReport` says so), so a backfill of an old partition cannot
roll the served map back. The entries come already checked (``figstream.redirects.exports``).

Bad inputs tried (see ``tests/figstream/redirects/test_exports.py``): an older day after a
newer one, a second publish of the same day (writes nothing), keys that left the map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from figstream.storage.aws import AwsConfig
from figstream.storage.dynamo_state import Dynamo, _s

KIND = "redirects"
META_KEY = "#published"  # a '#' is never in a request key (the fragment is not sent)


@dataclass(frozen=True)
class PublishReport:
    day: str
    written: int = 0
    deleted: int = 0
    unchanged: int = 0
    refused_older: str | None = None  # the newer day already published, when refused


class DynamoRedirectMap:
    def __init__(self, config: AwsConfig) -> None:
        self.table = config.table_name(KIND)
        self.dynamo = Dynamo(config)

    def published_day(self) -> str | None:
        item = self.dynamo.call(
            "get_item", TableName=self.table, Key={"pk": _s(META_KEY)}, ConsistentRead=True
        ).get("Item")
        return None if item is None else item["day"]["S"]

    def held(self) -> dict[str, str]:
        """Every key the table redirects and its location."""
        items = self.dynamo.items(
            "scan",
            TableName=self.table,
            ProjectionExpression="pk, #l",
            ExpressionAttributeNames={"#l": "location"},
            ConsistentRead=True,
        )
        return {i["pk"]["S"]: i["location"]["S"] for i in items if i["pk"]["S"] != META_KEY}

    def publish(self, entries: Sequence[tuple[str, str]], day: str) -> PublishReport:
        """Make the table hold exactly ``entries`` (key, location) as of ``day``."""
        newest = self.published_day()
        if newest is not None and newest > day:
            return PublishReport(day, refused_older=newest)
        held = self.held()
        wanted = dict(entries)
        puts = [
            {"PutRequest": {"Item": {"pk": _s(k), "location": _s(v), "day": _s(day)}}}
            for k, v in wanted.items()
            if held.get(k) != v
        ]
        deletes = [{"DeleteRequest": {"Key": {"pk": _s(k)}}} for k in held if k not in wanted]
        self.dynamo.batch_write(self.table, [*puts, *deletes])
        self.dynamo.call(
            "put_item", TableName=self.table, Item={"pk": _s(META_KEY), "day": _s(day)}
        )
        return PublishReport(day, len(puts), len(deletes), len(wanted) - len(puts))

    def lookup(self, key: str) -> str | None:
        """The 301's location for a request key, or None (a 404)."""
        if key == META_KEY:
            return None
        item = self.dynamo.call(
            "get_item", TableName=self.table, Key={"pk": _s(key)}, ProjectionExpression="pk, #l",
            ExpressionAttributeNames={"#l": "location"},
        ).get("Item")  # fmt: skip
        return None if item is None else item["location"]["S"]
