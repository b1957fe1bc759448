"""``platform_cost``: the streaming platform's monthly AWS bill in the UI, beside the legacy
nightly batch's for the same volume.

Thin: the stores measure the last ``window_days`` of event time
(``figstream.cost.measure``), the model prices it with ``platform/prices.yaml``
(``figstream.cost.model``), and the result is the same markdown breakdown ``figstream cost``
prints, plus numeric metadata (the monthly total, the legacy total, the difference and each
service) so that the UI plots the bill across materialisations. Unpartitioned: each
materialisation is the bill as of then.
"""

import re
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from figstream.cost import render
from figstream.cost.deployment import footprint
from figstream.cost.measure import measure
from figstream.cost.model import estimate
from figstream.cost.prices import load_prices
from figstream.settings import streaming_settings
from resources.stores import StreamingResources


class CostConfig(dg.Config):
    window_days: int = 7
    # The window's end (ISO 8601, UTC when no offset); default: the current hour.
    end: str | None = None


def _slug(service: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", service.lower()).strip("_")


def _window_end(config: CostConfig) -> datetime:
    if config.end is None:
        return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    end = datetime.fromisoformat(config.end)
    return end if end.tzinfo is not None else end.replace(tzinfo=UTC)


@dg.asset(
    group_name="platform",
    kinds={"aws"},
    description="The monthly AWS bill of the streaming platform per service, to the cent, "
    "beside the legacy nightly EC2 batch's for the same volume.",
)
def platform_cost(
    context: dg.AssetExecutionContext, config: CostConfig, streaming: StreamingResources
) -> dg.MaterializeResult:
    if config.window_days < 1:
        raise dg.Failure(f"window_days must be >= 1, got {config.window_days}")
    table = load_prices()
    end = _window_end(config)
    workload = measure(
        streaming.stores(),
        end - timedelta(days=config.window_days),
        end,
        float(table.hours_per_month),
        streaming_settings().claim_ttl_days,
    )
    result = estimate(workload, footprint(), table)
    warning = table.stale_warning(date.today())
    if warning:
        context.log.warning(warning)
    bill = result.streaming
    metadata: dict[str, object] = {
        "breakdown": dg.MetadataValue.md(render.markdown(result, table, warning)),
        "monthly_total_usd": float(bill.total),
        "legacy_monthly_usd": float(result.legacy.total),
        "difference_usd": float(result.difference),
        "basis": workload.basis,
        "prices_read_on": table.read_on.isoformat(),
        **{f"usd_{_slug(name)}": float(cost) for name, cost in bill.by_service.items()},
    }
    if warning:
        metadata["price_table_warning"] = warning
    return dg.MaterializeResult(metadata=metadata)
