"""``figstream migration status|advance|rollback``: the ledger's stages from the command line.

``advance`` moves a task one stage on and refuses without parity evidence; ``rollback`` moves
it back (one stage, or ``--to`` any earlier one) at once. Both edit the ledger file safely
(see :mod:`figstream.migration.gate`). Exit codes: 0 done, 1 refused or failed (the reason on
stderr).
"""

from __future__ import annotations

import argparse
import os
import urllib.request
from pathlib import Path

import orjson

from figstream.cli.args import guarded

PROG = "figstream migration"


def add_migration(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "migration",
        help="strangler-fig stages of the legacy tasks: status, advance, rollback",
        description=(
            "Each legacy Luigi task moves legacy -> shadow -> migrated -> retired in the "
            "migration ledger. Advancing past shadow needs N consecutive clean parity days "
            "(N per task in the ledger); rolling back needs nothing and takes effect at once."
        ),
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--ledger", type=Path, default=None, help="ledger file (default: $FIGSTREAM_LEDGER or "
        "platform/migration_ledger.yaml)"
    )  # fmt: skip
    common.add_argument(
        "--home", type=Path, default=None, help="data root with the parity evidence "
        "(default: $FIGSTREAM_HOME or .figstream in the project)"
    )  # fmt: skip
    changes = argparse.ArgumentParser(add_help=False)
    changes.add_argument(
        "--webserver",
        default=os.environ.get("FIGSTREAM_WEBSERVER"),
        metavar="URL",
        help="a running Dagster webserver (e.g. http://127.0.0.1:3000) whose code location is "
        "reloaded after the edit, so the ops follow at once (default: $FIGSTREAM_WEBSERVER)",
    )
    changes.add_argument(
        "--location", default="figstream", help="code location name (default: figstream)"
    )
    actions = parser.add_subparsers(dest="migration_action", required=True, metavar="ACTION")

    status = actions.add_parser(
        "status", parents=[common], help="tasks, stages, parity streak and last diff"
    )
    status.add_argument("--json", action="store_true", help="one JSON object per task")
    status.set_defaults(handler=_guarded(_run_status))

    advance = actions.add_parser(
        "advance", parents=[common, changes], help="move TASK one stage on (needs parity evidence)"
    )
    advance.add_argument("task", metavar="TASK", help="legacy task name, e.g. CleanPostings")
    advance.set_defaults(handler=_guarded(_run_advance))

    rollback = actions.add_parser(
        "rollback",
        parents=[common, changes],
        help="move TASK back one stage, or --to an earlier one",
    )
    rollback.add_argument("task", metavar="TASK")
    rollback.add_argument(
        "--to", choices=["legacy", "shadow", "migrated"], help="the stage to go back to"
    )
    rollback.set_defaults(handler=_guarded(_run_rollback))


def _user_errors() -> tuple[type[Exception], ...]:
    from figstream.migration.gate import MigrationError
    from figstream.migration.ledger import LedgerError

    return (MigrationError, LedgerError, OSError)


_guarded = guarded(PROG, _user_errors, "parity evidence store")


def _paths(args: argparse.Namespace):
    from figstream import settings
    from figstream.migration.gate import EvidenceStore, evidence_path

    ledger = args.ledger or settings.ledger_path()
    return Path(ledger), EvidenceStore(evidence_path(args.home))


def _run_status(args: argparse.Namespace) -> int:
    from figstream.migration.gate import describe_streak, status
    from figstream.migration.ledger import load_ledger

    ledger_file, evidence = _paths(args)
    rows = status(load_ledger(ledger_file), evidence)
    if args.json:
        for row in rows:
            last = row.last
            print(orjson.dumps({
                "task": row.task, "stage": row.stage.value, "replaced_by": row.replaced_by,
                "required": row.required, "streak": row.streak.clean,
                "streak_through": row.streak.through,
                "last": None if last is None else {
                    "partition": last.partition_key, "verdict": last.verdict,
                    "summary": last.summary,
                },
                "next": row.next_step,
            }).decode())  # fmt: skip
        return 0
    print(f"ledger: {ledger_file}")
    width = max(len(r.task) for r in rows)
    for row in rows:
        print(f"{row.task:<{width}}  {row.stage.value:<8}  -> {row.replaced_by or '-'}")
        print(f"{'':<{width}}  parity: {describe_streak(row.streak, row.required)}")
        if row.last is not None:
            print(
                # the summary starts with the verdict ("clean: 3,000 rows match")
                f"{'':<{width}}  last check: {row.last.partition_key} {row.last.summary}"
            )
        print(f"{'':<{width}}  next: {row.next_step}")
    return 0


def _run_advance(args: argparse.Namespace) -> int:
    from figstream.migration.gate import advance

    ledger_file, evidence = _paths(args)
    change = advance(ledger_file, args.task, evidence)
    print(f"{change.task}: {change.before.value} -> {change.after.value} ({ledger_file})")
    print(_effect(change.after, _reload(args)))
    return 0


def _run_rollback(args: argparse.Namespace) -> int:
    from figstream.migration.gate import rollback
    from figstream.migration.ledger import Stage

    ledger_file, evidence = _paths(args)
    to = Stage(args.to) if args.to else None
    change = rollback(ledger_file, args.task, evidence, to)
    print(f"{change.task}: {change.before.value} -> {change.after.value} ({ledger_file})")
    print(_effect(change.after, _reload(args)))
    return 0


_RELOAD = """
mutation ($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      locationOrLoadError { __typename ... on PythonError { message } }
    }
    ... on Error { message }
  }
}
"""


def _reload(args: argparse.Namespace) -> str | None:
    """Reload the code location through the webserver's GraphQL API; None if not asked.
    The ledger is already written: a failed reload is reported, not an error."""
    if not args.webserver:
        return None
    body = orjson.dumps({"query": _RELOAD, "variables": {"name": args.location}})
    request = urllib.request.Request(
        args.webserver.rstrip("/") + "/graphql",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = orjson.loads(response.read())
    except (OSError, ValueError) as exc:
        return f"could not reach {args.webserver} to reload: {exc}"
    result = (answer.get("data") or {}).get("reloadRepositoryLocation") or {}
    loaded = result.get("locationOrLoadError") or {}
    if loaded.get("__typename") == "RepositoryLocation":
        return f"reloaded code location {args.location!r} at {args.webserver}"
    problem = loaded.get("message") or result.get("message") or answer.get("errors")
    return f"reload of {args.location!r} at {args.webserver} failed: {problem}"


def _effect(stage, reloaded: str | None) -> str:
    from figstream.migration.ledger import Stage

    reads = "legacy" if stage in (Stage.LEGACY, Stage.SHADOW) else "the new asset"
    text = f"Consumers read {reads} from their next run on. "
    if reloaded is None:
        return text + (
            "Reload the code location (UI: Deployment -> Reload, or pass --webserver URL) "
            "so the ops follow."
        )
    return text + reloaded.capitalize() + "."
