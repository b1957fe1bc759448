"""The redirect map as the CDN and the web server read it: an nginx ``map`` file and CloudFront
KeyValueStore import files.

Both are keyed by what a request names, the host and the path with its query
(:func:`~figstream.redirects.keys.edge_key`: ``hireloop.example/jobs/hireloop-0000001``), and
map it to the final destination (the map's ``to_url``, always one hop). The map's sources and
targets passed :mod:`figstream.redirects.policy`, so they are printable ASCII with no quote,
backslash, ``$`` or brace; each entry is checked again here all the same
(:func:`~figstream.redirects.keys.writable`), because a single bad line would break the nginx
configuration or let a value read as a variable. An entry that fails, or that is over
CloudFront's limits (a key of ``max_key_bytes``, a value of ``max_value_bytes``), is left out
and counted by reason, never written truncated.

CloudFront's import format is ``{"data": [{"key": ..., "value": ...}, ...]}`` in UTF-8, with
no duplicate key, in a file of at most 5 MB; :func:`cloudfront_files` splits the map into as
many files as it takes, each under ``max_file_bytes``, in key order. (A KeyValueStore holds
5 MB in all, so a map beyond one file needs one store per file, e.g. per host.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import pyarrow as pa

from figstream.redirects.keys import edge_key, writable
from figstream.redirects.policy import RedirectPolicy

NGINX_VARIABLE = "$figstream_redirect"
_EMPTY_FILE = len(b'{"data":[]}')


@dataclass
class Export:
    entries: list[tuple[str, str]] = field(default_factory=list)  # (key, location), key order
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> entries left out


def entries(redirect_map: pa.Table, policy: RedirectPolicy) -> Export:
    """The map's (key, location) pairs that both exports may hold."""
    out = Export()
    seen: dict[str, str] = {}
    for source, target in zip(
        redirect_map["from_url"].to_pylist(), redirect_map["to_url"].to_pylist(), strict=True
    ):
        if not writable(source) or "://" not in source or not writable(target):
            out.skipped["unsafe_text"] += 1
            continue
        key = edge_key(source)
        if len(key.encode()) > policy.max_key_bytes:
            out.skipped["key_too_long"] += 1
        elif len(target.encode()) > policy.max_value_bytes:
            out.skipped["value_too_long"] += 1
        elif key in seen:  # http and https of one page: one key, the first in from_url order
            out.skipped["duplicate_key"] += 1
        else:
            seen[key] = target
    out.entries = sorted(seen.items())
    return out


def nginx_map(export: Export, day: str) -> bytes:
    """An nginx ``map`` block setting :data:`NGINX_VARIABLE` to the destination of a request."""
    lines = [
        f"# figstream SEO redirects as of {day}: {len(export.entries)} entries, generated.",
        "# In the http block: include this file. In a server block:",
        f"#     if ({NGINX_VARIABLE}) {{ return 301 {NGINX_VARIABLE}; }}",
        "# A large map needs map_hash_max_size above the entry count and map_hash_bucket_size",
        "# above the longest key (nginx says which at reload).",
        f"map $host$request_uri {NGINX_VARIABLE} {{",
        '    default "";',
        *(f'    "{key}" "{location}";' for key, location in export.entries),
        "}",
        "",
    ]
    return "\n".join(lines).encode("ascii")


def cloudfront_files(export: Export, policy: RedirectPolicy) -> Iterator[bytes]:
    """CloudFront KeyValueStore import files, each under ``policy.max_file_bytes``."""
    part: list[bytes] = []
    size = _EMPTY_FILE
    for key, location in export.entries:
        item = orjson.dumps({"key": key, "value": location})
        grown = size + len(item) + (1 if part else 0)
        if part and grown > policy.max_file_bytes:
            yield b'{"data":[' + b",".join(part) + b"]}"
            part, grown = [], _EMPTY_FILE + len(item)
        part.append(item)
        size = grown
    if part or not export.entries:
        yield b'{"data":[' + b",".join(part) + b"]}"
