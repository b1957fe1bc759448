"""The redirect map's exports: the nginx map file, CloudFront KeyValueStore import files within
their limits (split under the file size), and the DynamoDB table over moto server."""

from __future__ import annotations

import json
import re

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from figstream.redirects import exports, graph
from figstream.redirects.keys import edge_key, request_key, writable
from figstream.redirects.policy import RedirectPolicy
from figstream.storage.dynamo_redirects import META_KEY, DynamoRedirectMap
from figstream.storage.dynamo_state import ensure_tables

POLICY = RedirectPolicy()


def redirect_map(pairs: dict[str, str]) -> pa.Table:
    day = graph.redirects_table(
        pa.array(list(pairs)), pa.array(list(pairs.values())), pa.array(["expired"] * len(pairs))
    )
    return graph.collapse_day(graph.empty_map(), day, day="2026-11-02").map


def test_keys_are_what_a_request_names():
    assert edge_key("https://HireLoop.example/jobs/1") == "hireloop.example/jobs/1"
    assert edge_key("https://hireloop.example") == "hireloop.example/"
    assert edge_key("http://hireloop.example?x=1#top") == "hireloop.example/?x=1"
    assert edge_key("https://h.example/a?b=c") == request_key("H.example", "/a", "b=c")


def test_nginx_map_holds_every_entry_quoted_and_nothing_unsafe():
    honest = {
        "https://jobnest.example/jobs/1": "https://hireloop.example/jobs/9",
        "https://jobnest.example/jobs/2?ref=x": "https://hireloop.example/search?q=a+b&l=c",
    }
    hostile = {"https://jobnest.example/jobs/3": 'https://hireloop.example/";}evil{'}
    export = exports.entries(redirect_map({**honest, **hostile}), POLICY)
    assert export.skipped == {"unsafe_text": 1}
    text = exports.nginx_map(export, "2026-11-02").decode("ascii")
    lines = re.findall(r'^    "([^"]+)" "([^"]+)";$', text, re.MULTILINE)
    assert dict(lines) == {edge_key(k): v for k, v in honest.items()}
    assert text.count("{") == text.count("}") == 2  # the map block and the usage comment
    assert "map $host$request_uri $figstream_redirect {" in text


def test_http_and_https_of_one_page_are_one_key():
    export = exports.entries(
        redirect_map(
            {
                "http://a.example/x": "https://a.example/",
                "https://a.example/x": "https://a.example/y",
            }
        ),
        POLICY,
    )
    assert export.entries == [("a.example/x", "https://a.example/")]
    assert export.skipped == {"duplicate_key": 1}


def test_cloudfront_files_split_under_the_file_limit_and_respect_key_and_value_limits():
    small = RedirectPolicy(max_file_bytes=400, max_key_bytes=40, max_value_bytes=60)
    pairs = {
        f"https://jobnest.example/jobs/{i:03d}": f"https://hireloop.example/{i}" for i in range(30)
    }
    pairs["https://jobnest.example/" + "k" * 40] = "https://hireloop.example/"
    pairs["https://jobnest.example/v"] = "https://hireloop.example/" + "v" * 60
    export = exports.entries(redirect_map(pairs), small)
    assert export.skipped == {"key_too_long": 1, "value_too_long": 1}
    files = list(exports.cloudfront_files(export, small))
    assert len(files) > 1
    seen = []
    for data in files:
        assert len(data) <= small.max_file_bytes
        document = json.loads(data)
        assert list(document) == ["data"]
        for item in document["data"]:
            assert set(item) == {"key", "value"}
            assert len(item["key"].encode()) <= small.max_key_bytes
            assert len(item["value"].encode()) <= small.max_value_bytes
            seen.append(item["key"])
    assert seen == sorted(set(seen)) and len(seen) == 30
    assert list(exports.cloudfront_files(exports.Export(), small)) == [b'{"data":[]}']


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=30), st.text(max_size=40), max_size=40))
def test_any_map_exports_within_limits_and_only_writable_text(pairs):
    table = redirect_map(
        {f"https://jobnest.example/{k}": f"https://hireloop.example/{v}" for k, v in pairs.items()}
    )
    small = RedirectPolicy(max_file_bytes=600, max_key_bytes=48, max_value_bytes=56)
    export = exports.entries(table, small)
    assert len(export.entries) + sum(export.skipped.values()) == table.num_rows
    assert all(writable(k) and writable(v) for k, v in export.entries)
    for data in exports.cloudfront_files(export, small):
        assert len(data) <= small.max_file_bytes
    exports.nginx_map(export, "2026-11-02").decode("ascii")  # ASCII: no exception


def test_the_map_in_dynamodb_follows_the_days_and_refuses_an_older_one(aws_config):
    ensure_tables(aws_config)
    table = DynamoRedirectMap(aws_config)
    first = table.publish(
        [("a.example/1", "https://a.example/"), ("a.example/2", "https://a.example/s")],
        "2026-11-02",
    )
    assert (first.written, first.deleted, first.unchanged) == (2, 0, 0)
    again = table.publish(
        [("a.example/1", "https://a.example/"), ("a.example/2", "https://a.example/s")],
        "2026-11-02",
    )
    assert (again.written, again.deleted, again.unchanged) == (0, 0, 2)
    # a day later: one entry expired, one moved, one new
    later = table.publish(
        [("a.example/2", "https://a.example/t"), ("a.example/3", "https://a.example/")],
        "2026-11-03",
    )
    assert (later.written, later.deleted) == (2, 1)
    assert table.held() == {
        "a.example/2": "https://a.example/t",
        "a.example/3": "https://a.example/",
    }
    assert table.lookup("a.example/2") == "https://a.example/t"
    assert table.lookup("a.example/1") is None
    assert table.lookup(META_KEY) is None
    older = table.publish([("a.example/1", "https://a.example/")], "2026-11-01")
    assert older.refused_older == "2026-11-03"
    assert table.lookup("a.example/1") is None and table.published_day() == "2026-11-03"
