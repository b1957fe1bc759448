"""What an ingest materialisation tells the UI about its hours: the books and the dead letters.

The work is in :mod:`figstream.streaming.books`; this module turns it into Dagster metadata and
check results for ``ingest_asset`` (``assets/streaming.py``):

- each hour's own figures (the run's records, materialised, duplicates, dead letters, lag, and
  the hour's books) as numeric metadata, so the UI plots them per hour: on the materialisation
  of a one-hour run, on an ``AssetObservation`` of each hour of a range run (a catch-up or a
  backfill), whose materialisation then carries no per-hour numbers;
- the ``books`` check: fails, naming the hour and by how much, when an hour does not balance;
- the ``dead_letters`` check: the view of the hours' dead letters by reason, with the
  ``figstream dlq`` command that lists each, warning while some wait to be replayed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence

import dagster as dg

from figstream.streaming import books
from figstream.streaming.ingest import IngestReport
from figstream.streaming.stores import HOUR_FORMAT

SHOWN_HOURS = 24  # hours listed in a check's table; a catch-up covers hundreds


def check_specs(name: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("books", asset=name, description=(
            "Per hour of the run: events landed (landing index) = materialised (rows in the "
            "hour's fragments) + dead-lettered (dead-letter store) + duplicates dropped, batch "
            "by batch against what the ingest step booked. Fails naming the hour and by how "
            "much. `figstream books` prints the same."
        )),
        dg.AssetCheckSpec("dead_letters", asset=name, description=(
            "The run's hours' dead letters by reason, each with the `figstream dlq list` "
            "command that shows them; warns while some wait to be replayed "
            "(`figstream dlq replay`)."
        )),
    ]  # fmt: skip


def dlq_command(stream: str, partition: str, code: str | None = None) -> str:
    command = f"figstream dlq list --stream {stream} --partition {partition}"
    return command + (f" --code {code}" if code else "")


def by_reason_table(hours: Sequence[books.HourBooks]) -> dg.MetadataValue:
    """Markdown: one row per (hour, reason) with its count and the command that lists them."""
    lines = ["| hour | reason | dead letters | list them |", "|---|---|---:|---|"]
    for hour in hours:
        for code, count in sorted(hour.by_reason.items()):
            command = dlq_command(hour.stream, hour.partition, code)
            lines.append(f"| {hour.partition} | `{code}` | {count:,} | `{command}` |")
    if len(lines) == 2:
        lines.append("| - | none | 0 | - |")
    return dg.MetadataValue.md("\n".join(lines))


def hour_metadata(report: IngestReport, hour: books.HourBooks) -> dict[str, object]:
    """One hour's figures: what this run did in it, and the hour's books as they stand."""
    return {
        "records": report.records,
        "materialised": report.materialised,
        "duplicates_dropped": report.duplicates,
        "dead_lettered": report.dead_lettered,
        **report.lag_seconds(),
        "books_landed": hour.landed,
        "books_materialised": hour.materialised,
        "books_dead_lettered": hour.dead_lettered,
        "books_duplicates": hour.duplicates,
        "books_pending": hour.pending,
        "books_unaccounted": hour.difference,
        "dead_letters_by_reason": by_reason_table([hour]),
        "dead_letters_command": dg.MetadataValue.text(dlq_command(hour.stream, hour.partition)),
    }


def _books_table(hours: Sequence[books.HourBooks]) -> dg.MetadataValue:
    lines = [
        "| hour | landed | materialised | dead-lettered | duplicates | pending | off by | status |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    shown = [h for h in hours if not h.balanced] or list(hours)
    for h in shown[:SHOWN_HOURS]:
        lines.append(
            f"| {h.partition} | {h.landed:,} | {h.materialised:,} | {h.dead_lettered:,} | "
            f"{h.duplicates:,} | {h.pending:,} | {h.difference:+,} | {h.status} |"
        )
    if len(shown) > SHOWN_HOURS:
        lines.append(f"\n... and {len(shown) - SHOWN_HOURS} more hours")
    return dg.MetadataValue.md("\n".join(lines))


def books_result(stream: str, hours: Sequence[books.HourBooks]) -> dg.AssetCheckResult:
    unbalanced = [h for h in hours if not h.balanced]
    if unbalanced:
        shown = "\n".join(books.describe(h) for h in unbalanced[:5])
        more = f"\n... and {len(unbalanced) - 5} more hours" if len(unbalanced) > 5 else ""
        description = (
            f"{stream} {hours_named(hours)}: {len(unbalanced)} of {len(hours)} hours do not "
            f"balance:\n{shown}{more}"
        )
    else:
        description = f"{stream} {hours_named(hours)}: balanced"
    return dg.AssetCheckResult(
        check_name="books",
        passed=not unbalanced,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "hours": len(hours),
            "hours_unbalanced": len(unbalanced),
            "unaccounted": sum(abs(h.difference) for h in hours),
            "landed": sum(h.landed for h in hours),
            "materialised": sum(h.materialised for h in hours),
            "dead_lettered": sum(h.dead_lettered for h in hours),
            "duplicates": sum(h.duplicates for h in hours),
            "pending": sum(h.pending for h in hours),
            "books": _books_table(hours),
            "command": dg.MetadataValue.text(
                f"figstream books --stream {stream} --from {_iso(hours[0].partition)} "
                f"--to {_iso(hours[-1].partition, 1)}"
                if hours
                else f"figstream books --stream {stream}"
            ),
        },
    )


def hours_named(hours: Sequence[books.HourBooks]) -> str:
    """The hours a check covers, as the UI's execution history shows them: which run is which."""
    if len(hours) <= 1:
        return f"hour {hours[0].partition}" if hours else "no hour"
    return f"{len(hours)} hours, {hours[0].partition} to {hours[-1].partition}"


def _iso(partition: str, plus_hours: int = 0) -> str:
    """An hourly partition key as the CLI's ``--from``/``--to`` time (``2026-11-01T03:00``)."""
    moment = dt.datetime.strptime(partition, HOUR_FORMAT) + dt.timedelta(hours=plus_hours)
    return moment.strftime("%Y-%m-%dT%H:%M")


def dead_letters_result(
    dead_letters, stream: str, hours: Sequence[books.HourBooks]
) -> dg.AssetCheckResult:
    """``dead_letters``: the hours' dead letters by reason; warns while some are not replayed
    (counted from the store: a replayed record lands again as a new batch)."""
    total = sum(sum(h.by_reason.values()) for h in hours)
    open_ = sum(
        dead_letters.count(stream=stream, partition_key=h.partition, include_replayed=False)
        for h in hours
        if h.by_reason
    )
    with_dead = [h for h in hours if h.by_reason]
    by_reason = sum((Counter(h.by_reason) for h in with_dead), Counter())
    reasons = ", ".join(f"{code} {n:,}" for code, n in sorted(by_reason.items()))
    return dg.AssetCheckResult(
        check_name="dead_letters",
        passed=open_ == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{stream} {hours_named(hours)}: {open_:,} of {total:,} dead letters wait to be "
            f"replayed (by reason: {reasons}): `figstream dlq list --stream {stream}`, then "
            "`figstream dlq show ID`, `figstream dlq replay --code CODE` or `--fix ID=FILE`"
            if open_
            else f"{stream} {hours_named(hours)}: {total:,} dead letters, none waiting"
        ),
        metadata={
            "dead_letters": total,
            "waiting": open_,
            "replayed": total - open_,
            "by_reason": by_reason_table(with_dead[:SHOWN_HOURS]),
            "command": dg.MetadataValue.text(f"figstream dlq list --stream {stream}"),
        },
    )
