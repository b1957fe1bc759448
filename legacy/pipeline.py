"""The legacy nightly Luigi batch of the job-board aggregator, kept as it ran before figstream.

Feed dump -> extracted -> cleaned -> deduped -> active jobs (search index) -> board stats and
SEO redirects, one date at a time, row by row. It trusts its input: one bad record raises out of
``run()`` and the whole night fails. That flaw is what the new platform exists to remove, so it
stays here on purpose.

Run standalone (see legacy/README.md)::

    FIGSTREAM_HOME=/data python -m luigi --module legacy.pipeline BoardStats \
        --date 2026-11-20 --local-scheduler
"""

import csv
import datetime
import glob
import json
import os
from urllib.parse import quote_plus

import luigi


class legacy(luigi.Config):  # lower case: the class name is the config section [legacy]
    data_root = luigi.OptionalParameter(
        default=None, description="Root of feeds/ and legacy/; falls back to $FIGSTREAM_HOME"
    )
    epoch = luigi.DateParameter(
        default=datetime.date(2026, 11, 1), description="First day of feed history"
    )


EVENT_COLUMNS = [
    "event_id",
    "event_type",
    "source",
    "version",
    "event_time",
    "job_id",
    "title",
    "company",
    "location",
    "employment_type",
    "remote",
    "salary_min",
    "salary_max",
    "currency",
    "url",
    "reason",
    "absorbed_board",
    "surviving_board",
]
POSTING_FIELDS = [
    "title",
    "company",
    "location",
    "employment_type",
    "remote",
    "salary_min",
    "salary_max",
    "currency",
    "url",
]
SNAPSHOT_COLUMNS = ["job_id", "board", *POSTING_FIELDS, "posted_at", "updated_at"]
DUPLICATE_COLUMNS = ["job_id", "duplicate_of_job_id"]
STATS_COLUMNS = [
    "date",
    "board",
    "postings",
    "updates",
    "expiries",
    "active_jobs",
    "avg_salary_min",
]
REDIRECT_COLUMNS = ["from_url", "to_url", "status", "reason"]

# newline="" so the csv module, not the text layer, owns line endings and quoted newlines
CSV_FORMAT = luigi.format.TextFormat(encoding="utf-8", newline="")


def data_root():
    # read at call time, so a wrapper may set the config or the env var after import
    return legacy().data_root or os.environ.get("FIGSTREAM_HOME", ".figstream")


def legacy_target(date, name):
    path = os.path.join(data_root(), "legacy", date.isoformat(), name)
    return luigi.LocalTarget(path, format=CSV_FORMAT)


def read_csv(target):
    with target.open("r") as f:
        return list(csv.DictReader(f))


def write_csv(target, columns, rows):
    # LocalTarget.open("w") writes to a temp file and renames on close: no partial outputs
    with target.open("w") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def squash(value):
    return " ".join(value.split())


def event_order(row):
    # parse the time: as strings, "10:00:00.5Z" would sort before "10:00:00Z"
    return (datetime.datetime.fromisoformat(row["event_time"]), row["event_id"])


def posting_key(row):
    return (row["company"].lower(), row["title"].lower(), row["location"].lower())


def search_url(board, job):
    query = quote_plus(job["title"].lower())
    where = quote_plus(job["location"].lower())
    return f"https://{board}.example/search?q={query}&l={where}"


def previous_day(date):
    return date - datetime.timedelta(days=1)


class FeedDump(luigi.ExternalTask):
    """The day's dump from the boards; ``_SUCCESS`` is written last, once every file is there."""

    date = luigi.DateParameter()

    def output(self):
        return luigi.LocalTarget(
            os.path.join(data_root(), "feeds", self.date.isoformat(), "_SUCCESS")
        )


def flatten(record):
    row = dict.fromkeys(EVENT_COLUMNS, "")
    row["event_id"] = record["id"]
    row["event_type"] = record["type"]
    row["source"] = record["source"]
    row["version"] = record["version"]
    row["event_time"] = record["time"]
    data = record["data"]
    if record["type"] in ("job.posted", "job.updated"):
        row["job_id"] = data["job_id"]
        for field in POSTING_FIELDS:
            # a null (salary) becomes an empty cell: the csv module writes None as ""
            row[field] = data[field]
        row["remote"] = "true" if data["remote"] else "false"
    elif record["type"] == "job.expired":
        row["job_id"] = data["job_id"]
        row["reason"] = data["reason"]
    elif record["type"] == "board.merged":
        row["absorbed_board"] = data["absorbed_board"]
        row["surviving_board"] = data["surviving_board"]
    else:
        raise ValueError(f"unknown event type {record['type']!r} in event {record['id']}")
    return row


class ExtractFeeds(luigi.Task):
    """Every board's JSON lines of the day, flattened into one CSV."""

    date = luigi.DateParameter()

    def requires(self):
        return FeedDump(self.date)

    def output(self):
        return legacy_target(self.date, "extracted.csv")

    def run(self):
        feed_dir = os.path.dirname(self.input().path)
        with self.output().open("w") as out:
            writer = csv.DictWriter(out, fieldnames=EVENT_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for path in sorted(glob.glob(os.path.join(feed_dir, "*.jsonl"))):
                with open(path, "rb") as f:
                    for line in f:
                        if not line.strip():
                            continue
                        # no try/except: a malformed line or a missing field fails the night
                        record = json.loads(line.decode("utf-8"))
                        writer.writerow(flatten(record))


class CleanPostings(luigi.Task):
    """Normalise text and salaries; drop only events delivered twice (same event id)."""

    date = luigi.DateParameter()

    def requires(self):
        return ExtractFeeds(self.date)

    def output(self):
        return legacy_target(self.date, "cleaned.csv")

    def run(self):
        seen = set()
        cleaned = []
        for row in read_csv(self.input()):
            if row["event_id"] in seen:
                continue
            seen.add(row["event_id"])
            row["title"] = squash(row["title"]).title()
            row["company"] = squash(row["company"])
            row["location"] = squash(row["location"])
            for column in ("salary_min", "salary_max"):
                if row[column] != "":
                    # "90k" raises here; 10**12 sails through
                    row[column] = int(row[column])
            cleaned.append(row)
        write_csv(self.output(), EVENT_COLUMNS, cleaned)


class DedupePostings(luigi.Task):
    """Drop cross-board duplicate postings; the earliest posting of a job wins.

    The dedupe only sees this one day: a duplicate posted on a later day than its original is
    kept (a legacy limitation). The same key also swallows a merger's re-post when the absorbed
    board posted that job earlier on the same day.
    """

    date = luigi.DateParameter()

    def requires(self):
        return CleanPostings(self.date)

    def output(self):
        return {
            "deduped": legacy_target(self.date, "deduped.csv"),
            "duplicates": legacy_target(self.date, "duplicates.csv"),
        }

    def run(self):
        rows = sorted(read_csv(self.input()), key=event_order)
        winner_by_key = {}
        duplicate_of = {}
        for row in rows:
            if row["event_type"] != "job.posted":
                continue
            winner = winner_by_key.setdefault(posting_key(row), row["job_id"])
            if winner != row["job_id"]:
                duplicate_of[row["job_id"]] = winner
        # updates and expiries of a dropped duplicate go with it
        kept = [row for row in rows if row["job_id"] not in duplicate_of]
        duplicates = [
            {"job_id": job_id, "duplicate_of_job_id": winner}
            for job_id, winner in duplicate_of.items()
        ]
        write_csv(self.output()["duplicates"], DUPLICATE_COLUMNS, duplicates)
        write_csv(self.output()["deduped"], EVENT_COLUMNS, kept)


class ActiveJobs(luigi.Task):
    """The search-index snapshot: yesterday's snapshot with today's events applied."""

    date = luigi.DateParameter()

    def requires(self):
        requirements = {"events": DedupePostings(self.date)}
        if self.date > legacy().epoch:
            # recursive: building one day builds every missing day back to the epoch
            requirements["previous"] = ActiveJobs(previous_day(self.date))
        return requirements

    def output(self):
        return legacy_target(self.date, "active_jobs.csv")

    def run(self):
        active = {}
        if "previous" in self.input():
            for job in read_csv(self.input()["previous"]):
                active[job["job_id"]] = job
        events = read_csv(self.input()["events"]["deduped"])
        for event in sorted(events, key=event_order):
            kind = event["event_type"]
            if kind == "job.posted":
                job = {"job_id": event["job_id"], "board": event["source"]}
                for field in POSTING_FIELDS:
                    job[field] = event[field]
                job["posted_at"] = event["event_time"]
                job["updated_at"] = event["event_time"]
                active[event["job_id"]] = job
            elif kind == "job.updated":
                job = active.get(event["job_id"])
                # a job we never indexed, e.g. a duplicate dropped on an earlier day
                if job is None:
                    continue
                for field in POSTING_FIELDS:
                    job[field] = event[field]
                job["updated_at"] = event["event_time"]
            elif kind == "job.expired":
                active.pop(event["job_id"], None)
            elif kind == "board.merged":
                absorbed = event["absorbed_board"]
                active = {jid: job for jid, job in active.items() if job["board"] != absorbed}
        snapshot = [active[job_id] for job_id in sorted(active)]
        write_csv(self.output(), SNAPSHOT_COLUMNS, snapshot)


class BoardStats(luigi.Task):
    """One row per board seen today, in the events or in the snapshot."""

    date = luigi.DateParameter()

    def requires(self):
        return {"active": ActiveJobs(self.date), "events": DedupePostings(self.date)}

    def output(self):
        return legacy_target(self.date, "board_stats.csv")

    def run(self):
        stats = {}

        def board_row(board):
            if board not in stats:
                stats[board] = {
                    "date": self.date.isoformat(),
                    "board": board,
                    "postings": 0,
                    "updates": 0,
                    "expiries": 0,
                    "active_jobs": 0,
                    "salaries": [],
                }
            return stats[board]

        counters = {"job.posted": "postings", "job.updated": "updates", "job.expired": "expiries"}
        for event in read_csv(self.input()["events"]["deduped"]):
            row = board_row(event["source"])
            if event["event_type"] in counters:
                row[counters[event["event_type"]]] += 1
        for job in read_csv(self.input()["active"]):
            row = board_row(job["board"])
            row["active_jobs"] += 1
            if job["salary_min"] != "":
                row["salaries"].append(int(job["salary_min"]))

        out = []
        for board in sorted(stats):
            row = stats[board]
            salaries = row.pop("salaries")
            row["avg_salary_min"] = "%.2f" % (sum(salaries) / len(salaries)) if salaries else ""
            out.append(row)
        write_csv(self.output(), STATS_COLUMNS, out)


class SeoRedirects(luigi.Task):
    """301s for postings that went away today: expired ones, and those of an absorbed board.

    Single-hop only: a redirect whose target later moves again is not collapsed into one hop, so
    chains build up over the nights (a legacy limitation). Only postings that were in yesterday's
    snapshot get a redirect; one that appeared and vanished within the day gets none.
    """

    date = luigi.DateParameter()

    def requires(self):
        requirements = {"today": ActiveJobs(self.date), "events": DedupePostings(self.date)}
        if self.date > legacy().epoch:
            requirements["yesterday"] = ActiveJobs(previous_day(self.date))
        return requirements

    def output(self):
        return legacy_target(self.date, "redirects.csv")

    def run(self):
        yesterday = []
        if "yesterday" in self.input():
            yesterday = read_csv(self.input()["yesterday"])
        expired = set()
        surviving_board = {}
        for event in read_csv(self.input()["events"]["deduped"]):
            if event["event_type"] == "job.expired":
                expired.add(event["job_id"])
            elif event["event_type"] == "board.merged":
                surviving_board[event["absorbed_board"]] = event["surviving_board"]

        # snapshot is sorted by job_id, so the lowest job_id wins a tie
        today_by_key = {}
        for job in read_csv(self.input()["today"]):
            today_by_key.setdefault((job["board"], posting_key(job)), job)

        redirects = []
        for job in yesterday:
            if job["board"] in surviving_board:
                survivor = surviving_board[job["board"]]
                match = today_by_key.get((survivor, posting_key(job)))
                to_url = match["url"] if match else search_url(survivor, job)
                reason = "board_merged"
            elif job["job_id"] in expired:
                to_url = search_url(job["board"], job)
                reason = "expired"
            else:
                continue
            redirects.append(
                {"from_url": job["url"], "to_url": to_url, "status": 301, "reason": reason}
            )
        redirects.sort(key=lambda r: r["from_url"])
        write_csv(self.output(), REDIRECT_COLUMNS, redirects)


TASKS = [ExtractFeeds, CleanPostings, DedupePostings, ActiveJobs, BoardStats, SeoRedirects]


if __name__ == "__main__":
    luigi.run()
