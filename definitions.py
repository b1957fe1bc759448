"""The figstream code location: the profile picks resources, the ledger picks legacy ops."""

import dagster as dg

from assets.legacy import build_legacy_assets, legacy_job
from assets.streaming import build_streaming_assets, stream_jobs
from figstream import settings
from figstream.ledger import load_ledger
from legacy.pipeline import TASKS
from resources.profiles import resources_for
from sensors.streams import stream_sensor

ledger = load_ledger(settings.ledger_path(), known_tasks=[task.__name__ for task in TASKS])
streaming_settings = settings.streaming_settings()
jobs = stream_jobs()

defs = dg.Definitions(
    assets=[
        *build_legacy_assets(ledger, TASKS),
        *build_streaming_assets(ledger, streaming_settings),
    ],
    jobs=[legacy_job(), *jobs.values()],
    sensors=[
        stream_sensor(stream, jobs[stream], jobs["stats"], streaming_settings)
        for stream in ("postings", "boards")
    ],
    resources=resources_for(settings.profile(), ledger),
)
