"""A generated history on disk: the legacy feed dump and the landing batches of the same events.

``generate`` writes both from one seeded ``EventStream``, atomically per file, and a manifest
with the counts.
"""

from __future__ import annotations

import heapq
import random
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from tqdm import tqdm

from figstream.events.postings import legacy_line
from figstream.ingest.generate import (
    BOARDS,
    DAY,
    DUPLICATE_RATE,
    HOUR,
    LATE_HOURS_RATE,
    LATE_MINUTES_RATE,
    MINUTE,
    PROGRESS_AUTO_THRESHOLD,
    SECOND,
    EventStream,
    batch_stamp,
    check_args,
    day_iso,
)
from figstream.storage.files import atomic_file, fsync_dir, write_atomic


class _FeedWriter:
    """``feeds/{date}/{board}.jsonl``: one open atomic file per board for the current day."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.day: str | None = None
        self.files: dict[str, BinaryIO] = {}
        self.open_files = ExitStack()
        self.files_written = 0

    def add(self, day: str, board: str, line: bytes) -> None:
        if day != self.day:
            self.close_day()
            self.day = day
        fh = self.files.get(board)
        if fh is None:
            path = self.root / day / f"{board}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            # Stays open for the whole day; close_day() puts it in place.
            fh = self.files[board] = self.open_files.enter_context(
                atomic_file(path, buffering=1 << 20, sync_directory=False)
            )
        fh.write(line + b"\n")

    def close_day(self) -> None:
        if self.day is None:
            return
        self.open_files.close()
        self.files_written += len(self.files)
        self.files = {}
        self.mark_done(self.day)
        self.day = None

    def mark_done(self, day: str) -> None:
        directory = self.root / day
        directory.mkdir(parents=True, exist_ok=True)
        # The marker goes last, so a reader that sees it sees every board file of the day; its
        # directory fsync makes the board files' renames durable too.
        write_atomic(directory / "_SUCCESS", [])


class _LandingWriter:
    """``landing/{arrival date}/{batch_id}.jsonl``, cut by size, age and arrival date; the batch
    id carries the last arrival, the time the batch would commit."""

    def __init__(self, root: Path, batch_size: int, batch_seconds: float) -> None:
        self.root = root
        self.batch_size = batch_size
        self.span_us = int(batch_seconds * SECOND)
        self.lines: list[bytes] = []
        self.first_us = 0
        self.last_us = 0
        self.first_day = -1
        self.batches = 0
        self.records = 0
        self.dirs: list[Path] = []

    def add(self, arrival_us: int, line: bytes) -> None:
        if self.lines and (
            len(self.lines) >= self.batch_size
            or arrival_us // DAY != self.first_day
            or arrival_us - self.first_us >= self.span_us
        ):
            self.flush()
        if not self.lines:
            self.first_us, self.first_day = arrival_us, arrival_us // DAY
        self.lines.append(line + b"\n")
        self.last_us = arrival_us
        self.records += 1

    def flush(self) -> None:
        if not self.lines:
            return
        directory = self.root / day_iso(self.first_day)
        if not self.dirs or self.dirs[-1] != directory:
            if self.dirs:
                fsync_dir(self.dirs[-1])
            directory.mkdir(parents=True, exist_ok=True)
            self.dirs.append(directory)
        # Named by the last arrival: a batch becomes visible (commits) once it is complete.
        batch_id = f"{batch_stamp(self.last_us)}-{self.batches:06d}"
        # One directory fsync per directory, when the writer moves on, not one per batch.
        write_atomic(directory / f"{batch_id}.jsonl", self.lines, sync_directory=False)
        self.batches += 1
        self.lines = []

    def close(self) -> None:
        self.flush()
        if self.dirs:
            fsync_dir(self.dirs[-1])


@dataclass
class GenerateSummary:
    seed: int
    start: str
    end: str  # last day of the range, inclusive
    days: int
    events_per_day: int
    bad_rate: float
    clean_days: int
    batch_size: int
    batch_seconds: float
    boards: list[str]
    events: int  # records in the feed dump, good and bad, each once
    events_by_type: dict[str, int]  # good records only
    bad_total: int
    bad_by_kind: dict[str, int]
    bad_records: list[dict[str, str]]  # first MANIFEST_LIST_CAP, by event time
    bad_records_truncated: bool
    cross_board_groups: int
    cross_board_postings: int
    merger: dict[str, Any]
    late_minutes: int
    late_hours: int
    duplicates_delivered: int
    landing_records: int
    batches: int
    feed_files: int
    faker_version: str
    elapsed_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        types = ", ".join(f"{k} {v:,}" for k, v in sorted(self.events_by_type.items()))
        kinds = ", ".join(f"{k} {v:,}" for k, v in self.bad_by_kind.items() if v)
        lines = [
            f"generated {self.events:,} events on {len(self.boards)} boards, "
            f"{self.start}..{self.end}, seed {self.seed}, in {self.elapsed_seconds:.1f} s",
            f"  good: {types}",
            f"  bad: {self.bad_total:,}" + (f" ({kinds})" if kinds else ""),
            f"  cross-board: {self.cross_board_groups:,} jobs, "
            f"{self.cross_board_postings:,} extra postings",
        ]
        if self.merger:
            lines.append(
                f"  merger: {self.merger['absorbed_board']} -> {self.merger['surviving_board']} "
                f"at {self.merger['time']}, {self.merger['reposted']:,} postings re-posted"
            )
        lines.append(
            f"  delivery: {self.landing_records:,} records in {self.batches:,} batches, "
            f"{self.duplicates_delivered:,} duplicates, {self.late_minutes:,} minutes late, "
            f"{self.late_hours:,} hours late"
        )
        return "\n".join(lines)


def generate(
    root: Path,
    start: date,
    days: int,
    events_per_day: int,
    seed: int = 42,
    bad_rate: float = 0.01,
    clean_days: int = 0,
    batch_size: int = 1000,
    progress: bool | None = None,
    batch_seconds: float = 3600.0,
    overwrite: bool = False,
    schema_version: int = 1,
    schema_from_day: int = 0,
) -> GenerateSummary:
    """Simulate the boards and write the feed dump, the landing zone and the manifest.

    The same arguments give byte-identical feed and landing files (with the same Faker
    version); the manifest differs only in ``elapsed_seconds``. ``root/feeds`` and
    ``root/landing`` must be absent or empty unless ``overwrite`` removes them first.
    ``schema_version=2`` lands postings from ``schema_from_day`` on as v2; the feed dump gets
    them downcast to v1, since legacy reads v1.
    """
    check_args(
        days=days,
        events_per_day=events_per_day,
        bad_rate=bad_rate,
        clean_days=clean_days,
        batch_size=batch_size,
        batch_seconds=batch_seconds,
    )
    began = time.perf_counter()
    root = Path(root)
    feeds_dir, landing_dir = root / "feeds", root / "landing"
    for directory in (feeds_dir, landing_dir):
        if directory.exists() and any(directory.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{directory} is not empty (use overwrite to replace it)")
            shutil.rmtree(directory)
    root.mkdir(parents=True, exist_ok=True)

    stream = EventStream(
        start,
        days,
        events_per_day,
        seed,
        bad_rate,
        clean_days,
        schema_version=schema_version,
        schema_from_day=schema_from_day,
    )
    # Legacy reads v1: the feed dump gets each v2 posting downcast, as the mirror writes it.
    to_feed = legacy_line if schema_version > 1 else bytes
    delivery = random.Random(f"figstream/delivery/{seed}")
    feeds = _FeedWriter(feeds_dir)
    landing = _LandingWriter(landing_dir, batch_size, batch_seconds)
    in_flight: list[tuple[int, int, bytes]] = []  # (arrival, seq, line): a min-heap
    seq = duplicates = late_minutes = late_hours = 0
    events = 0
    total = days * events_per_day
    if progress is None:
        progress = total >= PROGRESS_AUTO_THRESHOLD and sys.stderr.isatty()
    bar = tqdm(total=total, unit="ev", unit_scale=True, file=sys.stderr, disable=not progress,
               desc="generate")  # fmt: skip
    try:
        for record in stream:
            t = record.time_us
            feeds.add(day_iso(t // DAY), record.board, to_feed(record.line))
            draw = delivery.random()
            if draw < LATE_HOURS_RATE:
                arrival = t + delivery.randrange(HOUR, 6 * HOUR)
                late_hours += 1
            elif draw < LATE_HOURS_RATE + LATE_MINUTES_RATE:
                arrival = t + delivery.randrange(MINUTE, HOUR)
                late_minutes += 1
            else:
                arrival = t + delivery.randrange(30 * SECOND)
            seq += 1
            heapq.heappush(in_flight, (arrival, seq, record.line))
            if delivery.random() < DUPLICATE_RATE:
                seq += 1
                duplicates += 1
                again = arrival + delivery.randrange(SECOND, 10 * MINUTE)
                heapq.heappush(in_flight, (again, seq, record.line))
            # Later records have later event times, hence no arrival before t: safe to land.
            while in_flight and in_flight[0][0] <= t:
                arrival_us, _, line = heapq.heappop(in_flight)
                landing.add(arrival_us, line)
            events += 1
            if events % 8192 == 0:
                bar.update(8192)
        feeds.close_day()
        while in_flight:
            arrival_us, _, line = heapq.heappop(in_flight)
            landing.add(arrival_us, line)
        landing.close()
        bar.update(events % 8192)
    finally:
        bar.close()
    for day in range(days):
        marker = feeds_dir / (start + timedelta(days=day)).isoformat() / "_SUCCESS"
        if not marker.exists():
            feeds.mark_done(marker.parent.name)

    stats = stream.stats
    summary = GenerateSummary(
        seed=seed,
        start=start.isoformat(),
        end=(start + timedelta(days=days - 1)).isoformat(),
        days=days,
        events_per_day=events_per_day,
        bad_rate=bad_rate,
        clean_days=clean_days,
        batch_size=batch_size,
        batch_seconds=batch_seconds,
        boards=list(BOARDS),
        events=events,
        events_by_type=dict(sorted(stats.events_by_type.items())),
        bad_total=stats.bad_total,
        bad_by_kind=stats.bad_by_kind,
        bad_records=stats.bad_records,
        bad_records_truncated=stats.bad_total > len(stats.bad_records),
        cross_board_groups=stats.cross_board_groups,
        cross_board_postings=stats.cross_board_postings,
        merger=stats.merger,
        late_minutes=late_minutes,
        late_hours=late_hours,
        duplicates_delivered=duplicates,
        landing_records=landing.records,
        batches=landing.batches,
        feed_files=feeds.files_written,
        faker_version=stream.pools.faker_version,
        elapsed_seconds=0.0,
    )
    summary.elapsed_seconds = round(time.perf_counter() - began, 3)
    write_atomic(
        root / "generate-manifest.json",
        [orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2), b"\n"],
    )
    return summary
