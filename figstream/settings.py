"""Where things live: from the environment, with defaults that need nothing off the machine.

Also the one reader of the platform's YAML files (``platform/*.yaml``): :func:`load_yaml`, over
ruamel.yaml's safe loader (YAML 1.2: ``yes`` is a string and a repeated key is an error), the
library the ledger's comment-keeping edits need anyway.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("local", "aws")


class YamlSyntaxError(ValueError):
    """Text that is not valid YAML; the message says where (line, column) and what."""


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def load_yaml(text: str) -> Any:
    """The document in ``text`` as plain dicts, lists and scalars (None if it is empty).

    Malformed YAML raises :class:`YamlSyntaxError` saying where and what, without the loader's
    excerpts and hints, so that callers can prefix the file's name.
    """
    try:
        return YAML(typ="safe", pure=True).load(text)
    except MarkedYAMLError as exc:
        where = exc.problem_mark or exc.context_mark
        message = f"{_at(where)}: " if where is not None else ""
        message += exc.problem or exc.context or "malformed"
        if exc.context and exc.problem:
            started = f" started at {_at(exc.context_mark)}" if exc.context_mark else ""
            message += f" ({exc.context}{started})"
        raise YamlSyntaxError(message) from None
    except ReaderError as exc:
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        raise YamlSyntaxError(
            f"character {exc.position + 1} (#x{code:04x}): {exc.reason}"
        ) from None
    except YAMLError as exc:
        raise YamlSyntaxError(" ".join(str(exc).split())) from None


def profile() -> str:
    name = os.environ.get("FIGSTREAM_PROFILE", "local").strip() or "local"
    if name not in PROFILES:
        raise ValueError(f"FIGSTREAM_PROFILE={name!r} is not one of {', '.join(PROFILES)}")
    return name


def data_home() -> Path:
    """Root of local data: feed dumps, the landing zone, legacy outputs."""
    return Path(os.environ.get("FIGSTREAM_HOME") or PROJECT_ROOT / ".figstream").resolve()


def ledger_path() -> Path:
    return Path(
        os.environ.get("FIGSTREAM_LEDGER") or PROJECT_ROOT / "platform" / "migration_ledger.yaml"
    ).resolve()


def routing_path() -> Path:
    return Path(
        os.environ.get("FIGSTREAM_ROUTING") or PROJECT_ROOT / "platform" / "routing.yaml"
    ).resolve()


@dataclass(frozen=True)
class StreamingSettings:
    max_batches_per_tick: int = 400
    max_runs_per_tick: int = 6
    live_hours: int = 2
    history_hours_per_run: int = 24
    max_runs_in_flight: int = 2
    overlap_max_bytes: int = 1_000_000
    max_run_seconds: int = 900
    lookback_seconds: int = 120
    dead_letter_warn_rate: float = 0.02
    freshness_warn_seconds: int = 60
    freshness_fail_seconds: int = 600
    daily_stats_every_seconds: int = 300
    resume_failed_after_seconds: int = 30
    reconcile_every_seconds: int = 300
    reconcile_days: int = 2
    run_history_days: int = 7
    failed_run_history_days: int = 30
    run_purge_every_seconds: int = 600
    run_purge_max_runs: int = 1000
    claim_ttl_days: int = 14
    snapshot_keep_days: int = 7
    compact_fragments_after_seconds: int = 21_600
    archive_landing_after_days: int = 3
    day_rows_keep_days: int = 35
    queue_max_messages_per_tick: int = 10_000


# 0 turns it off
MAY_BE_ZERO = {"overlap_max_bytes", "reconcile_every_seconds", "run_purge_every_seconds"}


def streaming_settings(path: Path | None = None) -> StreamingSettings:
    """``platform/streaming.yaml``; an unknown or mistyped key is an error naming the file."""
    path = path or PROJECT_ROOT / "platform" / "streaming.yaml"
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except YamlSyntaxError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw.pop("version", None)
    known = {f.name: f.type for f in fields(StreamingSettings)}
    for key, value in raw.items():
        if key not in known:
            raise ValueError(f"{path}: entry {key}: unknown setting (known: {', '.join(known)})")
        expected = float if known[key] == "float" else int
        positive = key not in MAY_BE_ZERO
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or value < 0 or (positive and value == 0):
            what = "a positive number" if positive else "a number >= 0"
            raise ValueError(f"{path}: entry {key}: must be {what}, got {value!r}")
        raw[key] = expected(value)
    return StreamingSettings(**raw)
