"""A deterministic, realistic, multi-board job-event stream, written the two ways it is consumed.

One seeded simulation of job boards produces events (postings, updates, expiries, one board
merger, cross-board duplicates, a share of corrupted records). With ``schema_version=2`` the
postings from ``schema_from_day`` on are emitted as v2 (a producer switching mid-stream); the
content is the same, upcast. The same events are written as

* the legacy nightly feed dump: ``feeds/{event date}/{board}.jsonl`` plus a ``_SUCCESS`` marker
  per day, which the Luigi pipeline reads; and
* landing-zone micro-batches: ``landing/{arrival date}/{batch_id}.jsonl`` in arrival order, with
  late, out-of-order and twice-delivered events, which the streaming side reads.

Faker is only used up front to fill value pools; the hot loop samples them with
:class:`random.Random`, so a million events take seconds, not minutes. Content, corruption and
delivery draw from separate seeded streams, so changing ``bad_rate`` or ``clean_days`` leaves
the good events, and the delivery pattern, unchanged.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from figstream.events.postings import upcast_record
from figstream.events.schemas import REGISTRY

BOARDS = ("hireloop", "jobnest", "workwave", "talentpool", "careerhub")
BOARD_WEIGHTS = (30, 20, 20, 15, 15)
ABSORBED_BOARD, SURVIVING_BOARD = "jobnest", "hireloop"

EMPLOYMENT_TYPES = ("full_time", "part_time", "contract", "internship", "temporary")
EMPLOYMENT_WEIGHTS = (70, 10, 12, 4, 4)
# Annual USD salary bands, in thousands, per employment type.
SALARY_BANDS = {
    "full_time": (45, 220),
    "part_time": (18, 55),
    "contract": (60, 200),
    "internship": (20, 60),
    "temporary": (28, 80),
}
SALARY_CAP = 900_000
EXPIRY_REASONS = ("filled", "expired", "withdrawn")

# The posting schema versions a producer can emit (v2: salary range, structured location).
SCHEMA_VERSIONS = (1, 2)

# Expected ``figstream.events.validation`` reason code for each kind of corruption.
BAD_KINDS: dict[str, str] = {
    "malformed_json": "malformed_json",
    "missing_field": "missing_field",
    "wrong_type": "wrong_type",
    "unknown_type": "unknown_type",
    "unknown_version": "unknown_version",
    "absurd_value": "invalid_value",
    "bad_encoding": "bad_encoding",
    "absurd_time": "time_out_of_range",
}

# Per slot: job.posted, else job.updated, else job.expired.
POSTED_SHARE, UPDATED_SHARE = 0.50, 0.30
# A real job posted on 2-3 boards; 9% of new jobs gives ~15% of postings in such groups.
CROSS_POST_RATE = 0.09
SALARY_NULL_RATE = 0.2
REMOTE_RATE = 0.25

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# Postings cluster in US working hours (UTC hours 0..23).
HOUR_WEIGHTS = (4, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 8, 8, 7, 6, 5, 5, 4)

LATE_HOURS_RATE, LATE_MINUTES_RATE = 0.005, 0.02
DUPLICATE_RATE = 0.005
MANIFEST_LIST_CAP = 10_000
PROGRESS_AUTO_THRESHOLD = 200_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TITLE_PREFIXES = ("Senior ", "Lead ", "Junior ")


@lru_cache(maxsize=4096)
def day_iso(epoch_day: int) -> str:
    return (_EPOCH + timedelta(days=epoch_day)).date().isoformat()


def format_us(us: int) -> str:
    """Wire form of a UTC time in epoch microseconds; identical to ``events.format_time``."""
    sec, micro = divmod(us, SECOND)
    epoch_day, sod = divmod(sec, 86_400)
    h, rem = divmod(sod, 3600)
    m, s = divmod(rem, 60)
    if micro:
        return f"{day_iso(epoch_day)}T{h:02d}:{m:02d}:{s:02d}.{micro:06d}Z"
    return f"{day_iso(epoch_day)}T{h:02d}:{m:02d}:{s:02d}Z"


def batch_stamp(us: int) -> str:
    """``%Y%m%dT%H%M%S%fZ`` of a UTC time in epoch microseconds."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y%m%dT%H%M%S%fZ")


def _date_us(day: date) -> int:
    return (day - _EPOCH.date()).days * DAY


class Record(NamedTuple):
    """One raw line as a producer emitted it, with what the generator knows about it."""

    line: bytes
    time_us: int  # event time of the (original, uncorrupted) event
    board: str
    event_id: str
    type: str
    bad_kind: str | None  # None for a good record


@dataclass
class StreamStats:
    events_by_type: dict[str, int] = field(default_factory=dict)
    bad_by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAD_KINDS, 0))
    bad_records: list[dict[str, str]] = field(default_factory=list)
    cross_board_groups: int = 0
    cross_board_postings: int = 0
    merger: dict[str, Any] = field(default_factory=dict)

    @property
    def bad_total(self) -> int:
        return sum(self.bad_by_kind.values())


@dataclass(frozen=True)
class Pools:
    titles: tuple[str, ...]
    companies: tuple[str, ...]
    locations: tuple[str, ...]
    faker_version: str


@lru_cache(maxsize=4)
def build_pools(seed: int, size: int = 3000) -> Pools:
    """Realistic values from a seeded Faker instance (Faker is slow, so only once per seed)."""
    import faker

    fake = faker.Faker("en_US")
    fake.seed_instance(seed)
    titles = tuple(fake.job() for _ in range(size))
    companies = tuple(fake.company() for _ in range(size))
    locations = tuple(
        f"{fake.city()}, {fake.state_abbr(include_territories=False)}" for _ in range(size)
    )
    return Pools(titles, companies, locations, faker.VERSION)


def _restyle(rng: random.Random, text: str) -> str:
    """The same value as another board would format it: case or whitespace differs."""
    op = rng.randrange(6)
    if op == 0:
        out = text.upper()
    elif op == 1:
        out = text.lower()
    elif op == 2:
        out = text.title()
    elif op == 3:
        out = text.replace(" ", "  ", 1)
    elif op == 4:
        out = text + " "
    else:
        out = " " + text
    return out if out != text else text + " "


def corrupt_record(env: dict[str, Any], kind: str, rng: random.Random) -> bytes:
    """A single-line raw record that ``validate`` rejects with ``BAD_KINDS[kind]``."""
    env = {**env, "data": dict(env["data"])}
    data = env["data"]
    posting = env["type"] in ("job.posted", "job.updated")
    if kind == "malformed_json":
        # A proper prefix of a JSON object is never valid; cutting the str keeps it UTF-8.
        text = orjson.dumps(env).decode()
        return text[: rng.randrange(1, len(text))].encode()
    if kind == "missing_field":
        if rng.random() < 0.5:
            del env[rng.choice(("id", "type", "source", "version", "time", "data"))]
        else:
            del data[rng.choice(_required_data_fields(env["type"]))]
    elif kind == "wrong_type":
        options = ["version", "time"] + (["salary", "remote", "job_id"] if posting else [])
        what = rng.choice(options)
        if what == "version":
            env["version"] = str(env["version"])
        elif what == "time":
            env["time"] = rng.randrange(946_684_800, 4_102_444_800)
        elif what == "salary":
            data["salary_min"] = f"{(data['salary_min'] or 90_000) // 1000}k"
        elif what == "remote":
            data["remote"] = rng.choice(("yes", "no", "true", 1))
        else:
            data["job_id"] = int(data["job_id"].rsplit("-", 1)[1])
    elif kind == "unknown_type":
        env["type"] = "job.deleted"
    elif kind == "unknown_version":
        registered = {v for (t, v) in REGISTRY if t == env["type"]}
        # The same draw whatever is registered (the rest of the stream stays put); a drawn
        # version that is registered becomes the next one, still unknown.
        version = rng.choice((2, 99))
        env["version"] = max(registered) + 1 if version in registered else version
    elif kind == "absurd_value":
        what = rng.choice(["salary", "range"]) if posting else env["type"]
        if what == "salary":
            data["salary_min"] = 10**12
            data["salary_max"] = 10**12
        elif what == "range":
            low = data["salary_min"] or 80_000
            data["salary_min"], data["salary_max"] = low, low // 2
        elif what == "job.expired":
            data["reason"] = "lapsed"
        else:  # a board merging into itself
            data["absorbed_board"] = data["surviving_board"]
    elif kind == "absurd_time":
        env["time"] = rng.choice(("1970", "2999")) + env["time"][4:]
    elif kind == "bad_encoding":
        # The producer wrote latin-1: "é" is the lone byte 0xE9, never valid UTF-8 here.
        if posting:
            name = rng.choice(("title", "company", "location"))
            data[name] = data[name] + rng.choice((" Café", " Société", " Résumé"))
        else:
            data["note"] = "clôturée"
        return orjson.dumps(env).replace("é".encode(), "é".encode("latin-1"))
    else:
        raise ValueError(f"unknown bad kind {kind!r}")
    return orjson.dumps(env)


def _required_data_fields(event_type: str) -> tuple[str, ...]:
    if event_type in ("job.posted", "job.updated"):
        return ("job_id", "title", "company", "location", "employment_type", "remote", "url")
    if event_type == "job.expired":
        return ("job_id", "reason")
    return ("absorbed_board", "surviving_board")


# A job's mutable state; a list indexed by these for speed in the hot loop.
_ID, _BOARD, _TITLE, _COMPANY, _LOCATION, _EMP, _REMOTE, _SMIN, _SMAX, _URL, _POS = range(11)


class EventStream:
    """The simulated events in event-time order; iterate to get :class:`Record` s.

    After an iteration, ``stats`` describes what was produced. Iterating again replays the
    identical stream.
    """

    def __init__(
        self,
        start: date,
        days: int,
        events_per_day: int,
        seed: int = 42,
        bad_rate: float = 0.01,
        clean_days: int = 0,
        pools: Pools | None = None,
        merger_day: int | None = None,
        schema_version: int = 1,
        schema_from_day: int = 0,
    ) -> None:
        check_args(
            days=days, events_per_day=events_per_day, bad_rate=bad_rate, clean_days=clean_days
        )
        check_args(schema_version=schema_version, schema_from_day=schema_from_day)
        # Postings from schema_from_day on are emitted at schema_version (the producer's switch).
        self.schema_version, self.schema_from_day = schema_version, schema_from_day
        self.start, self.days, self.events_per_day = start, days, events_per_day
        self.seed, self.bad_rate, self.clean_days = seed, bad_rate, clean_days
        self.pools = pools or build_pools(seed)
        self.start_us = _date_us(start)
        # The live producer moves the merger early; the batch generator keeps it mid-range.
        self.merger_day = days // 2 if merger_day is None else merger_day
        self.merger_us = self.start_us + self.merger_day * DAY + 12 * HOUR
        self.stats = StreamStats()

    def __iter__(self) -> Iterator[Record]:
        self.stats = stats = StreamStats()
        rng = random.Random(f"figstream/content/{self.seed}")
        bad_rng = random.Random(f"figstream/corrupt/{self.seed}")
        titles, companies, locations = self.pools.titles, self.pools.companies, self.pools.locations
        by_type = stats.events_by_type
        bad_rate, clean_until = self.bad_rate, self.start_us + self.clean_days * DAY
        kinds = tuple(BAD_KINDS)
        next_n = dict.fromkeys(BOARDS, 0)
        active = list(BOARDS)
        board_cum = _cumulative(BOARD_WEIGHTS)
        emp_cum = _cumulative(EMPLOYMENT_WEIGHTS)
        hour_cum = _cumulative(HOUR_WEIGHTS)
        open_jobs: list[list[Any]] = []
        pending: list[tuple[int, int, tuple[Any, ...], str]] = []  # (due, seq, template, board)
        pending_seq = 0
        merged = False
        last_us = self.start_us

        def new_id() -> str:
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))

        switch_us = self.start_us + self.schema_from_day * DAY
        upgrade = self.schema_version == 2

        def finish(env: dict[str, Any], t: int, protected: bool = False) -> Record:
            # A clean day still draws (and discards) its corruptions, so clean_days never shifts
            # which later events are corrupted, nor how.
            if bad_rng.random() < bad_rate and not protected:
                kind = kinds[bad_rng.randrange(len(kinds))]
                line = corrupt_record(env, kind, bad_rng)
            else:
                kind = None
            if kind is not None and t >= clean_until:
                stats.bad_by_kind[kind] += 1
                if len(stats.bad_records) < MANIFEST_LIST_CAP:
                    stats.bad_records.append(
                        {
                            "id": env["id"],
                            "kind": kind,
                            "code": BAD_KINDS[kind],
                            "board": env["source"],
                            "date": env["time"][:10],
                        }
                    )
                return Record(line, t, env["source"], env["id"], env["type"], kind)
            by_type[env["type"]] = by_type.get(env["type"], 0) + 1
            if upgrade and t >= switch_us:
                # a v2 producer; its bad records above stay v1-shaped, the reasons the same
                env = upcast_record(env)
            return Record(orjson.dumps(env), t, env["source"], env["id"], env["type"], None)

        def posting_event(job: list[Any], event_type: str, t: int) -> Record:
            data = {
                "job_id": job[_ID], "title": job[_TITLE], "company": job[_COMPANY],
                "location": job[_LOCATION], "employment_type": job[_EMP],
                "remote": job[_REMOTE], "salary_min": job[_SMIN], "salary_max": job[_SMAX],
                "currency": "USD", "url": job[_URL],
            }  # fmt: skip
            env = {"id": new_id(), "type": event_type, "source": job[_BOARD], "version": 1,
                   "time": format_us(t), "data": data}  # fmt: skip
            return finish(env, t)

        def open_job(board: str, template: tuple[Any, ...]) -> list[Any]:
            next_n[board] += 1
            job_id = f"{board}-{next_n[board]:07d}"
            job = [job_id, board, *template, f"https://{board}.example/jobs/{job_id}", 0]
            job[_POS] = len(open_jobs)
            open_jobs.append(job)
            return job

        def close_job(job: list[Any]) -> None:
            last = open_jobs.pop()
            if last is not job:
                last[_POS] = job[_POS]
                open_jobs[job[_POS]] = last

        def new_template() -> tuple[Any, ...]:
            emp = rng.choices(EMPLOYMENT_TYPES, cum_weights=emp_cum)[0]
            if rng.random() < SALARY_NULL_RATE:
                low = high = None
            else:
                lo, hi = SALARY_BANDS[emp]
                low = rng.randrange(lo, hi) * 1000
                high = round(low * (1 + rng.uniform(0.05, 0.4)) / 1000) * 1000
            return (
                titles[rng.randrange(len(titles))],
                companies[rng.randrange(len(companies))],
                locations[rng.randrange(len(locations))],
                emp,
                rng.random() < REMOTE_RATE,
                low,
                high,
            )

        def post(t: int) -> Record:
            nonlocal pending_seq
            while pending and pending[0][0] <= t:
                _, _, template, board = heapq.heappop(pending)
                if board in active:
                    stats.cross_board_postings += 1
                    return posting_event(open_job(board, template), "job.posted", t)
            board = rng.choices(active, cum_weights=board_cum)[0]
            template = new_template()
            if rng.random() < CROSS_POST_RATE:
                others = [b for b in active if b != board]
                copies = 1 if rng.random() < 0.7 else 2
                stats.cross_board_groups += 1
                for other in rng.sample(others, min(copies, len(others))):
                    title, company, location, *rest = template
                    field_no = rng.randrange(3)
                    variant = [title, company, location]
                    variant[field_no] = _restyle(rng, variant[field_no])
                    if rng.random() < 0.5:
                        other_no = rng.randrange(3)
                        variant[other_no] = _restyle(rng, variant[other_no])
                    due = t + rng.randrange(10 * MINUTE, DAY)
                    pending_seq += 1
                    heapq.heappush(pending, (due, pending_seq, (*variant, *rest), other))
            return posting_event(open_job(board, template), "job.posted", t)

        def update(t: int) -> Record:
            job = open_jobs[rng.randrange(len(open_jobs))]
            what = rng.random()
            if what < 0.5:
                if job[_SMIN] is None:
                    lo, hi = SALARY_BANDS[job[_EMP]]
                    job[_SMIN] = rng.randrange(lo, hi) * 1000
                    job[_SMAX] = job[_SMIN] + rng.randrange(0, 20) * 1000
                else:
                    # Raises drift upwards; the cap keeps long-lived postings plausible.
                    factor = 1 + rng.uniform(-0.05, 0.15)
                    job[_SMIN] = min(round(job[_SMIN] * factor / 1000) * 1000, SALARY_CAP)
                    job[_SMAX] = min(
                        max(job[_SMIN], round(job[_SMAX] * factor / 1000) * 1000), SALARY_CAP
                    )
            elif what < 0.8:
                title = job[_TITLE]
                for prefix in _TITLE_PREFIXES:
                    if title.startswith(prefix):
                        job[_TITLE] = title[len(prefix) :]
                        break
                else:
                    job[_TITLE] = rng.choice(_TITLE_PREFIXES) + title
            else:
                job[_REMOTE] = not job[_REMOTE]
            return posting_event(job, "job.updated", t)

        def expire(t: int) -> Record:
            job = open_jobs[rng.randrange(len(open_jobs))]
            close_job(job)
            env = {"id": new_id(), "type": "job.expired", "source": job[_BOARD], "version": 1,
                   "time": format_us(t),
                   "data": {"job_id": job[_ID], "reason": rng.choice(EXPIRY_REASONS)}}  # fmt: skip
            return finish(env, t)

        def merge(t: int) -> Iterator[Record]:
            nonlocal open_jobs, active, board_cum, merged, last_us
            merged = True
            env = {"id": new_id(), "type": "board.merged", "source": SURVIVING_BOARD,
                   "version": 1, "time": format_us(t),
                   "data": {"absorbed_board": ABSORBED_BOARD,
                            "surviving_board": SURVIVING_BOARD}}  # fmt: skip
            # The merger itself is never corrupted: the story hangs on it.
            yield finish(env, t, protected=True)
            active = [b for b in active if b != ABSORBED_BOARD]
            board_cum = _cumulative([BOARD_WEIGHTS[BOARDS.index(b)] for b in active])
            absorbed = [job for job in open_jobs if job[_BOARD] == ABSORBED_BOARD]
            open_jobs = [job for job in open_jobs if job[_BOARD] != ABSORBED_BOARD]
            for pos, job in enumerate(open_jobs):
                job[_POS] = pos
            reposts: dict[str, str] = {}
            for i, old in enumerate(absorbed, start=1):
                # A bulk migration: one re-post per millisecond right after the merger.
                last_us = t + i * 1000
                new = open_job(SURVIVING_BOARD, tuple(old[_TITLE:_URL]))
                if len(reposts) < MANIFEST_LIST_CAP:
                    reposts[old[_ID]] = new[_ID]
                yield posting_event(new, "job.posted", last_us)
            stats.merger = {
                "id": env["id"], "time": env["time"], "absorbed_board": ABSORBED_BOARD,
                "surviving_board": SURVIVING_BOARD, "reposted": len(absorbed),
                "reposts": reposts, "reposts_truncated": len(absorbed) > len(reposts),
            }  # fmt: skip

        for day in range(self.days):
            day_us = self.start_us + day * DAY
            hours = rng.choices(range(24), cum_weights=hour_cum, k=self.events_per_day)
            slots = sorted(day_us + h * HOUR + int(rng.random() * HOUR) for h in hours)
            for t in slots:
                if not merged and t >= self.merger_us:
                    yield from merge(self.merger_us)
                t = max(t, last_us)
                last_us = t
                draw = rng.random()
                if draw < POSTED_SHARE or not open_jobs:
                    yield post(t)
                elif draw < POSTED_SHARE + UPDATED_SHARE:
                    yield update(t)
                else:
                    yield expire(t)
            if day == self.merger_day and not merged:
                yield from merge(max(self.merger_us, last_us + 1))


def _cumulative(weights: Iterable[float]) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


def check_args(**kwargs: Any) -> None:
    if kwargs.get("days", 1) < 1:
        raise ValueError("days must be >= 1")
    if kwargs.get("events_per_day", 1) < 1:
        raise ValueError("events_per_day must be >= 1")
    if not 0.0 <= kwargs.get("bad_rate", 0.0) <= 1.0:
        raise ValueError("bad_rate must be within 0..1")
    if kwargs.get("clean_days", 0) < 0:
        raise ValueError("clean_days must be >= 0")
    if kwargs.get("batch_size", 1) < 1:
        raise ValueError("batch_size must be >= 1")
    if kwargs.get("batch_seconds", 1) <= 0:
        raise ValueError("batch_seconds must be > 0")
    if kwargs.get("schema_version", 1) not in SCHEMA_VERSIONS:
        raise ValueError(f"schema_version must be one of {SCHEMA_VERSIONS}")
    if kwargs.get("schema_from_day", 0) < 0:
        raise ValueError("schema_from_day must be >= 0")
