"""The redirect edge function on a map exported by figstream.redirects.exports: both event
shapes, a request the map does not redirect, and a hostile location in a tampered map file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from figstream.redirects import exports, graph
from figstream.redirects.policy import RedirectPolicy
from lambdas import redirect_edge

PAIRS = {
    "https://jobnest.example/jobs/jobnest-1": "https://hireloop.example/jobs/hireloop-7",
    "https://jobnest.example/jobs/jobnest-2?ref=feed": "https://hireloop.example/search?q=nurse&l=rome",
    "https://workwave.example/jobs/w-1": "https://workwave.example/",
}


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """The map exported as CloudFront import files, several parts."""
    day = graph.redirects_table(
        pa.array(list(PAIRS)), pa.array(list(PAIRS.values())), pa.array(["expired"] * 3)
    )
    redirect_map = graph.collapse_day(graph.empty_map(), day, day="2026-11-02").map
    policy = RedirectPolicy(max_file_bytes=150)
    files = list(exports.cloudfront_files(exports.entries(redirect_map, policy), policy))
    assert len(files) == 3
    for part, data in enumerate(files):
        (tmp_path / f"part-{part:05d}.json").write_bytes(data)
    return tmp_path


def cloudfront_event(host: str, uri: str, query: str = "") -> dict:
    request = {"uri": uri, "querystring": query, "method": "GET",
               "headers": {"host": [{"key": "Host", "value": host}]}}  # fmt: skip
    return {"Records": [{"cf": {"config": {"eventType": "viewer-request"}, "request": request}}]}


def test_a_plain_invoke_gets_the_301_or_a_404(exported, monkeypatch):
    monkeypatch.setenv(redirect_edge.ENV, str(exported))
    monkeypatch.setattr(redirect_edge, "_loaded", None)
    handler = redirect_edge.handler
    assert handler({"host": "jobnest.example", "path": "/jobs/jobnest-1"}) == {
        "status": 301,
        "location": "https://hireloop.example/jobs/hireloop-7",
    }
    assert handler({"host": "JOBNEST.example", "path": "/jobs/jobnest-2?ref=feed"}) == {
        "status": 301,
        "location": "https://hireloop.example/search?q=nurse&l=rome",
    }
    assert handler({"host": "jobnest.example", "path": "/jobs/jobnest-2"}) == {"status": 404}
    assert handler({"host": "evil.test", "path": "/jobs/jobnest-1"}) == {"status": 404}


def test_a_cloudfront_viewer_request_gets_a_generated_301_or_goes_on(exported):
    redirects = redirect_edge.load_map(exported)
    answer = redirect_edge.respond(redirects, cloudfront_event("workwave.example", "/jobs/w-1"))
    assert answer["status"] == "301"
    assert answer["headers"]["location"] == [
        {"key": "Location", "value": "https://workwave.example/"}
    ]
    event = cloudfront_event("workwave.example", "/jobs/w-2")
    assert redirect_edge.respond(redirects, event) == event["Records"][0]["cf"]["request"]


def test_a_tampered_map_never_serves_a_hostile_location(tmp_path):
    hostile = {
        "a.example/1": "https://a.example/\r\nSet-Cookie: x=1",
        "a.example/2": "javascript:alert(1)",
        "a.example/3": "//evil.test/",
        "a.example/4": "https://a.example/ok",
    }
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"data": [{"key": k, "value": v} for k, v in hostile.items()]}))
    redirects = redirect_edge.load_map(path)
    for n in (1, 2, 3):
        assert redirect_edge.respond(redirects, {"host": "a.example", "path": f"/{n}"}) == {
            "status": 404
        }
    assert redirect_edge.respond(redirects, {"host": "a.example", "path": "/4"})["status"] == 301


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("GET /", "expected a Lambda@Edge event"),
        ({"path": "/x"}, "expected a Lambda@Edge event"),
        (cloudfront_event("", "/x"), "no Host header"),
    ],
)
def test_bad_events_are_errors_naming_the_problem(event, message):
    with pytest.raises(ValueError, match=message):
        redirect_edge.respond({}, event)


@pytest.mark.parametrize("text", ['{"items": []}', "[]", '{"data": [{"key": "a"}]}'])
def test_a_map_file_not_in_the_import_format_is_refused(tmp_path, text):
    path = tmp_path / "map.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"map\.json"):
        redirect_edge.load_map(path)


def test_the_handler_needs_nothing_but_the_stdlib_and_its_key_module():
    """Lambda@Edge allows no layers: a bare interpreter (no site-packages) imports it."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import lambdas.redirect_edge; "
        "print(' '.join(sorted(m for m in sys.modules "
        "if m.split('.')[0] not in sys.stdlib_module_names)))"
    )
    root = str(Path(redirect_edge.__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, root], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [
        "__main__", "figstream", "figstream.redirects", "figstream.redirects.keys",
        "lambdas", "lambdas.redirect_edge",
    ]  # fmt: skip
