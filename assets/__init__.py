"""The software-defined assets: legacy Luigi tasks, the streaming path, migration, redirects."""

import warnings

import dagster as dg

# backfill_policy is beta in Dagster 1.13 and used on purpose: a backfill of a range is one run.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
