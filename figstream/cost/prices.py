"""The dated unit-price table (``platform/prices.yaml``): what one unit of each AWS meter costs,
its free tier, where the figure was read and when.

Prices and free tiers live in the table, never in code, so a price change is a one-line edit
with its source and date beside it. The model (:mod:`figstream.cost.model`) names a price by
its key; a key the table lacks is an error naming the file, not a silent zero. Money is
:class:`~decimal.Decimal` throughout, so a bill adds up to the cent.

Bad inputs tried (see ``tests/figstream/cost/test_prices.py``): a missing key, a negative or
non-numeric price, ``per`` of zero, a date that is not a date, an unknown field, a file that is
not YAML or not a mapping; each raises :class:`PriceTableError` naming the file and entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from figstream.settings import PROJECT_ROOT, YamlSyntaxError, load_yaml

STALE_AFTER_DAYS = 365
_FIELDS = {"price", "per", "unit", "free", "source", "checked", "read_on"}
_REQUIRED = ("price", "per", "unit", "source", "read_on")


class PriceTableError(ValueError):
    """The price table cannot be used; the message names the file and the entry."""


def prices_path() -> Path:
    return PROJECT_ROOT / "platform" / "prices.yaml"


@dataclass(frozen=True)
class Price:
    key: str
    price: Decimal  # for `per` units
    per: Decimal
    unit: str
    free: Decimal  # units a month at no charge
    source: str
    read_on: date

    @property
    def unit_price(self) -> Decimal:
        return self.price / self.per


@dataclass(frozen=True)
class PriceTable:
    path: str
    region: str
    currency: str
    hours_per_month: Decimal
    prices: dict[str, Price]

    def __getitem__(self, key: str) -> Price:
        try:
            return self.prices[key]
        except KeyError:
            raise PriceTableError(f"{self.path}: no price {key!r} (the model needs it)") from None

    @property
    def read_on(self) -> date:
        """The oldest date a price was read: the table is as old as its oldest figure."""
        return min(p.read_on for p in self.prices.values())

    def stale_warning(self, today: date) -> str | None:
        """A warning when the oldest price was read more than a year before ``today``."""
        age = (today - self.read_on).days
        if age <= STALE_AFTER_DAYS:
            return None
        return (
            f"the price table {self.path} is {age} days old (oldest price read on "
            f"{self.read_on.isoformat()}); AWS prices change: re-read the sources and update it"
        )


def _number(value: Any, where: str, positive: bool = False) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PriceTableError(f"{where}: expected a number, got {value!r}")
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        raise PriceTableError(f"{where}: expected a number, got {value!r}") from None
    if not number.is_finite() or number < 0 or (positive and number == 0):
        raise PriceTableError(f"{where}: must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return number


def _date(value: Any, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise PriceTableError(f"{where}: expected a date as YYYY-MM-DD, got {value!r}") from None


def _price(key: str, raw: Any, where: str) -> Price:
    if not isinstance(raw, dict):
        raise PriceTableError(f"{where}: expected a mapping, got {raw!r}")
    unknown = sorted(set(raw) - _FIELDS, key=str)
    if unknown:
        raise PriceTableError(f"{where}: unknown field {unknown[0]!r} (known: {sorted(_FIELDS)})")
    for name in _REQUIRED:
        if raw.get(name) in (None, ""):
            raise PriceTableError(f"{where}.{name}: missing")
    return Price(
        key=key,
        price=_number(raw["price"], f"{where}.price"),
        per=_number(raw["per"], f"{where}.per", positive=True),
        unit=str(raw["unit"]),
        free=_number(raw.get("free", 0), f"{where}.free"),
        source=str(raw["source"]),
        read_on=_date(raw["read_on"], f"{where}.read_on"),
    )


def parse_prices(text: str, path: str = "<prices>") -> PriceTable:
    try:
        raw = load_yaml(text)
    except YamlSyntaxError as exc:
        raise PriceTableError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("prices"), dict) or not raw["prices"]:
        raise PriceTableError(f"{path}: expected a mapping with a non-empty `prices` mapping")
    prices = {
        str(key): _price(str(key), value, f"{path}: entry prices.{key}")
        for key, value in raw["prices"].items()
    }
    return PriceTable(
        path=path,
        region=str(raw.get("region", "")),
        currency=str(raw.get("currency", "USD")),
        hours_per_month=_number(raw.get("hours_per_month", 730), f"{path}: hours_per_month", True),
        prices=prices,
    )


def load_prices(path: Path | None = None) -> PriceTable:
    path = path or prices_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceTableError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse_prices(text, str(path))
