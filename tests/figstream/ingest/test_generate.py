"""The generated stream is realistic, valid where it should be, rejected where it should be,
deterministic, and written consistently to the feed dump and the landing zone."""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from figstream.events.envelope import Envelope, format_time, parse_time
from figstream.events.validation import REASON_CODES, Rejection, validate
from figstream.ingest.dataset import generate
from figstream.ingest.generate import (
    ABSORBED_BOARD,
    BAD_KINDS,
    BOARDS,
    SURVIVING_BOARD,
    EventStream,
    Record,
    corrupt_record,
    format_us,
)

START = date(2025, 3, 3)
START_US = int(datetime(2025, 3, 3, tzinfo=UTC).timestamp()) * 1_000_000
DAY_US = 86_400 * 1_000_000


@cache
def records(
    days: int = 4, per_day: int = 800, seed: int = 7, bad_rate: float = 0.05, clean_days: int = 0
) -> tuple[Record, ...]:
    return tuple(EventStream(START, days, per_day, seed, bad_rate, clean_days))


@cache
def stream_and_records(bad_rate: float) -> tuple[EventStream, tuple[Record, ...]]:
    stream = EventStream(START, 4, 800, seed=11, bad_rate=bad_rate)
    return stream, tuple(stream)


def good(recs: tuple[Record, ...]) -> list[dict]:
    return [orjson.loads(r.line) for r in recs if r.bad_kind is None]


def norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def test_every_good_record_validates_and_is_well_formed():
    recs = records()
    goods = [r for r in recs if r.bad_kind is None]
    assert len(goods) > 3000
    for rec in goods:
        env = validate(rec.line)
        assert isinstance(env, Envelope), (env, rec.line)
        assert env.source == rec.board and env.id == rec.event_id and env.type == rec.type
        assert uuid.UUID(env.id).version == 4
        assert env.time == datetime.fromtimestamp(rec.time_us / 1e6, UTC)
        if env.type in ("job.posted", "job.updated", "job.expired"):
            assert re.fullmatch(rf"{env.source}-\d{{7}}", env.data["job_id"])
        if env.type in ("job.posted", "job.updated"):
            d = env.data
            assert d["url"] == f"https://{env.source}.example/jobs/{d['job_id']}"
            assert d["currency"] == "USD"
            assert (d["salary_min"] is None) == (d["salary_max"] is None)
            if d["salary_min"] is not None:
                assert 0 < d["salary_min"] <= d["salary_max"]
    assert len({r.event_id for r in recs}) == len(recs)
    assert all(b"\n" not in r.line for r in recs)


def test_event_mix_and_times():
    recs = records()
    times = [r.time_us for r in recs]
    assert times == sorted(times)
    assert times[0] >= START_US and times[-1] < START_US + 4 * DAY_US
    types = Counter(r.type for r in recs)
    assert set(types) == {"job.posted", "job.updated", "job.expired", "board.merged"}
    assert types["board.merged"] == 1
    # Expiries hit jobs posted on an earlier day, too.
    posted_day = {}
    earlier = 0
    for env in good(recs):
        day = env["time"][:10]
        if env["type"] == "job.posted":
            posted_day[env["data"]["job_id"]] = day
        elif env["type"] == "job.expired" and posted_day.get(env["data"]["job_id"], day) < day:
            earlier += 1
    assert earlier > 0


def test_updates_and_expiries_refer_to_open_jobs():
    _, recs = stream_and_records(0.0)
    open_jobs: set[str] = set()
    for env in good(recs):
        job_id = env["data"].get("job_id")
        if env["type"] == "job.posted":
            assert job_id not in open_jobs
            open_jobs.add(job_id)
        elif env["type"] == "job.updated":
            assert job_id in open_jobs
        elif env["type"] == "job.expired":
            open_jobs.remove(job_id)


def test_at_least_four_boards_emit():
    boards = {r.board for r in records()}
    assert len(boards) >= 4
    assert boards <= set(BOARDS)


def test_cross_board_duplicates_differ_in_formatting_only():
    stream, recs = stream_and_records(0.0)
    reposted = set(stream.stats.merger["reposts"].values())
    by_key = defaultdict(list)
    postings = 0
    for env in good(recs):
        d = env["data"]
        if env["type"] != "job.posted" or d["job_id"] in reposted:
            continue
        postings += 1
        by_key[(norm(d["title"]), norm(d["company"]), norm(d["location"]))].append(d)
    groups = [g for g in by_key.values() if len({x["job_id"].split("-")[0] for x in g}) >= 2]
    assert groups
    assert any(len({(x["title"], x["company"], x["location"]) for x in g}) > 1 for g in groups)
    assert any(len(g) == 3 for g in groups)
    in_groups = sum(len(g) for g in groups)
    assert 0.08 < in_groups / postings < 0.25, in_groups / postings
    for g in groups:
        ids = [x["job_id"] for x in g]
        assert len(set(ids)) == len(ids)


def test_merger_stops_absorbed_board_and_reposts_its_open_jobs():
    stream, recs = stream_and_records(0.0)
    merged = [r for r in recs if r.type == "board.merged"]
    assert len(merged) == 1
    env = validate(merged[0].line)
    assert isinstance(env, Envelope)
    assert env.source == SURVIVING_BOARD
    assert env.data == {"absorbed_board": ABSORBED_BOARD, "surviving_board": SURVIVING_BOARD}
    merger_us = merged[0].time_us
    # A middle day of the range.
    assert START_US + DAY_US <= merger_us < START_US + 3 * DAY_US
    assert any(r.board == ABSORBED_BOARD for r in recs if r.time_us < merger_us)
    assert not [r for r in recs if r.board == ABSORBED_BOARD and r.time_us > merger_us]

    snapshot_at_merger = {
        job_id: data
        for job_id, data in _open_at(recs, merger_us).items()
        if job_id.startswith(ABSORBED_BOARD)
    }
    reposts = stream.stats.merger["reposts"]
    assert stream.stats.merger["reposted"] == len(reposts) == len(snapshot_at_merger) > 0
    assert set(reposts) == set(snapshot_at_merger)
    posted = {e["data"]["job_id"]: e for e in good(recs) if e["type"] == "job.posted"}
    for old, new in reposts.items():
        assert new.startswith(f"{SURVIVING_BOARD}-")
        repost = posted[new]
        assert parse_time(repost["time"]) > parse_time(env.to_dict()["time"])
        for key in ("title", "company", "location"):
            assert repost["data"][key] == snapshot_at_merger[old][key]


def _open_at(recs: tuple[Record, ...], until_us: int) -> dict[str, dict]:
    open_jobs: dict[str, dict] = {}
    for rec in recs:
        if rec.time_us >= until_us or rec.bad_kind:
            continue
        e = orjson.loads(rec.line)
        if e["type"] in ("job.posted", "job.updated"):
            open_jobs[e["data"]["job_id"]] = e["data"]
        elif e["type"] == "job.expired":
            del open_jobs[e["data"]["job_id"]]
    return open_jobs


def test_bad_records_are_rejected_with_the_expected_code():
    recs = records(days=3, per_day=700, bad_rate=0.3)
    bad = [r for r in recs if r.bad_kind]
    kinds = Counter(r.bad_kind for r in bad)
    assert set(kinds) == set(BAD_KINDS)
    assert all(n >= 30 for n in kinds.values()), kinds
    for rec in bad:
        assert b"\n" not in rec.line and b"\r" not in rec.line
        rejection = validate(rec.line)
        assert isinstance(rejection, Rejection), (rec.bad_kind, rec.line)
        assert rejection.code == BAD_KINDS[rec.bad_kind], (rec.bad_kind, rejection, rec.line)
        assert rejection.code in REASON_CODES
    # Mistyped salary reads like a human wrote it.
    assert any(b'"salary_min":"' in r.line and b'k"' in r.line for r in bad)
    assert any(b"\xe9" in r.line for r in bad if r.bad_kind == "bad_encoding")


@cache
def _good_envelopes() -> list[dict]:
    return good(records())


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(sorted(BAD_KINDS)),
    which=st.integers(min_value=0, max_value=10**9),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_any_corruption_of_any_good_event_is_rejected(kind, which, seed):
    envs = _good_envelopes()
    env = envs[which % len(envs)]
    original = orjson.dumps(env)
    line = corrupt_record(env, kind, random.Random(seed))
    assert orjson.dumps(env) == original  # the good event is not mutated
    assert b"\n" not in line
    rejection = validate(line)
    assert isinstance(rejection, Rejection)
    assert rejection.code == BAD_KINDS[kind]


def test_bad_rate_replaces_records_without_shifting_the_rest():
    clean = records(days=3, per_day=500, bad_rate=0.0)
    dirty = records(days=3, per_day=500, bad_rate=0.1)
    assert len(clean) == len(dirty)
    replaced = 0
    for a, b in zip(clean, dirty, strict=True):
        assert a.event_id == b.event_id and a.time_us == b.time_us
        if b.bad_kind is None:
            assert a.line == b.line
        else:
            replaced += 1
    assert 0.06 < replaced / len(dirty) < 0.14


def test_clean_days_have_no_bad_records():
    recs = records(days=4, per_day=500, bad_rate=0.1, clean_days=2)
    cutoff = START_US + 2 * DAY_US
    assert not [r for r in recs if r.bad_kind and r.time_us < cutoff]
    assert [r for r in recs if r.bad_kind and r.time_us >= cutoff]
    # Later days are corrupted exactly as without clean days.
    unclean = records(days=4, per_day=500, bad_rate=0.1, clean_days=0)
    assert [r for r in recs if r.time_us >= cutoff] == [r for r in unclean if r.time_us >= cutoff]


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)))
def test_format_us_matches_format_time(when):
    when = when.replace(tzinfo=UTC)
    us = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert format_us(us) == format_time(when)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "generate-manifest.json"
    }


def _manifest(root: Path) -> dict:
    return orjson.loads((root / "generate-manifest.json").read_bytes())


KW = {"start": START, "days": 3, "events_per_day": 600, "seed": 5, "bad_rate": 0.05}


def test_same_arguments_give_byte_identical_files(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, **KW)
    generate(b, **KW)
    generate(c, **{**KW, "seed": 6})
    digest_a = _tree_digest(a)
    assert len(digest_a) > 20
    assert digest_a == _tree_digest(b)
    assert digest_a != _tree_digest(c)
    manifest_a, manifest_b = _manifest(a), _manifest(b)
    manifest_a.pop("elapsed_seconds")
    manifest_b.pop("elapsed_seconds")
    assert manifest_a == manifest_b


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    summary = generate(root, batch_size=50, **KW)
    return root, summary


def _lines(paths) -> list[bytes]:
    return [line for p in paths for line in p.read_bytes().splitlines()]


def test_feed_dump_layout(generated):
    root, summary = generated
    days = [(START + timedelta(days=i)).isoformat() for i in range(3)]
    assert sorted(p.name for p in (root / "feeds").iterdir()) == days
    for day in days:
        directory = root / "feeds" / day
        assert (directory / "_SUCCESS").read_bytes() == b""
        boards = {p.stem for p in directory.glob("*.jsonl")}
        assert len(boards) >= 4 and boards <= set(BOARDS)
        for path in directory.glob("*.jsonl"):
            for line in path.read_bytes().splitlines():
                result = validate(line)
                if isinstance(result, Envelope):
                    assert result.source == path.stem
                    assert format_time(result.time)[:10] == day
    assert not list(root.rglob("*.tmp"))
    assert summary.feed_files == len(list((root / "feeds").rglob("*.jsonl")))


def test_landing_holds_the_feed_events_plus_duplicate_deliveries(generated):
    root, summary = generated
    feed = _lines(sorted((root / "feeds").rglob("*.jsonl")))
    landing = _lines(sorted((root / "landing").rglob("*.jsonl")))
    assert len(feed) == len(set(feed)) == summary.events
    assert len(landing) == summary.landing_records == summary.events + summary.duplicates_delivered
    extra = Counter(landing) - Counter(feed)
    assert Counter(feed) - Counter(landing) == Counter()
    assert sum(extra.values()) == summary.duplicates_delivered > 0
    assert all(n == 1 for n in extra.values())
    feed_ids = {e.id for e in map(validate, feed) if isinstance(e, Envelope)}
    landing_ids = {e.id for e in map(validate, landing) if isinstance(e, Envelope)}
    assert feed_ids == landing_ids


def test_landing_batches_are_small_sorted_and_in_arrival_order(generated):
    root, summary = generated
    batches = sorted((root / "landing").rglob("*.jsonl"), key=lambda p: (p.parent.name, p.name))
    assert len(batches) == summary.batches > 10
    names = [p.stem for p in batches]
    assert names == sorted(names)
    assert [int(n.rsplit("-", 1)[1]) for n in names] == list(range(len(names)))
    # A batch is named by its last arrival, the moment it commits.
    commits = [datetime.strptime(n.split("-")[0], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
               for n in names]  # fmt: skip
    out_of_order = 0
    newest = None
    for i, path in enumerate(batches):
        assert path.parent.name == commits[i].date().isoformat()
        lines = path.read_bytes().splitlines()
        assert 0 < len(lines) <= 50
        for line in lines:
            env = validate(line)
            if not isinstance(env, Envelope):
                continue
            # The event happened before its batch committed, within the delivery delays plus
            # the batch's own span (batch_seconds).
            assert env.time <= commits[i]
            assert commits[i] - env.time <= timedelta(hours=7, minutes=10)
            if newest and env.time < newest - timedelta(hours=1):
                out_of_order += 1
            newest = max(newest or env.time, env.time)
    assert out_of_order > 0  # some events land after a later hourly partition's events


def test_manifest_matches_the_summary(generated):
    root, summary = generated
    manifest = _manifest(root)
    assert manifest == summary.to_dict()
    assert manifest["seed"] == 5 and manifest["start"] == "2025-03-03"
    assert manifest["end"] == "2025-03-05"
    assert manifest["events"] == sum(manifest["events_by_type"].values()) + manifest["bad_total"]
    assert manifest["bad_total"] == sum(manifest["bad_by_kind"].values()) > 0
    assert len(manifest["bad_records"]) == manifest["bad_total"]
    assert not manifest["bad_records_truncated"]
    assert {b["kind"] for b in manifest["bad_records"]} <= set(BAD_KINDS)
    assert manifest["merger"]["absorbed_board"] == ABSORBED_BOARD
    assert manifest["late_hours"] > 0 and manifest["late_minutes"] > 0
    # Bad records sit in the feed file of the board and day of the event they corrupt.
    for bad in manifest["bad_records"][:50]:
        path = root / "feeds" / bad["date"] / f"{bad['board']}.jsonl"
        lines = path.read_bytes().splitlines()
        assert not any(isinstance(e, Envelope) and e.id == bad["id"] for e in map(validate, lines))


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    small = {**KW, "days": 1, "events_per_day": 50}
    generate(tmp_path, **small)
    with pytest.raises(FileExistsError):
        generate(tmp_path, **small)
    (tmp_path / "other").mkdir()
    generate(tmp_path, overwrite=True, **{**small, "seed": 9})
    assert _manifest(tmp_path)["seed"] == 9
    assert (tmp_path / "other").is_dir()


def test_progress_bar_can_be_forced(tmp_path, capsys):
    generate(tmp_path, progress=True, **{**KW, "days": 1, "events_per_day": 50})
    assert "generate" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad",
    [{"days": 0}, {"events_per_day": 0}, {"bad_rate": 1.5}, {"clean_days": -1},
     {"batch_size": 0}],
)  # fmt: skip
def test_invalid_arguments_raise(tmp_path, bad):
    with pytest.raises(ValueError):
        generate(tmp_path, **{**KW, **bad})
