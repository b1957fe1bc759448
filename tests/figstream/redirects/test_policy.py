"""The redirect allow-list: each hostile kind of target is refused with its own reason code,
honest targets pass, and platform/redirects.yaml is loaded strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from figstream.redirects.policy import (
    REASONS,
    RedirectPolicy,
    RedirectPolicyError,
    load_policy,
    policy_path,
)

POLICY = RedirectPolicy()

HOSTILE = [
    (None, "missing"),
    ("", "missing"),
    ("https://evil.test/jobs/1", "other_host"),
    ("https://jobnest.example/jobs/1", "other_host"),  # another board's host
    ("https://hireloop.example.evil.test/", "other_host"),
    ("https://hireloop.example./jobs/1", "other_host"),  # trailing dot: not the listed host
    ("javascript:alert(1)", "javascript"),
    ("JavaScript://hireloop.example/%0aalert(1)", "javascript"),
    ("//evil.test/jobs/1", "protocol_relative"),
    ("https://hireloop.example/jobs/1\r\nSet-Cookie: a=b", "crlf"),
    ("https://hireloop.example/jobs/1\n", "crlf"),
    ("java\tscript:alert(1)", "control"),
    (" https://hireloop.example/", "control"),
    ("https://hireloop.example/a\x00b", "control"),
    ("https://hireloop.example@evil.test/", "userinfo"),
    ("https://user:pw@hireloop.example/", "userinfo"),
    ("https://hireloop.example\\@evil.test/", "backslash"),
    ("https:\\\\evil.test/", "backslash"),
    ("/\\evil.test/", "backslash"),
    ("ftp://hireloop.example/", "scheme"),
    ("data:text/html,<script>alert(1)</script>", "unsafe_char"),
    ("data:text/html;base64,PHNjcmlwdD4=", "scheme"),
    ("mailto:x@hireloop.example", "scheme"),
    ("/jobs/1", "not_absolute"),
    ("hireloop.example/jobs/1", "not_absolute"),
    ("https:/evil.test/", "not_absolute"),
    ("https:evil.test", "not_absolute"),
    ("https://hireloop.example:8443/", "port"),
    ("https://[::1/", "malformed"),
    ("https://[::1]/", "port"),
    ("https://xn--hirelop-9ya.example/", "idn"),
    ("https://hirel\u043e\u043ep.example/", "idn"),  # Cyrillic o's: a homograph
    ("https://hireloop.example/jobs/é", "non_ascii"),
    ('https://hireloop.example/"onmouseover', "unsafe_char"),
    ("https://hireloop.example/$host", "unsafe_char"),
    ("https://hireloop.example/{x}", "unsafe_char"),
    ("https://hireloop.example/" + "a" * 1024, "too_long"),
]


@pytest.mark.parametrize(("url", "code"), HOSTILE)
def test_each_hostile_kind_has_its_reason(url, code):
    assert code in REASONS
    assert POLICY.refusal(url, "hireloop") == code


@pytest.mark.parametrize(
    "url",
    [
        "https://hireloop.example/jobs/hireloop-0000001",
        "http://hireloop.example/jobs/1",
        "https://HIRELOOP.example/search?q=data+engineer&l=berlin",
        "https://hireloop.example/",
        "https://hireloop.example/search?q=c%2B%2B&l=s%C3%A3o+paulo#top",
    ],
)
def test_honest_targets_pass(url):
    assert POLICY.refusal(url, "hireloop") is None


def test_a_malformed_board_allows_no_host_and_has_no_home_page():
    assert POLICY.allowed_hosts("evil.test/") == frozenset()
    assert POLICY.refusal("https://evil.test/.example/", "evil.test/") == "other_host"
    assert POLICY.home_url("a b") is None
    assert POLICY.home_url("hireloop") == "https://hireloop.example/"


def test_extra_hosts_per_board_and_https_only():
    policy = RedirectPolicy(board_hosts={"hireloop": ("careers.hireloop.example",)})
    assert policy.refusal("https://careers.hireloop.example/x", "hireloop") is None
    assert policy.refusal("https://careers.hireloop.example/x", "jobnest") == "other_host"
    strict = RedirectPolicy(schemes=("https",))
    assert strict.refusal("http://hireloop.example/", "hireloop") == "scheme"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60), st.sampled_from(["hireloop", "jobnest"]))
def test_whatever_passes_is_on_the_boards_host_and_safe_to_write_anywhere(suffix, board):
    for url in (suffix, f"https://{board}.example{suffix}", f"https://{suffix}"):
        if POLICY.refusal(url, board) is not None:
            continue
        assert url.isascii() and url.isprintable()
        assert not set(url) & set("\"'\\$<>{}` \r\n")
        scheme, rest = url.split("://", 1)
        assert scheme.lower() in ("http", "https")
        host = rest.split("/")[0].split("?")[0].split("#")[0]
        assert host.lower() == f"{board}.example"


def test_the_repo_policy_loads():
    policy = load_policy(policy_path())
    assert policy.keep_301_days > 0
    assert policy.max_key_bytes == 512 and policy.max_value_bytes == 1024
    assert policy.max_file_bytes < 5 * 1024 * 1024
    assert policy.refusal("https://hireloop.example/jobs/1", "hireloop") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hosts: [a.example]\nunknown: 1\n", "entry unknown: unknown"),
        ("hosts: a.example\n", "entry hosts: expected a list of strings"),
        ("hosts: ['evil.test/{board}']\n", "is not a host pattern"),
        ("schemes: [https, javascript]\n", "only http and https"),
        ("keep_301_days: 0\n", "entry keep_301_days: a positive integer"),
        ("keep_301_days: yes\n", "entry keep_301_days: a positive integer"),
        ("cloudfront: {max_key_bytes: 512, max_keys: 3}\n", "cloudfront.max_keys: unknown"),
        ("home_page: https://example.test/\n", "home_page: a URL with {board}"),
        ("hosts: [a\n", "not valid YAML"),
        ("- 1\n", "expected a mapping"),
    ],
)
def test_a_malformed_policy_file_names_the_entry(tmp_path: Path, text, message):
    path = tmp_path / "redirects.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RedirectPolicyError, match=str(path)) as raised:
        load_policy(path)
    assert message in str(raised.value)


def test_board_of_a_url_and_the_fingerprint():
    policy = RedirectPolicy(board_hosts={"hireloop": ("careers.hireloop.example",)})
    assert policy.board_of("https://Jobnest.example/jobs/1") == "jobnest"
    assert policy.board_of("https://careers.hireloop.example/") == "hireloop"
    assert policy.board_of("https://evil.test/") is None
    assert policy.board_of("https://a.b.example/") is None  # a board name has no dot
    assert policy.board_of(None) is None
    assert policy.fingerprint() != POLICY.fingerprint()
    assert RedirectPolicy().fingerprint() == POLICY.fingerprint()
