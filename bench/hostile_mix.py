"""The hostile trickle of the sustained bench (issue 17, item 5): lines of the labelled corpus
(``tests/hostile/hostile_corpus.py``), each with the reason code it must get, and redeliveries
of events the stream already delivered, exact (dropped as duplicates) and conflicting (the same
id with other content: dead-lettered as ``conflicting_redelivery``).

A rejected record is claimed by the digest of its bytes, so a bad line landed twice is one bad
event and its second landing a duplicate. Each planted corpus line is therefore made unique: a
serial goes into its envelope id (``g-10000`` becomes ``g-10000-h<serial>``), or into its URL
when the id is the thing at fault, or, for the four cases that hold neither (``{``, ``null``,
``{}``, an HTML page), as trailing JSON whitespace (space 0, tab 1), which changes no reason.
The corpus's event time is replaced by the landing time, so a line with a usable time lands in
the current hour as the stream's own events do. The templates are built once; a line costs two
``bytes.replace``, which keeps the source at its rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from figstream.events.envelope import Envelope
from figstream.events.validation import validate
from figstream.storage.deadletter import CONFLICTING_REDELIVERY
from tests.hostile.hostile_corpus import BASE, CASES

CONFLICTING = "conflicting_redelivery"  # kinds of the mix beside the corpus's labels
EXACT = "exact_redelivery"
DUPLICATE = None  # the expected code of an exact redelivery: none, it is dropped
TIME_MARK = BASE["time"].encode()
SERIAL_MARK = b"\x00serial\x00"
_ID = f'"{BASE["id"]}"'.encode()
_URL = f'{BASE["data"]["url"]}"'.encode()
# Of every REDELIVERY_EVERY hostile lines, one is a conflicting and one an exact redelivery.
REDELIVERY_EVERY = 10


def trickle_rate(rate: float, percent: float) -> float:
    """Hostile lines a second beside a source of ``rate`` so that ``percent`` % of all the
    lines landed are hostile."""
    if not 0 <= percent < 100:
        raise ValueError(f"the hostile share must be within 0..100 %, got {percent!r}")
    return rate * percent / (100 - percent)


class Template(NamedTuple):
    label: str
    code: str
    body: bytes  # the corpus line with SERIAL_MARK where the serial goes (or at its end)
    trailing: bool  # the serial is trailing whitespace, not text


def _template(label: str, code: str, line: bytes) -> Template:
    if _ID in line:
        return Template(label, code, line.replace(_ID, _ID[:-1] + b"-h" + SERIAL_MARK + b'"', 1),
                        False)  # fmt: skip
    if _URL in line:
        return Template(label, code, line.replace(_URL, _URL[:-1] + b"h" + SERIAL_MARK + b'"', 1),
                        False)  # fmt: skip
    return Template(label, code, line + SERIAL_MARK, True)


TEMPLATES: tuple[Template, ...] = tuple(_template(c.label, c.code, c.line) for c in CASES)


def _whitespace(serial: int) -> bytes:
    return bin(serial)[2:].replace("0", " ").replace("1", "\t").encode()


def corpus_line(template: Template, serial: int, stamp: bytes) -> bytes:
    """The template's line, unique by ``serial``, its corpus time replaced by ``stamp``."""
    mark = _whitespace(serial) if template.trailing else str(serial).encode()
    return template.body.replace(SERIAL_MARK, mark).replace(TIME_MARK, stamp)


def redelivery_candidates(batch: bytes) -> list[bytes]:
    """Lines of a landed batch that are valid ``job.posted`` events: the ones redelivered."""
    out = []
    for line in batch.split(b"\n"):
        if line.strip() and b'"job.posted"' in line:
            checked = validate(line)
            if isinstance(checked, Envelope) and checked.type == "job.posted":
                out.append(line)
    return out


def conflicting(line: bytes, serial: int) -> bytes:
    """``line``'s event (same id, same time) with another title: other content."""
    record = orjson.loads(line)
    record["data"]["title"] = f"{record['data']['title']} (r{serial})"
    return orjson.dumps(record)


@dataclass
class Planted:
    label: str  # a corpus label, CONFLICTING or EXACT
    code: str | None  # the dead letter's expected code; None: dropped as a duplicate


class HostileMix:
    """Hostile lines in a fixed round-robin: of every ``REDELIVERY_EVERY``, one conflicting
    and one exact redelivery (of the good lines offered with :meth:`offer`, while there are
    any), the rest the corpus's cases in turn."""

    def __init__(self) -> None:
        self.serial = 0
        self.case = 0
        self.originals: list[bytes] = []

    def offer(self, lines: list[bytes]) -> None:
        """Good lines already delivered (and ingested), the newest kept for redelivery."""
        self.originals = (self.originals + lines)[-200:]

    def lines(self, count: int, stamp: bytes) -> Iterator[tuple[bytes, Planted]]:
        for _ in range(count):
            self.serial += 1
            slot = self.serial % REDELIVERY_EVERY
            if slot == 4 and self.originals:
                original = self.originals[self.serial % len(self.originals)]
                yield (
                    conflicting(original, self.serial),
                    Planted(CONFLICTING, CONFLICTING_REDELIVERY),
                )
                continue
            if slot == 9 and self.originals:
                original = self.originals[self.serial % len(self.originals)]
                yield original, Planted(EXACT, DUPLICATE)
                continue
            template = TEMPLATES[self.case % len(TEMPLATES)]
            self.case += 1
            yield corpus_line(template, self.serial, stamp), Planted(template.label, template.code)
