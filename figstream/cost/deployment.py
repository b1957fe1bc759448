"""The deployment the bill prices, read from the platform's own config where it says it: the
always-on Fargate tasks are the services of ``platform/aws/ecs/`` (the webserver, and the daemon
task that also holds the code server), with the vCPUs and memory their task definitions
reserve. The run-worker task definition is left out: it runs per heavy run (backfills, the
legacy night), not always."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from figstream.cost.model import Footprint, Task
from figstream.settings import PROJECT_ROOT

ALWAYS_ON = {"webserver": "webserver", "daemon": "daemon + code server"}


def ecs_dir() -> Path:
    return PROJECT_ROOT / "platform" / "aws" / "ecs"


def _task(path: Path, name: str) -> Task:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        # Fargate task sizes: cpu in CPU units (1024 a vCPU), memory in MiB
        return Task(name, int(raw["cpu"]) / 1024, int(raw["memory"]) / 1024)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: no task-level cpu and memory to price ({exc})") from None


def always_on_tasks(directory: Path | None = None) -> tuple[Task, ...]:
    directory = directory or ecs_dir()
    return tuple(_task(directory / f"{file}.json", name) for file, name in ALWAYS_ON.items())


def footprint(**overrides: Any) -> Footprint:
    """The default footprint with the platform's always-on tasks, then ``overrides`` (the
    CLI's flags; None values are ignored)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(Footprint(tasks=always_on_tasks()), **given)
