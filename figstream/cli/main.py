"""The ``figstream`` command line: one argparse subcommand per tool.

To add a subcommand, write ``_add_<name>(subparsers)`` that builds its parser and sets
``handler`` to a function taking the parsed namespace and returning an exit code, then list
it in ``SUBCOMMANDS``. Handlers import their module lazily, so ``figstream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from figstream.cli.aws import add_aws
from figstream.cli.books import add_books
from figstream.cli.bus import add_produce, add_publish
from figstream.cli.cost import add_cost
from figstream.cli.data import add_demo_data, add_generate
from figstream.cli.dlq import add_dlq
from figstream.cli.migration import add_migration
from figstream.cli.replay import add_compact, add_replay
from figstream.cli.schema import add_schema
from figstream.cli.trace import add_trace

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_generate,
    add_demo_data,
    add_publish,
    add_produce,
    add_dlq,
    add_migration,
    add_replay,
    add_compact,
    add_aws,
    add_cost,
    add_trace,
    add_books,
    add_schema,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="figstream", description="figstream: job-board data platform tools"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`figstream ... | head`): stop quietly, as Unix tools do. Output
        # still buffered would fail again at exit, so stdout now points at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
