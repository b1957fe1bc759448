"""The SEO redirect map on DynamoDB (the aws profile): one item per redirected request key.

Table ``config.table_name("redirects")`` (created by ``figstream aws setup`` with the other
tables: :func:`figstream.storage.dynamo_state.table_definitions`), keyed by ``pk``, the key the
CDN looks up (``host/path?query``), holding ``location`` (the 301's target) and ``day`` (the
map's day). An edge function or a web server can answer a request with one ``GetItem``.

:meth:`DynamoRedirectMap.publish` makes the table equal to a day's map without reading the
table: it diffs the map against the previous published export, which the table keeps beside
the entries (keyed reads: the marker item and the export's parts), writes only what changed
and deletes what left the map (expired, or live again), 25 a ``BatchWriteItem``. What a publish
costs is what changed plus the export (a few compressed items, ~350 kB of entries each), never
a ``Scan`` of the table. The marker item (:data:`META_KEY`) records the day published and the
export's generation; an older day is refused (:class:`PublishReport` says so), so a backfill of
an old partition cannot roll the served map back. The entries come already checked
(``figstream.redirects.exports``).

Crash safety: the new export is written and named ``pending`` in the marker before any entry
changes, and made current after. A publish that finds a pending export (the last one died part
way) cannot know which of the two the table holds, so it trusts neither: it deletes every key
of either that the map no longer has, and writes every key on which they disagree. A table
published before exports were kept (a marker without a generation) is read whole once.

Bad inputs tried (``tests/figstream/redirects/test_dynamo_redirects.py``, ``test_exports.py``):
an older day after a newer one, a second publish of the same day (writes nothing), keys that
left the map, a publish that died after its export was written, a table published before
exports were kept.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from figstream.storage.aws import AwsConfig
from figstream.storage.dynamo_state import Dynamo, _n, _s

KIND = "redirects"
META_KEY = "#published"  # a '#' is never in a request key (the fragment is not sent)
EXPORT_PREFIX = "#export#"  # + "<generation>#<part>": the published map, compressed
PART_BYTES = 350_000  # raw JSON a part holds at most: under DynamoDB's 400 KB item compressed


@dataclass(frozen=True)
class PublishReport:
    day: str
    written: int = 0
    deleted: int = 0
    unchanged: int = 0
    refused_older: str | None = None  # the newer day already published, when refused
    read_whole: bool = False  # the table was scanned once: published before exports were kept


def _part_key(generation: int, part: int) -> dict[str, str]:
    return _s(f"{EXPORT_PREFIX}{generation:010d}#{part:05d}")


def _parts(entries: dict[str, str]) -> list[bytes]:
    """The map as compressed JSON parts of at most :data:`PART_BYTES` raw bytes each, in key
    order (an empty map is one empty part)."""
    parts: list[bytes] = []
    chunk: list[tuple[str, str]] = []
    size = 0
    for key, location in sorted(entries.items()):
        entry = len(orjson.dumps([key, location])) + 1
        if chunk and size + entry > PART_BYTES:
            parts.append(zlib.compress(orjson.dumps(chunk)))
            chunk, size = [], 0
        chunk.append((key, location))
        size += entry
    parts.append(zlib.compress(orjson.dumps(chunk)))
    return parts


class DynamoRedirectMap:
    def __init__(self, config: AwsConfig) -> None:
        self.table = config.table_name(KIND)
        self.dynamo = Dynamo(config)

    def request_counts(self) -> dict[str, int]:
        """DynamoDB calls this map made, per operation."""
        return self.dynamo.counts()

    def _meta(self) -> dict[str, Any] | None:
        return self.dynamo.call(
            "get_item", TableName=self.table, Key={"pk": _s(META_KEY)}, ConsistentRead=True
        ).get("Item")

    def published_day(self) -> str | None:
        item = self._meta()
        return None if item is None else item["day"]["S"]

    def held(self) -> dict[str, str]:
        """Every key the table redirects and its location, read whole (a ``Scan``): for checks
        and the one-time read of a table published before exports were kept."""
        items = self.dynamo.items(
            "scan",
            TableName=self.table,
            ProjectionExpression="pk, #l",
            ExpressionAttributeNames={"#l": "location"},
            ConsistentRead=True,
        )
        return {i["pk"]["S"]: i["location"]["S"] for i in items if not i["pk"]["S"].startswith("#")}

    def _export(self, generation: int, parts: int) -> dict[str, str] | None:
        """The export of ``generation`` (``parts`` items), by keyed reads; None when a part is
        missing (then nothing vouches for the table: it is read whole)."""
        keys = [{"pk": _part_key(generation, n)} for n in range(parts)]
        items = self.dynamo.batch_get(self.table, keys)
        if len(items) != parts:
            return None
        return {k: v for item in items for k, v in orjson.loads(zlib.decompress(item["map"]["B"]))}

    def published(self) -> dict[str, str] | None:
        """The current export (what the last complete publish made the table hold), by keyed
        reads; None before the first publish that kept one."""
        meta = self._meta()
        if meta is None or "generation" not in meta:
            return None
        return self._export(int(meta["generation"]["N"]), int(meta["parts"]["N"]))

    def _previous(self, meta: dict[str, Any] | None) -> tuple[dict[str, str | None], bool]:
        """What the table may hold, per key (None: a location nothing vouches for), and
        whether the table had to be read whole."""
        if meta is None:
            return {}, False
        exports = [
            self._export(int(meta[g]["N"]), int(meta[p]["N"]))
            for g, p in (("generation", "parts"), ("pending", "pending_parts"))
            if g in meta
        ]
        if "generation" not in meta or any(e is None for e in exports):
            return dict(self.held()), True
        current, *pending = exports
        if not pending:
            return dict(current), False
        [other] = pending
        return {
            k: current.get(k) if current.get(k) == other.get(k) else None
            for k in current.keys() | other.keys()
        }, False

    def publish(self, entries: Sequence[tuple[str, str]], day: str) -> PublishReport:
        """Make the table hold exactly ``entries`` (key, location) as of ``day``."""
        meta = self._meta()
        newest = None if meta is None else meta["day"]["S"]
        if newest is not None and newest > day:
            return PublishReport(day, refused_older=newest)
        previous, read_whole = self._previous(meta)
        wanted = dict(entries)
        puts = [
            {"PutRequest": {"Item": {"pk": _s(k), "location": _s(v), "day": _s(day)}}}
            for k, v in wanted.items()
            if previous.get(k) != v
        ]
        deletes = [{"DeleteRequest": {"Key": {"pk": _s(k)}}} for k in previous if k not in wanted]
        unchanged = len(wanted) - len(puts)
        settled = meta is not None and "generation" in meta and "pending" not in meta
        if settled and not puts and not deletes:
            if newest != day:  # the same map, a later day
                meta["day"] = _s(day)
                self.dynamo.call("put_item", TableName=self.table, Item=meta)
            return PublishReport(day, 0, 0, unchanged, read_whole=read_whole)
        known = [
            (int(meta[g]["N"]), int(meta[p]["N"]))
            for g, p in (("generation", "parts"), ("pending", "pending_parts"))
            if meta is not None and g in meta
        ]
        generation = max((g for g, _ in known), default=0) + 1
        parts = _parts(wanted)
        self.dynamo.batch_write(
            self.table,
            [
                {"PutRequest": {"Item": {"pk": _part_key(generation, n), "map": {"B": data}}}}
                for n, data in enumerate(parts)
            ],
        )
        base = dict(meta) if meta is not None else {"pk": _s(META_KEY), "day": _s(day)}
        base.update(pending=_n(generation), pending_parts=_n(len(parts)))
        self.dynamo.call("put_item", TableName=self.table, Item=base)
        self.dynamo.batch_write(self.table, [*puts, *deletes])
        retired = [*known, *_retired(meta)]
        done = {
            "pk": _s(META_KEY), "day": _s(day), "generation": _n(generation),
            "parts": _n(len(parts)),
            "retired": _s(orjson.dumps(sorted(set(known))).decode()),
        }  # fmt: skip
        self.dynamo.call("put_item", TableName=self.table, Item=done)
        # The exports this one replaces; a crash here leaves them named in ``retired``, and
        # the next publish deletes them again.
        stale = {(g, n) for g, p in retired if g != generation for n in range(p)}
        self.dynamo.batch_write(
            self.table, [{"DeleteRequest": {"Key": {"pk": _part_key(g, n)}}} for g, n in stale]
        )
        return PublishReport(day, len(puts), len(deletes), unchanged, read_whole=read_whole)

    def lookup(self, key: str) -> str | None:
        """The 301's location for a request key, or None (a 404)."""
        if key.startswith("#"):  # the marker and the export, never a request key
            return None
        item = self.dynamo.call(
            "get_item", TableName=self.table, Key={"pk": _s(key)}, ProjectionExpression="pk, #l",
            ExpressionAttributeNames={"#l": "location"},
        ).get("Item")  # fmt: skip
        return None if item is None else item["location"]["S"]


def _retired(meta: dict[str, Any] | None) -> list[tuple[int, int]]:
    """The exports an earlier publish replaced and may not have finished deleting."""
    if meta is None or "retired" not in meta:
        return []
    return [(int(g), int(p)) for g, p in orjson.loads(meta["retired"]["S"])]
