import csv
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

from legacy.pipeline import (
    TASKS,
    ActiveJobs,
    BoardStats,
    DedupePostings,
    SeoRedirects,
)

DAY1 = datetime.date(2026, 11, 19)
DAY2 = datetime.date(2026, 11, 20)
REPO_ROOT = Path(__file__).resolve().parents[2]


def posting(event_id, kind, board, job_id, time, title, company, location, salary=(None, None)):
    return {
        "id": event_id,
        "type": kind,
        "source": board,
        "version": 1,
        "time": time,
        "data": {
            "job_id": job_id,
            "title": title,
            "company": company,
            "location": location,
            "employment_type": "full_time",
            "remote": False,
            "salary_min": salary[0],
            "salary_max": salary[1],
            "currency": "USD",
            "url": f"https://{board}.example/jobs/{job_id}",
        },
    }


def expiry(event_id, board, job_id, time):
    return {
        "id": event_id,
        "type": "job.expired",
        "source": board,
        "version": 1,
        "time": time,
        "data": {"job_id": job_id, "reason": "filled"},
    }


def merger(event_id, absorbed, surviving, time):
    return {
        "id": event_id,
        "type": "board.merged",
        "source": surviving,
        "version": 1,
        "time": time,
        "data": {"absorbed_board": absorbed, "surviving_board": surviving},
    }


def day1_feeds():
    h2 = posting(
        "e-h2", "job.posted", "hireloop", "hireloop-2", "2026-11-19T09:30:00Z",
        "backend developer", "Globex", "Remote",
    )  # fmt: skip
    return {
        "hireloop": [
            posting(
                "e-h1", "job.posted", "hireloop", "hireloop-1", "2026-11-19T09:00:00Z",
                "data engineer", "Acme Inc", "Austin, TX", (90000, 120000),
            ),
            h2,
            h2,  # redelivered: same event id
        ],
        "jobnest": [
            # the same real job as hireloop-1, formatted differently and posted later
            posting(
                "e-j1", "job.posted", "jobnest", "jobnest-1", "2026-11-19T10:00:00Z",
                "  Data   Engineer ", "ACME  INC ", "austin, tx", (95000, 125000),
            ),
            posting(
                "e-j1u", "job.updated", "jobnest", "jobnest-1", "2026-11-19T11:00:00Z",
                "Data Engineer", "ACME INC", "austin, tx", (99000, 125000),
            ),
            posting(
                "e-j2", "job.posted", "jobnest", "jobnest-2", "2026-11-19T08:00:00Z",
                "QA Analyst", "Initech", "Boston, MA", (60000, 70000),
            ),
            posting(
                "e-j4", "job.posted", "jobnest", "jobnest-4", "2026-11-19T08:10:00Z",
                "Sales Lead", "Vandelay", "New York, NY", (70000, 80000),
            ),
        ],
        "talentpool": [
            posting(
                "e-t1", "job.posted", "talentpool", "talentpool-1",
                "2026-11-19T07:00:00.000001Z", "Product Manager", "Umbrella", "Denver, CO",
                (100000, 150000),
            ),
        ],
    }  # fmt: skip


def day2_feeds():
    return {
        "hireloop": [
            posting(
                "e-h2u", "job.updated", "hireloop", "hireloop-2", "2026-11-20T08:00:00Z",
                "Senior Backend Developer", "Globex", "Remote", (80000, 95000),
            ),
            merger("e-m1", "jobnest", "hireloop", "2026-11-20T12:00:00Z"),
            # jobnest-2 re-posted on the surviving board
            posting(
                "e-h3", "job.posted", "hireloop", "hireloop-3", "2026-11-20T12:05:00Z",
                "QA Analyst", "Initech", "Boston, MA", (65000, 70000),
            ),
        ],
        "jobnest": [
            posting(
                "e-j3", "job.posted", "jobnest", "jobnest-3", "2026-11-20T06:00:00Z",
                "Designer", "Hooli", "Seattle, WA", (50000, 60000),
            ),
        ],
        "talentpool": [
            expiry("e-t1x", "talentpool", "talentpool-1", "2026-11-20T09:00:00Z"),
            # the update is half a second after the posting; string order would flip them
            posting(
                "e-t2", "job.posted", "talentpool", "talentpool-2", "2026-11-20T13:00:00Z",
                "Analyst", "Wayne", "Gotham", (None, None),
            ),
            posting(
                "e-t2u", "job.updated", "talentpool", "talentpool-2",
                "2026-11-20T13:00:00.500000Z", "Analyst", "Wayne", "Gotham", (120000, 130000),
            ),
        ],
    }  # fmt: skip


def write_feed(root, date, boards, success=True):
    """Write a day's dump: ``boards`` maps a board to records (dicts) or raw byte lines."""
    day_dir = Path(root) / "feeds" / date.isoformat()
    day_dir.mkdir(parents=True, exist_ok=True)
    for board, records in boards.items():
        lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
        (day_dir / f"{board}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    if success:
        (day_dir / "_SUCCESS").touch()


@pytest.fixture
def legacy_root(tmp_path):
    """Point the ``[legacy]`` config section at tmp_path with DAY1 as the epoch; restore after."""
    config = luigi.configuration.get_config()
    saved = {
        option: config.get("legacy", option) if config.has_option("legacy", option) else None
        for option in ("data_root", "epoch")
    }
    config.set("legacy", "data_root", str(tmp_path))
    config.set("legacy", "epoch", DAY1.isoformat())
    yield tmp_path
    for option, value in saved.items():
        if value is None:
            config.remove_option("legacy", option)
        else:
            config.set("legacy", option, value)


@pytest.fixture
def two_days(legacy_root):
    write_feed(legacy_root, DAY1, day1_feeds())
    write_feed(legacy_root, DAY2, day2_feeds())
    return legacy_root


def build(tasks):
    return luigi.build(tasks, local_scheduler=True, detailed_summary=True)


def read(root, date, name):
    with open(Path(root) / "legacy" / date.isoformat() / name, newline="") as f:
        return list(csv.DictReader(f))


def output_exists(root, date, name):
    return (Path(root) / "legacy" / date.isoformat() / name).exists()


def test_tasks_are_listed_in_dependency_order():
    assert [t.__name__ for t in TASKS] == [
        "ExtractFeeds",
        "CleanPostings",
        "DedupePostings",
        "ActiveJobs",
        "BoardStats",
        "SeoRedirects",
    ]


def test_extract_clean_and_dedupe_day_one(two_days):
    result = build([DedupePostings(date=DAY1)])
    assert result.status == LuigiStatusCode.SUCCESS

    extracted = read(two_days, DAY1, "extracted.csv")
    assert len(extracted) == 8
    assert [r["event_id"] for r in extracted][:3] == ["e-h1", "e-h2", "e-h2"]

    cleaned = read(two_days, DAY1, "cleaned.csv")
    assert [r["event_id"] for r in cleaned].count("e-h2") == 1
    j1 = next(r for r in cleaned if r["event_id"] == "e-j1")
    text = [j1["title"], j1["company"], j1["location"]]
    assert text == ["Data Engineer", "ACME INC", "austin, tx"]
    h2 = next(r for r in cleaned if r["event_id"] == "e-h2")
    assert (h2["salary_min"], h2["remote"]) == ("", "false")

    assert read(two_days, DAY1, "duplicates.csv") == [
        {"job_id": "jobnest-1", "duplicate_of_job_id": "hireloop-1"}
    ]
    deduped = read(two_days, DAY1, "deduped.csv")
    # the duplicate posting and its update are both gone; rows come in event-time order
    assert [r["event_id"] for r in deduped] == ["e-t1", "e-j2", "e-j4", "e-h1", "e-h2"]


def test_snapshot_after_update_expiry_and_merger(two_days):
    result = build([ActiveJobs(date=DAY2)])
    assert result.status == LuigiStatusCode.SUCCESS

    day1 = read(two_days, DAY1, "active_jobs.csv")
    assert [j["job_id"] for j in day1] == [
        "hireloop-1",
        "hireloop-2",
        "jobnest-2",
        "jobnest-4",
        "talentpool-1",
    ]

    day2 = {j["job_id"]: j for j in read(two_days, DAY2, "active_jobs.csv")}
    # talentpool-1 expired; every jobnest posting left with the merger, jobnest-3 included
    assert sorted(day2) == ["hireloop-1", "hireloop-2", "hireloop-3", "talentpool-2"]
    updated = day2["hireloop-2"]
    assert updated["title"] == "Senior Backend Developer"
    assert (updated["salary_min"], updated["salary_max"]) == ("80000", "95000")
    assert updated["posted_at"] == "2026-11-19T09:30:00Z"
    assert updated["updated_at"] == "2026-11-20T08:00:00Z"
    assert day2["talentpool-2"]["salary_min"] == "120000"
    assert day2["hireloop-3"]["board"] == "hireloop"


def test_board_stats(two_days):
    result = build([BoardStats(date=DAY1), BoardStats(date=DAY2)])
    assert result.status == LuigiStatusCode.SUCCESS

    day1 = {r["board"]: r for r in read(two_days, DAY1, "board_stats.csv")}
    assert (day1["jobnest"]["postings"], day1["jobnest"]["updates"]) == ("2", "0")
    assert day1["hireloop"]["avg_salary_min"] == "90000.00"

    day2 = read(two_days, DAY2, "board_stats.csv")
    assert [r["board"] for r in day2] == ["hireloop", "jobnest", "talentpool"]
    by_board = {r["board"]: r for r in day2}
    fields = ("postings", "updates", "expiries", "active_jobs", "avg_salary_min")
    assert [by_board["hireloop"][f] for f in fields] == ["1", "1", "0", "3", "78333.33"]
    assert [by_board["jobnest"][f] for f in fields] == ["1", "0", "0", "0", ""]
    assert [by_board["talentpool"][f] for f in fields] == ["1", "1", "1", "1", "120000.00"]
    assert {r["date"] for r in day2} == {"2026-11-20"}


def test_seo_redirects_for_expiry_and_merger(two_days):
    result = build([SeoRedirects(date=DAY1), SeoRedirects(date=DAY2)])
    assert result.status == LuigiStatusCode.SUCCESS

    assert read(two_days, DAY1, "redirects.csv") == []
    assert read(two_days, DAY2, "redirects.csv") == [
        {
            "from_url": "https://jobnest.example/jobs/jobnest-2",
            "to_url": "https://hireloop.example/jobs/hireloop-3",
            "status": "301",
            "reason": "board_merged",
        },
        {
            "from_url": "https://jobnest.example/jobs/jobnest-4",
            "to_url": "https://hireloop.example/search?q=sales+lead&l=new+york%2C+ny",
            "status": "301",
            "reason": "board_merged",
        },
        {
            "from_url": "https://talentpool.example/jobs/talentpool-1",
            "to_url": "https://talentpool.example/search?q=product+manager&l=denver%2C+co",
            "status": "301",
            "reason": "expired",
        },
    ]


GOOD = json.dumps(
    posting(
        "e-x1", "job.posted", "jobnest", "jobnest-9", "2026-11-19T12:00:00Z",
        "Nurse", "Mercy", "Austin, TX", (90000, 100000),
    )
).encode()  # fmt: skip


def spoil(old, new):
    assert old in GOOD
    return GOOD.replace(old, new)


@pytest.mark.parametrize(
    ("bad_line", "failed_at"),
    [
        pytest.param(b'{"id": "e-bad", "type": "job.posted", ', "extracted.csv", id="malformed"),
        pytest.param(spoil(b"Mercy", b"Mer\xffcy"), "extracted.csv", id="bad-utf8"),
        pytest.param(spoil(b'"currency": "USD", ', b""), "extracted.csv", id="no-field"),
        pytest.param(spoil(b"90000", b'"90k"'), "cleaned.csv", id="bad-salary"),
    ],
)
def test_one_bad_record_fails_the_night(legacy_root, bad_line, failed_at):
    feeds = day1_feeds()
    feeds["jobnest"].insert(1, bad_line)
    write_feed(legacy_root, DAY1, feeds)

    result = build([BoardStats(date=DAY1)])

    assert result.status == LuigiStatusCode.FAILED
    assert not result.scheduling_succeeded
    assert not output_exists(legacy_root, DAY1, failed_at)
    # a bad salary only surfaces one task later, in CleanPostings
    assert output_exists(legacy_root, DAY1, "extracted.csv") == (failed_at == "cleaned.csv")
    for name in ("deduped.csv", "active_jobs.csv", "board_stats.csv"):
        assert not output_exists(legacy_root, DAY1, name)


def test_absurd_salary_passes_silently(legacy_root):
    feeds = day1_feeds()
    feeds["hireloop"][0]["data"]["salary_min"] = 10**12
    write_feed(legacy_root, DAY1, feeds)

    assert build([ActiveJobs(date=DAY1)]).status == LuigiStatusCode.SUCCESS
    jobs = {j["job_id"]: j for j in read(legacy_root, DAY1, "active_jobs.csv")}
    assert jobs["hireloop-1"]["salary_min"] == str(10**12)


def test_missing_success_marker_is_a_missing_external_dependency(legacy_root):
    write_feed(legacy_root, DAY1, day1_feeds(), success=False)

    result = build([BoardStats(date=DAY1)])

    assert result.status == LuigiStatusCode.MISSING_EXT
    assert not output_exists(legacy_root, DAY1, "extracted.csv")


def test_missing_previous_day_blocks_the_snapshot(legacy_root):
    write_feed(legacy_root, DAY2, day2_feeds())

    result = build([ActiveJobs(date=DAY2)])

    assert result.status == LuigiStatusCode.MISSING_EXT
    assert output_exists(legacy_root, DAY2, "deduped.csv")
    assert not output_exists(legacy_root, DAY2, "active_jobs.csv")


def test_standalone_cli(tmp_path):
    write_feed(tmp_path, DAY1, day1_feeds())
    write_feed(tmp_path, DAY2, day2_feeds())
    env = {**os.environ, "FIGSTREAM_HOME": str(tmp_path)}
    command = [
        sys.executable, "-m", "luigi", "--module", "legacy.pipeline", "BoardStats",
        "--date", DAY2.isoformat(), "--legacy-epoch", DAY1.isoformat(), "--local-scheduler",
    ]  # fmt: skip

    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert completed.returncode == 0, completed.stderr
    stats = read(tmp_path, DAY2, "board_stats.csv")
    assert [(r["board"], r["active_jobs"]) for r in stats] == [
        ("hireloop", "3"),
        ("jobnest", "0"),
        ("talentpool", "1"),
    ]
