"""The dedupe registry's rule: per dedupe key, the earliest first posting is the original.

The registry (in the state store) holds each job's first job.posted; every other job under a
key is a duplicate of the key's original. Recomputing a key reads only its members.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from figstream.storage.state import StateStore

_FIRST = [("event_time", "ascending"), ("event_id", "ascending")]


def originals(members: pa.Table) -> dict[str, str | None]:
    """job_id -> the job it duplicates (None for a key's original), for registry rows that
    hold every member of their keys: per key, the first by (event_time, event_id) wins."""
    ordered = members.sort_by(_FIRST)
    winner: dict[str, str] = {}
    out: dict[str, str | None] = {}
    for job_id, key in zip(
        ordered["job_id"].to_pylist(), ordered["dedupe_key"].to_pylist(), strict=True
    ):
        first = winner.setdefault(key, job_id)
        out[job_id] = None if first == job_id else first
    return out


def recompute_keys(state: StateStore, keys: Iterable[str]) -> tuple[pa.Table, int]:
    """Set the original of every member of ``keys``; returns (the members, rows changed)."""
    members = state.key_members(keys)
    wanted = originals(members)
    stored = dict(
        zip(members["job_id"].to_pylist(), members["duplicate_of"].to_pylist(), strict=True)
    )
    pairs = [(job, of) for job, of in wanted.items() if stored[job] != of]
    return members, state.set_duplicates(pairs) if pairs else 0
