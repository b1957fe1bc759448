"""Which redirects are safe: the allow-list of ``platform/redirects.yaml`` and the URL checks.

The redirect map is built from URLs producers put in postings, so without a check it is an open
redirect: a posting whose URL names another host (or ``javascript:``) would have the platform's
own domain send users there with a 301. :func:`refusal` is the one check, applied to every
candidate target (and to every source, which becomes a key of the nginx map and the CloudFront
store). It names the first hostile feature it finds, as a reason code of :data:`REASONS`; None
means safe. The checks work on the raw string before any parsing, because browsers and
``urllib`` disagree on the edge cases (a backslash is a slash to a browser, a tab is dropped):
what is refused is everything a browser could read differently from ``urllib.parse``.

A safe URL is printable ASCII without quotes, backslashes, ``$`` or braces, so it can be written
into an nginx ``map`` and a JSON file without escaping, and a ``Location`` header without
injection.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from figstream.settings import PROJECT_ROOT, YamlSyntaxError, load_yaml

BOARD = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
# Printable ASCII that means the same to nginx, JSON, a header and a browser.
_UNSAFE = set("\"'<>`{}|^$")
REASONS = {
    "missing": "no URL",
    "crlf": "a CR or LF (header injection)",
    "control": "whitespace or a control character",
    "backslash": "a backslash (a browser reads it as a slash)",
    "non_ascii": "a character outside ASCII",
    "unsafe_char": "a quote, brace, '$' or other character nginx or a header would interpret",
    "protocol_relative": "protocol-relative '//' (takes the scheme of the page, any host)",
    "javascript": "a javascript: URL",
    "scheme": "a scheme that is not allowed",
    "not_absolute": "not an absolute URL with a host",
    "malformed": "not a URL (e.g. an unbalanced IPv6 bracket)",
    "userinfo": "userinfo 'user@host' (the real host is after the '@')",
    "port": "an explicit port",
    "idn": "an internationalised (punycode) host, a homograph risk",
    "other_host": "a host not on the board's allow-list",
    "too_long": "longer than a CDN value may be",
}


class RedirectPolicyError(ValueError):
    """``platform/redirects.yaml`` is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class RedirectPolicy:
    hosts: tuple[str, ...] = ("{board}.example",)
    board_hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    schemes: tuple[str, ...] = ("https", "http")
    home_page: str = "https://{board}.example/"
    keep_301_days: int = 365
    max_key_bytes: int = 512
    max_value_bytes: int = 1024
    max_file_bytes: int = 5_000_000

    def allowed_hosts(self, board: str | None) -> frozenset[str]:
        """The hosts a redirect landing on ``board`` may name (none for a malformed board)."""
        if not board or not BOARD.fullmatch(board):
            return frozenset()
        own = (pattern.format(board=board) for pattern in self.hosts)
        return frozenset([*own, *self.board_hosts.get(board, ())])

    def fingerprint(self) -> str:
        """Changes whenever the policy does: a map checked under another one is checked again."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]

    def board_of(self, url: str | None) -> str | None:
        """The board whose allow-list holds ``url``'s host, if any (for a URL kept without
        its board, e.g. in the map)."""
        if not url:
            return None
        host = _host_part(url).lower()
        for pattern in self.hosts:
            regex = re.escape(pattern).replace(re.escape("{board}"), f"({BOARD.pattern})")
            found = re.fullmatch(regex, host)
            if found and found.groups():
                return found.group(1)
        return next((b for b, hosts in self.board_hosts.items() if host in hosts), None)

    def home_url(self, board: str | None) -> str | None:
        if not board or not BOARD.fullmatch(board):
            return None
        return self.home_page.format(board=board)

    def refusal(self, url: str | None, board: str | None) -> str | None:
        """The reason code (:data:`REASONS`) ``url`` may not be a redirect of ``board``; None
        when it is safe."""
        if url is None or url == "":
            return "missing"
        if "\r" in url or "\n" in url:
            return "crlf"
        if any(c.isspace() or ord(c) < 32 or 127 <= ord(c) < 160 for c in url):
            return "control"
        if "\\" in url:
            return "backslash"
        if not url.isascii():
            return "non_ascii" if _host_part(url).isascii() else "idn"
        if any(c in _UNSAFE for c in url):
            return "unsafe_char"
        if url.startswith("//"):
            return "protocol_relative"
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unbalanced '[' (an IPv6 literal) in the host
            return "malformed"
        scheme = parts.scheme.lower()
        if scheme == "javascript":
            return "javascript"
        if not scheme:
            return "not_absolute"
        if scheme not in self.schemes:
            return "scheme"
        if not url[len(scheme) + 1 :].startswith("//") or not parts.netloc:
            return "not_absolute"
        if "@" in parts.netloc:
            return "userinfo"
        if ":" in parts.netloc:
            return "port"
        host = parts.netloc.lower()
        if host.startswith("xn--") or ".xn--" in host or "%" in host:
            return "idn"
        if host not in self.allowed_hosts(board):
            return "other_host"
        if len(url.encode()) > self.max_value_bytes:
            return "too_long"
        return None


def _host_part(url: str) -> str:
    """What follows ``://`` up to the next ``/``, ``?`` or ``#`` (the authority, roughly)."""
    rest = url.split("://", 1)[1] if "://" in url else url
    return re.split(r"[/?#]", rest, maxsplit=1)[0]


def policy_path() -> Path:
    return Path(
        os.environ.get("FIGSTREAM_REDIRECTS") or PROJECT_ROOT / "platform" / "redirects.yaml"
    ).resolve()


def _strings(path: Path, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RedirectPolicyError(f"{path}: entry {key}: expected a list of strings")
    return tuple(value)


def load_policy(path: Path | None = None) -> RedirectPolicy:
    """The policy in ``path`` (default :func:`policy_path`); an unknown, mistyped or missing
    entry is an error naming the file and the entry."""
    path = path or policy_path()
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except YamlSyntaxError as exc:
        raise RedirectPolicyError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RedirectPolicyError(f"{path}: expected a mapping at the top level")
    raw.pop("version", None)
    known = {"hosts", "board_hosts", "schemes", "home_page", "keep_301_days", "cloudfront"}
    for key in raw:
        if key not in known:
            raise RedirectPolicyError(f"{path}: entry {key}: unknown (known: {sorted(known)})")
    hosts = _strings(path, "hosts", raw.get("hosts", ["{board}.example"]))
    for pattern in hosts:
        if pattern.replace("{board}", "").count("{") or "/" in pattern or "@" in pattern:
            raise RedirectPolicyError(f"{path}: entry hosts: {pattern!r} is not a host pattern")
    board_hosts = raw.get("board_hosts") or {}
    if not isinstance(board_hosts, dict):
        raise RedirectPolicyError(f"{path}: entry board_hosts: expected a mapping")
    extra = {str(b): _strings(path, f"board_hosts.{b}", v) for b, v in board_hosts.items()}
    schemes = _strings(path, "schemes", raw.get("schemes", ["https", "http"]))
    if not set(schemes) <= {"http", "https"}:
        raise RedirectPolicyError(f"{path}: entry schemes: only http and https may redirect")
    home = raw.get("home_page", "https://{board}.example/")
    if not isinstance(home, str) or "{board}" not in home:
        raise RedirectPolicyError(f"{path}: entry home_page: a URL with {{board}} in it")
    numbers = {"keep_301_days": raw.get("keep_301_days", 365)}
    cloudfront = raw.get("cloudfront") or {}
    if not isinstance(cloudfront, dict):
        raise RedirectPolicyError(f"{path}: entry cloudfront: expected a mapping")
    for key in ("max_key_bytes", "max_value_bytes", "max_file_bytes"):
        numbers[key] = cloudfront.pop(key, getattr(RedirectPolicy, key))
    if cloudfront:
        raise RedirectPolicyError(f"{path}: entry cloudfront.{next(iter(cloudfront))}: unknown")
    for key, value in numbers.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise RedirectPolicyError(f"{path}: entry {key}: a positive integer, got {value!r}")
    return RedirectPolicy(
        hosts=hosts, board_hosts=extra, schemes=schemes, home_page=home, **numbers
    )
