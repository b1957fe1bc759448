"""Schema compatibility: which changes between versions each mode allows, and who breaks.

A version's fields are compared with the previous version's (:func:`describe` turns a model into
``{field: {"type", "required"}}``; a field with a default, or one that may be null with a
default, is optional). Each difference is one kind of change:

================  ==================================  ==========  ==========  ======
change            example                             BACKWARD    FORWARD     FULL
================  ==================================  ==========  ==========  ======
add_optional      a new field with a default           allowed     allowed     allowed
add_required      a new field without a default        upcaster    allowed     upcaster
remove_optional   drop a field that had a default      allowed     allowed     allowed
remove_required   drop a field readers required        allowed     downcaster  downcaster
change_type       string -> object, int -> string      upcaster    downcaster  both
make_required     a default taken away                 upcaster    allowed     upcaster
make_optional     a default given                      allowed     downcaster  downcaster
================  ==================================  ==========  ==========  ======

BACKWARD (the default, as in Glue and Confluent): consumers on the new version read data of the
old one. A change that breaks that is allowed only when an upcaster old -> new is registered:
the platform upcasts at ingest, so its consumers only ever see the latest version. FORWARD:
consumers still on the old version read data of the new one; a change that breaks that needs a
downcaster new -> old (legacy Luigi is such a consumer: it reads v1). FULL: both. NONE: no
check. Versions are compared pairwise, N with N+1; the chains make it hold across all versions.

Each refusal names the type, version, field, change and rule, and the consumers that read the
field (:data:`READERS`): the streaming tables for a BACKWARD break, the legacy feed for a
FORWARD one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from figstream.events.arrow import arrow_schema
from figstream.events.schemas import JobPostingV1, JobPostingV2

MODES = ("BACKWARD", "FORWARD", "FULL", "NONE")
# change kind -> the direction it breaks: "backward" needs an upcaster, "forward" a downcaster
BREAKS: dict[str, tuple[str, ...]] = {
    "add_optional": (),
    "add_required": ("backward",),
    "remove_optional": (),
    "remove_required": ("forward",),
    "change_type": ("backward", "forward"),
    "make_required": ("backward",),
    "make_optional": ("forward",),
}
CHECKS: dict[str, tuple[str, ...]] = {
    "BACKWARD": ("backward",),
    "FORWARD": ("forward",),
    "FULL": ("backward", "forward"),
    "NONE": (),
}

LEGACY_FEED = "legacy feed (ExtractFeeds and the Luigi tasks after it)"
# every field a posting has had, in any version
_POSTING_FIELDS = tuple(dict.fromkeys([*JobPostingV1.model_fields, *JobPostingV2.model_fields]))
_STATE = ("clean_postings", "deduped_postings", "job_state", "search_index")
# The platform's consumers of each (event type, data field): the streaming tables that read it.
READERS: dict[tuple[str, str], tuple[str, ...]] = {
    **{
        (t, f): ("raw_events", *_STATE, *(("board_daily_stats",) if f[:6] == "salary" else ()))
        for t in ("job.posted", "job.updated")
        for f in _POSTING_FIELDS
    },
    ("job.expired", "job_id"): ("raw_events", "job_state", "search_index"),
    ("job.expired", "reason"): ("raw_events", "job_state"),
    ("board.merged", "absorbed_board"): ("board_mergers", "job_state", "seo_redirects"),
    ("board.merged", "surviving_board"): ("board_mergers", "job_state", "seo_redirects"),
}

Spec = dict[str, dict[str, Any]]


def describe(model: type[BaseModel]) -> Spec:
    """``{field: {"type": Arrow type as text, "required": bool}}`` of a ``data`` model."""
    schema = arrow_schema(model)
    return {
        name: {"type": str(schema.field(name).type), "required": info.is_required()}
        for name, info in model.model_fields.items()
    }


def changes(old: Spec, new: Spec) -> list[tuple[str, str, str]]:
    """(field, change kind, what changed) from ``old`` to ``new``, by field name."""
    out = []
    for name in sorted(new.keys() - old.keys()):
        kind = "add_required" if new[name]["required"] else "add_optional"
        out.append((name, kind, f"added ({new[name]['type']})"))
    for name in sorted(old.keys() - new.keys()):
        kind = "remove_required" if old[name]["required"] else "remove_optional"
        out.append((name, kind, "removed"))
    for name in sorted(old.keys() & new.keys()):
        before, after = old[name], new[name]
        if before["type"] != after["type"]:
            out.append((name, "change_type", f"type {before['type']} -> {after['type']}"))
        elif before["required"] != after["required"]:
            kind = "make_required" if after["required"] else "make_optional"
            out.append((name, kind, "now required" if after["required"] else "now optional"))
    return out


@dataclass(frozen=True)
class Violation:
    """One field of one new version that breaks a consumer under the type's mode."""

    event_type: str
    version: int
    field: str
    change: str
    detail: str
    mode: str
    rule: str
    consumers: tuple[str, ...]

    def __str__(self) -> str:
        readers = ", ".join(self.consumers) or "no known consumer"
        return (
            f"{self.event_type} v{self.version}: field {self.field!r} {self.detail} "
            f"[{self.change}] breaks {readers} ({self.mode}: {self.rule})"
        )


def check_step(
    event_type: str,
    version: int,
    old: Spec,
    new: Spec,
    mode: str,
    upcaster: bool,
    downcaster: bool,
) -> list[Violation]:
    """The violations of ``new`` (version ``version``) against ``old`` (``version - 1``)."""
    if mode not in CHECKS:
        raise ValueError(f"{event_type}: unknown compatibility mode {mode!r}; one of {MODES}")
    found = []
    for name, kind, detail in changes(old, new):
        for direction in BREAKS[kind]:
            if direction not in CHECKS[mode]:
                continue
            if direction == "backward" and not upcaster:
                rule = (
                    f"readers of v{version} must read v{version - 1} data; {kind} needs an "
                    f"upcaster v{version - 1} -> v{version}"
                )
                consumers = READERS.get((event_type, name), ("raw_events",))
            elif direction == "forward" and not downcaster:
                rule = (
                    f"readers of v{version - 1} must read v{version} data; {kind} needs a "
                    f"downcaster v{version} -> v{version - 1}"
                )
                consumers = (LEGACY_FEED,)
            else:
                continue
            found.append(Violation(event_type, version, name, kind, detail, mode, rule, consumers))
    return found


def check_published(published: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Problems of ``current`` against a published snapshot (both :func:`snapshot` shaped): a
    published version is immutable and stays registered, since producers may still emit it."""
    problems = []
    for event_type, entry in sorted(published["types"].items()):
        now = current["types"].get(event_type)
        for version, spec in sorted(entry["versions"].items(), key=lambda kv: int(kv[0])):
            if now is None or version not in now["versions"]:
                problems.append(
                    f"{event_type} v{version}: published, but no longer registered (producers "
                    f"may still emit it; it would be dead-lettered as unknown_version)"
                )
                continue
            for name, kind, detail in changes(spec["fields"], now["versions"][version]["fields"]):
                problems.append(
                    f"{event_type} v{version}: field {name!r} {detail} [{kind}] in a published "
                    f"version (published versions are immutable: register v"
                    f"{max(int(v) for v in now['versions']) + 1} instead); breaks "
                    + ", ".join(READERS.get((event_type, name), ("raw_events",)))
                )
    return problems
