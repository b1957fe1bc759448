"""A small ingested world for the migration rules that read the new side: two generated days
(the first clean, the second with bad records), landed, ingested and applied to the state
store (clean, dedupe, job_state: the daily views read the state as of a day's end from it),
nothing more (the views compute the rest). Legacy's files go to each test's own directory.

A helper module, not a conftest: ``test_migration.py`` imports the top-level ``conftest``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from figstream.ingest.dataset import generate
from figstream.streaming import cleaning, dedupe, ingest, jobs, landing_index
from figstream.streaming.stores import INGEST_TABLES, Stores, day_partitions

EPOCH = "2026-11-01"


@dataclass(frozen=True)
class Ingested:
    stores: Stores
    clean_day: str = "2026-11-01"
    bad_day: str = "2026-11-02"
    unseen_day: str = "2026-11-05"  # nothing landed for it

    def dead_letters(self, day: str) -> int:
        return sum(self.stores.dead_letters.count(partition_key=p) for p in day_partitions(day))


def ingest_world(home: Path) -> Ingested:
    start = dt.date.fromisoformat(EPOCH)
    generate(home, start, 2, 300, seed=3, bad_rate=0.05, clean_days=1, progress=False)
    stores = Stores.local(home, f"{EPOCH}-00:00")
    world = Ingested(stores)
    hours = [*day_partitions(world.clean_day), *day_partitions(world.bad_day)]
    for stream in INGEST_TABLES:
        landing_index.catch_up_index(stores, stream)
        for hour in hours:
            ingest.ingest(stores, stream, hour, stores.state.batches_for(stream, hour))
    cleaning.clean(stores, hours, None)
    dedupe.dedupe(stores, hours, None)
    jobs.update_job_state(stores, hours, None)
    assert world.dead_letters(world.clean_day) == 0 < world.dead_letters(world.bad_day)
    return world
