"""What the ledger's stages put into Definitions, decided by name so the Dagster layer only
declares what it is told.

Per legacy task, by stage:

* ``legacy``: only the Luigi task runs;
* ``shadow`` and ``migrated``: the Luigi task and its new assets run, and a parity check
  compares them per day (for a task whose output the views can render);
* ``retired``: the Luigi task no longer runs. If a Luigi task that still runs reads its output,
  a *bridge* writes that output from the new side; otherwise only its history stays.

The legacy task graph comes in as data (``legacy.graph.required_by``): the core never imports
legacy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from figstream.migration import views
from figstream.migration.ledger import Ledger, Stage

# The new assets that implement each legacy task (the ledger's replaced_by is the first),
# plus those its legacy-format view reads (legacy's files hold merger rows, say).
NEW_ASSETS: dict[str, tuple[str, ...]] = {
    "ExtractFeeds": ("raw_events", "board_mergers"),
    "CleanPostings": ("clean_postings", "board_mergers"),
    "DedupePostings": ("deduped_postings", "board_mergers"),
    "ActiveJobs": ("search_index", "job_state", "search_index_snapshot", "board_daily_stats"),
    "BoardStats": ("board_daily_stats",),
    "SeoRedirects": ("seo_redirects", "seo_redirects_nginx", "seo_redirects_cloudfront"),
}


def new_assets_wanted(ledger: Ledger) -> list[str]:
    """The new assets of every task past ``legacy``, each once (what they read comes on top)."""
    names = (
        name
        for task, entry in ledger.tasks.items()
        if entry.stage.runs_new
        for name in NEW_ASSETS.get(task, ())
    )
    return list(dict.fromkeys(names))


def parity_tasks(ledger: Ledger, tasks: Iterable[str]) -> list[str]:
    """The tasks of ``tasks`` checked for parity: at ``shadow`` or ``migrated``, with a view."""
    return [
        task
        for task in tasks
        if ledger.stage(task) in (Stage.SHADOW, Stage.MIGRATED) and views.supports(task)
    ]


def retired(ledger: Ledger, required_by: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Each retired task of ``required_by`` -> the tasks still running Luigi that read its
    output: a bridge must write it for them; none means the task leaves only its history."""
    return {
        task: [other for other in readers if ledger.stage(other).runs_legacy]
        for task, readers in required_by.items()
        if ledger.stage(task) is Stage.RETIRED
    }
