"""``figstream cost``: the streaming platform's monthly AWS bill, per service and to the cent,
beside the legacy nightly EC2 batch's for the same volume::

    figstream cost [--from T1 --to T2] [--home H] [--json]          # measured
    figstream cost --events-per-day N [--avg-event-bytes B] [...]    # what-if

Measured: the landing index, dead letters, landed bytes and state of the running profile's
stores over the event-time window ``[T1, T2)`` (default: the 7 days before the current hour),
scaled to a month. What-if: from ``--events-per-day``. ``--services-on ec2`` prices the
always-on tasks on ECS on EC2 instead of Fargate. ``--avg-event-bytes`` and
``--bad-rate`` also override what was measured. Prices come from ``platform/prices.yaml``
(``--prices``); a table more than a year older than ``--as-of`` (default: today) is warned
about on stderr and in the output.

Bad inputs tried (see ``tests/figstream/cost/test_cost_cli.py``): ``--to`` not after
``--from``, a window with a what-if, a home with no state store, the aws profile before its
tables exist, a price table that is missing or malformed, a negative rate; each prints one
``figstream cost: error: ...`` line (or argparse's usage error) and no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from figstream.cli.args import guarded, int_at_least, iso_date, positive, share
from figstream.cli.replay import _home_option, moment

DEFAULT_EVENT_BYTES = 700.0  # a generated job.posted line is 600-800 bytes
DEFAULT_WINDOW = timedelta(days=7)


class CostError(ValueError):
    """A request ``figstream cost`` cannot answer; the message says why."""


def add_cost(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cost",
        help="estimate the monthly AWS bill per service, beside the legacy batch's",
        description=(
            "Estimate the streaming platform's monthly AWS bill per service, to the cent "
            "(EventBridge, SQS, Lambda, DynamoDB, S3, the always-on ECS tasks and RDS), from "
            "the volumes measured over an event-time window or from a what-if, beside the "
            "legacy nightly EC2 batch's cost for the same volume."
        ),
    )
    parser.add_argument("--from", dest="start", type=moment, default=None, metavar="T1")
    parser.add_argument("--to", dest="end", type=moment, default=None, metavar="T2")
    parser.add_argument(
        "--events-per-day", type=positive(float), default=None, help="what-if: events a day"
    )
    parser.add_argument(
        "--avg-event-bytes",
        type=positive(float),
        default=None,
        help=f"bytes per event (what-if default {DEFAULT_EVENT_BYTES:g}; else measured)",
    )
    parser.add_argument("--bad-rate", type=share, default=None, help="share dead-lettered")
    parser.add_argument(
        "--batches-per-day",
        type=positive(float),
        default=None,
        help="what-if: landing batches a day (default: one per stream per sensor tick)",
    )
    parser.add_argument(
        "--lambda-memory-mb", type=int_at_least(128), default=None, help="validate-batch memory"
    )
    parser.add_argument(
        "--lambda-ms-per-invoke",
        type=positive(float),
        default=None,
        help="validate-batch milliseconds per invocation besides its events",
    )
    parser.add_argument(
        "--services-on",
        choices=("fargate", "ec2"),
        default=None,
        help="where the webserver, daemon and code server run (default: fargate, as deployed)",
    )
    parser.add_argument("--prices", type=Path, default=None, help="the price table to use")
    parser.add_argument(
        "--as-of", type=iso_date, default=None, help="judge the price table's age at this date"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    _home_option(parser)
    parser.set_defaults(handler=guarded("figstream cost", _errors, "state store")(_run))


def _errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    from figstream.cost.prices import PriceTableError

    # the aws profile's stores before `figstream aws setup` (no table, no bucket)
    return (CostError, PriceTableError, ValueError, FileNotFoundError, ClientError, BotoCoreError)


def _measured(args: argparse.Namespace, hours_per_month: float):
    from figstream.cost.measure import measure
    from figstream.migration.ledger import load_ledger
    from figstream.settings import data_home, ledger_path, profile, streaming_settings
    from figstream.storage.state import state_path
    from figstream.streaming.stores import Stores

    end = args.end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = args.start or end - DEFAULT_WINDOW
    if end <= start:
        raise CostError(f"--to {end.isoformat()} must be after --from {start.isoformat()}")
    home = (args.home or data_home()).resolve()
    if profile() == "local" and not state_path(home).exists():
        raise CostError(
            f"no state store in {home} (nothing has run there): run the platform first, or "
            "give --events-per-day for a what-if"
        )
    ledger = load_ledger(ledger_path())
    stores = Stores.for_profile(home, f"{ledger.legacy_epoch.isoformat()}-00:00")
    workload = measure(stores, start, end, hours_per_month, streaming_settings().claim_ttl_days)
    overrides = {"avg_event_bytes": args.avg_event_bytes, "bad_rate": args.bad_rate}
    return dataclasses.replace(workload, **{k: v for k, v in overrides.items() if v is not None})


def _run(args: argparse.Namespace) -> int:
    from figstream.cost import render
    from figstream.cost.deployment import footprint
    from figstream.cost.measure import what_if
    from figstream.cost.model import estimate
    from figstream.cost.prices import load_prices

    table = load_prices(args.prices)
    hours = float(table.hours_per_month)
    chosen = footprint(
        lambda_memory_mb=args.lambda_memory_mb,
        lambda_fixed_ms=args.lambda_ms_per_invoke,
        services_on=args.services_on,
    )
    if args.events_per_day is not None:
        if args.start or args.end:
            raise CostError("--events-per-day is a what-if; --from/--to measure: give one")
        workload = what_if(
            args.events_per_day,
            args.avg_event_bytes or DEFAULT_EVENT_BYTES,
            args.bad_rate or 0.0,
            batches_per_day=args.batches_per_day,
            sensor_tick_seconds=chosen.sensor_tick_seconds,
            hours_per_month=hours,
        )
    else:
        if args.batches_per_day is not None:
            raise CostError("--batches-per-day belongs to a what-if (--events-per-day)")
        workload = _measured(args, hours)
    result = estimate(workload, chosen, table)
    warning = table.stale_warning(args.as_of or date.today())
    if warning:
        print(f"figstream cost: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(render.as_json(result, table, warning), indent=2))
    else:
        print(render.markdown(result, table, warning))
    return 0
