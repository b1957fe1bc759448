"""Publishing the redirect map to DynamoDB (moto server) without reading the table: a diff
against the previous published export, kept in the table and read by key.

Cases: publishes over several days never ``Scan`` and leave the table equal to the map, with
only the current export's parts; a map spread over many parts; a publish that died after its
export was named pending (the next one removes what either export held that the map has not);
a table published before exports were kept (read whole once, then never again); the export's
items are never served as redirects.
"""

from __future__ import annotations

import pytest

from figstream.storage import dynamo_redirects
from figstream.storage.dynamo_redirects import EXPORT_PREFIX, META_KEY, DynamoRedirectMap
from figstream.storage.dynamo_state import _s, ensure_tables


@pytest.fixture
def table(aws_config) -> DynamoRedirectMap:
    ensure_tables(aws_config)
    return DynamoRedirectMap(aws_config)


def raw_keys(table: DynamoRedirectMap) -> list[str]:
    """Every item's key in the table, read whole: what the test checks, never what publish
    does."""
    items = table.dynamo.client.scan(TableName=table.table, ConsistentRead=True)["Items"]
    return sorted(i["pk"]["S"] for i in items)


def test_publishing_day_after_day_never_scans_and_leaves_exactly_the_map(table):
    days = [
        ("2026-11-02", {"a.example/1": "https://a.example/", "a.example/2": "https://a.example/s"}),
        ("2026-11-03", {"a.example/2": "https://a.example/t", "a.example/3": "https://a.example/"}),
        ("2026-11-04", {"a.example/3": "https://a.example/"}),
        ("2026-11-04", {"a.example/3": "https://a.example/"}),  # the same again: nothing written
        ("2026-11-05", {}),
    ]
    reports = [table.publish(sorted(m.items()), day) for day, m in days]
    assert [(r.written, r.deleted, r.unchanged) for r in reports] == [
        (2, 0, 0),
        (2, 1, 0),
        (0, 1, 1),
        (0, 0, 1),
        (0, 1, 0),
    ]
    assert table.request_counts().get("scan", 0) == 0
    assert not any(r.read_whole for r in reports)
    assert table.held() == {} and table.published() == {}
    assert table.published_day() == "2026-11-05"
    # Only the marker and the current export's one part are left beside the entries.
    keys = raw_keys(table)
    assert keys[-1] == META_KEY and len([k for k in keys if k.startswith(EXPORT_PREFIX)]) == 1


def test_each_days_table_equals_its_map_and_the_export(table):
    first = {f"b.example/{n}": f"https://b.example/{n % 3}" for n in range(40)}
    second = {k: v for k, v in first.items() if not k.endswith("7")} | {
        "b.example/x": "https://b.example/"
    }
    table.publish(sorted(first.items()), "2026-11-02")
    assert table.held() == first == table.published()
    report = table.publish(sorted(second.items()), "2026-11-03")
    assert (report.written, report.deleted) == (1, 4)
    assert table.held() == second == table.published()
    assert (
        table.lookup("b.example/17") is None and table.lookup("b.example/x") == "https://b.example/"
    )


def test_a_map_over_many_parts_round_trips(table, monkeypatch):
    monkeypatch.setattr(dynamo_redirects, "PART_BYTES", 400)
    big = {f"c.example/jobs/{n:04d}": f"https://c.example/search?q={n}" for n in range(300)}
    table.publish(sorted(big.items()), "2026-11-02")
    parts = [k for k in raw_keys(table) if k.startswith(EXPORT_PREFIX)]
    assert len(parts) > 20
    smaller = dict(list(big.items())[::2])
    report = table.publish(sorted(smaller.items()), "2026-11-03")
    assert (report.written, report.deleted, report.unchanged) == (0, 150, 150)
    assert table.held() == smaller == table.published()
    assert table.request_counts().get("scan", 0) == 1  # the held() check, not publish


def test_a_publish_that_died_part_way_is_healed_by_the_next(table, monkeypatch):
    table.publish([("d.example/1", "https://d.example/"), ("d.example/2", "https://d.example/a")],
                  "2026-11-02")  # fmt: skip
    real = table.dynamo.batch_write
    calls = []

    def dies_writing_entries(name, requests):
        calls.append(requests)
        if len(calls) == 2:  # the entries: only the new key is written, then the process dies
            real(name, [r for r in requests if r.get("PutRequest", {}).get("Item", {})
                        .get("pk") == _s("d.example/3")])  # fmt: skip
            raise RuntimeError("killed")
        real(name, requests)

    monkeypatch.setattr(table.dynamo, "batch_write", dies_writing_entries)
    with pytest.raises(RuntimeError, match="killed"):
        table.publish([("d.example/2", "https://d.example/b"), ("d.example/3", "https://d.example/")],
                      "2026-11-03")  # fmt: skip
    monkeypatch.setattr(table.dynamo, "batch_write", real)
    assert table.held() == {
        "d.example/1": "https://d.example/",
        "d.example/2": "https://d.example/a",
        "d.example/3": "https://d.example/",
    }
    # The next day's map has neither 2 nor 3: 3 was written by the publish that died, which
    # the last complete export never held, and it goes too.
    report = table.publish([("d.example/1", "https://d.example/")], "2026-11-04")
    assert table.held() == {"d.example/1": "https://d.example/"} == table.published()
    assert report.deleted == 2 and not report.read_whole
    assert len([k for k in raw_keys(table) if k.startswith(EXPORT_PREFIX)]) == 1


def test_a_table_published_before_exports_were_kept_is_read_whole_once(table):
    client = table.dynamo.client
    for key, location in (
        ("e.example/1", "https://e.example/"),
        ("e.example/2", "https://e.example/"),
    ):
        client.put_item(TableName=table.table, Item={"pk": _s(key), "location": _s(location),
                                                     "day": _s("2026-11-01")})  # fmt: skip
    client.put_item(TableName=table.table, Item={"pk": _s(META_KEY), "day": _s("2026-11-01")})
    first = table.publish([("e.example/2", "https://e.example/")], "2026-11-02")
    assert first.read_whole and (first.written, first.deleted, first.unchanged) == (0, 1, 1)
    scans = table.request_counts()["scan"]
    second = table.publish([("e.example/3", "https://e.example/")], "2026-11-03")
    assert not second.read_whole and table.request_counts()["scan"] == scans
    assert table.held() == {"e.example/3": "https://e.example/"}


def test_the_marker_and_the_export_are_never_served(table):
    table.publish([("f.example/1", "https://f.example/")], "2026-11-02")
    for key in raw_keys(table):
        if key.startswith("#"):
            assert table.lookup(key) is None
    assert table.lookup("f.example/1") == "https://f.example/"
