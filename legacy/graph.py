"""The legacy task graph as Luigi's own ``requires()`` states it, for whoever needs it as data.

Reading the graph from ``requires()`` rather than restating it keeps the Dagster lineage (and
the migration's "who still reads this output" rule) from drifting away from what Luigi runs.
A task is sampled on the day after the epoch: on the epoch itself ``ActiveJobs`` asks for no
previous day, so its requirement on yesterday's snapshot (itself, one day back) would not show.

Only Luigi is imported here: the legacy package stays free of the new platform.
"""

import datetime
import re
from collections import defaultdict
from dataclasses import dataclass

import luigi


@dataclass(frozen=True)
class Requirement:
    """One upstream of a task: ``task`` (a class name), whether it is ``external`` (made
    outside the pipeline, like the feed dump), and the ``earliest`` and ``latest`` day offsets
    ``requires()`` asks for, relative to the requiring task's date (0 = the same day)."""

    task: str
    external: bool
    earliest: int
    latest: int

    @property
    def same_day(self):
        return self.earliest == self.latest == 0


def asset_name(task_name):
    """``ActiveJobs`` -> ``active_jobs``: a task's name as the new platform spells names."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", task_name).lower()


def sample_date(epoch):
    """The date tasks are introspected on: one day after ``epoch``, so date-recursive
    requirements show up."""
    return epoch + datetime.timedelta(days=1)


def requirements(task_cls, epoch):
    """What ``task_cls`` requires, one :class:`Requirement` per upstream task class, in the
    order ``requires()`` first names them (a task that requires itself on an earlier day is
    its own upstream)."""
    sample = sample_date(epoch)
    offsets = defaultdict(list)
    external = {}
    for required in luigi.task.flatten(task_cls(date=sample).requires()):
        name = type(required).__name__
        offsets[name].append((required.date - sample).days)
        external[name] = isinstance(required, luigi.ExternalTask)
    return [
        Requirement(name, external[name], min(days), max(days)) for name, days in offsets.items()
    ]


def required_by(tasks, epoch):
    """Task name -> the names of the other tasks that require it (a task's requirement on its
    own earlier days is left out), for every task in ``tasks``."""
    readers = {task.__name__: [] for task in tasks}
    for task in tasks:
        for requirement in requirements(task, epoch):
            if requirement.task != task.__name__ and requirement.task in readers:
                readers[requirement.task].append(task.__name__)
    return readers
