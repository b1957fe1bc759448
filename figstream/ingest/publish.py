"""Producers of the landing zone: a batch publisher and a live demo producer.

:class:`Publisher` cuts records into micro-batches of at most ``batch_size`` lines and lands
each one with a single atomic ``store.put`` under ``figstream.ingest.landing.batch_key``. The key is
taken from the clock just before the put (the commit time), and a publisher never issues the
same or a smaller arrival time twice, so its keys strictly increase even within one microsecond
or if the wall clock steps back. Keys from one publisher are also put in key order (the
sequence is allocated and committed under a lock). Concurrent writers must use distinct
producer names: two publishers with the same name could name two batches alike, and the
second put would replace the first.

Records land as given. A dict is serialised with orjson; bytes are written unchanged, even
when they are not JSON, so a bad record reaches the streaming side and is dead-lettered there
with a reason instead of vanishing at the edge. Two things cannot be represented as one line
of a JSON-lines batch and are refused with ``PublishError`` naming the record's index: bytes
containing a raw newline, and an empty record (readers skip blank lines, which would break
"events in = materialised + dead-lettered"). The batch holding such a record is not written;
earlier batches of the same call have landed and are listed on the error.

:func:`produce` is a live producer for demos and soak tests: it re-times the seeded
``ingest.generate.EventStream`` (realistic boards, postings, updates, expiries and one board
merger a few simulated days in) to "now", adds jitter, occasional events a few minutes late,
duplicate deliveries and a share of corrupted records (``ingest.generate._corrupt``, so they
fail validation exactly as generated history does), and publishes at a scheduled rate: event
``n`` is due ``n / rate`` seconds after the start, the loop sleeps until the next event or
flush, and the returned :class:`ProduceStats` reports the rate actually achieved.

Bad inputs tried (see tests/figstream/test_publish.py): bytes with a newline (first, middle and
last record of a batch), empty bytes, ``str`` and ``int`` records, dicts orjson cannot
serialise, invalid UTF-8 and truncated JSON (landed unchanged), ``batch_size`` of 0, producer
names with upper case or underscores, non-positive rates, durations and flush intervals, and a
clock that stands still or runs backwards.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from figstream.ingest.landing import PRODUCER_PATTERN, batch_key
from figstream.storage.objects import ObjectStore

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _wall_us() -> int:
    return time.time_ns() // 1000


class PublishError(ValueError):
    """A record cannot be published; ``landed`` lists the keys written before it."""

    def __init__(self, message: str, landed: list[str]) -> None:
        if landed:
            message += (
                f" ({len(landed)} earlier batch(es) of this call had already landed, "
                f"the last as {landed[-1]})"
            )
        super().__init__(message)
        self.landed = landed


def _to_line(index: int, record: Any) -> bytes:
    if isinstance(record, dict):
        try:
            return orjson.dumps(record)
        except TypeError as exc:
            raise ValueError(f"record {index} cannot be serialised as JSON: {exc}") from None
    if isinstance(record, bytes | bytearray | memoryview):
        line = bytes(record)
        newline = line.find(b"\n")
        if newline >= 0:
            raise ValueError(
                f"record {index} contains a raw newline at byte {newline}; a JSON line cannot "
                "contain one (escape it as \\n inside strings)"
            )
        if not line:
            raise ValueError(f"record {index} is empty; an empty line is not a record")
        return line
    raise TypeError(f"record {index} must be bytes or a dict, got {type(record).__name__}")


class Publisher:
    """Lands records as micro-batches ``landing/{date}/{stamp}-{producer}-{seq}.jsonl``."""

    def __init__(
        self,
        store: ObjectStore,
        producer: str = "cli",
        batch_size: int = 1000,
        clock: Callable[[], int] = _wall_us,
    ) -> None:
        if not PRODUCER_PATTERN.fullmatch(producer):
            raise ValueError(
                f"producer {producer!r} must be 1..64 characters of lower-case letters, "
                "digits and '-'"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.store = store
        self.producer = producer
        self.batch_size = batch_size
        self._clock = clock  # epoch microseconds
        self._lock = threading.Lock()
        self._seq = 0
        self._last_us = -1
        self.records = 0  # records landed by this publisher, over all calls
        self.batches = 0

    def publish(self, records: Iterable[bytes | dict[str, Any]]) -> list[str]:
        """Land ``records`` in order, in batches of at most ``batch_size``; return the keys."""
        keys: list[str] = []
        lines: list[bytes] = []
        for index, record in enumerate(records):
            try:
                lines.append(_to_line(index, record))
            except (TypeError, ValueError) as exc:
                raise PublishError(str(exc), keys) from None
            if len(lines) >= self.batch_size:
                keys.append(self._commit(lines))
                lines = []
        if lines:
            keys.append(self._commit(lines))
        return keys

    def _commit(self, lines: list[bytes]) -> str:
        body = b"\n".join(lines) + b"\n"
        with self._lock:
            arrival_us = max(self._clock(), self._last_us + 1)
            key = batch_key(_EPOCH + timedelta(microseconds=arrival_us), self.producer, self._seq)
            self.store.put(key, body)
            self._last_us = arrival_us
            self._seq += 1
            self.records += len(lines)
            self.batches += 1
        return key


@dataclass
class ProduceStats:
    producer: str
    seed: int
    rate: float  # requested events per second
    events: int = 0  # distinct events emitted, good and bad
    bad: int = 0  # of which corrupted on purpose
    # Of the bad, lines byte for byte the same as an earlier bad line (a JSON object cut after
    # a few characters): a rejected line is known by its bytes alone, so the streaming side
    # books such a line as a redelivery of the first, not as a dead letter of its own.
    bad_repeats: int = 0
    late: int = 0  # of which timed minutes in the past
    duplicates: int = 0  # extra deliveries of events already emitted
    published: int = 0  # records landed: events + duplicates
    batches: int = 0
    elapsed_seconds: float = 0.0
    first_key: str | None = None
    last_key: str | None = None

    @property
    def achieved_rate(self) -> float:
        return self.events / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "achieved_rate": round(self.achieved_rate, 3)}

    def describe(self) -> str:
        return (
            f"produced {self.events:,} events ({self.bad:,} bad, {self.bad_repeats:,} of them "
            f"repeating an earlier bad line, {self.late:,} late) and "
            f"{self.duplicates:,} duplicate deliveries in {self.elapsed_seconds:.1f} s: "
            f"{self.achieved_rate:,.1f} events/s (asked {self.rate:g}); "
            f"{self.published:,} records in {self.batches:,} batches, producer "
            f"{self.producer}, seed {self.seed}"
        )


# Delivery quirks of the live stream: a few events arrive minutes late, some twice.
LIVE_JITTER_US = 2_000_000
LIVE_LATE_MIN_US, LIVE_LATE_MAX_US = 60_000_000, 300_000_000
LIVE_DUPLICATE_DELAY = (0.2, 3.0)  # seconds after the original delivery
# Simulated days of ~2 minutes each keep a day's precomputed slots small at any rate, and put
# the board merger (simulated day 1) a few minutes into a demo.
LIVE_SECONDS_PER_SIM_DAY = 120


def _live_events(seed: int, rate: float) -> Iterator[dict[str, Any]]:
    """Endless good envelopes from the seeded simulation, in simulation order."""
    from figstream.ingest.generate import EventStream

    per_day = max(1000, min(200_000, int(rate * LIVE_SECONDS_PER_SIM_DAY)))
    start = datetime.now(UTC).date()
    for epoch in itertools.count():
        stream = EventStream(
            start, days=100_000, events_per_day=per_day, seed=seed + epoch, bad_rate=0.0,
            merger_day=1 if epoch == 0 else 10**9,
        )  # fmt: skip
        for record in stream:
            yield orjson.loads(record.line)


def produce(
    store: ObjectStore,
    rate: float,
    duration: float | None = None,
    seed: int | None = None,
    bad_rate: float = 0.005,
    flush_interval: float = 1.0,
    producer: str = "demo",
    stop: threading.Event | None = None,
    batch_size: int = 1000,
    on_flush: Callable[[ProduceStats], None] | None = None,
    publisher: Any | None = None,
) -> ProduceStats:
    """Publish realistic live events at ``rate`` per second until ``duration`` or ``stop``.

    ``publisher`` (anything with ``publish(records) -> list[str]``): where the records go;
    by default landing batches in ``store``. The aws profile passes the EventBridge publisher.

    Records are flushed as a batch every ``flush_interval`` seconds and once more on the way
    out, including duplicate deliveries still pending. ``seed=None`` draws a fresh seed (it is
    reported): the same seed replays the same event ids, which is how to demo deduplication.
    """
    from figstream.ingest.generate import (
        BAD_KINDS,
        DUPLICATE_RATE,
        LATE_MINUTES_RATE,
        corrupt_record,
    )
    from figstream.ingest.generate import format_us as fmt_us

    if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number of events per second, got {rate!r}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be > 0 seconds or None, got {duration!r}")
    if not 0.0 <= bad_rate <= 1.0:
        raise ValueError(f"bad_rate must be within 0..1, got {bad_rate!r}")
    if not flush_interval > 0:
        raise ValueError(f"flush_interval must be > 0 seconds, got {flush_interval!r}")
    seed = secrets.randbits(32) if seed is None else seed
    stop = stop or threading.Event()
    publisher = publisher or Publisher(store, producer, batch_size)
    stats = ProduceStats(producer=producer, seed=seed, rate=float(rate))
    timing = random.Random(f"figstream/live/{seed}")
    corrupt = random.Random(f"figstream/live-corrupt/{seed}")
    kinds = tuple(BAD_KINDS)
    source = _live_events(seed, rate)
    pending = next(source)  # builds the value pools before the clock starts
    buffer: list[bytes] = []
    bad_seen: set[bytes] = set()  # 16-byte digests of the bad lines (~100 bytes each)
    redeliveries: list[tuple[float, int, bytes]] = []  # (due, n, line): a min-heap

    def emit(n: int, now: float) -> None:
        nonlocal pending
        env, pending = pending, next(source)
        wall = _wall_us()
        if timing.random() < LATE_MINUTES_RATE:
            wall -= timing.randrange(LIVE_LATE_MIN_US, LIVE_LATE_MAX_US)
            stats.late += 1
        else:
            wall -= timing.randrange(LIVE_JITTER_US)
        env["time"] = fmt_us(wall)
        # The merger is never corrupted, as in the generator: the story hangs on it.
        if corrupt.random() < bad_rate and env["type"] != "board.merged":
            line = corrupt_record(env, kinds[corrupt.randrange(len(kinds))], corrupt)
            stats.bad += 1
            digest = hashlib.blake2b(line, digest_size=16).digest()
            if digest in bad_seen:
                stats.bad_repeats += 1
            bad_seen.add(digest)
        else:
            line = orjson.dumps(env)
        buffer.append(line)
        stats.events += 1
        if timing.random() < DUPLICATE_RATE:
            heapq.heappush(redeliveries, (now + timing.uniform(*LIVE_DUPLICATE_DELAY), n, line))

    def flush() -> None:
        if not buffer:
            return
        keys = publisher.publish(buffer)
        buffer.clear()
        stats.published, stats.batches = publisher.records, publisher.batches
        stats.first_key = stats.first_key or keys[0]
        stats.last_key = keys[-1]
        stats.elapsed_seconds = time.monotonic() - t0
        if on_flush is not None:
            on_flush(stats)

    t0 = time.monotonic()
    end = t0 + duration if duration is not None else math.inf
    total = math.ceil(duration * rate) if duration is not None else math.inf
    next_flush = t0 + flush_interval
    n = 0
    while True:
        now = time.monotonic()
        stopping = stop.is_set() or now >= end
        if not stop.is_set():
            # Event n is due at t0 + n / rate; past the end, every event before it is due.
            due = total if now >= end else min(int((now - t0) * rate) + 1, total)
            while n < due:
                emit(n, now)
                n += 1
        while redeliveries and (stopping or redeliveries[0][0] <= now):
            buffer.append(heapq.heappop(redeliveries)[2])
            stats.duplicates += 1
        if stopping:
            break
        if now >= next_flush:
            flush()
            next_flush += flush_interval
            if next_flush <= now:  # fell behind (a slow disk): don't flush in a burst
                next_flush = now + flush_interval
        wake = min(t0 + n / rate, next_flush, end)
        delay = wake - time.monotonic()
        if delay > 0:
            stop.wait(max(delay, 0.001))
    flush()
    stats.elapsed_seconds = time.monotonic() - t0
    return stats
