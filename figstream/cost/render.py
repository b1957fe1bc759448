"""An :class:`~figstream.cost.model.Estimate` as markdown (the CLI and the UI show the same
table) and as plain JSON (``figstream cost --json``, tools). Money is printed to the cent and
carried in JSON as strings, so nothing is lost to binary floats."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from figstream.cost.model import Bill, Estimate
from figstream.cost.prices import PriceTable


def money(value: Decimal) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


def _quantity(value: Decimal) -> str:
    return f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,.3f}"


def _bill_rows(bill: Bill) -> list[str]:
    rows = [
        "| service | item | quantity | free | unit price | cost | how |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in bill.charges:
        rows.append(
            f"| {c.meter.service} | {c.meter.item} | {_quantity(c.meter.quantity)} "
            f"| {_quantity(c.free)} | {c.unit_price.normalize():f} | {money(c.cost)} "
            f"| {c.meter.detail} |"
        )
    rows.append(f"| **total** | | | | | **{money(bill.total)}** | |")
    return rows


def markdown(result: Estimate, table: PriceTable, warning: str | None = None) -> str:
    streaming, legacy = result.streaming, result.legacy
    lines = []
    if warning:
        lines += [f"> **warning:** {warning}", ""]
    lines += [
        f"Monthly AWS cost, {table.region}, {table.currency}, prices read on "
        f"{table.read_on.isoformat()} ({table.path.rsplit('/', 1)[-1]})",
        "",
        f"Basis: {result.workload.basis}.",
        "",
        "| service | per month |",
        "| --- | ---: |",
        *(f"| {name} | {money(cost)} |" for name, cost in streaming.by_service.items()),
        f"| **streaming platform** | **{money(streaming.total)}** |",
        f"| legacy nightly EC2 batch, same volume | {money(legacy.total)} |",
        f"| difference (streaming - legacy) | {money(result.difference)} |",
        "",
        "Streaming platform:",
        "",
        *_bill_rows(streaming),
        "",
        "Legacy nightly batch:",
        "",
        *_bill_rows(legacy),
        "",
        "Assumptions:",
        "",
        *(f"- {a}" for a in result.assumptions),
    ]
    return "\n".join(lines)


def _bill_json(bill: Bill) -> dict[str, Any]:
    return {
        "total": str(bill.total),
        "by_service": {name: str(cost) for name, cost in bill.by_service.items()},
        "charges": [
            {
                "service": c.meter.service,
                "item": c.meter.item,
                "price": c.meter.price_key,
                "quantity": str(c.meter.quantity),
                "free": str(c.free),
                "billable": str(c.billable),
                "unit_price": f"{c.unit_price.normalize():f}",
                "cost": str(c.cost),
                "detail": c.meter.detail,
            }
            for c in bill.charges
        ],
    }


def as_json(result: Estimate, table: PriceTable, warning: str | None = None) -> dict[str, Any]:
    return {
        "region": table.region,
        "currency": table.currency,
        "prices_read_on": table.read_on.isoformat(),
        "warning": warning,
        "basis": result.workload.basis,
        "streaming": _bill_json(result.streaming),
        "legacy": _bill_json(result.legacy),
        "difference": str(result.difference),
        "assumptions": result.assumptions,
    }
