"""``figstream publish`` and ``figstream produce``: the event bus from the command line.

Builders in the style of ``figstream.cli.main``: ``add_publish(subparsers)`` and
``add_produce(subparsers)`` build the parsers and set ``handler``; handlers import their
modules lazily and return an exit code. On the local profile both write to the landing zone of
the local object store rooted at ``--home`` (default: ``$FIGSTREAM_HOME``, resolved when the
command runs). On ``FIGSTREAM_PROFILE=aws``, ``publish`` puts the records on the EventBridge
bus (``figstream.ingest.eventbridge``) instead, and the stream sensors drain them from SQS into
the landing zone on S3; ``produce`` refuses there with a clear error until
``publish.produce`` takes the publisher to use.

Bad inputs tried (see tests/figstream/test_publish.py): a missing input file, blank lines
(skipped and counted), invalid UTF-8 and truncated JSON lines (landed unchanged), CRLF line
endings (landed with the ``\\r``, which JSON treats as whitespace), and non-numeric or
out-of-range ``--rate``, ``--duration``, ``--bad-rate``, ``--batch-size`` and ``--producer``.
``produce --schema-version 2`` emits job.posted/job.updated as v2 (the producer side of a
schema rollout); the other types and bad records are as at v1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from figstream.cli.args import positive, share


def _producer(value: str) -> str:
    from figstream.ingest.landing import PRODUCER_PATTERN

    if not PRODUCER_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"must be 1..64 lower-case letters, digits and '-', got {value!r}"
        )
    return value


def _add_common(parser: argparse.ArgumentParser, default_producer: str) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="data root holding landing/ (default: $FIGSTREAM_HOME or .figstream)",
    )
    parser.add_argument(
        "--producer",
        type=_producer,
        default=None,
        help=f"producer name in the batch keys (default: {default_producer}); concurrent "
        "writers need distinct names",
    )
    parser.add_argument(
        "--batch-size",
        type=positive(int),
        default=1000,
        help="max records per landed batch (default: 1000)",
    )


def _store(args: argparse.Namespace):
    from figstream.settings import data_home
    from figstream.storage.objects import LocalObjectStore

    return LocalObjectStore(args.home or data_home())


def _publisher(args: argparse.Namespace, producer: str):
    """The profile's publisher: landing batches locally, ``PutEvents`` on the aws profile."""
    from figstream.settings import profile

    if profile() == "aws":
        from figstream.ingest.eventbridge import EventBridgePublisher
        from figstream.storage.aws import AwsConfig

        return EventBridgePublisher(AwsConfig.from_env(), producer=producer)
    from figstream.ingest.publish import Publisher

    return Publisher(_store(args), producer=producer, batch_size=args.batch_size)


def _aws_errors() -> tuple[type[Exception], ...]:
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - botocore is a dependency of the aws profile
        return ()
    return (BotoCoreError, ClientError)


def add_publish(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="land JSON lines from a file or stdin in the landing zone",
        description=(
            "Read records, one per line, from FILE (or stdin with '-') and land them as "
            "micro-batches landing/<date>/<batch>.jsonl. Lines land unchanged, bad ones "
            "included, so the streaming side can dead-letter them with a reason; blank lines "
            "are skipped and counted. Prints each batch key, then the counts."
        ),
    )
    parser.add_argument("file", nargs="?", default="-", metavar="FILE|-",
                        help="input file of JSON lines (default: - for stdin)")  # fmt: skip
    _add_common(parser, default_producer="cli-<pid>")
    parser.set_defaults(handler=_run_publish)


def _lines(stream: BinaryIO, counts: dict[str, int]) -> Iterator[bytes]:
    for raw in stream:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if not line.strip():
            counts["blank"] += 1
            continue
        yield line


def _run_publish(args: argparse.Namespace) -> int:
    from figstream.ingest.publish import PublishError

    producer = args.producer or f"cli-{os.getpid()}"
    counts = {"blank": 0}
    try:
        publisher = _publisher(args, producer)
        if args.file == "-":
            keys = publisher.publish(_lines(sys.stdin.buffer, counts))
        else:
            with open(args.file, "rb") as fh:
                keys = publisher.publish(_lines(fh, counts))
    except (OSError, ValueError, PublishError, *_aws_errors()) as exc:
        print(f"figstream publish: error: {exc}", file=sys.stderr)
        return 1
    for key in keys:
        print(key)
    where = f"PutEvents requests to bus {publisher.bus}" if hasattr(publisher, "bus") else "batches"
    print(
        f"published {publisher.records:,} records in {publisher.batches:,} {where} "
        f"(producer {producer}); skipped {counts['blank']:,} blank lines",
        file=sys.stderr,
    )
    return 0


def add_produce(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "produce",
        help="a live producer: realistic job events at a steady rate into the landing zone",
        description=(
            "Emit realistic job-board events timed 'now' (with jitter, some minutes-late "
            "events, duplicate deliveries and a share of bad records) at --rate events per "
            "second, landing a batch every --flush-interval seconds, until --duration or "
            "Ctrl-C (which flushes what is buffered and exits cleanly; a second Ctrl-C "
            "aborts)."
        ),
    )
    parser.add_argument("--rate", type=positive(float), default=200.0,
                        help="events per second (default: 200)")  # fmt: skip
    parser.add_argument("--duration", type=positive(float), default=None,
                        help="seconds to run (default: until Ctrl-C)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None,
                        help="content seed; the same seed replays the same event ids "
                        "(default: random, printed)")  # fmt: skip
    parser.add_argument("--bad-rate", type=share, default=0.005,
                        help="share of corrupted records, 0..1 (default: 0.005)")  # fmt: skip
    parser.add_argument("--flush-interval", type=positive(float), default=1.0,
                        help="seconds between landed batches (default: 1)")  # fmt: skip
    parser.add_argument("--schema-version", type=int, choices=(1, 2), default=1,
                        help="the job.posted/job.updated schema version to emit (default: 1; "
                        "2: salary range and structured location)")  # fmt: skip
    _add_common(parser, default_producer="demo")
    parser.set_defaults(handler=_run_produce)


class _Upgrading:
    """A publisher that emits v2 postings: each valid v1 posting line is upcast on the way out
    (``figstream.events.postings.upgrade_line``); counters and names are the wrapped one's."""

    def __init__(self, publisher) -> None:
        self._publisher = publisher

    def publish(self, records):
        from figstream.events.postings import upgrade_line

        return self._publisher.publish([upgrade_line(line) for line in records])

    def __getattr__(self, name: str):
        return getattr(self._publisher, name)


def _run_produce(args: argparse.Namespace) -> int:
    from figstream.ingest.publish import produce
    from figstream.settings import profile

    stop = threading.Event()
    # Signal handlers can only be installed from the main thread (tests may call from others).
    install = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if install else None

    def on_sigint(signum: int, frame: object) -> None:
        stop.set()
        # A second Ctrl-C gets the previous behaviour: abort at once.
        signal.signal(signal.SIGINT, previous or signal.default_int_handler)

    if install:
        signal.signal(signal.SIGINT, on_sigint)
    last_report = [time.monotonic()]

    def report(stats) -> None:
        if time.monotonic() - last_report[0] >= 10:
            last_report[0] = time.monotonic()
            print(f"  {stats.events:,} events, {stats.batches:,} batches, "
                  f"{stats.achieved_rate:,.0f}/s", file=sys.stderr)  # fmt: skip

    aws = profile() == "aws"
    store = None if aws else _store(args)
    publisher = _publisher(args, args.producer or "demo") if aws else None
    if args.schema_version == 2:
        publisher = _Upgrading(publisher or _publisher(args, args.producer or "demo"))
    target = f"the EventBridge bus {publisher.bus}" if aws else store.root / "landing"
    print(f"producing {args.rate:g} events/s (postings v{args.schema_version}) into {target}"
          + ("" if args.duration else "; Ctrl-C stops"), file=sys.stderr)  # fmt: skip
    try:
        stats = produce(
            store,
            publisher=publisher,
            rate=args.rate,
            duration=args.duration,
            seed=args.seed,
            bad_rate=args.bad_rate,
            flush_interval=args.flush_interval,
            producer=args.producer or "demo",
            stop=stop,
            batch_size=args.batch_size,
            on_flush=report,
        )
    except (OSError, ValueError, *_aws_errors()) as exc:
        print(f"figstream produce: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if install:
            signal.signal(signal.SIGINT, previous or signal.default_int_handler)
    print(stats.describe())
    if stats.first_key:
        print(f"  first batch: {stats.first_key}")
        print(f"  last batch:  {stats.last_key}")
    return 0
