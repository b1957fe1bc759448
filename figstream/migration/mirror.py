"""Mirror the landing zone into the legacy feed dump, so legacy and new read the same input.

In shadow, both implementations must see the same events for a day. The landing zone is the
new side's input; this writes the legacy side's from it: ``feeds/<day>/<board>.jsonl`` with
every record the landing index assigns to one of the day's hours (both streams), once per
distinct record bytes (a re-delivery is the same event), in arrival order, then
``_SUCCESS``. A record without a readable ``source`` (malformed JSON, say), or with one that
is no file name (not 1..64 ASCII letters, digits and ``-``: a hostile source of 300 characters
would fail the whole day's object key), goes to ``_unattributed.jsonl``: legacy reads every
``*.jsonl`` and dies on it, which is the legacy flaw the parity check reports as such. Legacy
reads v1 only, so a v2 posting is written as its v1 downcast
(``figstream.events.postings.legacy_line``).

A dump that figstream did not write (no ``_MIRROR.json``: it came from the boards or the
generator) is left alone. A mirrored dump is rewritten on each run, so records that landed
late are picked up by a re-run; ``_MIRROR.json`` records the newest batch included (the
cut-off), and parity can tell records that arrived after it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import orjson
import pyarrow as pa

from figstream.events.postings import legacy_line
from figstream.ingest.archive import read_batch
from figstream.ingest.landing import parse_batch_key
from figstream.streaming.fragments import batch_ids_in, read_fragments
from figstream.streaming.landing_index import assign, catch_up_index
from figstream.streaming.stores import INGEST_TABLES, Stores, day_partitions

FEEDS = "feeds"
MANIFEST = "_MIRROR.json"
UNATTRIBUTED = "_unattributed"
BOARD_FILE = re.compile(r"(?=.*[A-Za-z0-9])[A-Za-z0-9-]{1,64}")


@dataclass
class MirrorReport:
    day: str
    written: bool
    reason: str
    batches: int = 0
    records: int = 0
    redeliveries: int = 0
    cutoff: str | None = None
    by_board: dict[str, int] = field(default_factory=dict)


def _board(line: bytes) -> str:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return UNATTRIBUTED
    source = record.get("source") if isinstance(record, dict) else None
    if isinstance(source, str) and BOARD_FILE.fullmatch(source):
        return source
    return UNATTRIBUTED


def mirror_day(stores: Stores, day: str) -> MirrorReport:
    prefix = f"{FEEDS}/{day}/"
    if stores.objects.exists(prefix + "_SUCCESS") and not stores.objects.exists(prefix + MANIFEST):
        return MirrorReport(day, False, "a feed dump not written by the mirror exists: kept")
    hours = set(day_partitions(day))
    keys: set[str] = set()
    for stream in INGEST_TABLES:
        catch_up_index(stores, stream)
        for hour in hours:
            keys.update(stores.state.batches_for(stream, hour))
    lines_by_board: dict[str, list[bytes]] = defaultdict(list)
    seen: set[bytes] = set()
    report = MirrorReport(day, True, "mirrored from the landing zone")
    for key in sorted(keys):
        data = read_batch(stores.objects, key)  # the landing object, or its archived copy
        all_lines = data.split(b"\n")
        mine = sorted(
            {
                index
                for (_stream, hour), indexes in assign(
                    data, key, stores.router, stores.first_partition
                ).items()
                if hour in hours
                for index in indexes
            }
        )
        report.batches += 1
        report.cutoff = key
        for index in mine:
            line = all_lines[index]
            if line in seen:
                report.redeliveries += 1
                continue
            seen.add(line)
            lines_by_board[_board(line)].append(legacy_line(line))  # v2 postings as v1
    for name in stores.objects.list(prefix):
        stale = name.rsplit("/", 1)[1]
        if stale.endswith(".jsonl") and stale[: -len(".jsonl")] not in lines_by_board:
            stores.objects.put(name, b"")  # a board with no record now: emptied, not left stale
    for board, lines in sorted(lines_by_board.items()):
        stores.objects.put(f"{prefix}{board}.jsonl", b"\n".join(lines) + b"\n")
        report.by_board[board] = len(lines)
        report.records += len(lines)
    stores.objects.put(prefix + MANIFEST, orjson.dumps(asdict(report)))
    stores.objects.put(prefix + "_SUCCESS", b"")  # last: legacy waits for it
    return report


def after_cutoff(stores: Stores, day: str) -> pa.Table | None:
    """Event ids of ``day`` the new side ingested from batches that landed after the mirror's
    cut-off (so legacy never saw them); None if the day's dump was not mirrored."""
    prefix = f"{FEEDS}/{day}/"
    if not stores.objects.exists(prefix + MANIFEST):
        return None
    cutoff = orjson.loads(stores.objects.get(prefix + MANIFEST)).get("cutoff")
    cutoff_id = parse_batch_key(cutoff)[1] if cutoff else ""
    ids = []
    schema = pa.schema([("event_id", pa.string())])
    for table in INGEST_TABLES.values():
        for hour in day_partitions(day):
            later = [b for b in batch_ids_in(stores.objects, table, hour) if b > cutoff_id]
            if later:  # compacted hours too: their batches are in the compacted object
                ids.append(read_fragments(stores.objects, table, [hour], later, schema)["event_id"])
    values = pa.chunked_array([c for a in ids for c in a.chunks], pa.string())
    return pa.table({"event_id": values})
