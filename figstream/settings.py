"""Where things live: from the environment, with defaults that need nothing off the machine."""

from __future__ import annotations

import os
from pathlib import Path

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
