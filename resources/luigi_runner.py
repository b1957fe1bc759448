"""Runs legacy Luigi tasks in-process with Luigi's local scheduler.

The legacy pipeline reads and writes local files in both profiles (it ran on one EC2 box),
so this resource has a single implementation.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import luigi
import luigi.configuration
from luigi.execution_summary import LuigiStatusCode

SUCCESS_CODES = {LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY}


class _Tail(logging.Handler):
    """Keeps the last lines Luigi logged, so a failure carries the traceback that caused it."""

    def __init__(self, lines: int = 200) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=lines)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class LuigiRun:
    task_id: str
    status: LuigiStatusCode
    summary: str
    log_tail: list[str]
    outputs: list[Path] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCESS_CODES


def _flatten_outputs(task: luigi.Task) -> list[Path]:
    return [Path(t.path) for t in luigi.task.flatten(task.output()) if hasattr(t, "path")]


class LuigiRunner(dg.ConfigurableResource):
    """``luigi.build([...], local_scheduler=True, detailed_summary=True)`` for one task and date."""

    data_root: str
    epoch: str

    def configure(self) -> None:
        config = luigi.configuration.get_config()
        config.set("legacy", "data_root", self.data_root)
        config.set("legacy", "epoch", self.epoch)

    def build(self, task_cls: type[luigi.Task], date: dt.date) -> LuigiRun:
        return self.build_days(task_cls, [date])[date]

    def build_days(
        self, task_cls: type[luigi.Task], dates: list[dt.date]
    ) -> dict[dt.date, LuigiRun]:
        """One ``luigi.build`` of the task for every date (a backfill's range): Luigi schedules
        them together, as its own nightly batch did, instead of paying a build's start-up per
        day. A day succeeded when its task is complete afterwards; the summary is the build's."""
        self.configure()
        tasks = {date: task_cls(date=date) for date in dates}
        tail = _Tail()
        loggers = [logging.getLogger(name) for name in ("luigi-interface", "luigi")]
        for logger in loggers:
            logger.addHandler(tail)
        try:
            result = luigi.build(
                list(tasks.values()),
                local_scheduler=True,
                detailed_summary=True,
                workers=1,
                log_level="INFO",
            )
        finally:
            for logger in loggers:
                logger.removeHandler(tail)
        out = {}
        for date, task in tasks.items():
            # The build's status, unless this day's outcome differs from it (another day failed)
            if task.complete():
                ok = result.status in SUCCESS_CODES
                status = result.status if ok else LuigiStatusCode.SUCCESS
            else:
                ok = result.status not in SUCCESS_CODES
                status = result.status if ok else LuigiStatusCode.FAILED
            out[date] = LuigiRun(
                task_id=task.task_id,
                status=status,
                summary=result.summary_text,
                log_tail=list(tail.lines),
                outputs=_flatten_outputs(task),
            )
        return out
