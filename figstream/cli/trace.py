"""``figstream trace EVENT_ID``: every place one event went.

    figstream trace EVENT_ID [--home HOME] [--webserver URL] [--json]

Prints each delivery of the event (landing batch and line, stream, partition, outcome, and for
a duplicate the batch whose delivery counted), every Dagster run that ingested it with its UI
link (``--webserver``, default ``$FIGSTREAM_WEBSERVER_URL`` or http://127.0.0.1:3000) and the
search-index change of the job each run wrote (an upsert or a delete: what the index then
showed), each asset it reached, its dead letter and reason, and the job's resulting state
(:mod:`figstream.streaming.trace_lookup`). ``--json`` prints one JSON object for tools (the
changes per run under each delivery's ``runs``, and all of them in ``index_changes``). On the
local profile it reads ``HOME/state``; on the aws profile the DynamoDB tables and S3, wherever
``HOME``.

Exit codes: 0 found; 2 a ``--webserver`` that is not an http(s) URL (argparse's usage error);
1 an event the trace index holds no delivery of (never ingested, or past the index's
retention), a home with no state store, a ``$FIGSTREAM_WEBSERVER_URL`` that is not an http(s)
URL, or a store that cannot be read, each as one ``figstream trace: error: ...`` line, never a
traceback.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from figstream.cli.args import guarded, http_url

PROG = "figstream trace"


class _UserError(Exception):
    pass


def _user_errors() -> tuple[type[Exception], ...]:
    return (_UserError, OSError)


def add_trace(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="show every place one event went",
        description=(
            "Looks the event up in the trace index (a keyed read) and shows each delivery: "
            "landing batch and line, stream, partition, outcome, every Dagster run that "
            "ingested it (with a UI link) and the search-index change of the job each wrote, "
            "the assets it reached, its dead letter and the job's state."
        ),
    )
    parser.add_argument("event_id", metavar="EVENT_ID", help="the event's envelope id")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="data root (default: $FIGSTREAM_HOME or .figstream in the project)",
    )
    parser.add_argument(
        "--webserver",
        type=http_url,
        default=None,
        help="Dagster webserver base for run links (default: $FIGSTREAM_WEBSERVER_URL or "
        "http://127.0.0.1:3000)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object with every field")
    parser.set_defaults(handler=guarded(PROG, _user_errors, "state store")(_run))


def _stores(home: Path | None) -> Any:
    from figstream.settings import data_home, profile
    from figstream.storage.state import state_path
    from figstream.streaming.trace_lookup import Sources

    root = (home or data_home()).resolve()
    if profile() != "aws" and not state_path(root).exists():
        raise _UserError(f"no state store under {root} (nothing was ingested there)")
    return Sources.for_profile(root)


def _run(args: argparse.Namespace) -> int:
    from figstream.storage.trace import TRACE_TTL_DAYS
    from figstream.streaming.trace_lookup import trace_event, webserver_url

    try:  # the flag is checked by argparse; $FIGSTREAM_WEBSERVER_URL here
        webserver = http_url(webserver_url(args.webserver))
    except argparse.ArgumentTypeError as exc:
        raise _UserError(f"the webserver for run links: {exc}") from None
    found = trace_event(_stores(args.home), args.event_id, webserver)
    if found is None:
        raise _UserError(
            f"event {args.event_id!r}: the trace index holds no delivery of it (never ingested "
            f"here, or ingested more than {TRACE_TTL_DAYS} days ago)"
        )
    if args.json:
        print(orjson.dumps(found).decode())
    else:
        print(render(found))
    return 0


def _printable(text: Any) -> str:
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _change_line(change: dict[str, Any], batch_id: str) -> str:
    """One search-index change: what the job became in the index (an upsert shows it, a
    delete hides it), when it was read, and the batch it sits under when not this one."""
    title = _printable(change["title"]) if change["title"] is not None else "-"
    line = (
        f"search index: {change['op']} of {_printable(change['job_id'])} ({title}) "
        f"read at {change['changed_at']}"
    )
    if change["batch_id"] != batch_id:
        line += f", under batch {change['batch_id']} (the run's earliest event of the job)"
    return line


def _delivery_lines(n: int, total: int, d: dict[str, Any]) -> list[str]:
    if d["counted"]:
        verdict = f"{d['outcome']} (counted)"
    else:
        verdict = f"duplicate of the delivery in batch {d['duplicate_of_batch']} (not counted)"
    lines = [
        f"delivery {n} of {total}: {d['batch_key']} line {d['line']}",
        f"  stream {d['stream']}, partition {d['partition']}: {verdict}",
    ]
    if d["reason"]:
        lines.append(f"  reason: {d['reason']}")
    if len(d["runs"]) > 1:
        lines.append(f"  {len(d['runs'])} runs ingested this batch, oldest first:")
    for run in d["runs"]:
        if run["run_id"]:
            lines.append(f"  run {run['run_id']}  {run['url']}")
        else:
            lines.append("  run: none recorded (ingested outside Dagster, e.g. figstream replay)")
        lines += [f"    {_change_line(c, d['batch_id'])}" for c in run["search_index"]]
        if run.get("search_index_note"):
            lines.append(f"    search index: {run['search_index_note']}")
    if d["assets"]:
        marks = ", ".join(f"{a['asset']} {'yes' if a['reached'] else 'no'}" for a in d["assets"])
        lines.append(f"  assets reached: {marks}")
    letter = d["dead_letter"]
    if letter:
        replay = f", replayed to {letter['replay_key']}" if letter["replay_key"] else ""
        lines.append(
            f"  dead letter {letter['id']}: {letter['code']}: {_printable(letter['detail'])}"
            f"{replay}"
        )
    return lines


def render(found: dict[str, Any]) -> str:
    """The human form of :func:`~figstream.streaming.trace_lookup.trace_event`'s result."""
    head = f"event {_printable(found['event_id'])}"
    facts = [found["event_type"], f"stream {found['stream']}"]
    if found["job_id"]:
        facts.append(f"job {_printable(found['job_id'])}")
    lines = [f"{head} ({', '.join(f for f in facts if f)})"]
    if found["board_merger"]:
        merger = found["board_merger"]
        lines.append(f"board {merger['absorbed_board']} merged into {merger['surviving_board']}")
    deliveries = found["deliveries"]
    lines.append(
        f"{len(deliveries)} deliveries; counted: {', '.join(found['counted']) or 'none'}"
        if len(deliveries) > 1
        else f"1 delivery; counted: {', '.join(found['counted']) or 'none'}"
    )
    for n, d in enumerate(deliveries, 1):
        lines += _delivery_lines(n, len(deliveries), d)
    job = found["job"]
    if job:
        holds = ", ".join(job["this_event_holds"]) or "nothing (a later event decided it)"
        lines.append(
            f"job {_printable(job['job_id'])} now: {job['status']} on {job['board']}, updated "
            f"{job['updated_at']}; this event holds: {holds}"
        )
        if job["duplicate_of"]:
            lines.append(
                f"  a cross-board duplicate of {_printable(job['duplicate_of'])}: not in "
                "deduped_postings, hidden from the search index"
            )
    elif found["job_id"]:
        lines.append(f"job {_printable(found['job_id'])}: no row in the state store (yet)")
    return "\n".join(lines)
