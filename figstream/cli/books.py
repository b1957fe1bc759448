"""``figstream books``: per stream and event-time hour, events landed = materialised +
dead-lettered + duplicates dropped, what the ``books`` check of each ingest asset shows::

    figstream books [--from T1] [--to T2] [--stream S] [--unbalanced] [--json] [--home H]

Every hour overlapping ``[T1, T2)`` (default: the last 24 hours) that landed anything, from the
landing index, the books the ingest step kept, the fragments' row counts and the dead-letter
store (:mod:`figstream.streaming.books`); a landed batch not ingested yet counts as pending.
Each unbalanced hour is followed by what does not add up (which batch, by how much). On the
local profile it reads ``HOME/state``; on the aws profile DynamoDB and S3.

Exit codes: 0 every hour balances (pending ones too); 3 an hour does not balance; 1 a user
error (``--to`` not after ``--from``, an unknown stream, a home with no state store, a store
that cannot be read), as one ``figstream books: error: ...`` line, never a traceback. An unknown
stream is named with ``repr`` (control characters escaped, never echoed) beside the known ones.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from figstream.cli.args import guarded
from figstream.cli.replay import _home_option, moment

PROG = "figstream books"
UNBALANCED = 3
DEFAULT_WINDOW = timedelta(hours=24)
COLUMNS = ("landed", "materialised", "dead_lettered", "duplicates", "pending", "difference")
HEADERS = ("landed", "materialised", "dead-lettered", "duplicates", "pending", "off by")


class BooksError(Exception):
    pass


def _errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BooksError, OSError, ClientError, BotoCoreError)


def add_books(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "books",
        help="per stream and hour: landed = materialised + dead-lettered + duplicates",
        description=(
            "The books of every event-time hour overlapping [FROM, TO) (default: the last 24 "
            "hours): events landed (landing index) = materialised (rows in the ingest "
            "table's fragments) + dead-lettered (dead-letter store) + duplicates dropped, "
            "checked batch by batch against what the ingest step booked. Exit 3 when an "
            "hour does not balance."
        ),
    )
    parser.add_argument("--from", dest="start", type=moment, default=None, metavar="T1")
    parser.add_argument("--to", dest="end", type=moment, default=None, metavar="T2")
    parser.add_argument(
        "--stream", action="append", default=None, help="only this stream (repeatable)"
    )
    parser.add_argument(
        "--unbalanced", action="store_true", help="list only the hours that do not balance"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object, for tools")
    _home_option(parser)
    parser.set_defaults(handler=guarded(PROG, _errors, "state store")(_run))


def _window(args: argparse.Namespace) -> tuple[datetime, datetime]:
    end = args.end or (datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
                       + timedelta(hours=1))  # fmt: skip
    start = args.start or end - DEFAULT_WINDOW
    if end <= start:
        raise BooksError(f"--to {end.isoformat()} must be after --from {start.isoformat()}")
    return start, end


def _stores(home: Path | None):
    from figstream.migration.ledger import load_ledger
    from figstream.settings import data_home, ledger_path, profile
    from figstream.storage.state import state_path
    from figstream.streaming.stores import Stores

    home = (home or data_home()).resolve()
    if profile() == "local" and not state_path(home).exists():
        raise BooksError(f"no state store in {home} (nothing has been ingested there)")
    ledger = load_ledger(ledger_path())
    return Stores.for_profile(home, f"{ledger.legacy_epoch.isoformat()}-00:00")


def _run(args: argparse.Namespace) -> int:
    from figstream.streaming import books
    from figstream.streaming.stores import INGEST_TABLES

    start, end = _window(args)
    streams = args.stream or list(INGEST_TABLES)
    unknown = sorted(set(streams) - INGEST_TABLES.keys())
    if unknown:
        # repr: a name from the command line is never printed raw (a newline would split the
        # error line, an escape sequence would reach the terminal).
        raise BooksError(
            f"unknown stream(s) {', '.join(map(repr, unknown))}; known streams: "
            f"{', '.join(INGEST_TABLES)}"
        )
    hours = books.books(_stores(args.home), streams, books.hours_between(start, end))
    shown = [h for h in hours if not h.balanced] if args.unbalanced else hours
    unbalanced = sum(not h.balanced for h in hours)
    if args.json:
        print(orjson.dumps({
            "from": start.isoformat(), "to": end.isoformat(), "hours": len(hours),
            "unbalanced": unbalanced, "books": [h.as_dict() for h in shown],
        }).decode())  # fmt: skip
    else:
        print("\n".join(_lines(shown, hours, start, end, unbalanced)))
    return UNBALANCED if unbalanced else 0


def _lines(shown, hours, start: datetime, end: datetime, unbalanced: int) -> list[str]:
    window = f"{start.isoformat()} to {end.isoformat()} (event time)"
    if not hours:
        return [f"nothing landed from {window}"]
    header = ("stream", "hour", *HEADERS, "status")
    rows = [
        (h.stream, h.partition, *(f"{getattr(h, c):,}" for c in COLUMNS), h.status) for h in shown
    ]
    for stream in dict.fromkeys(h.stream for h in hours):  # in the order listed
        mine = [h for h in hours if h.stream == stream]
        totals = (f"{sum(getattr(h, c) for h in mine):,}" for c in COLUMNS)
        rows.append((stream, f"total ({len(mine)} hours)", *totals, ""))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i < 2 or i == len(widths) - 1 else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in [header, *rows]
    ]  # fmt: skip
    for hour in (h for h in shown if not h.balanced):
        lines.append(f"{hour.stream} {hour.partition} does not balance:")
        lines += [f"  - {problem}" for problem in hour.problems]
    verdict = (
        f"{unbalanced} of {len(hours)} hours do not balance"
        if unbalanced
        else f"all {len(hours)} hours balance"
    )
    pending = sum(h.pending_batches for h in hours)
    if pending:
        verdict += (
            f"; {pending} landed batches not ingested yet (pending: a run in flight, or an "
            "hour ingested before the books existed; figstream replay books it)"
        )
    dead = sum(h.dead_lettered for h in hours)
    if dead:
        verdict += f"; {dead:,} dead letters: figstream dlq list --stream STREAM --partition HOUR"
    return [*lines, verdict]
