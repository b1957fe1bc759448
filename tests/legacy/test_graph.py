"""The legacy task graph read from Luigi's own requires()."""

import datetime

import luigi
import pytest

from legacy.graph import Requirement, asset_name, required_by, requirements, sample_date
from legacy.pipeline import TASKS, ActiveJobs, BoardStats, ExtractFeeds, SeoRedirects

EPOCH = datetime.date(2026, 11, 1)  # legacy's own [legacy] epoch, so ActiveJobs recurses


class Upstream(luigi.ExternalTask):
    date = luigi.DateParameter()


class Window(luigi.Task):
    date = luigi.DateParameter()

    def requires(self):
        days = (-2, 0, -1)
        return [Upstream(self.date + datetime.timedelta(days=d)) for d in days]


@pytest.mark.parametrize(
    ("name", "snake"),
    [("ActiveJobs", "active_jobs"), ("SeoRedirects", "seo_redirects"), ("FeedDump", "feed_dump")],
)
def test_task_names_become_snake_case(name, snake):
    assert asset_name(name) == snake


def test_tasks_are_sampled_the_day_after_the_epoch():
    assert sample_date(EPOCH) == datetime.date(2026, 11, 2)


def test_extract_reads_the_external_feed_dump_of_its_day():
    assert requirements(ExtractFeeds, EPOCH) == [Requirement("FeedDump", True, 0, 0)]
    assert requirements(ExtractFeeds, EPOCH)[0].same_day


def test_active_jobs_builds_on_its_own_previous_day():
    assert requirements(ActiveJobs, EPOCH) == [
        Requirement("DedupePostings", False, 0, 0),
        Requirement("ActiveJobs", False, -1, -1),
    ]


def test_a_task_reading_two_days_of_one_upstream_gets_one_window():
    assert requirements(SeoRedirects, EPOCH) == [
        Requirement("ActiveJobs", False, -1, 0),
        Requirement("DedupePostings", False, 0, 0),
    ]
    assert requirements(BoardStats, EPOCH) == [
        Requirement("ActiveJobs", False, 0, 0),
        Requirement("DedupePostings", False, 0, 0),
    ]
    (window,) = requirements(Window, EPOCH)
    assert window == Requirement("Upstream", True, -2, 0) and not window.same_day


def test_readers_of_each_output_leave_out_a_task_reading_its_own_past():
    assert required_by(TASKS, EPOCH) == {
        "ExtractFeeds": ["CleanPostings"],
        "CleanPostings": ["DedupePostings"],
        "DedupePostings": ["ActiveJobs", "BoardStats", "SeoRedirects"],
        "ActiveJobs": ["BoardStats", "SeoRedirects"],
        "BoardStats": [],
        "SeoRedirects": [],
    }
    # an upstream outside the tasks given (the feed dump) has no entry of its own
    assert required_by([Window], EPOCH) == {"Window": []}
