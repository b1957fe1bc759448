"""argparse value types shared by the ``figstream`` subcommands: a bad value is an argparse
error naming the option (exit 2), never a traceback."""

from __future__ import annotations

import argparse
import math
import sqlite3
import sys
from collections.abc import Callable
from datetime import date
from urllib.parse import urlsplit


def iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {value!r}") from None


def _number(kind: type, value: str) -> int | float:
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}") from None


def int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = _number(int, value)
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {number}")
        return number

    return parse


def positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(value: str) -> int | float:
        number = _number(kind, value)
        if not number > 0 or math.isinf(number):
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
        return number

    return parse


def share(value: str) -> float:
    """A fraction within 0..1 (a rate of bad records, say)."""
    number = _number(float, value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {number}")
    return number


def http_url(value: str) -> str:
    """An http(s) base URL with a host, printable ASCII only: it is printed as a link to click,
    so ``javascript:``, ``file:`` or an escape sequence must not pass for one."""
    text = value.strip()
    if not (text.isascii() and text.isprintable()) or " " in text:
        raise argparse.ArgumentTypeError(
            f"expected an http(s) URL of printable ASCII, got {value!r}"
        )
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http(s) URL with a host, got {value!r}")
    return text


Handler = Callable[[argparse.Namespace], int]


def guarded(
    prog: str, errors: Callable[[], tuple[type[Exception], ...]], store: str
) -> Callable[[Handler], Handler]:
    """Wrap a subcommand handler: an error of ``errors()`` (a function, so the handler's
    imports stay lazy) or a SQLite ``store`` that cannot be read prints
    ``prog: error: <why>`` and exits 1, never a traceback."""

    def wrap(run: Handler) -> Handler:
        def handler(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except BrokenPipeError:
                raise  # the reader went away: not an error (figstream.cli.main ends quietly)
            except sqlite3.DatabaseError as exc:
                message = f"the {store} cannot be read: {exc}"
            except Exception as exc:
                if not isinstance(exc, errors()):
                    raise
                message = str(exc)
            print(f"{prog}: error: {message}", file=sys.stderr)
            return 1

        return handler

    return wrap
