"""Which side consumers read per stage, and the flagged fallback when it has nothing."""

from __future__ import annotations

import pyarrow as pa
import pytest
from migration_world import ingest_world

from figstream.migration import legacy_files, views
from figstream.migration.ledger import Stage
from figstream.migration.parity import View
from figstream.migration.publishing import (
    LEGACY,
    NEW,
    NothingToPublish,
    authoritative,
    choose,
    new_has_day,
    publish,
    published_path,
)

EPOCH = "2026-11-01"
OLD_STAGES = (Stage.LEGACY, Stage.SHADOW)
NEW_STAGES = (Stage.MIGRATED, Stage.RETIRED)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    return ingest_world(tmp_path_factory.mktemp("ingested"))


@pytest.mark.parametrize("stage", list(Stage))
def test_legacy_is_authoritative_until_migrated(stage):
    assert authoritative(stage) == (NEW if stage in NEW_STAGES else LEGACY)


# (new side has the day, legacy has it) -> the side published, at legacy/shadow and after.
CASES = {
    (True, True): (LEGACY, NEW),
    (True, False): (NEW, NEW),
    (False, True): (LEGACY, LEGACY),
    (False, False): (None, None),
}


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize(("has_new", "has_legacy"), list(CASES))
def test_the_authoritative_side_else_the_other_else_nothing(stage, has_new, has_legacy):
    readers = {
        NEW: lambda: "new table" if has_new else None,
        LEGACY: lambda: "legacy table" if has_legacy else None,
    }
    expected = CASES[has_new, has_legacy][stage in NEW_STAGES]
    found = choose(stage, readers)
    if expected is None:
        assert found is None
    else:
        assert found == (expected, f"{expected} table")


@pytest.mark.parametrize("stage", list(Stage))
def test_the_other_side_is_not_read_when_the_authoritative_one_has_the_day(stage):
    def unread():
        raise AssertionError("the fallback side was read")

    first = authoritative(stage)
    readers = {first: lambda: "table", (NEW if first == LEGACY else LEGACY): unread}
    assert choose(stage, readers) == (first, "table")


def legacy_stats(root, day: str) -> pa.Table:
    """A one-row legacy board_stats.csv no new side would write."""
    row = [day, "legacy-only-board", "1", "2", "3", "4", "5.00"]
    table = pa.table({c: [v] for c, v in zip(views.STATS_COLUMNS, row, strict=True)})
    legacy_files.write_legacy_outputs("BoardStats", day, View(table), root)
    return table


def test_the_new_side_has_a_day_once_events_of_it_are_ingested(ingested):
    assert new_has_day(ingested.stores, ingested.clean_day)
    assert not new_has_day(ingested.stores, ingested.unseen_day)


@pytest.mark.parametrize(
    ("stage", "which", "fallback"),
    [
        *((stage, "clean_day", False) for stage in OLD_STAGES),
        *((stage, "unseen_day", True) for stage in NEW_STAGES),
    ],
)
def test_legacy_is_published_before_migration_or_when_new_never_saw_the_day(
    ingested, tmp_path, stage, which, fallback
):
    day = getattr(ingested, which)
    legacy = legacy_stats(tmp_path, day)
    out = publish("board_stats", day, stage, ingested.stores, tmp_path, EPOCH)
    assert (out.side, out.fallback) == (LEGACY, fallback)
    assert out.path == published_path(tmp_path, "board_stats", day)
    assert legacy_files.read_csv(out.path).equals(legacy)
    if fallback:
        assert out.describe_fallback().startswith(f"new side (authoritative at {stage.value})")


@pytest.mark.parametrize("stage", NEW_STAGES)
def test_after_migration_new_is_published_though_legacy_has_the_day(ingested, tmp_path, stage):
    day = ingested.clean_day
    legacy_stats(tmp_path, day)
    out = publish("board_stats", day, stage, ingested.stores, tmp_path, EPOCH)
    assert (out.side, out.fallback) == (NEW, False)
    new = views.render_new("BoardStats", day, ingested.stores, EPOCH).table
    assert legacy_files.read_csv(out.path).equals(new)
    assert "legacy-only-board" not in new["board"].to_pylist()


@pytest.mark.parametrize("stage", OLD_STAGES)
def test_a_legacy_night_that_died_is_published_from_new_and_flagged(ingested, tmp_path, stage):
    out = publish("board_stats", ingested.bad_day, stage, ingested.stores, tmp_path, EPOCH)
    assert (out.side, out.fallback) == (NEW, True)
    assert out.describe_fallback() == (
        f"legacy side (authoritative at {stage.value}) has no output for {ingested.bad_day}; "
        "published the new side instead"
    )


@pytest.mark.parametrize("stage", list(Stage))
def test_with_neither_side_nothing_is_written(ingested, tmp_path, stage):
    day = ingested.unseen_day
    with pytest.raises(NothingToPublish, match=f"neither legacy BoardStats .* for {day}"):
        publish("board_stats", day, stage, ingested.stores, tmp_path, EPOCH)
    assert not published_path(tmp_path, "board_stats", day).exists()
