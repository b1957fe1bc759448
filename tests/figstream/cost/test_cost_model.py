"""The cost model against hand-computed bills: every figure below is worked out in the comment
beside it from the test's own price table, so a change in the repo's prices breaks nothing
here while a change in the arithmetic does."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from figstream.cost.measure import what_if
from figstream.cost.model import (
    Footprint,
    Meter,
    Task,
    Workload,
    chunks,
    estimate,
    lambda_ms_per_invocation,
    price,
    usage,
)
from figstream.cost.prices import load_prices, parse_prices

GIB = 1024**3

TABLE = parse_prices(
    """
region: test-1
currency: USD
hours_per_month: 720
prices:
  eventbridge_events: {price: 1.00, per: 1000000, unit: event, source: s, read_on: 2026-12-03}
  sqs_requests: {price: 0.40, per: 1000000, unit: request, free: 1000000, source: s,
                 read_on: 2026-12-03}
  lambda_requests: {price: 0.20, per: 1000000, unit: invocation, free: 1000000, source: s,
                    read_on: 2026-12-03}
  lambda_gb_seconds: {price: 0.0000166667, per: 1, unit: GB-s, free: 400000, source: s,
                      read_on: 2026-12-03}
  dynamodb_write_units: {price: 0.625, per: 1000000, unit: WRU, source: s, read_on: 2026-12-03}
  dynamodb_read_units: {price: 0.125, per: 1000000, unit: RRU, source: s, read_on: 2026-12-03}
  dynamodb_storage: {price: 0.25, per: 1, unit: GB-month, free: 25, source: s,
                     read_on: 2026-12-03}
  s3_storage: {price: 0.023, per: 1, unit: GB-month, source: s, read_on: 2026-12-03}
  s3_put_requests: {price: 0.005, per: 1000, unit: request, source: s, read_on: 2026-12-03}
  s3_get_requests: {price: 0.0004, per: 1000, unit: request, source: s, read_on: 2026-12-03}
  fargate_vcpu_hours: {price: 0.04048, per: 1, unit: vCPU-hour, source: s, read_on: 2026-12-03}
  fargate_gb_hours: {price: 0.004445, per: 1, unit: GB-hour, source: s, read_on: 2026-12-03}
  rds_instance_hours: {price: 0.065, per: 1, unit: hour, source: s, read_on: 2026-12-03}
  rds_storage: {price: 0.115, per: 1, unit: GB-month, source: s, read_on: 2026-12-03}
  ec2_services_instance_hours: {price: 0.1728, per: 1, unit: hour, source: s,
                                read_on: 2026-12-03}
  ec2_legacy_instance_hours: {price: 0.0864, per: 1, unit: hour, source: s,
                              read_on: 2026-12-03}
  ebs_storage: {price: 0.08, per: 1, unit: GB-month, source: s, read_on: 2026-12-03}
""",
    "test-prices.yaml",
)

# One full vCPU (1,769 MB) and 1 ms an event, so a 30-event invocation is 100 + 30 = 130 ms.
FOOTPRINT = Footprint(
    lambda_memory_mb=1769,
    lambda_fixed_ms=100.0,
    lambda_us_per_event_per_vcpu=1000.0,
    tasks=(Task("one", 1.0, 2.0),),
)

WORKLOAD = Workload(
    events=3_000_000,
    avg_event_bytes=1000,
    bad_rate=0.01,
    batches=100_000,
    batch_hours=100_000,
    stored_bytes={"landing": 10 * GIB, "archive": 0, "tables": 40 * GIB},
    state_items={"jobs": 20_000_000, "registry": 20_000_000, "claims": 0},
)


def costs(bill) -> dict[tuple[str, str], Decimal]:
    return {(c.meter.service, c.meter.item): c.cost for c in bill.charges}


def test_a_month_priced_by_hand():
    result = estimate(WORKLOAD, FOOTPRINT, TABLE)
    # 720 h x 3,600 s / 5 s a tick x 2 streams = 1,036,800 ticks; 2 idle requests each
    assert costs(result.streaming) == {
        # 3,000,000 events x 1 chunk (1,000 B) x $1.00/M
        ("EventBridge", "PutEvents"): Decimal("3.00"),
        # deliveries 3,000,000 + receives 300,000 (10 x 1,400 B = 1 chunk each) + deletes
        # 300,000 + idle 2,073,600 = 5,673,600; less 1,000,000 free = 4,673,600 x $0.40/M
        # = 1.86944
        ("SQS", "requests"): Decimal("1.87"),
        # 100,000 invocations: within the 1,000,000 free
        ("Lambda", "requests"): Decimal("0.00"),
        # 100,000 x 0.130 s x 1,769/1,024 GB = 22,458.008 GB-s: within the 400,000 free
        ("Lambda", "duration"): Decimal("0.00"),
        # 2,970,000 valid x 5.5 = 16,335,000 + dead letters 30,000 x ceil(1,300/1,024) = 60,000
        # + landing index 100,000 = 16,495,000 x $0.625/M = 10.309375
        ("DynamoDB", "write units"): Decimal("10.31"),
        # 2,970,000 x 3.4 = 10,098,000 x $0.125/M = 1.26225
        ("DynamoDB", "read units"): Decimal("1.26"),
        # jobs 20M x 1,300 B + registry 20M x 350 B + dead letters 30,000 x 1,400 B
        # = 33,042,000,000 B = 30.773 GiB; less 25 free = 5.773 x $0.25 = 1.44325
        ("DynamoDB", "storage"): Decimal("1.44"),
        # 50 GiB x $0.023
        ("S3", "storage"): Decimal("1.15"),
        # puts 100,000 + 100,000 x 8 = 900,000 + lists 1,036,800 = 1,936,800 x $0.005/1k = 9.684
        ("S3", "PUT and LIST"): Decimal("9.68"),
        # 100,000 x 10 = 1,000,000 x $0.0004/1k
        ("S3", "GET"): Decimal("0.40"),
        # 1 vCPU x 720 h x $0.04048 = 29.1456
        ("ECS Fargate", "vCPU"): Decimal("29.15"),
        # 2 GB x 720 h x $0.004445 = 6.4008
        ("ECS Fargate", "memory"): Decimal("6.40"),
        # 720 h x $0.065
        ("RDS Postgres", "instance"): Decimal("46.80"),
        # 20 GB x $0.115
        ("RDS Postgres", "storage"): Decimal("2.30"),
    }
    # the sum of the rounded charges above
    assert result.streaming.total == Decimal("113.76")
    assert result.streaming.by_service["SQS"] == Decimal("1.87")
    assert result.streaming.by_service["ECS Fargate"] == Decimal("35.55")
    # legacy: 30 nights of 100,000 events at 11,000/s = 9.1 s, billed EC2's 60 s minimum:
    # 30 x 60 s = 0.5 h x $0.0864 = 0.0432; volume 100 GB x $0.08 = 8.00
    assert costs(result.legacy) == {
        ("EC2 (legacy)", "instance"): Decimal("0.04"),
        ("EC2 (legacy)", "volume"): Decimal("8.00"),
    }
    assert result.difference == Decimal("113.76") - Decimal("8.04")


def test_the_always_on_services_on_ec2_instead_of_fargate():
    on_ec2 = replace(FOOTPRINT, services_on="ec2")
    bill = estimate(WORKLOAD, on_ec2, TABLE).streaming
    assert not [c for c in bill.charges if c.meter.service == "ECS Fargate"]
    # 1 vCPU / 2 GB fits one m6a.xlarge: 720 h x $0.1728 = 124.416; 30 GB x $0.08 = 2.40
    assert costs(bill)[("ECS on EC2", "instances")] == Decimal("124.42")
    assert costs(bill)[("ECS on EC2", "volumes")] == Decimal("2.40")
    # 9 vCPU need three 4-vCPU instances: 3 x 720 h x $0.1728 = 373.248
    big = replace(on_ec2, tasks=(Task("a", 4.5, 8.0), Task("b", 4.5, 8.0)))
    assert costs(estimate(WORKLOAD, big, TABLE).streaming)[("ECS on EC2", "instances")] == (
        Decimal("373.25")
    )
    with pytest.raises(ValueError, match="services_on"):
        replace(FOOTPRINT, services_on="lambda")


def test_the_legacy_night_scales_with_the_volume():
    big = replace(WORKLOAD, events=33_000_000)
    result = estimate(big, FOOTPRINT, TABLE)
    # 1,100,000 events a night / 11,000 per s = 100 s; 30 x 100 s = 0.833 h x $0.0864 = 0.072
    assert costs(result.legacy)[("EC2 (legacy)", "instance")] == Decimal("0.07")


@pytest.mark.parametrize(
    ("invocations", "billable", "cost"),
    [
        (999_999, 0, "0.00"),  # just under the 1M free invocations
        (1_000_000, 0, "0.00"),  # exactly the free tier
        (1_025_000, 25_000, "0.01"),  # 25,000 x $0.20/M = 0.005, half a cent rounds up
        (1_020_000, 20_000, "0.00"),  # 0.004 rounds down
    ],
)
def test_the_lambda_request_free_tier_edge(invocations, billable, cost):
    bill = estimate(replace(WORKLOAD, batch_hours=invocations), FOOTPRINT, TABLE).streaming
    (charge,) = [c for c in bill.charges if c.meter.price_key == "lambda_requests"]
    assert charge.billable == billable and charge.cost == Decimal(cost)
    assert charge.free == min(invocations, 1_000_000)


def test_the_gb_second_free_tier_edge():
    def duration_cost(gb_seconds: str) -> Decimal:
        meter = Meter("Lambda", "duration", "lambda_gb_seconds", Decimal(gb_seconds))
        return price([meter], TABLE).charges[0].cost

    assert duration_cost("399999.999") == Decimal("0.00")
    assert duration_cost("400000") == Decimal("0.00")
    # 600 GB-s over x $0.0000166667 = 0.01000002
    assert duration_cost("400600") == Decimal("0.01")
    # 60,000 over = 1.000002
    assert duration_cost("460000") == Decimal("1.00")


def test_payloads_are_billed_in_64_kb_chunks():
    assert [chunks(b) for b in (0, 1, 65_536, 65_537, 262_144)] == [1, 1, 1, 2, 4]
    large = replace(WORKLOAD, avg_event_bytes=65_537)
    meters = {m.price_key: m for m in usage(large, FOOTPRINT, 720)}
    assert meters["eventbridge_events"].quantity == 3_000_000 * 2


def test_lambda_duration_follows_memory_below_one_vcpu():
    # at 1,769 MB one vCPU: 100 ms + 30 x 1 ms; at half of it each event takes twice as long
    assert lambda_ms_per_invocation(FOOTPRINT, 30) == 130
    assert lambda_ms_per_invocation(replace(FOOTPRINT, lambda_memory_mb=884), 30) == 161
    assert lambda_ms_per_invocation(replace(FOOTPRINT, lambda_memory_mb=3538), 30) == 130


def test_meters_sharing_a_free_tier_are_refused():
    meter = Meter("SQS", "a", "sqs_requests", Decimal(1))
    with pytest.raises(ValueError, match="share a price"):
        price([meter, replace(meter, item="b")], TABLE)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bad_rate": 1.5}, "bad_rate"),
        ({"events": -1.0}, "events"),
        ({"batch_hours": float("nan")}, "batch_hours"),
    ],
)
def test_an_impossible_workload_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        replace(WORKLOAD, **change)


def test_lambda_memory_outside_lambdas_range_is_refused():
    with pytest.raises(ValueError, match=r"128\.\.10240"):
        replace(FOOTPRINT, lambda_memory_mb=64)


def test_the_repo_table_prices_every_meter_of_the_model():
    table = load_prices()
    result = estimate(what_if(2_000_000, 700, 0.01), Footprint(), table)
    assert result.streaming.total > 0 and result.legacy.total > 0
    assert {c.meter.price_key for c in result.streaming.charges} <= set(table.prices)


@settings(max_examples=60, deadline=None)
@given(
    events_per_day=st.floats(0, 5e7, allow_nan=False),
    size=st.floats(1, 300_000, allow_nan=False),
    bad=st.floats(0, 1),
    more=st.floats(0, 1e7, allow_nan=False),
)
def test_the_bill_adds_up_and_grows_with_the_events(events_per_day, size, bad, more):
    low = estimate(what_if(events_per_day, size, bad), FOOTPRINT, TABLE)
    high = estimate(what_if(events_per_day + more, size, bad), FOOTPRINT, TABLE)
    for result in (low, high):
        bill = result.streaming
        assert bill.total == sum(c.cost for c in bill.charges)
        assert all(c.cost >= 0 and c.billable + c.free == c.meter.quantity for c in bill.charges)
    assert high.streaming.total >= low.streaming.total
    assert high.legacy.total >= low.legacy.total
