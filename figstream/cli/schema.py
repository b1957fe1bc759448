"""``figstream schema check`` and ``figstream schema export``: the event schema registry in CI.

``check`` loads the registry (the code's, or ``--registry MODULE:NAME`` for a rehearsal) and
refuses it when a version's chain is broken or a version breaks a consumer under its type's
compatibility mode (rules: ``figstream.events.compatibility``). ``--against`` also compares it
with a published snapshot, a JSON file written by ``export`` or the committed
``figstream/events/registry.json`` at a git ref: a published version must stay registered and
unchanged. Each refusal names the type, version, field, change, rule and the consumers it
breaks.

Exit codes: 0 compatible; 1 refused (each reason printed); 2 the check could not run (a bad
option, an unreadable snapshot, a ref without one, a registry that does not import).
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

SNAPSHOT = "figstream/events/registry.json"
OK, REFUSED, CANNOT_CHECK = 0, 1, 2


def add_schema(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="check the event schema registry's compatibility (CI), or export its snapshot",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    check = commands.add_parser(
        "check",
        help="refuse a broken chain or an incompatible version (exit 0 ok, 1 refused, 2 error)",
    )
    check.add_argument(
        "--against",
        metavar="REF|FILE",
        default=None,
        help=f"a published snapshot: a JSON file, or a git ref whose {SNAPSHOT} is read",
    )
    _registry_option(check)
    check.set_defaults(handler=_run_check)
    export = commands.add_parser("export", help=f"print the registry snapshot (see {SNAPSHOT})")
    export.add_argument("--output", type=Path, default=None, help="write to FILE, not stdout")
    _registry_option(export)
    export.set_defaults(handler=_run_export)


def _registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        metavar="MODULE:NAME",
        default="figstream.events.upcasters:UPCASTERS",
        help="the Upcasters instance to check (default: the code's registry)",
    )


def _load_registry(spec: str):
    from figstream.events.upcasters import Upcasters

    module_name, _, name = spec.partition(":")
    module = importlib.import_module(module_name)
    registry = getattr(module, name or "UPCASTERS")
    if not isinstance(registry, Upcasters):
        raise TypeError(f"{spec} is a {type(registry).__name__}, not an Upcasters")
    return registry


def _published(against: str) -> dict:
    import orjson

    path = Path(against)
    if path.is_file():
        return orjson.loads(path.read_bytes())
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False
    )
    if top.returncode != 0:
        raise ValueError(f"{against!r} is not a file, and this is not a git work tree")
    shown = subprocess.run(
        ["git", "show", f"{against}:{SNAPSHOT}"],
        capture_output=True,
        cwd=top.stdout.strip(),
        check=False,
    )
    if shown.returncode != 0:
        raise ValueError(
            f"{against!r} is not a file, and git has no {SNAPSHOT} at that ref: "
            + shown.stderr.decode(errors="replace").strip()
        )
    return orjson.loads(shown.stdout)


def _run_check(args: argparse.Namespace) -> int:
    from figstream.events import compatibility

    try:
        registry = _load_registry(args.registry)
        published = _published(args.against) if args.against else None
        if published is not None and published.get("format") != 1:
            raise ValueError(f"{args.against}: not a registry snapshot (format 1)")
    except (ImportError, AttributeError, TypeError, ValueError, OSError) as exc:
        print(f"figstream schema check: error: {exc}", file=sys.stderr)
        return CANNOT_CHECK
    problems = registry.problems()
    if published is not None:
        problems += compatibility.check_published(published, registry.snapshot())
    for event_type in sorted({t for t, _ in registry.registry}):
        versions = sorted(v for t, v in registry.registry if t == event_type)
        print(f"{event_type}: {registry.mode(event_type)}, versions "
              + ", ".join(f"v{v}" for v in versions))  # fmt: skip
    if problems:
        print(f"REFUSED: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return REFUSED
    against = f" and with the snapshot {args.against}" if args.against else ""
    print(f"OK: every chain complete, every version compatible under its mode{against}")
    return OK


def _run_export(args: argparse.Namespace) -> int:
    import orjson

    try:
        registry = _load_registry(args.registry)
    except (ImportError, AttributeError, TypeError) as exc:
        print(f"figstream schema export: error: {exc}", file=sys.stderr)
        return CANNOT_CHECK
    text = orjson.dumps(registry.snapshot(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    if args.output is None:
        sys.stdout.write(text.decode() + "\n")
    else:
        args.output.write_bytes(text + b"\n")
    return OK
