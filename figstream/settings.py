"""Where things live: from the environment, with defaults that need nothing off the machine."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("local", "aws")


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
    max_runs_in_flight: int = 1
    overlap_max_bytes: int = 1_000_000
    max_run_seconds: int = 900
    lookback_seconds: int = 120
    dead_letter_warn_rate: float = 0.02
    freshness_warn_seconds: int = 60
    freshness_fail_seconds: int = 600
    daily_stats_every_seconds: int = 300
    resume_failed_after_seconds: int = 30


MAY_BE_ZERO = {"overlap_max_bytes"}  # 0 turns it off


def streaming_settings(path: Path | None = None) -> StreamingSettings:
    """``platform/streaming.yaml``; an unknown or mistyped key is an error naming the file."""
    path = path or PROJECT_ROOT / "platform" / "streaming.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
