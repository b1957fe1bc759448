"""The platform_cost asset through dg.materialize on a generated, replayed home: the markdown
breakdown and the numeric metadata the UI plots agree with the core's own estimate over the
same window."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from assets.cost import platform_cost
from figstream.cli.main import main
from figstream.cost.deployment import footprint
from figstream.cost.measure import measure
from figstream.cost.model import estimate
from figstream.cost.prices import load_prices
from figstream.settings import routing_path
from figstream.storage.deadletter import deadletter_path
from figstream.storage.state import state_path
from resources.stores import (
    LocalObjectStoreResource,
    RoutingResource,
    SqliteDeadLetterResource,
    SqliteStateStoreResource,
    StreamingResources,
)


@pytest.fixture(scope="module")
def streaming(tmp_path_factory) -> StreamingResources:
    home = tmp_path_factory.mktemp("cost-asset")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIGSTREAM_HOME", str(home))
        assert main(["generate", "--start", "2026-11-01", "--days", "1", "--events-per-day",
                     "120", "--no-progress"]) == 0  # fmt: skip
        assert main(["replay", "--from", "2026-11-01", "--to", "2026-11-02"]) == 0
    return StreamingResources(
        objects=LocalObjectStoreResource(root=str(home)),
        state=SqliteStateStoreResource(path=str(state_path(home))),
        dead_letters=SqliteDeadLetterResource(path=str(deadletter_path(home))),
        routing=RoutingResource(path=str(routing_path())),
        first_partition="2026-11-01-00:00",
    )


def materialize(streaming: StreamingResources, **config) -> dict:
    result = dg.materialize(
        [platform_cost],
        resources={"streaming": streaming},
        run_config={"ops": {"platform_cost": {"config": config}}},
    )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    return event.materialization.metadata


def test_the_bill_in_the_ui_is_the_cores_estimate(streaming):
    metadata = materialize(streaming, window_days=1, end="2026-11-02T00:00")
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    table = load_prices()
    expected = estimate(
        measure(streaming.stores(), start, end, float(table.hours_per_month)), footprint(), table
    )
    assert metadata["monthly_total_usd"].value == float(expected.streaming.total)
    assert metadata["legacy_monthly_usd"].value == float(expected.legacy.total)
    assert metadata["difference_usd"].value == float(expected.difference)
    per_service = {k: v.value for k, v in metadata.items() if k.startswith("usd_")}
    assert set(per_service) >= {"usd_eventbridge", "usd_sqs", "usd_lambda", "usd_dynamodb",
                                "usd_s3", "usd_ecs_fargate", "usd_rds_postgres"}  # fmt: skip
    assert round(sum(per_service.values()), 2) == metadata["monthly_total_usd"].value
    breakdown = metadata["breakdown"].value
    assert "| **streaming platform** |" in breakdown and "legacy nightly EC2 batch" in breakdown
    assert "measured:" in metadata["basis"].value and " 0 records" not in metadata["basis"].value


def test_an_empty_window_still_prices_the_always_on_services(streaming):
    metadata = materialize(streaming, window_days=1, end="2026-10-02T00:00")
    assert metadata["usd_eventbridge"].value == 0.0
    assert metadata["usd_ecs_fargate"].value > 0 and metadata["usd_rds_postgres"].value > 0
