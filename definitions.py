"""The figstream code location: the profile picks resources, the ledger picks legacy ops."""

import dagster as dg

from assets.legacy import build_legacy_assets, legacy_job
from figstream import settings
from figstream.ledger import load_ledger
from legacy.pipeline import TASKS
from resources.profiles import resources_for

ledger = load_ledger(settings.ledger_path(), known_tasks=[task.__name__ for task in TASKS])

defs = dg.Definitions(
    assets=build_legacy_assets(ledger, TASKS),
    jobs=[legacy_job(ledger)],
    resources=resources_for(settings.profile(), ledger),
)
