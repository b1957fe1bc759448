"""Safe redirects: a hostile target falls back to the next rule and is dead-lettered with its
reason, a loop is refused and reported, 301s expire, and (hypothesis) after any sequence of
mergers and expiries every source resolves in one hop to an allowed host, with no loops."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from figstream.migration.flaws import KNOWN_FLAWS
from figstream.migration.ledger import ParitySpec
from figstream.migration.parity import View, compare
from figstream.migration.views import legacy_view
from figstream.redirects import graph, safe
from figstream.redirects.policy import RedirectPolicy
from figstream.storage.deadletter import SqliteDeadLetterStore
from figstream.streaming.tables import EVENTS_SCHEMA, SEARCH_INDEX_COLUMNS

POLICY = RedirectPolicy()
T0 = datetime(2026, 11, 2, tzinfo=UTC)
BOARDS = ["hireloop", "jobnest", "workwave"]


def posting(job_id, board, title="Data Engineer", location="Berlin", url=None, company="Acme"):
    return {
        "job_id": job_id,
        "board": board,
        "title": title,
        "company": company,
        "location": location,
        "url": url or f"https://{board}.example/jobs/{job_id}",
    }


def index(jobs) -> pa.Table:
    return pa.table(
        {c: pa.array([j.get(c) for j in jobs], pa.string()) for c in SEARCH_INDEX_COLUMNS}
    )


def events(rows) -> pa.Table:
    return pa.Table.from_pylist(
        [{n: r.get(n) for n in EVENTS_SCHEMA.names} for r in rows], schema=EVENTS_SCHEMA
    )


def merger(absorbed, surviving, n=0):
    return {
        "event_id": f"m{n}",
        "event_type": "board.merged",
        "event_time": T0,
        "absorbed_board": absorbed,
        "surviving_board": surviving,
    }


def expiry(job_id, n=0):
    return {"event_id": f"x{n}", "event_type": "job.expired", "event_time": T0, "job_id": job_id}


def targets(day: safe.SafeDay) -> dict[str, str]:
    return {r["from_url"]: r["to_url"] for r in day.redirects.to_pylist()}


def test_a_hostile_match_falls_back_to_the_search_page_and_is_reported():
    old = posting("j1", "jobnest")
    twin = posting("h9", "hireloop", url="https://evil.test/phish")
    got = safe.safe_day_redirects(
        index([old]), index([twin]), events([merger("jobnest", "hireloop")]), POLICY
    )
    search = "https://hireloop.example/search?q=data+engineer&l=berlin"
    assert targets(got) == {old["url"]: search}
    assert got.fallbacks == {"match": 0, "search": 1, "home": 0}
    (refused,) = got.refused.to_pylist()
    assert refused == {
        "from_url": old["url"],
        "to_url": "https://evil.test/phish",
        "board": "hireloop",
        "rule": "match",
        "code": "target_other_host",
        "reason": "board_merged",
    }
    # legacy, trusting the posting, would have sent the user to the phishing host
    legacy = graph.day_redirects(
        index([old]), index([twin]), events([merger("jobnest", "hireloop")])
    )
    assert legacy["to_url"].to_pylist() == ["https://evil.test/phish"]


def test_a_search_page_too_long_for_the_cdn_falls_back_to_the_home_page():
    long = posting("j1", "jobnest", title="Ä" * 200, location="Ö" * 200)
    got = safe.safe_day_redirects(index([long]), index([]), events([expiry("j1")]), POLICY)
    assert targets(got) == {long["url"]: "https://jobnest.example/"}
    assert got.refused["code"].to_pylist() == ["target_too_long"]
    assert got.refused["rule"].to_pylist() == ["search"]


def test_a_hostile_source_gets_no_redirect_and_nothing_safe_means_none_either():
    hostile = posting("j1", "jobnest", url="https://jobnest.example/x\\@evil.test")
    honest = posting("j2", "jobnest")
    nowhere = RedirectPolicy(hosts=("{board}.example",), home_page="https://{board}.example:1/")
    got = safe.safe_day_redirects(
        index([hostile, honest]), index([]), events([expiry("j1"), expiry("j2", 1)]), POLICY
    )
    assert targets(got) == {
        honest["url"]: "https://jobnest.example/search?q=data+engineer&l=berlin"
    }
    assert got.refused.select(["rule", "code"]).to_pylist() == [
        {"rule": "source", "code": "source_backslash"}
    ]
    odd = posting("j3", "jobnest", title="x" * 1100)
    got = safe.safe_day_redirects(index([odd]), index([]), events([expiry("j3")]), nowhere)
    assert got.redirects.num_rows == 0
    assert got.refused["code"].to_pylist() == ["target_too_long", "target_port", "no_safe_target"]


def test_refusals_are_dead_lettered_once_with_their_reason(tmp_path):
    old = posting("j1", "jobnest")
    twin = posting("h9", "hireloop", url="javascript:alert(1)")
    got = safe.safe_day_redirects(
        index([old]), index([twin]), events([merger("jobnest", "hireloop")]), POLICY
    )
    store = SqliteDeadLetterStore(tmp_path / "dl.sqlite")
    rows = safe.dead_letters(got.refused, "2026-11-02")
    assert store.add(rows, stream=safe.STREAM, partition_key="2026-11-02") == 1
    assert store.add(rows, stream=safe.STREAM, partition_key="2026-11-02") == 0  # recomputed
    (letter,) = store.list(stream=safe.STREAM)
    assert letter.code == "target_javascript"
    assert letter.partition_key == "2026-11-02"
    assert orjson.loads(letter.payload)["to_url"] == "javascript:alert(1)"
    assert "javascript:alert(1)" in letter.detail and old["url"] in letter.detail


def test_a_loop_is_refused_newest_hop_first_and_reported():
    registry = pa.table(
        {
            "from_url": ["u/a", "u/b", "u/c"],
            "to_url": ["u/b", "u/c", "u/a"],
            "since": ["2026-11-01", "2026-11-03", "2026-11-02"],
        }
    )
    got = graph.collapse_day(registry, graph.REDIRECTS_SCHEMA.empty_table())
    assert got.loops.select(["from_url", "next_url"]).to_pylist() == [
        {"from_url": "u/b", "next_url": "u/c"}
    ]
    assert {r["from_url"]: r["to_url"] for r in got.map.to_pylist()} == {"u/a": "u/b", "u/c": "u/b"}
    refused = safe.loops_refused(got.loops)
    assert refused["code"].to_pylist() == ["redirect_loop"]


def test_301s_are_dropped_after_the_keep_period_and_chains_re_resolve():
    day1 = graph.redirects_table(pa.array(["j/1"]), pa.array(["j/2"]), pa.array(["expired"]))
    day2 = graph.redirects_table(pa.array(["j/2"]), pa.array(["s/2"]), pa.array(["expired"]))
    m = graph.collapse_day(graph.empty_map(), day1, day="2026-11-01", keep_days=2).map
    m = graph.collapse_day(m, day2, day="2026-11-02", keep_days=2).map
    assert dict(zip(m["from_url"].to_pylist(), m["to_url"].to_pylist(), strict=True)) == {
        "j/1": "s/2",
        "j/2": "s/2",
    }
    empty = graph.REDIRECTS_SCHEMA.empty_table()
    third = graph.collapse_day(m, empty, day="2026-11-03", keep_days=2)
    assert third.expired == 1
    assert third.map["from_url"].to_pylist() == ["j/2"]
    fourth = graph.collapse_day(third.map, empty, day="2026-11-04", keep_days=2)
    assert fourth.map.num_rows == 0 and fourth.expired == 1


# --- hypothesis: any sequence of mergers and expiries ------------------------------------------

HOSTILE_URLS = [
    "https://evil.test/x",
    "javascript:alert(1)",
    "//evil.test/x",
    "https://a@evil.test/",
    "https://x.example\\evil",
    "ftp://hireloop.example/",
    "https://hireloop.example/\r\nLocation: https://evil.test/",
]
TITLES = ["Data Engineer", "Nurse", "C++ Dev", "Ä" * 300]


@st.composite
def worlds(draw):
    """Days of postings (some with hostile URLs), expiries, re-posts under an old id and
    mergers, as (yesterday's index, today's index, the day's events) per day."""
    jobs: dict[str, dict] = {}
    active = list(BOARDS)
    days, n = [], 0
    for _ in range(draw(st.integers(1, 6))):
        before = list(jobs.values())
        day_events = []
        for _ in range(draw(st.integers(0, 4))):
            n += 1
            board = draw(st.sampled_from(active))
            url = draw(st.sampled_from([None, None, *HOSTILE_URLS]))
            title = draw(st.sampled_from(TITLES))
            job = posting(f"{board}-{n}", board, title=title, url=url)
            jobs[job["job_id"]] = job
        for job_id in draw(st.lists(st.sampled_from(sorted(jobs) or ["-"]), max_size=3)):
            if job_id in jobs:
                day_events.append(expiry(job_id, len(day_events)))
                del jobs[job_id]
        if len(active) > 1 and draw(st.booleans()):
            absorbed, surviving = draw(st.permutations(active))[:2]
            day_events.append(merger(absorbed, surviving, len(day_events)))
            active.remove(absorbed)
            for job in [j for j in jobs.values() if j["board"] == absorbed]:
                del jobs[job["job_id"]]
                if draw(st.booleans()):  # re-posted on the survivor, maybe with a hostile URL
                    n += 1
                    url = draw(st.sampled_from([None, *HOSTILE_URLS]))
                    copy = posting(f"{surviving}-{n}", surviving, title=job["title"], url=url)
                    jobs[copy["job_id"]] = copy
        if before and draw(st.booleans()):  # a job comes back under its old id
            back = draw(st.sampled_from(before))
            if back["board"] in active:
                jobs[back["job_id"]] = back
        days.append((index(before), index(list(jobs.values())), events(day_events)))
    return days


def allowed_anywhere(url: str) -> bool:
    return any(POLICY.refusal(url, board) is None for board in BOARDS)


@settings(max_examples=150, deadline=None)
@given(worlds(), st.integers(1, 4))
def test_every_source_resolves_in_one_hop_to_an_allowed_host(world, keep_days):
    redirect_map = graph.empty_map()
    first = date(2026, 11, 1)
    for offset, (yesterday, today, day_events) in enumerate(world):
        day = (first + timedelta(days=offset)).isoformat()
        checked = safe.safe_day_redirects(yesterday, today, day_events, POLICY)
        done = graph.collapse_day(
            redirect_map, checked.redirects, live=today["url"], day=day, keep_days=keep_days
        )
        redirect_map = done.map
        assert done.loops.num_rows == 0, "collapse never makes a loop from its own map"
        sources = redirect_map["from_url"].to_pylist()
        ends = redirect_map["to_url"].to_pylist()
        assert len(set(sources)) == len(sources)
        assert not set(ends) & set(sources), "one hop: no destination is itself redirected"
        assert all(allowed_anywhere(url) for url in ends), ends
        assert all(allowed_anywhere(url) for url in sources), "a hostile source never a key"
        oldest = (first + timedelta(days=offset - keep_days + 1)).isoformat()
        assert pc.all(pc.greater_equal(redirect_map["since"], oldest)).as_py() in (True, None)
        for code in checked.refused["code"].to_pylist():
            assert code in ("no_safe_target", "redirect_loop") or code.split("_", 1)[0] in (
                "source",
                "target",
            )


def test_the_parity_check_explains_a_refused_target_as_a_legacy_flaw():
    old, gone = posting("j1", "jobnest"), posting("j2", "jobnest", url="https://evil.test/j2")
    twin = posting("h9", "hireloop", url="https://evil.test/phish")
    honest = posting("j3", "jobnest", title="Nurse", location="Rome")
    args = (index([old, gone, honest]), index([twin]), events([merger("jobnest", "hireloop")]))
    legacy = legacy_view(graph.day_redirects(*args))
    checked = safe.safe_day_redirects(*args, POLICY)
    new = View(legacy_view(checked.redirects), context={"refused": checked.refused})
    spec = ParitySpec(key=["from_url"], known_flaws=["hostile_redirect_targets"])
    report = compare(legacy, new, spec, KNOWN_FLAWS)
    assert report.verdict == "explained"
    # j1 differs in to_url (its hostile match refused), j2's hostile source is only in legacy
    assert report.explained == {"hostile_redirect_targets": 2}
    bare = compare(legacy, new, ParitySpec(key=["from_url"]), KNOWN_FLAWS)
    assert bare.verdict == "mismatch"
    # an honest difference stays a mismatch: the rule explains refused targets only
    tampered = legacy_view(
        graph.redirects_table(
            pa.array([honest["url"]]),
            pa.array(["https://hireloop.example/x"]),
            pa.array(["board_merged"]),
        )
    )
    wrong = pa.concat_tables(
        [legacy.filter(pc.not_equal(legacy["from_url"], honest["url"])), tampered]
    )
    assert compare(wrong, new, spec, KNOWN_FLAWS).verdict == "mismatch"


def test_a_map_kept_under_another_policy_is_checked_again_once():
    careers = RedirectPolicy(board_hosts={"hireloop": ("careers.hireloop.example",)})
    day = graph.redirects_table(
        pa.array(["https://jobnest.example/1", "https://jobnest.example/2", "https://evil.test/3"]),
        pa.array(
            [
                "https://careers.hireloop.example/x",
                "https://hireloop.example/y",
                "https://hireloop.example/z",
            ]
        ),
        pa.array(["board_merged"] * 3),
    )
    # kept before there was a policy: no metadata, so every row is looked at
    kept = graph.collapse_day(graph.empty_map(), day, day="2026-11-02").map
    under_careers, refused = safe.recheck(kept, careers)
    assert under_careers.num_rows == 2
    assert refused.select(["from_url", "rule", "code"]).to_pylist() == [
        {"from_url": "https://evil.test/3", "rule": "recheck", "code": "source_other_host"}
    ]
    marked = safe.checked_under(under_careers, careers)
    assert safe.recheck(marked, careers)[0] is marked  # checked already: rows not read
    # the careers host leaves the allow-list: its redirect leaves the map
    narrower, refused = safe.recheck(marked, POLICY)
    assert narrower["from_url"].to_pylist() == ["https://jobnest.example/2"]
    assert refused["code"].to_pylist() == ["target_other_host"]
    assert refused["board"].to_pylist() == [None]  # careers.hireloop.example: no board's now


def test_a_target_equal_to_its_source_is_a_refused_loop_not_a_redirect():
    old = posting("j1", "jobnest", url="https://jobnest.example/jobs/same")
    twin = posting("h9", "hireloop", url="https://jobnest.example/jobs/same")
    got = safe.safe_day_redirects(
        index([old]), index([twin]), events([merger("jobnest", "hireloop")]), POLICY
    )
    assert got.redirects.num_rows == 0
    assert got.refused.select(["rule", "code"]).to_pylist() == [
        {"rule": "loop", "code": "redirect_loop"}
    ]
