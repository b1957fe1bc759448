"""SEO redirects: the day's redirects against the real legacy task's code, and the collapsed map
against following the chains of the uncollapsed single-hop history (hypothesis on random
redirect graphs)."""

from __future__ import annotations

import csv
import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import luigi
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from figstream.migration import flaws
from figstream.migration.flaws import redirect_chains
from figstream.migration.parity_report import Differences
from figstream.migration.views import legacy_view
from figstream.redirects import graph
from figstream.redirects.graph import (
    MAP_SCHEMA,
    REDIRECTS_SCHEMA,
    collapse,
    day_redirects,
    empty_map,
)
from figstream.streaming.tables import EVENTS_SCHEMA, SEARCH_INDEX_COLUMNS
from legacy import pipeline

T0 = datetime(2026, 11, 2, tzinfo=UTC)


# --- the legacy task itself, run on CSVs written from the same rows ---------------------------


class _LegacyOnFiles(pipeline.SeoRedirects):
    """The real ``SeoRedirects.run``, reading and writing the files of ``root``."""

    root = luigi.Parameter()

    def input(self):
        target = lambda name: luigi.LocalTarget(  # noqa: E731
            str(Path(self.root) / name), format=pipeline.CSV_FORMAT
        )
        return {
            "yesterday": target("yesterday.csv"),
            "today": target("today.csv"),
            "events": {"deduped": target("events.csv")},
        }

    def output(self):
        return luigi.LocalTarget(str(Path(self.root) / "out.csv"), format=pipeline.CSV_FORMAT)


def legacy_redirects(yesterday: list[dict], today: list[dict], events: list[dict]) -> list[dict]:
    """What legacy writes for these rows; titles as legacy cleaning leaves them (title-cased)."""

    def legacy_jobs(jobs):
        rows = [{**job, "title": job["title"].title()} for job in jobs]
        return sorted(rows, key=lambda r: r["job_id"])  # legacy snapshots are sorted by job_id

    with tempfile.TemporaryDirectory() as root:
        files = Path(root)
        pipeline.write_csv(
            luigi.LocalTarget(str(files / "yesterday.csv"), format=pipeline.CSV_FORMAT),
            pipeline.SNAPSHOT_COLUMNS,
            legacy_jobs(yesterday),
        )
        pipeline.write_csv(
            luigi.LocalTarget(str(files / "today.csv"), format=pipeline.CSV_FORMAT),
            pipeline.SNAPSHOT_COLUMNS,
            legacy_jobs(today),
        )
        rows = [
            {
                "event_id": e["event_id"],
                "event_type": e["event_type"],
                "source": e.get("source", ""),
                "event_time": e["event_time"].isoformat().replace("+00:00", "Z"),
                "job_id": e.get("job_id") or "",
                "absorbed_board": e.get("absorbed_board") or "",
                "surviving_board": e.get("surviving_board") or "",
            }
            for e in sorted(events, key=lambda e: (e["event_time"], e["event_id"]))
        ]
        pipeline.write_csv(
            luigi.LocalTarget(str(files / "events.csv"), format=pipeline.CSV_FORMAT),
            pipeline.EVENT_COLUMNS,
            rows,
        )
        _LegacyOnFiles(date=T0.date(), root=root).run()
        with (files / "out.csv").open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))


def index_table(jobs: list[dict]) -> pa.Table:
    """A search index of these jobs (the columns day_redirects reads, as strings)."""
    return pa.table(
        {name: pa.array([j.get(name) for j in jobs], pa.string()) for name in SEARCH_INDEX_COLUMNS}
    )


def events_table(events: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{name: e.get(name) for name in EVENTS_SCHEMA.names} for e in events], schema=EVENTS_SCHEMA
    )


def job(job_id, board, title, company, location):
    return {
        "job_id": job_id,
        "board": board,
        "title": title,
        "company": company,
        "location": location,
        "url": f"https://{board}.example/jobs/{job_id}",
    }


def expiry(event_id, job_id, minutes=0):
    return {
        "event_id": event_id,
        "event_type": "job.expired",
        "source": "x",
        "event_time": T0 + timedelta(minutes=minutes),
        "job_id": job_id,
        "reason": "filled",
    }


def merger(event_id, absorbed, surviving, minutes=0):
    return {
        "event_id": event_id,
        "event_type": "board.merged",
        "source": surviving,
        "event_time": T0 + timedelta(minutes=minutes),
        "absorbed_board": absorbed,
        "surviving_board": surviving,
    }


def as_rows(table: pa.Table) -> list[dict]:
    return legacy_view(table).to_pylist()


def test_expiries_and_a_merger_as_legacy_writes_them():
    yesterday = [
        job("jn-1", "jobnest", "data engineer", "Acme Inc", "Austin, TX"),
        job("jn-2", "jobnest", "QA analyst", "Initech", "Boston, MA"),
        job("jn-3", "jobnest", "Straße & Co / Lead", "Hooli", "Zürich, CH"),  # expired too
        job("hl-1", "hireloop", "backend developer", "Globex", "Remote"),
        job("tp-1", "talentpool", "Product Manager", "Umbrella", "Denver, CO"),
        job("tp-2", "talentpool", "Analyst", "Wayne", "Gotham"),
    ]
    today = [
        job("hl-1", "hireloop", "backend developer", "Globex", "Remote"),
        job("hl-9", "hireloop", "Data Engineer", "ACME INC", "austin, tx"),  # the re-post ...
        job("hl-7", "hireloop", "DATA ENGINEER", "acme inc", "AUSTIN, TX"),  # ... lowest id wins
        job("wk-1", "workwave", "QA Analyst", "Initech", "Boston, MA"),  # not the survivor
        job("tp-2", "talentpool", "Analyst", "Wayne", "Gotham"),
        job("tp-3", "talentpool", "Fresh", "New", "Here"),
    ]
    events = [
        expiry("e1", "tp-1", 5),
        expiry("e2", "jn-3", 1),
        expiry("e3", "zz-1", 2),  # not in yesterday's index: no redirect
        merger("m1", "jobnest", "hireloop", 600),
    ]
    got = day_redirects(index_table(yesterday), index_table(today), events_table(events))
    assert got.schema == REDIRECTS_SCHEMA
    assert as_rows(got) == [
        {
            "from_url": "https://jobnest.example/jobs/jn-1",
            "to_url": "https://hireloop.example/jobs/hl-7",
            "status": "301",
            "reason": "board_merged",
        },
        {
            "from_url": "https://jobnest.example/jobs/jn-2",
            "to_url": "https://hireloop.example/search?q=qa+analyst&l=boston%2C+ma",
            "status": "301",
            "reason": "board_merged",
        },
        {
            "from_url": "https://jobnest.example/jobs/jn-3",
            "to_url": "https://hireloop.example/search?q=stra%C3%9Fe+%26+co+%2F+lead&l=z%C3%BCrich%2C+ch",
            "status": "301",
            "reason": "board_merged",
        },
        {
            "from_url": "https://talentpool.example/jobs/tp-1",
            "to_url": "https://talentpool.example/search?q=product+manager&l=denver%2C+co",
            "status": "301",
            "reason": "expired",
        },
    ]
    assert as_rows(got) == legacy_redirects(yesterday, today, events)


def test_a_quiet_day_and_the_first_day_have_no_redirects():
    empty_index = index_table([])
    assert day_redirects(empty_index, empty_index, events_table([])).num_rows == 0
    jobs = [job("a-1", "aa", "t", "c", "l")]
    assert day_redirects(index_table(jobs), index_table(jobs), events_table([])).num_rows == 0


# Squashed text (as clean_postings leaves it) with the characters that make lower-casing and
# URL-encoding interesting: case pairs, German sharp s, dotted I, ligatures, &, +, /, %.
_WORDS = ["data", "Data", "DATA", "straße", "STRASSE", "İstanbul", "ﬁsh", "a&b", "c+d", "x/y", "%"]
_text = st.lists(
    st.sampled_from(_WORDS)
    | st.text(st.characters(codec="utf-8", categories=["L", "N"]), max_size=3),
    min_size=1,
    max_size=3,
).map(lambda words: " ".join(w for w in words if w) or "x")
_boards = st.sampled_from(["aa", "bb", "cc"])


@st.composite
def days(draw):
    n_yesterday = draw(st.integers(0, 8))
    yesterday = [
        job(f"{i:03d}", draw(_boards), draw(_text), draw(_text), draw(_text))
        for i in range(n_yesterday)
    ]
    today = [j for j in yesterday if draw(st.booleans())]
    # new postings, some copying a gone posting's text (in other case) on another board
    for i in range(draw(st.integers(0, 8))):
        if yesterday and draw(st.booleans()):
            source = draw(st.sampled_from(yesterday))
            text = [source["title"].upper(), source["company"].lower(), source["location"]]
        else:
            text = [draw(_text), draw(_text), draw(_text)]
        today.append(job(f"{100 + draw(st.integers(0, 50)) * 10 + i:04d}", draw(_boards), *text))
    events = []
    for n, j in enumerate(yesterday):
        if draw(st.integers(0, 2)) == 0:
            events.append(expiry(f"x{n}", j["job_id"], draw(st.integers(0, 1000))))
    for n in range(draw(st.integers(0, 3))):
        absorbed, surviving = draw(_boards), draw(_boards)
        if absorbed != surviving:
            minute = draw(st.integers(0, 3))  # equal times: the event id breaks the tie
            events.append(merger(f"m{draw(st.integers(0, 9))}{n}", absorbed, surviving, minute))
    return yesterday, today, events


@settings(max_examples=120, deadline=None)
@given(days())
def test_day_redirects_equal_the_legacy_task_on_the_same_rows(day):
    yesterday, today, events = day
    got = day_redirects(index_table(yesterday), index_table(today), events_table(events))
    assert as_rows(got) == legacy_redirects(yesterday, today, events)


# --- the collapsed map ---------------------------------------------------------------------------

PAGES = [f"https://b.example/jobs/{i}" for i in range(7)]
SEARCHES = [f"https://b.example/search?q={i}" for i in range(2)]
REASONS = ["expired", "board_merged"]

_edges = st.dictionaries(
    st.sampled_from(PAGES),
    st.tuples(st.sampled_from(PAGES + SEARCHES), st.sampled_from(REASONS)),
    max_size=5,
)
_live = st.sets(st.sampled_from(PAGES), max_size=2)


@st.composite
def histories(draw):
    """Days of (redirects, live URLs); a day often redirects the pages the day before pointed
    at, so chains of several hops, revivals in the middle of chains and loops attempts occur."""
    history, recent = [], []
    for _ in range(draw(st.integers(0, 8))):
        edges = {}
        for _ in range(draw(st.integers(0, 4))):
            chained = recent and draw(st.integers(0, 2)) > 0
            source = draw(st.sampled_from(recent if chained else PAGES))
            target = draw(st.sampled_from(PAGES + SEARCHES))
            edges[source] = (target, draw(st.sampled_from(REASONS)))
        live = draw(st.sets(st.sampled_from(PAGES), max_size=1) | st.just(set()))
        history.append((edges, live))
        recent = [v for v, _ in edges.values() if v in PAGES] or recent
    return history


_history = histories()


def redirect_table(edges: dict[str, tuple[str, str]]) -> pa.Table:
    rows = [{"from_url": u, "to_url": v, "status": 301, "reason": r} for u, (v, r) in edges.items()]
    return pa.Table.from_pylist(rows, schema=REDIRECTS_SCHEMA)


def live_array(live) -> pa.Array:
    return pa.array(sorted(live), pa.string())


def as_dict(redirect_map: pa.Table) -> dict[str, tuple[str, str, int]]:
    return {r["from_url"]: (r["to_url"], r["reason"], r["hops"]) for r in redirect_map.to_pylist()}


def reference(history) -> dict[str, tuple[str, str, int]]:
    """The uncollapsed single-hop history (legacy's view: the latest redirect of each URL,
    dropped once the URL is live again or a day's redirect points at it), followed hop by hop."""
    single: dict[str, tuple[str, str]] = {}
    for edges, live in history:
        single.update(edges)
        for url in set(live) | {v for v, _ in edges.values()}:
            single.pop(url, None)
    out = {}
    for start, (target, reason) in single.items():
        hops = 1
        while target in single:
            target = single[target][0]
            hops += 1
            assert hops <= len(single), "the history itself never loops"
        out[start] = (target, reason, hops)
    return out


def check_invariants(redirect_map: pa.Table) -> None:
    assert redirect_map.schema == MAP_SCHEMA
    sources = redirect_map["from_url"].to_pylist()
    assert sources == sorted(set(sources)), "one row per from_url, sorted"
    assert not set(redirect_map["to_url"].to_pylist()) & set(sources), "single hop"


@settings(max_examples=300, deadline=None)
@given(_history)
def test_collapse_equals_following_the_uncollapsed_chains(history):
    redirect_map = empty_map()
    for edges, live in history:
        before = redirect_map
        redirect_map = collapse(before, redirect_table(edges), live=live_array(live))
        check_invariants(redirect_map)
        again = collapse(redirect_map, redirect_table(edges), live=live_array(live))
        assert again.equals(redirect_map), "re-applying a day changes nothing"
    assert as_dict(redirect_map) == reference(history)


@settings(max_examples=200, deadline=None)
@given(_history, st.randoms(use_true_random=False))
def test_collapse_is_deterministic_whatever_the_row_order(history, rng):
    ordered, shuffled = empty_map(), empty_map()
    for edges, live in history:
        new = redirect_table(edges)
        ordered = collapse(ordered, new, live=live_array(live))
        order = list(range(new.num_rows))
        rng.shuffle(order)
        registry_order = list(range(shuffled.num_rows))
        rng.shuffle(registry_order)
        shuffled = collapse(
            shuffled.take(pa.array(registry_order, pa.int64())),
            new.take(pa.array(order, pa.int64())),
            live=live_array(reversed(sorted(live))),
        )
    assert ordered.equals(shuffled)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(PAGES), st.sampled_from(PAGES + SEARCHES), max_size=7),
    _edges,
    _live,
)
def test_any_registry_even_a_looping_one_comes_out_single_hop(registry, edges, live):
    """A registry not made by collapse (imported legacy hops, loops and all) is repaired."""
    imported = pa.table(
        {"from_url": list(registry), "to_url": list(registry.values())},
        schema=pa.schema([("from_url", pa.string()), ("to_url", pa.string())]),
    )
    redirect_map = collapse(imported, redirect_table(edges), live=live_array(live))
    check_invariants(redirect_map)
    assert set(redirect_map["from_url"].to_pylist()) <= set(registry) | set(edges)
    again = collapse(redirect_map, redirect_table(edges), live=live_array(live))
    assert again.equals(redirect_map)
    assert collapse(redirect_map, empty_map()).equals(redirect_map)


def test_a_loop_is_broken_at_its_smallest_url():
    imported = pa.table(
        {"from_url": ["u/b", "u/c", "u/a", "u/d"], "to_url": ["u/c", "u/a", "u/b", "u/b"]}
    )
    got = as_dict(collapse(imported, empty_map()))
    assert got == {
        "u/b": ("u/a", None, 2),
        "u/c": ("u/a", None, 1),
        "u/d": ("u/a", None, 3),
    }


def test_a_url_that_comes_back_stops_being_redirected_and_others_still_reach_it():
    day1 = redirect_table({"j/1": ("j/2", "board_merged")})
    day2 = redirect_table({"j/2": ("search/2", "expired")})
    redirect_map = collapse(collapse(empty_map(), day1), day2)
    assert as_dict(redirect_map) == {
        "j/1": ("search/2", "board_merged", 2),
        "j/2": ("search/2", "expired", 1),
    }
    # j/2 is re-posted (live again): it is served again, and j/1 goes there, not to a search
    revived = collapse(redirect_map, empty_map(), live=pa.array(["j/2"]))
    assert as_dict(revived) == {"j/1": ("j/2", "board_merged", 1)}
    # a day's redirect pointing at a URL means that URL is live: its own redirect goes
    to_j1 = collapse(revived, redirect_table({"j/5": ("j/1", "board_merged")}))
    assert as_dict(to_j1) == {"j/5": ("j/1", "board_merged", 1)}


def test_a_long_chain_collapses_to_its_end():
    redirect_map = empty_map()
    for day in range(12):
        hop = redirect_table({f"j/{day:02d}": (f"j/{day + 1:02d}", "board_merged")})
        redirect_map = collapse(redirect_map, hop)
    got = as_dict(redirect_map)
    assert got["j/00"] == ("j/12", "board_merged", 12)
    assert {to for to, _, _ in got.values()} == {"j/12"}


def test_duplicate_from_urls_in_a_day_keep_the_smallest_target():
    new = pa.table(
        {
            "from_url": ["j/1", "j/1"],
            "to_url": ["s/b", "s/a"],
            "status": [301, 301],
            "reason": ["expired", "expired"],
        }
    )
    assert as_dict(collapse(empty_map(), new)) == {"j/1": ("s/a", "expired", 1)}


# --- the known-flaw rule --------------------------------------------------------------------------


def _strings(rows: list[dict], names: list[str]) -> pa.Table:
    return pa.table({n: pa.array([r[n] for r in rows], pa.string()) for n in names})


def test_redirect_chains_explains_single_hops_against_the_map():
    day1 = redirect_table({"j/1": ("j/2", "board_merged"), "j/7": ("s/7", "expired")})
    day2 = redirect_table({"j/2": ("s/2", "expired")})
    redirect_map = collapse(collapse(empty_map(), day1), day2)
    legacy = pa.concat_tables([legacy_view(day1), legacy_view(day2)])
    # keyed on from_url: j/1 differs in to_url only (a chain); j/8 differs for no such reason
    names = ["from_url", "to_url_legacy", "to_url_new", "differing_columns"]
    differing = _strings(
        [
            dict(zip(names, ["j/1", "j/2", "s/2", "to_url"], strict=True)),
            dict(zip(names, ["j/8", "j/9", "s/2", "to_url"], strict=True)),
            dict(zip(names, ["j/1", "j/2", "s/2", "to_url,reason"], strict=True)),
        ],
        names,
    )
    names = list(graph.LEGACY_COLUMNS)
    no_rows = legacy.slice(0, 0)
    explained = redirect_chains(Differences(no_rows, no_rows, differing), {"map": redirect_map})
    assert explained.differing.to_pylist() == [True, False, False]
    # keyed on (from_url, to_url): the same chain is a row only in legacy plus one only in new
    only_legacy = _strings(
        [
            {"from_url": "j/1", "to_url": "j/2", "status": "301", "reason": "board_merged"},
            {"from_url": "j/7", "to_url": "s/0", "status": "301", "reason": "expired"},
        ],
        names,
    )
    only_new = _strings(
        [
            {"from_url": "j/1", "to_url": "s/2", "status": "301", "reason": "board_merged"},
            {"from_url": "j/3", "to_url": "s/3", "status": "301", "reason": "expired"},
        ],
        names,
    )
    empty_diff = differing.slice(0, 0)
    explained = redirect_chains(
        Differences(only_legacy, only_new, empty_diff), {"map": redirect_map}
    )
    assert explained.only_legacy.to_pylist() == [True, False]
    assert explained.only_new.to_pylist() == [True, False]
    assert explained.differing.to_pylist() == []
    nothing = redirect_chains(Differences(only_legacy, only_new, differing), {})
    assert nothing.only_legacy.to_pylist() == [False, False]
    assert nothing.differing.to_pylist() == [False, False, False]


def test_legacy_view_is_strings_with_status_301():
    view = legacy_view(redirect_table({"j/2": ("s/2", "expired"), "j/1": ("s/1", "expired")}))
    assert view.schema == pa.schema([(n, pa.string()) for n in graph.LEGACY_COLUMNS])
    assert view["from_url"].to_pylist() == ["j/1", "j/2"]
    assert set(view["status"].to_pylist()) == {"301"}


@pytest.mark.parametrize("seed", [1, 2])
def test_a_large_day_is_vectorised_and_equal_to_legacy(seed):
    rng = random.Random(seed)
    titles = ["Data Engineer", "qa analyst", "Straße Fahrer", "c++ dev", "ﬁnance"]
    places = ["Austin, TX", "Zürich", "İzmir", "Remote"]
    boards = ["aa", "bb", "cc"]
    yesterday = [
        job(f"{i:05d}", rng.choice(boards), rng.choice(titles), f"co{i % 50}", rng.choice(places))
        for i in range(3000)
    ]
    today = [j for j in yesterday if rng.random() < 0.7] + [
        {**j, "job_id": f"n{j['job_id']}", "board": "bb", "url": f"https://bb.example/jobs/n{j['job_id']}"}
        for j in yesterday if j["board"] == "aa" and rng.random() < 0.5
    ]  # fmt: skip
    events = [expiry(f"x{i}", j["job_id"], i % 600) for i, j in enumerate(yesterday) if i % 5 == 0]
    events.append(merger("m", "aa", "bb", 720))
    got = day_redirects(index_table(yesterday), index_table(today), events_table(events))
    assert got.num_rows > 1000
    assert as_rows(got) == legacy_redirects(yesterday, today, events)


def test_day_local_dedupe_explains_only_what_the_legacy_way_computes():
    names = list(graph.LEGACY_COLUMNS)

    def row(source, target, reason="expired"):
        return {"from_url": source, "to_url": target, "status": "301", "reason": reason}

    as_legacy = _strings([row("j/1", "s/1"), row("j/3", "j/repost", "board_merged")], names)
    as_new = _strings([row("j/2", "s/2"), row("j/3", "s/3", "board_merged")], names)
    context = {"redirects_as_legacy": as_legacy, "redirects_as_new": as_new}
    only_legacy = _strings([row("j/1", "s/1"), row("j/1", "s/WRONG")], names)
    only_new = _strings([row("j/2", "s/2"), row("j/9", "s/9")], names)
    diff_names = ["from_url", "to_url_legacy", "to_url_new", "differing_columns"]
    differing = _strings(
        [
            dict(zip(diff_names, ["j/3", "j/repost", "s/3", "to_url"], strict=True)),
            dict(zip(diff_names, ["j/3", "j/repost", "s/WRONG", "to_url"], strict=True)),
        ],
        diff_names,
    )
    differences = Differences(only_legacy, only_new, differing)
    explained = flaws.day_local_dedupe_redirects(differences, context)
    assert explained.only_legacy.to_pylist() == [True, False]
    assert explained.only_new.to_pylist() == [True, False]
    assert explained.differing.to_pylist() == [True, False]
    nothing = flaws.day_local_dedupe_redirects(differences, {})
    assert nothing.differing.to_pylist() == [False, False]
