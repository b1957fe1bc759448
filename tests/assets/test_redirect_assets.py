"""The seo_redirects asset on three generated days with a board merger, after the streaming
path has run, against the real legacy Luigi SeoRedirects on the same days' feed dump."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import luigi
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from streaming_harness import EPOCH, LEDGER, Harness

from assets.redirects import build_redirect_assets
from figstream.events.envelope import format_time
from figstream.ingest.dataset import generate
from figstream.ingest.generate import ABSORBED_BOARD, BOARDS, SURVIVING_BOARD
from figstream.migration import views
from figstream.migration.flaws import day_local_dedupe_redirects, redirect_chains
from figstream.migration.parity_report import Differences
from figstream.migration.views import legacy_view
from figstream.redirects import safe, steps
from figstream.redirects.graph import day_redirects
from figstream.redirects.keys import edge_key
from figstream.redirects.policy import load_policy
from figstream.settings import streaming_settings
from figstream.storage.dynamo_redirects import DynamoRedirectMap
from figstream.streaming import daily, stores
from figstream.streaming.tables import SEARCH_INDEX_COLUMNS
from lambdas import redirect_edge
from legacy.pipeline import SeoRedirects
from resources.luigi_runner import LuigiRunner

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]
EPOCH_DAY = EPOCH.isoformat()


@dataclass
class World:
    home: Path
    harness: Harness
    merger_time: str

    @property
    def stores(self) -> stores.Stores:
        return self.harness.resources["streaming"].stores()

    def legacy(self, day: str, name: str) -> list[dict]:
        with (self.home / "legacy" / day / name).open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("redirects")
    # days // 2: the merger is on the second day at noon; clean days so legacy does not fail
    summary = generate(
        home, start=EPOCH, days=3, events_per_day=300, seed=8, bad_rate=0.01, clean_days=3
    )
    config = luigi.configuration.get_config()
    saved = {o: config.get("legacy", o, None) for o in ("data_root", "epoch")}
    with pytest.MonkeyPatch.context() as monkeypatch:
        harness = Harness(home, monkeypatch)
        harness.drain()
        runner = LuigiRunner(data_root=str(home), epoch=EPOCH_DAY)
        for day in DAYS:
            assert runner.build(SeoRedirects, dt.date.fromisoformat(day)).succeeded
        yield World(home, harness, summary.merger["time"])
    for option, value in saved.items():
        if value is None:
            config.remove_option("legacy", option)
        else:
            config.set("legacy", option, value)


@pytest.fixture(scope="module")
def materialised(world):
    asset = build_redirect_assets(LEDGER, streaming_settings())[0]
    results = {}
    for day in DAYS:
        result = dg.materialize(
            [asset],
            partition_key=day,
            resources={"streaming": world.harness.resources["streaming"]},
        )
        assert result.success
        results[day] = result.asset_materializations_for_node("seo_redirects")[0].metadata
    return results


def rows(table_or_dicts) -> set[tuple[str, str, str]]:
    dicts = table_or_dicts.to_pylist() if isinstance(table_or_dicts, pa.Table) else table_or_dicts
    return {(r["from_url"], r["to_url"], r["reason"]) for r in dicts}


def legacy_index(jobs: list[dict]) -> pa.Table:
    return pa.table({c: pa.array([j[c] for j in jobs], pa.string()) for c in SEARCH_INDEX_COLUMNS})


def previous(day: str) -> str:
    return (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()


def test_the_merger_falls_inside_the_days(world):
    assert world.merger_time.startswith("2026-11-02T12:00")
    merger_day = world.legacy("2026-11-02", "redirects.csv")
    merged = [r for r in merger_day if r["reason"] == "board_merged"]
    assert merged and all(r["from_url"].startswith(f"https://{ABSORBED_BOARD}.") for r in merged)
    # absorbed postings re-posted on the survivor go to the re-post; the others (their text
    # changed since yesterday's snapshot) to a search page on the survivor
    matched = sum(
        r["to_url"].startswith(f"https://{SURVIVING_BOARD}.example/jobs/") for r in merged
    )
    assert 0 < matched < len(merged)


def test_day_redirects_equal_legacy_exactly_on_legacys_own_snapshots(world):
    """The legacy semantics, to the row: the same snapshots and events give legacy's file."""
    for day in DAYS:
        yesterday = world.legacy(previous(day), "active_jobs.csv") if day != DAYS[0] else []
        today = world.legacy(day, "active_jobs.csv")
        events = steps.day_events(world.stores, day)
        got = day_redirects(legacy_index(yesterday), legacy_index(today), events)
        assert legacy_view(got).to_pylist() == world.legacy(day, "redirects.csv"), day


def test_each_days_redirects_equal_legacy_where_the_search_indexes_agree(world, materialised):
    """Per day, the asset's redirects equal legacy's redirects.csv, row for row, except for the
    postings on which the two search indexes disagree: legacy DedupePostings drops a same-day
    duplicate for good (figstream shows it again once its original is gone) and keeps a
    duplicate posted a day after its original (figstream hides it while that one is active).
    Every difference is such a posting, and the known-flaw rule says which."""
    differences_seen = 0
    for day in DAYS:
        new = pq_table(world, steps.day_key(day))
        legacy = world.legacy(day, "redirects.csv")

        def index_urls(d: str, side: str) -> set[str]:
            if d < EPOCH_DAY:
                return set()
            if side == "legacy":
                return {j["url"] for j in world.legacy(d, "active_jobs.csv")}
            return set(daily.end_of_day_index(world.stores, d, EPOCH_DAY)["url"].to_pylist())

        disagree = (index_urls(previous(day), "legacy") ^ index_urls(previous(day), "new")) | (
            index_urls(day, "legacy") ^ index_urls(day, "new")
        )
        affected = {
            source
            for source, target, _ in rows(new) | rows(legacy)
            if source in disagree or target in disagree
        }
        agree_new = {r for r in rows(new) if r[0] not in affected}
        agree_legacy = {r for r in rows(legacy) if r[0] not in affected}
        assert agree_new == agree_legacy, day
        differing = rows(new) ^ rows(legacy)
        assert {r[0] for r in differing} <= affected
        differences_seen += len(differing)
        assert len(differing) <= 0.2 * max(len(legacy), 1), day
        # the known-flaw rule recomputes legacy's way from the new side's data: it is legacy's
        # file to the row, and explains every difference
        view = views.render_redirects(day, world.stores, EPOCH_DAY)
        assert view.context["redirects_as_legacy"].to_pylist() == legacy, day
        explained = day_local_dedupe_redirects(keyed_on_from_url(legacy, new), view.context)
        for mask in (explained.only_legacy, explained.only_new, explained.differing):
            assert all(mask.to_pylist()), day
    # the data does exercise the difference (else this test would prove less than it says)
    assert differences_seen > 0
    assert sum(m["redirects_today"].value for m in materialised.values()) > 50


def keyed_on_from_url(legacy: list[dict], new: pa.Table) -> Differences:
    """The parity check's view of a day: rows only in one side, and rows that differ."""
    names = ["from_url", "to_url", "status", "reason"]
    old = {r["from_url"]: r for r in legacy}
    fresh = {r["from_url"]: r for r in legacy_view(new).to_pylist()}

    def table(rows: list[dict], columns: list[str]) -> pa.Table:
        return pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in columns})

    differing = []
    for url in sorted(old.keys() & fresh.keys()):
        columns = [c for c in names[1:] if old[url][c] != fresh[url][c]]
        if columns:
            row = {"from_url": url, "differing_columns": ",".join(columns)}
            for c in names[1:]:
                row[f"{c}_legacy"], row[f"{c}_new"] = old[url][c], fresh[url][c]
            differing.append(row)
    differing_names = ["from_url", *(f"{c}_{s}" for c in names[1:] for s in ("legacy", "new"))]
    return Differences(
        table([old[u] for u in sorted(old.keys() - fresh.keys())], names),
        table([fresh[u] for u in sorted(fresh.keys() - old.keys())], names),
        table(differing, [*differing_names, "differing_columns"]),
    )


def pq_table(world: World, key: str) -> pa.Table:
    from figstream.storage.objects import read_parquet

    return read_parquet(world.stores.objects, key)


def test_the_map_collapses_the_chains_legacy_serves_hop_by_hop(world, materialised):
    last = pq_table(world, steps.map_key(DAYS[-1]))
    destinations = dict(zip(last["from_url"].to_pylist(), last["to_url"].to_pylist(), strict=True))
    assert not set(destinations.values()) & set(destinations), "no chains left"
    # every legacy hop, followed night after night, ends where the map sends the URL at once
    single = {}
    for day in DAYS:
        for r in world.legacy(day, "redirects.csv"):
            single[r["from_url"]] = r["to_url"]
    chained = 0
    for source, target in single.items():
        if source not in destinations:
            continue  # live again, or differing indexes (see the test above)
        hops = 0
        while target in single:
            target, hops = single[target], hops + 1
        chained += hops > 0
        assert destinations[source] == target
    assert chained > 0, "the days hold a redirect whose target went away later"
    metadata = materialised[DAYS[-1]]
    assert metadata["longest_chain_collapsed"].value >= 2
    assert metadata["map_size"].value == last.num_rows
    assert metadata["map_entries_rewritten"].value > 0

    # against the published map, legacy's single hops differ exactly by those chains
    union = legacy_view(pa.Table.from_pylist([{**r, "status": 301} for r in _legacy_rows(world)]))
    joined = union.join(
        last.select(["from_url", "to_url"]).rename_columns(["from_url", "to_url_new"]),
        "from_url",
        join_type="inner",
    )
    differ = joined.filter(pc.not_equal(joined["to_url"], joined["to_url_new"]))
    differing = pa.table(
        {
            "from_url": differ["from_url"],
            "to_url_legacy": differ["to_url"],
            "to_url_new": differ["to_url_new"],
            "differing_columns": pa.array(["to_url"] * differ.num_rows, pa.string()),
        }
    )
    view = views.render_redirects(DAYS[-1], world.stores, EPOCH_DAY)
    empty = union.slice(0, 0)
    explained = redirect_chains(Differences(empty, empty, differing), view.context)
    assert differing.num_rows == chained
    assert all(explained.differing.to_pylist())


def _legacy_rows(world: World) -> list[dict]:
    latest = {}
    for day in DAYS:
        for r in world.legacy(day, "redirects.csv"):
            latest[r["from_url"]] = r
    return list(latest.values())


def test_metadata_and_the_legacy_view(world, materialised):
    merger_day = materialised["2026-11-02"]
    assert merger_day["redirects_board_merged"].value > 0
    assert merger_day["redirects_expired"].value > 0
    assert (
        merger_day["redirects_today"].value
        == merger_day["redirects_board_merged"].value + merger_day["redirects_expired"].value
    )
    assert "| from_url | to_url | reason |" in merger_day["preview"].value
    assert materialised[DAYS[0]]["redirects_today"].value == 0  # the epoch has no yesterday
    view = views.render_redirects("2026-11-02", world.stores, EPOCH_DAY)
    assert view.table.column_names == ["from_url", "to_url", "status", "reason"]
    assert set(view.table["status"].to_pylist()) == {"301"}
    assert all(pa.types.is_string(t) for t in view.table.schema.types)
    assert view.table.num_rows == merger_day["redirects_today"].value
    assert view.context["map"].num_rows == merger_day["map_size"].value


def test_recomputing_days_alone_or_from_scratch_gives_the_same_files(world, materialised):
    objects = world.stores.objects
    keys = [k for day in DAYS for k in (steps.day_key(day), steps.map_key(day))]
    before = {k: objects.get(k) for k in keys}
    steps.seo_redirects(world.stores, ["2026-11-02"], EPOCH_DAY)
    assert {k: objects.get(k) for k in keys} == before
    for key in keys:
        objects.delete(key)
    # the last day alone: the missing maps before it are computed first, in order
    steps.seo_redirects(world.stores, [DAYS[-1]], EPOCH_DAY)
    assert {k: objects.get(k) for k in keys} == before
    # a backfill of the range is one run (BackfillPolicy.single_run), days in order
    for key in keys:
        objects.delete(key)
    asset = build_redirect_assets(LEDGER, streaming_settings())[0]
    result = dg.materialize(
        [asset],
        resources={"streaming": world.harness.resources["streaming"]},
        tags={
            "dagster/asset_partition_range_start": DAYS[0],
            "dagster/asset_partition_range_end": DAYS[-1],
        },
    )
    assert len(result.asset_materializations_for_node("seo_redirects")) == len(DAYS)
    assert {k: objects.get(k) for k in keys} == before


def test_the_asset_sits_in_the_streaming_graph(world):
    from assets.streaming import build_streaming_assets

    settings = streaming_settings()
    defs = dg.Definitions(
        assets=[
            *build_streaming_assets(LEDGER, settings),
            *build_redirect_assets(LEDGER, settings),
        ],
        resources=world.harness.resources,
    )
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey("seo_redirects")
    assert graph.get(key).parent_keys == {
        dg.AssetKey("board_daily_stats"),
        dg.AssetKey("raw_events"),
        dg.AssetKey("board_mergers"),
    }
    assert graph.get(key).group_name == "streaming"
    assert graph.get(key).backfill_policy == dg.BackfillPolicy.single_run()


def test_honest_data_has_nothing_refused_and_every_redirect_is_allowed(world, materialised):
    policy = load_policy()
    for day in DAYS:
        assert materialised[day]["refused_in_run"].value == 0, day
        assert materialised[day]["loops_refused"].value == 0
    merger_day = materialised["2026-11-02"]
    taken = sum(merger_day[f"fallback_{rule}"].value for rule in ("match", "search", "home"))
    assert taken == merger_day["redirects_today"].value
    assert merger_day["fallback_match"].value > 0  # the merger's jobs found on the survivor
    redirect_map = steps.read_map(world.stores, DAYS[-1], EPOCH_DAY)
    boards = set(BOARDS)
    for target in redirect_map["to_url"].to_pylist():
        assert any(policy.refusal(target, board) is None for board in boards), target
    assert world.stores.dead_letters.count(stream=safe.STREAM) == 0


def test_the_exports_hold_the_map_within_cloudfronts_limits(world, materialised):
    assets = build_redirect_assets(LEDGER, streaming_settings())
    day = "2026-11-03"
    result = dg.materialize(
        assets,
        partition_key=day,
        resources={"streaming": world.harness.resources["streaming"]},
        selection=["seo_redirects_nginx", "seo_redirects_cloudfront"],
    )
    assert result.success
    objects = world.stores.objects
    redirect_map = steps.read_map(world.stores, day, EPOCH_DAY)
    expected = {edge_key(r["from_url"]): r["to_url"] for r in redirect_map.to_pylist()}
    assert expected, "the merger left redirects in the map"
    nginx = objects.get(steps.nginx_key(day)).decode("ascii")
    assert dict(re.findall(r'^    "([^"]+)" "([^"]+)";$', nginx, re.MULTILINE)) == expected
    part = objects.get(steps.cloudfront_key(day, 0))
    assert len(part) < 5 * 1024 * 1024
    items = json.loads(part)["data"]
    assert {i["key"]: i["value"] for i in items} == expected
    meta = result.asset_materializations_for_node("seo_redirects_cloudfront")[0].metadata
    assert meta["entries"].value == len(expected) and meta["files"].value == 1
    # the edge function answers from the exported files
    handler_map = redirect_edge.load_map(objects.root / steps.cloudfront_key(day, 0))
    key, location = next(iter(expected.items()))
    host, _, path = key.partition("/")
    answer = redirect_edge.respond(handler_map, {"host": host, "path": "/" + path})
    assert answer == {"status": 301, "location": location}


def _event(kind: str, board: str, at: dt.datetime, data: dict) -> dict:
    return {"id": f"{kind}-{data.get('job_id')}-{at:%d}", "type": kind, "source": board,
            "version": 1, "time": format_time(at), "data": data}  # fmt: skip


def _posted(job_id: str, board: str, url: str, at: dt.datetime) -> dict:
    data = {
        "job_id": job_id,
        "title": "Data Engineer",
        "company": f"Co {job_id}",
        "location": "Lisbon",
        "employment_type": "full_time",
        "remote": False,
        "url": url,
    }
    return _event("job.posted", board, at, data)


@pytest.mark.slow
def test_on_aws_refusals_are_dynamodb_dead_letters_and_the_map_is_in_dynamodb(
    aws_config, tmp_path, monkeypatch
):
    harness = Harness(tmp_path, monkeypatch, profile="aws")
    day1 = dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC)
    day2 = day1 + dt.timedelta(days=1)
    hostile = "https://workwave.example@evil.test/jobs/w-1"  # passes the event schema
    harness.publish(
        [
            _posted("w-1", "workwave", hostile, day1),
            _posted("w-2", "workwave", "https://workwave.example/jobs/w-2", day1),
        ]
    )
    harness.drain()
    expiries = [
        _event("job.expired", "workwave", day2, {"job_id": j, "reason": "filled"})
        for j in ("w-1", "w-2")
    ]
    harness.publish(expiries)
    harness.drain()
    asset = build_redirect_assets(LEDGER, streaming_settings())[0]
    result = dg.materialize(
        [asset], partition_key="2026-11-02", resources={"streaming": harness.resources["streaming"]}
    )
    meta = result.asset_materializations_for_node("seo_redirects")[0].metadata
    assert meta["refused_by_reason"].value == {"source_userinfo": 1}
    assert meta["redirects_today"].value == 1 and meta["dynamodb_written"].value == 1
    (letter,) = harness.dead_letters().list(stream=safe.STREAM)
    assert type(harness.dead_letters()).__name__ == "DynamoDeadLetterStore"
    assert letter.code == "source_userinfo" and hostile in letter.detail
    published = DynamoRedirectMap(harness.aws)
    search = "https://workwave.example/search?q=data+engineer&l=lisbon"
    assert published.held() == {"workwave.example/jobs/w-2": search}
    assert published.lookup("workwave.example/jobs/w-2") == search
