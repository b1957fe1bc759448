"""``figstream dlq``: list, show and replay dead-lettered records.

Wire it into :mod:`figstream.cli.main` by listing :func:`add_dlq` in ``SUBCOMMANDS``::

    figstream dlq list [--code C] [--stream S] [--partition P] [--limit N] [--all] [--json]
    figstream dlq show ID
    figstream dlq replay [--id ID ...] [--code C] [--fix ID=PATH ...]

Every action takes ``--home`` (default ``$FIGSTREAM_HOME``): on the local profile dead letters
live in ``HOME/state/deadletter.sqlite`` and replays land through
``Publisher(LocalObjectStore(HOME), producer="dlq-replay")``; on the aws profile they live in
DynamoDB and replays go back through the event bus, as any producer's events do.
User errors (an unknown id, an unreadable fix file, a damaged database) print one
``figstream dlq: error: ...`` line and exit 1, never a traceback. ``replay`` refuses a
``conflicting_redelivery`` (the first version of its event id stays materialised) unless its
``--fix`` gives it a new event id, and exits 1 when a record it was named by id is refused.

Bad inputs tried (see ``tests/figstream/test_dlq_cli.py``): an unknown id for show and replay,
``--fix`` without ``=``, a fix file that does not exist, ``--limit 0`` and ``--limit x``, a home
with no dead-letter store yet, a file that is not a SQLite database, payloads that are not
UTF-8 or hold control characters.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

import orjson

from figstream.cli.args import guarded, int_at_least
from figstream.events.envelope import format_time

DETAIL_WIDTH = 60
PROG = "figstream dlq"


def _fix(value: str) -> tuple[str, Path]:
    id_, sep, path = value.partition("=")
    if not (sep and id_ and path):
        raise argparse.ArgumentTypeError(f"expected ID=PATH, got {value!r}")
    return id_, Path(path)


def add_dlq(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="inspect and replay dead-lettered records",
        description=(
            "Records that failed validation are dead-lettered with a reason and their exact "
            "bytes instead of failing a run. List them, show one, or replay them (optionally "
            "with a fixed payload) into the landing zone once they pass validation."
        ),
    )
    # --home lives on each action: argparse lets a sub-parser's default overwrite a parent's.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        type=Path,
        default=None,
        help="data root (default: $FIGSTREAM_HOME or .figstream in the project)",
    )
    actions = parser.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")

    list_ = actions.add_parser(
        "list", parents=[common], help="list dead letters (not yet replayed unless --all)"
    )
    list_.add_argument("--code", help="only this reason code (e.g. wrong_type)")
    list_.add_argument("--stream", help="only this stream")
    list_.add_argument("--partition", help="only this partition key")
    list_.add_argument(
        "--limit", type=int_at_least(1), default=100, help="at most N records (default: 100)"
    )
    list_.add_argument("--all", action="store_true", help="include replayed records")
    list_.add_argument(
        "--oldest", action="store_true", help="oldest first (default: the newest first)"
    )
    list_.add_argument("--json", action="store_true", help="JSON lines with every field")
    list_.set_defaults(handler=_guarded(_run_list))

    show = actions.add_parser("show", parents=[common], help="one record: full reason, payload")
    show.add_argument("id", metavar="ID", help="dead-letter id, BATCH:LINE")
    show.set_defaults(handler=_guarded(_run_show))

    replay = actions.add_parser(
        "replay",
        parents=[common],
        help="re-validate and re-publish dead letters that now pass",
        description=(
            "Selects the --id records, the --fix records and every outstanding record with "
            "--code; with none of them, every outstanding record. Each is re-validated (its fix "
            "where given); those that pass land as one new batch and are marked replayed, the "
            "rest stay with their new reason. Records replayed before are skipped. A "
            "conflicting_redelivery (a second version of an event id whose first version stays "
            "materialised) is refused unless its --fix gives it a new event id; exit 1 when a "
            "record named by --id or --fix is refused."
        ),
    )
    replay.add_argument(
        "--id", dest="ids", action="append", default=[], metavar="ID", help="repeatable"
    )
    replay.add_argument("--code", help="every outstanding record with this reason code")
    replay.add_argument(
        "--fix",
        dest="fixes",
        type=_fix,
        action="append",
        default=[],
        metavar="ID=PATH",
        help="replay ID with the payload in PATH instead of the original (repeatable)",
    )
    replay.set_defaults(handler=_guarded(_run_replay))


class _UserError(Exception):
    pass


def _user_errors() -> tuple[type[Exception], ...]:
    from figstream.storage.deadletter import UnknownDeadLetterError

    return (_UserError, UnknownDeadLetterError, OSError)


_guarded = guarded(PROG, _user_errors, "dead-letter store")


def _home(args: argparse.Namespace) -> Path:
    from figstream.settings import data_home

    return (args.home or data_home()).resolve()


def _store(home: Path) -> Any | None:
    """The dead-letter store, or None when nothing was ever dead-lettered under ``home``. On
    the aws profile (``FIGSTREAM_PROFILE=aws``) it is the DynamoDB table, wherever ``home``."""
    from figstream.settings import profile
    from figstream.storage.deadletter import SqliteDeadLetterStore, deadletter_path

    if profile() == "aws":
        from figstream.storage.aws import AwsConfig
        from figstream.storage.dynamo_deadletter import DynamoDeadLetterStore

        return DynamoDeadLetterStore(AwsConfig.from_env())

    path = deadletter_path(home)
    return SqliteDeadLetterStore(path) if path.exists() else None


def _publisher(home: Path) -> Any:
    from figstream.ingest.publish import Publisher
    from figstream.settings import profile
    from figstream.storage.objects import LocalObjectStore

    if profile() == "aws":
        from figstream.ingest.eventbridge import EventBridgePublisher
        from figstream.storage.aws import AwsConfig

        return EventBridgePublisher(AwsConfig.from_env(), producer="dlq-replay")

    return Publisher(LocalObjectStore(home), producer="dlq-replay")


def _printable(text: str) -> str:
    """Control characters escaped, so a hostile payload cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _short(text: str, width: int) -> str:
    text = _printable(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def _iso(value: Any) -> str | None:
    return None if value is None else format_time(value)


def _as_json(record: Any) -> bytes:
    text = record.payload_text()
    return orjson.dumps(
        {
            "id": record.id,
            "batch_id": record.batch_id,
            "line_no": record.line_no,
            "stream": record.stream,
            "partition_key": record.partition_key,
            "event_id": record.event_id,
            "event_time": _iso(record.event_time),
            "code": record.code,
            "detail": record.detail,
            "payload": text if text is not None else base64.b64encode(record.payload).decode(),
            "payload_encoding": "utf-8" if text is not None else "base64",
            "dead_lettered_at": _iso(record.dead_lettered_at),
            "replayed_at": _iso(record.replayed_at),
            "replay_key": record.replay_key,
        }
    )


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _run_list(args: argparse.Namespace) -> int:
    store = _store(_home(args))
    if store is None:
        if not args.json:
            print("no dead letters (no dead-letter store yet)")
        return 0
    filters = {"stream": args.stream, "partition_key": args.partition}
    records = store.list(
        code=args.code,
        include_replayed=args.all,
        limit=args.limit,
        newest_first=not args.oldest,
        **filters,
    )
    if args.json:
        out = sys.stdout.buffer
        for record in records:
            out.write(_as_json(record) + b"\n")
        out.flush()
        return 0
    if args.code is None:
        total = store.count(include_replayed=args.all, **filters)
    else:
        total = store.counts_by_code(include_replayed=args.all, **filters).get(args.code, 0)
    which = "dead letters" if args.all else "outstanding dead letters"
    if not records:
        print(f"no {which}")
        return 0
    header = ["ID", "STREAM", "PARTITION", "CODE", "DETAIL", "EVENT_ID"]
    if args.all:
        header.append("REPLAYED_TO")
    rows = [header]
    for r in records:
        row = [r.id, r.stream, r.partition_key, r.code, _short(r.detail, DETAIL_WIDTH)]
        row.append(_printable(r.event_id) if r.event_id is not None else "-")
        if args.all:
            row.append(r.replay_key or "-")
        rows.append([_printable(cell) for cell in row])
    print(_table(rows))
    more = f"; raise --limit to see more than {args.limit}" if total > len(records) else ""
    order = "oldest" if args.oldest else "newest"
    print(f"\n{len(records)} of {total} {which}, {order} first{more}")
    return 0


def _run_show(args: argparse.Namespace) -> int:
    from figstream.storage.deadletter import UnknownDeadLetterError

    store = _store(_home(args))
    record = store.get(args.id) if store is not None else None
    if record is None:
        raise UnknownDeadLetterError([args.id])
    replayed = (
        f"yes, at {_iso(record.replayed_at)} to {record.replay_key}" if record.replayed else "no"
    )
    fields = [
        ("id", record.id),
        ("stream", record.stream),
        ("partition", record.partition_key),
        ("batch", record.batch_id),
        ("line", str(record.line_no)),
        ("event id", record.event_id or "-"),
        ("event time", _iso(record.event_time) or "-"),
        ("dead-lettered at", _iso(record.dead_lettered_at)),
        ("code", record.code),
        ("detail", record.detail),
        ("replayed", replayed),
    ]
    for name, value in fields:
        print(f"{name + ':':<18}{_printable(value)}")
    text = record.payload_text()
    size = len(record.payload)
    if text is not None:
        print(f"payload ({size} bytes, UTF-8):")
        print(_printable(text))
    else:
        print(f"payload ({size} bytes, not valid UTF-8; bad bytes as \\x escapes):")
        print(_printable(record.payload.decode("utf-8", "backslashreplace")))
        print("payload, base64:")
        print(base64.b64encode(record.payload).decode())
    return 0


def _run_replay(args: argparse.Namespace) -> int:
    from figstream.storage.deadletter import UnknownDeadLetterError, replay

    home = _home(args)
    fixes: dict[str, bytes] = {}
    for id_, path in args.fixes:
        try:
            # Leading/trailing whitespace is insignificant in JSON; editors add a newline.
            fixes[id_] = path.read_bytes().strip()
        except OSError as exc:
            raise _UserError(f"cannot read the fix for {id_}: {exc}") from None
    store = _store(home)
    if store is None:
        asked = [*args.ids, *fixes]
        if asked:
            raise UnknownDeadLetterError(dict.fromkeys(asked))
        print("nothing to replay (no dead-letter store yet)")
        return 0
    report = replay(
        store, _LazyPublisher(home), ids=args.ids or None, code=args.code, fixes=fixes or None
    )
    if report.selected == 0:
        print("nothing to replay")
        return 0
    landed = f" (landed in {', '.join(report.landing_keys)})" if report.landing_keys else ""
    print(f"published: {len(report.published)}{landed}")
    for id_ in report.published:
        print(f"  {id_}")
    print(f"still failing: {len(report.still_failing)}")
    for id_, reason in report.still_failing.items():
        print(f"  {id_}  {_short(str(reason), 200)}")
    if report.already_replayed:
        print(f"already replayed, skipped: {len(report.already_replayed)}")
        for id_ in report.already_replayed:
            print(f"  {id_}")
    if report.refused:
        print(f"refused (left in the store): {len(report.refused)}")
        for id_, why in report.refused.items():
            print(f"  {id_}  {_short(why, 200)}")
    # Asked for by id and refused: the user's request was not carried out.
    return 1 if report.refused.keys() & {*args.ids, *fixes} else 0


class _LazyPublisher:
    """Builds the real publisher only when something passes validation."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def publish(self, records: Any) -> list[str]:
        return _publisher(self.home).publish(records)
