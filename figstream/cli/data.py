"""``figstream generate`` and ``figstream demo-data``: seeded history for the demo and tests."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from figstream.cli.args import int_at_least, iso_date, positive, share
from figstream.settings import data_home as default_home


def add_generate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="write a seeded job-event stream: legacy feed dump and landing-zone batches",
        description=(
            "Simulate several job boards (postings, updates, expiries, a board merger, "
            "cross-board duplicates and a share of bad records) and write the same events as "
            "the legacy feed dump (OUT/feeds) and as landing-zone micro-batches (OUT/landing)."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=default_home(),
        help="output root (default: $FIGSTREAM_HOME or .figstream in the project)",
    )
    parser.add_argument(
        "--start",
        type=iso_date,
        default=date(2025, 1, 1),
        help="first day, YYYY-MM-DD (default: 2025-01-01)",
    )
    parser.add_argument("--days", type=int_at_least(1), default=7, help="days (default: 7)")
    parser.add_argument(
        "--events-per-day",
        type=int_at_least(1),
        default=10_000,
        help="events per day before merger re-posts (default: 10000)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument(
        "--bad-rate", type=share, default=0.01, help="share of bad records, 0..1 (default: 0.01)"
    )
    parser.add_argument(
        "--clean-days",
        type=int_at_least(0),
        default=0,
        help="first N days without bad records (default: 0)",
    )
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=1000,
        help="max events per landing batch (default: 1000)",
    )
    parser.add_argument(
        "--batch-seconds",
        type=positive(float),
        default=3600.0,
        help="max arrival span of a landing batch (default: 3600)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: auto for large runs on a TTY)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing OUT/feeds and OUT/landing"
    )
    parser.set_defaults(handler=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from figstream.ingest.dataset import generate

    try:
        summary = generate(
            args.out,
            start=args.start,
            days=args.days,
            events_per_day=args.events_per_day,
            seed=args.seed,
            bad_rate=args.bad_rate,
            clean_days=args.clean_days,
            batch_size=args.batch_size,
            batch_seconds=args.batch_seconds,
            progress=args.progress,
            overwrite=args.overwrite,
        )
    except FileExistsError:
        print(
            f"figstream generate: error: {args.out} already holds generated feeds or landing "
            "batches: add --overwrite to replace them, or --out DIR to write another home",
            file=sys.stderr,
        )
        return 1
    except (OSError, ValueError) as exc:
        print(f"figstream generate: error: {exc}", file=sys.stderr)
        return 1
    print(summary.describe())
    print(f"  feeds:    {args.out / 'feeds'}")
    print(f"  landing:  {args.out / 'landing'}")
    print(f"  manifest: {args.out / 'generate-manifest.json'}")
    return 0


def add_demo_data(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo-data",
        help="generate the demo history (ledger epoch .. yesterday) unless feeds already exist",
        description=(
            "What `make dev` runs: if $FIGSTREAM_HOME has no feed dumps yet, generate every day "
            "from the migration ledger's legacy_epoch up to yesterday (UTC). The last two days "
            "carry bad records, so the legacy pipeline's one-bad-record flaw is visible."
        ),
    )
    parser.add_argument("--out", type=Path, default=default_home(), help="data root")
    parser.add_argument("--events-per-day", type=int_at_least(1), default=3000)
    parser.add_argument("--bad-rate", type=share, default=0.002)
    parser.set_defaults(handler=_run_demo_data)


def _run_demo_data(args: argparse.Namespace) -> int:
    from figstream.ingest.dataset import generate
    from figstream.migration.ledger import load_ledger
    from figstream.settings import ledger_path

    feeds = args.out / "feeds"
    if feeds.is_dir() and any(feeds.iterdir()):
        print(f"demo data already present in {feeds}; leaving it as it is")
        return 0
    start = load_ledger(ledger_path()).legacy_epoch
    days = (datetime.now(UTC).date() - timedelta(days=1) - start).days + 1
    if days < 1:
        print(f"figstream demo-data: error: the ledger epoch {start} is in the future")
        return 1
    summary = generate(
        args.out,
        start=start,
        days=days,
        events_per_day=args.events_per_day,
        bad_rate=args.bad_rate,
        clean_days=max(days - 2, 0),
    )
    print(summary.describe())
    return 0
