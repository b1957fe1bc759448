"""Fuzzing the validator and the vectorised parser with hypothesis: arbitrary bytes, and good
events of every type mutated byte by byte or with hostile tokens spliced in (control
characters raw and escaped, quotes, backslashes, brackets, NaN, huge numbers, a BOM, invalid
UTF-8, lone surrogates, duplicate keys, path separators).

Properties: ``validate`` never raises and answers an ``Envelope`` or a ``Rejection`` whose code
is one of ``REASON_CODES``; ``parse_batches``, with each of its stages forced to take every
line it can, accepts exactly the lines ``validate`` accepts and rejects the others with the
same code and detail. Deterministic (``derandomize``) and bounded (``max_examples``).
"""

from __future__ import annotations

import orjson
import pytest
from hostile_corpus import STAGES, first_stage, good_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from figstream.events.envelope import Envelope
from figstream.events.validation import REASON_CODES, Rejection, validate
from figstream.streaming.parse import parse_batches

FUZZ = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

GOOD = good_events(10)
TOKENS = [
    b"\x00",
    b"\x1b",
    b"\x7f",
    b"\xc2\x85",
    b"\\u0000",
    b"\\u0085",
    b'"',
    b"\\",
    b'\\"',
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b" ",
    b"\t",
    b"\r",
    b"NaN",
    b"-Infinity",
    b"1e999",
    b"18446744073709551616",
    b"9223372036854775808",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xe9",
    b"\xed\xa0\x80",
    b"\\ud800",
    b"/../",
    b"\\/",
    b'"id":"x",',
    b'"salary_min":1,',
    b'"remote":true,',
    b'"extra":{"a":[1]},',
    b"[" * 20,
]


@st.composite
def mutated(draw) -> bytes:
    line = bytearray(draw(st.sampled_from(GOOD)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(line)))
        op = draw(st.sampled_from(["token", "token", "insert", "delete", "replace"]))
        if op == "token":
            line[at:at] = draw(st.sampled_from(TOKENS))
        elif op == "insert":
            line[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del line[at : at + draw(st.integers(1, 8))]
        else:
            line[at : at + 1] = draw(st.binary(min_size=1, max_size=1))
    return bytes(line)


lines = st.binary(max_size=200) | mutated() | st.sampled_from(GOOD)


def _one_line(raw: bytes) -> bytes:
    return raw.replace(b"\n", b"")


@FUZZ
@given(st.lists(lines.map(_one_line), min_size=1, max_size=12))
def test_fuzzed_lines_never_raise_and_every_stage_agrees_with_validate(batch):
    expected = {}
    for n, line in enumerate(batch, start=1):
        result = validate(line)
        assert isinstance(result, Envelope | Rejection)
        if isinstance(result, Rejection):
            assert result.code in REASON_CODES and isinstance(result.detail, str), result
        if line.strip(b" \t\r"):
            expected[n] = (result.code, result.detail) if isinstance(result, Rejection) else None
    data = b"\n".join(batch)
    for stage in STAGES:
        with first_stage(stage):
            parsed = parse_batches([("fuzz", data)])
        got = {r["line_no"]: (r["code"], r["detail"]) for r in parsed.rejected.to_pylist()}
        got |= dict.fromkeys(parsed.valid["line_no"].to_pylist())
        assert got == expected, stage
        assert parsed.records == len(expected)


@pytest.mark.parametrize("line", GOOD, ids=[f"good-{n}" for n in range(len(GOOD))])
def test_the_fuzz_starts_from_good_events(line):
    assert isinstance(validate(line), Envelope), orjson.loads(line)
