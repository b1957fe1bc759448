"""A durable cursor over the landing zone that neither skips nor repeats a batch.

Batch keys sort by commit time, but two producers can commit out of order by a few
milliseconds (or a clock's skew): a plain "last key seen" cursor would then skip the batch that
became visible after a later-named one. So each listing starts at ``watermark - lookback``, and
the cursor knows which keys of that window it has taken already.

It knows them compactly: the cursor shown in the UI holds the watermark and only the count and a
digest of the keys taken within the window (about 120 under load, which as a list pushed the
tick history off the screen). A tick compares them with the window it lists (:meth:`resolve`):
the same digest means every key there was taken. Otherwise a batch became visible late in the
window, and the landing index, where every taken batch is recorded before the cursor moves,
tells which keys are new; if even the window's indexed keys do not match the digest, a tick
indexed batches and died before its cursor was saved, and the window is taken again (runs are
idempotent), so no batch is ever skipped.

A batch that becomes visible later than the lookback (a producer whose clock runs minutes
behind, a put stuck in retries) sorts below every later listing. A periodic reconciliation
finds it: every ``reconcile_every_seconds`` a sweep lists the last ``reconcile_days`` arrival
days below the listing start against the landing index, a bounded slice per tick, resuming
where the last slice stopped. The cursor keeps only the sweep's position, when it began, and
the late batches a slice found; those are taken on the next tick, like new ones, so a tick that
dies after indexing them cannot lose them (the index is what tells the sweep a batch was seen).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta

from figstream.ingest.landing import LANDING_PREFIX, key_floor, parse_batch_key

DEFAULT_LOOKBACK = timedelta(minutes=2)
HOUR_FORMAT = "%Y-%m-%d-%H:00"  # Dagster's hourly partition keys


@dataclass
class LandingCursor:
    watermark: str = ""  # the greatest batch key taken so far
    # The keys taken within the lookback window behind the watermark: known once resolved
    # against a listing (:meth:`resolve`); the cursor stores their count and digest (window).
    recent: set[str] | None = field(default=None, compare=False)
    window: tuple[int, str] = (0, "")
    # Days whose daily rollup is owed, and when one was last requested (epoch seconds).
    days_due: set[str] = field(default_factory=set)
    days_requested_at: float = 0.0
    # The reconciliation: where a sweep in progress resumes ("" when none is), when the last
    # sweep began (epoch seconds), and late batches found but not yet taken.
    reconcile_after: str = ""
    reconciled_at: float = 0.0
    late: set[str] = field(default_factory=set)
    # History owed (a catch-up's hours older than the live ones, requested a chunk at a time):
    # [first hour not yet requested, last hour, lowest id, highest batch id of those owed]
    # (batch ids sort as their keys do).
    history: list[str] = field(default_factory=list)

    @classmethod
    def loads(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        # A cursor of the previous version lists the window's keys: its digest is theirs.
        recent = set(data["recent"]) if "recent" in data else None
        count, digest = data.get("window", (0, ""))
        return cls(
            watermark=data.get("watermark", ""),
            recent=recent,
            window=digest_of(recent) if recent is not None else (int(count), str(digest)),
            days_due=set(data.get("days_due", [])),
            days_requested_at=float(data.get("days_requested_at", 0.0)),
            reconcile_after=data.get("reconcile_after", ""),
            reconciled_at=float(data.get("reconciled_at", 0.0)),
            late=set(data.get("late", [])),
            history=list(data.get("history", [])),
        )

    def dumps(self) -> str:
        window = digest_of(self.recent) if self.recent is not None else self.window
        data = {
            "watermark": self.watermark,
            "window": list(window),
            "days_due": sorted(self.days_due),
            "days_requested_at": round(self.days_requested_at, 3),
            "reconciled_at": round(self.reconciled_at, 3),
        }
        # Written only while they hold something: the cursor stays short.
        if self.reconcile_after:
            data["reconcile_after"] = self.reconcile_after
        if self.late:
            data["late"] = sorted(self.late)
        if self.history:
            data["history"] = self.history
        return json.dumps(data, separators=(",", ":"))

    def start_after(self, lookback: timedelta = DEFAULT_LOOKBACK) -> str:
        """The listing start: a key just before ``watermark - lookback``."""
        if not self.watermark:
            return ""
        arrival, _ = parse_batch_key(self.watermark)
        return key_floor(arrival - lookback)

    def resolve(
        self,
        listed: Iterable[str],
        lookback: timedelta,
        indexed: Callable[[list[str]], set[str]],
    ) -> LandingCursor:
        """The cursor knowing which keys of its window it took (``recent``), from a listing
        that starts at :meth:`start_after` and ``indexed(keys)``: those of ``keys`` the landing
        index holds for the stream (asked only when the window is not as the cursor left it)."""
        if self.recent is not None:
            return self
        if not self.watermark:
            return replace(self, recent=set())
        horizon = _arrival(self.watermark) - lookback
        window = {k for k in listed if k <= self.watermark and _arrival(k) >= horizon}
        if digest_of(window) == self.window:
            return replace(self, recent=window)
        seen = indexed(sorted(window))
        if digest_of(seen) == self.window:
            return replace(self, recent=seen)  # the others became visible late: new
        # Indexed keys this cursor never took (a tick died before its cursor was saved): take
        # the window again; the runs are idempotent.
        return replace(self, recent=set())

    def new_keys(self, listed: Iterable[str]) -> list[str]:
        """The listed keys not taken yet, sorted (the cursor resolved first)."""
        if self.recent is None and self.watermark:
            raise ValueError("the cursor's window is not resolved: call resolve() first")
        recent = self.recent or set()
        return sorted(key for key in listed if key not in recent and key != self.watermark)

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
        keep = {k for k in (*(self.recent or ()), *taken) if _arrival(k) >= horizon}
        return replace(self, watermark=watermark, recent=keep)

    def reconcile_due(self, now: float, every: float) -> bool:
        """Whether a tick at ``now`` sweeps: one is in progress, or ``every`` seconds have passed
        since the last began. Never when ``every`` is 0 or nothing has been taken yet."""
        if not every or not self.watermark:
            return False
        return bool(self.reconcile_after) or now - self.reconciled_at >= every

    def reconcile_from(self, days: int) -> str:
        """Where the sweep lists from: where its last slice stopped, else the start of the
        arrival day ``days - 1`` days before the watermark's."""
        if self.reconcile_after:
            return self.reconcile_after
        first = _arrival(self.watermark).date() - timedelta(days=days - 1)
        return key_floor(datetime.combine(first, time.min, tzinfo=UTC))

    def reconciled(self, found: Iterable[str], resume_after: str, now: float) -> LandingCursor:
        """The cursor after a sweep slice that found ``found`` and stopped at ``resume_after``
        ("" when the sweep is done)."""
        began = self.reconciled_at if self.reconcile_after else now
        return replace(
            self, reconcile_after=resume_after, reconciled_at=began, late=self.late | set(found)
        )

    def owe_history(self, hours: Iterable[str], keys: Iterable[str]) -> LandingCursor:
        """The cursor owing the batches ``keys`` of the history ``hours`` too.

        One span of hours and one key range, whatever the number of batches: a chunk of hours
        is later run over the batches the landing index holds for them within the key range.
        Merging two spans may name batches an earlier run took (idempotent: run again)."""
        hours, ids = sorted(hours), sorted(parse_batch_key(k)[1] for k in keys)
        if not hours or not ids:
            return self
        span = [hours[0], hours[-1], ids[0], ids[-1]]
        if self.history:
            first, last, lo, hi = self.history
            span = [min(first, span[0]), max(last, span[1]), min(lo, span[2]), max(hi, span[3])]
        return replace(self, history=span)

    def history_after(self, hour: str) -> LandingCursor:
        """The cursor once the history up to ``hour`` has been requested."""
        if not self.history or hour >= self.history[1]:
            return replace(self, history=[])
        return replace(self, history=[max(self.history[0], _next_hour(hour)), *self.history[1:]])


def digest_of(keys: Iterable[str]) -> tuple[int, str]:
    """How many keys, and 16 hex digits of the SHA-256 of them sorted: the window's summary."""
    ordered = sorted(keys)
    return len(ordered), hashlib.sha256("\n".join(ordered).encode()).hexdigest()[:16]


def _next_hour(hour: str) -> str:
    moment = datetime.strptime(hour, HOUR_FORMAT) + timedelta(hours=1)
    return moment.strftime(HOUR_FORMAT)


def _arrival(key: str) -> datetime:
    return parse_batch_key(key)[0]


__all__ = ["DEFAULT_LOOKBACK", "LANDING_PREFIX", "LandingCursor"]
