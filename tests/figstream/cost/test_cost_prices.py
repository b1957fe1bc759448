"""The dated price table: its staleness warning (judged at a given date, never today's), and a
malformed table refused with the file and entry named."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from figstream.cost.prices import PriceTableError, load_prices, parse_prices

ENTRY = "{price: 0.40, per: 1000000, unit: request, free: 1000000, source: s, read_on: %s}"


def table(*read_on: str):
    lines = [f"  p{i}: " + ENTRY % day for i, day in enumerate(read_on)]
    return parse_prices("prices:\n" + "\n".join(lines), "prices.yaml")


def test_the_table_is_as_old_as_its_oldest_price():
    prices = table("2026-12-03", "2026-06-01")
    assert prices.read_on == date(2026, 6, 1)
    assert prices["p0"].unit_price == Decimal("0.0000004")
    assert prices["p0"].free == 1_000_000


@pytest.mark.parametrize(
    ("today", "stale"),
    [
        (date(2026, 12, 3), False),
        (date(2027, 12, 3), False),  # 365 days: a year, not more
        (date(2027, 12, 4), True),  # 366 days
        (date(2030, 1, 1), True),
    ],
)
def test_a_table_over_a_year_old_is_warned_about(today, stale):
    warning = table("2026-12-03").stale_warning(today)
    assert (warning is not None) == stale
    if stale:
        assert "prices.yaml" in warning and "2026-12-03" in warning
        assert f"{(today - date(2026, 12, 3)).days} days old" in warning


def test_the_repo_table_is_dated_and_sourced():
    prices = load_prices()
    assert prices.region == "us-east-1" and prices.currency == "USD"
    assert all(p.source.startswith("https://") for p in prices.prices.values())
    assert prices["lambda_requests"].free == 1_000_000
    assert prices["dynamodb_storage"].free == 25


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prices: {}", "non-empty `prices`"),
        ("[1, 2]", "non-empty `prices`"),
        ("prices: {a: {price: 1, per: 1, unit: u, source: s}}", "prices.a.read_on: missing"),
        ("prices: {a: {price: -1, per: 1, unit: u, source: s, read_on: 2026-01-01}}",
         "prices.a.price: must be >= 0"),
        ("prices: {a: {price: x, per: 1, unit: u, source: s, read_on: 2026-01-01}}",
         "prices.a.price: expected a number"),
        ("prices: {a: {price: 1, per: 0, unit: u, source: s, read_on: 2026-01-01}}",
         "prices.a.per: must be > 0"),
        ("prices: {a: {price: 1, per: 1, unit: u, source: s, read_on: soon}}",
         "expected a date"),
        ("prices: {a: {price: 1, per: 1, unit: u, source: s, read_on: 2026-01-01, tier: 2}}",
         "unknown field 'tier'"),
        ("prices: [", "not valid YAML"),
    ],
)  # fmt: skip
def test_a_malformed_table_is_refused_naming_the_entry(text, message):
    with pytest.raises(PriceTableError, match=r"prices\.yaml") as error:
        parse_prices(text, "prices.yaml")
    assert message in str(error.value)


def test_a_missing_price_names_the_key():
    with pytest.raises(PriceTableError, match="no price 'sqs_requests'"):
        table("2026-12-03")["sqs_requests"]
