"""What a newcomer sees in the web UI, checked in a real browser.

Debian's headless Chromium (``/usr/bin/chromium``, installed by ``make setup``), driven by
Playwright (no browser download), against a real ``dagster dev`` on loopback over a small
streamed home: a few dozen events landed in the last hour. The test waits for the stream
sensor's run to succeed (through the UI's GraphQL, not a sleep), then looks at what a user
would: the asset graph and its groups, every node's label unambiguous, a streaming asset's
latest materialisation with its per-partition figures (records, lag), the stream sensor's
ticks, and a run's page. Each check waits for visible text. A failure saves a screenshot of
the page in the test's tmp dir.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import EPOCH, DagsterDev, Producer, generated

from figstream.streaming import stores

CHROMIUM = Path(os.environ.get("FIGSTREAM_CHROMIUM", "/usr/bin/chromium"))
GROUPS = ("legacy", "streaming", "migration", "published", "platform")
NODE_LABEL = '[class*="AssetNode_assetName"] [data-tooltip]'  # Dagster 1.13's asset node
# What a node's upstream lineage shows (at least): the legacy task, the new asset(s) and the
# comparison or publication of the two, each label naming one asset.
UPSTREAM_LABELS = {
    "parity/parity_clean_postings": [
        "parity_clean_postings",
        "legacy_clean_postings",
        "clean_postings",
        "board_mergers",
    ],
    "published/published_seo_redirects": [
        "published_seo_redirects",
        "legacy_seo_redirects",
        "seo_redirects",
    ],
}
WAIT_MS = 30_000  # one page's content, on a loaded 2-core machine
LOCATION = "figstream"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]  # 238 s with the machine at load 15


@contextlib.contextmanager
def browser_page(tmp_path: Path) -> Iterator:
    """A fresh page of headless Chromium; a screenshot of it goes to tmp_path on failure."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make setup` installs Debian's chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            # The first visit to a local UI invites to join the community: skip it, as a
            # newcomer would, whenever it covers what the test looks at.
            skip = page.get_by_role("button", name="Skip", exact=True)
            page.add_locator_handler(skip, lambda button: button.click())
            try:
                yield page
            except BaseException:
                shot = tmp_path / "failure.png"
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(shot), full_page=True)
                    print(f"screenshot of the failing page: {shot} ({page.url})")
                raise
        finally:
            browser.close()


def metadata_row(page, key: str):
    """The row of the metadata table whose key is ``key``."""
    return page.locator("tr").filter(has=page.get_by_text(key, exact=True)).first


def wait_for_run(dev: DagsterDev, job: str, timeout: float) -> dict:
    """The first run of ``job`` to succeed; fails on a failed one or at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in dev.runs() if r["jobName"] == job]
        failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
        assert not failed, f"{job} run {failed[0]['runId']} {failed[0]['status']}\n{dev.tail()}"
        done = [r for r in runs if r["status"] == "SUCCESS"]
        if done:
            return done[0]
        assert time.monotonic() < deadline, f"no {job} run succeeded\n{dev.tail()}"
        time.sleep(1)


def test_a_newcomer_sees_the_graph_a_streamed_hour_the_sensor_and_a_run(
    spawn, figstream_env, tmp_path
):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if now - dt.timedelta(hours=1) < EPOCH:
        pytest.skip("the clock is less than 1 h past the ledger epoch: no partitions to stream")
    home = Path(figstream_env["FIGSTREAM_HOME"])
    # A few minutes of one hour, so the sensor asks for one run of one partition.
    end = now - dt.timedelta(seconds=30)
    start = max(end - dt.timedelta(minutes=5), end.replace(minute=0, second=0))
    events = generated(40, seed=16, start=start, end=end)
    Producer(home).batch(events)
    hour = stores.hour_key(start)

    dev = DagsterDev(spawn, figstream_env, tmp_path / "dagster_dev.log")
    dev.wait_up()
    run = wait_for_run(dev, "postings_job", timeout=240)

    with browser_page(tmp_path) as page:
        from playwright.sync_api import expect

        expect.set_options(timeout=WAIT_MS)

        # The asset graph: the groups a newcomer reads the story from, each a box of the graph.
        page.goto(f"{dev.url}/asset-groups")
        for group in GROUPS:
            shown = page.get_by_text(group, exact=True).filter(visible=True)
            expect(shown.nth(1)).to_be_visible()  # in the list of groups and in the graph
        expect(page.get_by_text(re.compile(r"^\d+ assets?\b")).first).to_be_visible()

        # Lineage nodes show only the last part of a key: each must name one asset.
        for key, wanted in UPSTREAM_LABELS.items():
            page.goto(f"{dev.url}/assets/{key}?view=lineage&lineageScope=upstream&lineageDepth=1")
            labels = page.locator(NODE_LABEL)
            expect(labels.nth(len(wanted) - 1)).to_be_visible()
            shown = labels.all_inner_texts()
            assert set(wanted) <= set(shown) and len(shown) == len(set(shown)), shown

        # The streamed hour's latest materialisation, with that hour's own figures.
        page.goto(f"{dev.url}/assets/raw_events?partition={hour}")
        expect(metadata_row(page, "records")).to_contain_text(str(len(events)))
        expect(metadata_row(page, "lag_seconds_p50")).to_contain_text(re.compile(r"\d"))
        expect(page.get_by_text(hour).first).to_be_visible()

        # The stream sensor's page lists its ticks, and the run it asked for.
        page.goto(f"{dev.url}/locations/{LOCATION}/sensors/postings_sensor")
        expect(page.get_by_text(re.compile(r"^\d+ runs? requested$")).first).to_be_visible()
        page.get_by_role("button", name="Runs", exact=True).click()
        expect(page.get_by_text(run["runId"][:8]).first).to_be_visible()

        # A run's page opens, with its steps and their outcome.
        page.goto(f"{dev.url}/runs/{run['runId']}")
        expect(page.get_by_text(run["runId"][:8]).first).to_be_visible()
        for step in ("raw_events", "clean_postings", "job_state"):
            expect(page.get_by_text(step, exact=True).first).to_be_visible()
        expect(page.get_by_text("Success").first).to_be_visible()
