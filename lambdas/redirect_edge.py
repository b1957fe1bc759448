"""The redirect edge function: what a CDN calls on each request for an old URL. The request's
host and path in, a ``301`` with its ``Location`` out, or ``404`` when the map has no entry.

The map is the CloudFront KeyValueStore import files the ``seo_redirects_cloudfront`` asset
writes (``{"data": [{"key": "host/path?query", "value": "<location>"}, ...]}``, one file or a
directory of parts), loaded once per container from ``FIGSTREAM_REDIRECT_MAP``, or from
``redirect_map/`` beside this module when the files are packed with it (Lambda@Edge has no
environment variables). Keys are :func:`figstream.redirects.keys.request_key`.

Two event shapes:

* Lambda@Edge viewer request: ``{"Records": [{"cf": {"request": {"uri": ..., "querystring":
  ..., "headers": {"host": [{"value": ...}]}}}}]}``. A redirect is a generated response
  (``status``, ``statusDescription``, ``headers`` in CloudFront's list form); a request the
  map does not redirect is returned unchanged, so CloudFront carries on to the origin;
* a plain invoke: ``{"host": ..., "path": ...}`` (the path may carry ``?query``), answered
  ``{"status": 301, "location": ...}`` or ``{"status": 404}``.

Defence in depth: a location that is not ``http(s)://`` printable ASCII free of quotes, CR/LF
and the like (:func:`figstream.redirects.keys.writable`) is never served, whatever the map
file says: the request gets the 404 (or goes to the origin). Stdlib only, so the function's
package needs no layer (Lambda@Edge allows none).

Bad inputs tried (see ``tests/lambdas/test_redirect_edge.py``): an event that is neither shape,
a missing host, a map file that is not the import format, a hostile location in the map file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from figstream.redirects.keys import request_key, writable

ENV = "FIGSTREAM_REDIRECT_MAP"
PACKED = Path(__file__).resolve().parent / "redirect_map"
CACHE_SECONDS = 86_400  # a 301 is cached by browsers anyway; a day bounds a wrong one


def load_map(path: Path) -> dict[str, str]:
    """key -> location of the import file at ``path``, or of every ``*.json`` under it."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    out: dict[str, str] = {}
    for file in files:
        document = json.loads(file.read_text(encoding="utf-8"))
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, list):
            raise ValueError(f"{file}: not a KeyValueStore import file (no 'data' list)")
        for entry in data:
            if not isinstance(entry, dict) or not {"key", "value"} <= set(entry):
                raise ValueError(f"{file}: an entry without key and value: {entry!r}")
            out[str(entry["key"])] = str(entry["value"])
    return out


def safe_location(location: str | None) -> bool:
    return bool(location) and writable(location) and location.startswith(("https://", "http://"))


def lookup(redirects: Mapping[str, str], host: str, uri: str, query: str = "") -> str | None:
    """The 301's location for a request, or None."""
    location = redirects.get(request_key(host, uri, query))
    return location if safe_location(location) else None


def _cloudfront(redirects: Mapping[str, str], request: dict[str, Any]) -> dict[str, Any]:
    hosts = request.get("headers", {}).get("host") or [{}]
    host = hosts[0].get("value")
    if not host:
        raise ValueError("the CloudFront request has no Host header")
    location = lookup(redirects, host, request.get("uri", "/"), request.get("querystring", ""))
    if location is None:
        return request
    return {
        "status": "301",
        "statusDescription": "Moved Permanently",
        "headers": {
            "location": [{"key": "Location", "value": location}],
            "cache-control": [{"key": "Cache-Control", "value": f"max-age={CACHE_SECONDS}"}],
        },
    }


def respond(redirects: Mapping[str, str], event: Any) -> dict[str, Any]:
    """The answer to ``event`` (either shape) from ``redirects``."""
    if isinstance(event, dict) and isinstance(event.get("Records"), list) and event["Records"]:
        return _cloudfront(redirects, event["Records"][0]["cf"]["request"])
    if not isinstance(event, dict) or not isinstance(event.get("host"), str):
        raise ValueError("expected a Lambda@Edge event or {'host': ..., 'path': ...}")
    path, _, query = str(event.get("path") or "/").partition("?")
    location = lookup(redirects, event["host"], path, query)
    return {"status": 404} if location is None else {"status": 301, "location": location}


_loaded: dict[str, str] | None = None


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """The Lambda entry point: the map is read on the container's first request."""
    global _loaded
    if _loaded is None:
        _loaded = load_map(Path(os.environ.get(ENV) or PACKED))
    return respond(_loaded, event)
