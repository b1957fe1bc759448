"""``figstream replay`` and ``figstream compact``: re-feed an event-time range, and the storage
maintenance that production runs hourly (``storage_compaction_schedule``)::

    figstream replay --from T1 --to T2 [--stream S] [--home H]
    figstream compact [--now T] [--max-hours N] [--max-days N] [--home H]

Times are ISO 8601 (``2026-11-02T10:00Z``, ``2026-11-02T10:00:00+01:00``, ``2026-11-02``); one
without an offset is UTC. The first partition comes from the migration ledger, the windows of
``compact`` from ``platform/streaming.yaml``.

Bad inputs tried (see ``tests/figstream/cli/test_replay_cli.py``): ``--to`` at or before
``--from``, unparsable times, an unknown stream, ``--max-hours 0``; each prints one
``figstream <command>: error: ...`` line (or argparse's usage error) and no traceback.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from figstream.cli.args import guarded, int_at_least


def moment(value: str) -> datetime:
    """An ISO 8601 time or date; UTC when it names no offset."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-11-02T10:00Z, got {value!r}"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _home_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="data root (default: $FIGSTREAM_HOME or .figstream in the project)",
    )


def add_replay(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="re-feed an event-time range from the landing zone or archive into its hours",
        description=(
            "Backfill every hourly partition that overlaps [FROM, TO): ingest each batch the "
            "landing index holds for it (from the landing zone, or the archive once a batch "
            "is archived), then clean, dedupe, job state and the search index. Event-id "
            "claims make it idempotent: nothing is materialised twice."
        ),
    )
    parser.add_argument("--from", dest="start", type=moment, required=True, metavar="T1")
    parser.add_argument("--to", dest="end", type=moment, required=True, metavar="T2")
    parser.add_argument(
        "--stream", action="append", default=None, help="only this stream (repeatable)"
    )
    _home_option(parser)
    parser.set_defaults(handler=guarded("figstream replay", _errors, "state store")(_run_replay))


def add_compact(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compact",
        help=(
            "compact old output fragments per hour, archive old landed batches per day and "
            "fold old day rows of the state"
        ),
        description=(
            "Fold the per-batch fragments of every hour past the lateness window "
            "(compact_fragments_after_seconds) into one object per table and hour, the "
            "landed batches of every day older than archive_landing_after_days into one "
            "archive per day, and the state store's day rows of the days day_rows_keep_days "
            "ago and before into one row per job (platform/streaming.yaml). Readers give the "
            "same rows after, but the end-of-day state of a folded day can no longer be read."
        ),
    )
    parser.add_argument("--now", type=moment, default=None, help="the time to judge ages at")
    parser.add_argument(
        "--max-hours", type=int_at_least(1), default=None, help="compact at most N table-hours"
    )
    parser.add_argument(
        "--max-days", type=int_at_least(1), default=None, help="archive at most N days"
    )
    parser.add_argument(
        "--max-fold-jobs",
        type=int_at_least(1),
        default=None,
        help="stop folding day rows at the end of the day in which N jobs' rows were read",
    )
    _home_option(parser)
    parser.set_defaults(handler=guarded("figstream compact", _errors, "state store")(_run_compact))


def _errors() -> tuple[type[Exception], ...]:
    from figstream.ingest.archive import ArchiveError
    from figstream.streaming.replay import ReplayError

    return (ReplayError, ArchiveError, FileNotFoundError)


def _stores(home: Path | None):
    from figstream.migration.ledger import load_ledger
    from figstream.settings import data_home, ledger_path
    from figstream.streaming.stores import Stores

    ledger = load_ledger(ledger_path())
    return Stores.for_profile(home or data_home(), f"{ledger.legacy_epoch.isoformat()}-00:00")


def _run_replay(args: argparse.Namespace) -> int:
    from figstream.streaming.replay import replay

    report = replay(_stores(args.home), args.start, args.end, args.stream)
    print("\n".join(report.lines()))
    return 0


def _run_compact(args: argparse.Namespace) -> int:
    from figstream.settings import streaming_settings
    from figstream.streaming.compaction import compact

    now = args.now or datetime.now(UTC)
    report = compact(
        _stores(args.home),
        streaming_settings(),
        now,
        args.max_hours,
        args.max_days,
        args.max_fold_jobs,
    )
    print(report.summary())
    return 0
