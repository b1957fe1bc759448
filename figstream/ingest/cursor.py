"""A durable cursor over the landing zone that neither skips nor repeats a batch.

Batch keys sort by commit time, but two producers can commit out of order by a few
milliseconds (or a clock's skew): a plain "last key seen" cursor would then skip the batch that
became visible after a later-named one. So the cursor keeps a watermark plus the keys already
taken within a lookback window behind it, and each listing starts at ``watermark - lookback``.
A batch that becomes visible later than the lookback is still picked up by a backfill of its
partition, and `figstream landing audit` reports it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from figstream.ingest.landing import LANDING_PREFIX, key_floor, parse_batch_key

DEFAULT_LOOKBACK = timedelta(minutes=2)


@dataclass
class LandingCursor:
    watermark: str = ""  # the greatest batch key taken so far
    recent: set[str] = field(default_factory=set)  # keys taken within the lookback window
    # Days whose daily rollup is owed, and when one was last requested (epoch seconds).
    days_due: set[str] = field(default_factory=set)
    days_requested_at: float = 0.0

    @classmethod
    def loads(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(
            watermark=data.get("watermark", ""),
            recent=set(data.get("recent", [])),
            days_due=set(data.get("days_due", [])),
            days_requested_at=float(data.get("days_requested_at", 0.0)),
        )

    def dumps(self) -> str:
        return json.dumps(
            {
                "watermark": self.watermark,
                "recent": sorted(self.recent),
                "days_due": sorted(self.days_due),
                "days_requested_at": self.days_requested_at,
            }
        )

    def start_after(self, lookback: timedelta = DEFAULT_LOOKBACK) -> str:
        """The listing start: a key just before ``watermark - lookback``."""
        if not self.watermark:
            return ""
        arrival, _ = parse_batch_key(self.watermark)
        return key_floor(arrival - lookback)

    def new_keys(self, listed: Iterable[str]) -> list[str]:
        return sorted(key for key in listed if key not in self.recent and key != self.watermark)

    def advance(
        self, taken: Iterable[str], lookback: timedelta = DEFAULT_LOOKBACK
    ) -> LandingCursor:
        """The cursor after ``taken`` are durably handled; forgets keys older than the window."""
        taken = list(taken)
        if not taken:
            return self
        watermark = max([self.watermark, *taken])
        newest, _ = parse_batch_key(watermark)
        horizon = newest - lookback
        keep = {k for k in (*self.recent, *taken) if _arrival(k) >= horizon}
        return replace(self, watermark=watermark, recent=keep)


def _arrival(key: str) -> datetime:
    return parse_batch_key(key)[0]


__all__ = ["DEFAULT_LOOKBACK", "LANDING_PREFIX", "LandingCursor"]
