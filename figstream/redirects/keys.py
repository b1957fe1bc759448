"""The request key of a redirect, shared by the exports and the edge function (stdlib only, so
the edge function's package needs nothing else).

A CDN or web server sees a request's host and its URI (path and query), never the scheme or
the fragment, so a redirected URL is keyed by ``host/path?query`` with the host lower-cased.
"""

from __future__ import annotations

# Characters nginx would interpret inside a quoted string, or a header would split on.
_BAD = set("\"'\\$;{}`<>| \t\r\n")


def writable(text: str | None) -> bool:
    """Printable ASCII that nginx reads literally inside double quotes (and JSON as is)."""
    return bool(text) and text.isascii() and text.isprintable() and not set(text) & _BAD


def request_key(host: str, uri: str, query: str = "") -> str:
    """The key of a request: ``host`` lower-cased, ``uri`` (``/`` when empty), ``?query``."""
    path = uri or "/"
    return host.lower() + path + (f"?{query}" if query else "")


def edge_key(url: str) -> str:
    """The key of an absolute URL: :func:`request_key` of its host, path and query."""
    rest = url.split("://", 1)[1].split("#", 1)[0]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    path, _, query = rest[cut:].partition("?")
    return request_key(rest[:cut], path, query)
