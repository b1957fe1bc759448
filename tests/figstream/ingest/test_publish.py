"""Publisher batches and keys, the live producer's rate and counts, and the bus CLI."""

from __future__ import annotations

import argparse
import io
import itertools
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from figstream.cli.bus import add_produce, add_publish
from figstream.events.validation import Rejection, validate
from figstream.ingest.generate import build_pools
from figstream.ingest.landing import LANDING_PREFIX, parse_batch_id
from figstream.ingest.publish import Publisher, PublishError, produce
from figstream.storage.objects import LocalObjectStore
from tests.conftest import ROOT


@pytest.fixture
def store(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "home")


def batch_lines(body: bytes) -> list[bytes]:
    # Split on b"\n" only: bytes.splitlines() would also split a record at a raw b"\r".
    assert body.endswith(b"\n")
    return body[:-1].split(b"\n")


def landed_lines(store: LocalObjectStore) -> list[bytes]:
    return [line for key in store.list(LANDING_PREFIX) for line in batch_lines(store.get(key))]


def test_batches_are_cut_at_batch_size_in_order(store):
    records = [{"n": i} for i in range(2500)]
    keys = Publisher(store, producer="t", batch_size=1000).publish(records)
    assert len(keys) == 3 and keys == sorted(keys) == store.list(LANDING_PREFIX)
    sizes = [len(batch_lines(store.get(k))) for k in keys]
    assert sizes == [1000, 1000, 500]
    assert landed_lines(store) == [orjson.dumps(r) for r in records]
    assert [parse_batch_id(k).seq for k in keys] == [0, 1, 2]
    assert Publisher(store).publish([]) == []


@pytest.mark.parametrize(
    "clock_values",
    [
        itertools.repeat(1_700_000_000_000_000),
        (2_000_000_000_000_000 - i for i in itertools.count()),
    ],
    ids=["clock stands still", "clock runs backwards"],
)
def test_keys_strictly_increase_whatever_the_clock(store, clock_values):
    clock = iter(clock_values)
    publisher = Publisher(store, producer="p", batch_size=1, clock=lambda: next(clock))
    keys = publisher.publish([{"i": i} for i in range(50)])
    keys += publisher.publish([b"{}"] * 5)
    assert len(set(keys)) == 55
    assert keys == sorted(keys) == store.list(LANDING_PREFIX)
    arrivals = [parse_batch_id(k).arrival for k in keys]
    assert all(a < b for a, b in itertools.pairwise(arrivals))


def test_keys_are_named_from_commit_time(store):
    before = datetime.now(UTC)
    (key,) = Publisher(store, producer="p").publish([b"{}"])
    arrival = parse_batch_id(key).arrival
    assert before <= arrival <= datetime.now(UTC)


def test_bad_records_land_unchanged(store):
    bad = [b"\xff\xfe not utf-8", b'{"id": "trunc', b"not json", b"[1,2]", b" {\"a\":1}\r", b"a\rb",
           bytearray(b"{}"), memoryview(b'"x"')]  # fmt: skip
    Publisher(store, batch_size=3).publish(bad)
    assert landed_lines(store) == [bytes(b) for b in bad]
    assert all(isinstance(validate(line), Rejection) for line in landed_lines(store)[:4])


@pytest.mark.parametrize("position", [0, 2, 4])
def test_a_raw_newline_is_refused_naming_the_record(store, position):
    records = [b'{"n": %d}' % i for i in range(5)]
    records[position] = b'{"text": "two\nlines"}'
    with pytest.raises(PublishError, match=rf"record {position} contains a raw newline") as info:
        Publisher(store, batch_size=2).publish(records)
    # Whole batches before the bad record's batch landed; the rest did not.
    assert len(info.value.landed) == position // 2
    assert landed_lines(store) == records[: 2 * (position // 2)]
    if info.value.landed:
        assert "had already landed" in str(info.value)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (b"", "record 1 is empty"),
        ("text", "record 1 must be bytes or a dict, got str"),
        (42, "record 1 must be bytes or a dict, got int"),
        ({"x": {1, 2}}, "record 1 cannot be serialised as JSON"),
        ({1: "x"}, "record 1 cannot be serialised as JSON"),
    ],
)
def test_unrepresentable_records_are_refused(store, record, message):
    with pytest.raises(PublishError, match=message):
        Publisher(store).publish([b"{}", record])
    assert store.list() == []


def test_bad_publisher_arguments(store):
    for producer in ("Demo", "de_mo", "", "a/b"):
        with pytest.raises(ValueError, match="producer"):
            Publisher(store, producer=producer)
    for size in (0, -1, 1.5):
        with pytest.raises(ValueError, match="batch_size"):
            Publisher(store, batch_size=size)


def test_producer_rate_and_counts(store):
    stats = produce(store, rate=500, duration=2.0, seed=11, bad_rate=0.02, flush_interval=0.5)
    assert stats.events == 1000
    # Pacing: it may run late on a busy machine, but never faster than the asked rate.
    assert stats.elapsed_seconds >= 1.9, stats.describe()
    lines = landed_lines(store)
    assert stats.published == len(lines) == stats.events + stats.duplicates
    assert stats.batches == len(store.list(LANDING_PREFIX)) >= 4
    results = [validate(line) for line in lines]
    assert sum(isinstance(r, Rejection) for r in results) == stats.bad + sum(
        n - 1 for line, n in Counter(lines).items() if isinstance(validate(line), Rejection)
    )
    assert 5 <= stats.bad <= 40
    # Duplicates are byte-identical redeliveries; events are otherwise distinct (but for a
    # bad line that happens to repeat an earlier one's bytes).
    assert sum(n - 1 for n in Counter(lines).values()) == stats.duplicates + stats.bad_repeats
    now = datetime.now(UTC)
    times = [r.time for r in results if not isinstance(r, Rejection)]
    assert all(now - timedelta(minutes=6) <= t <= now for t in times)
    # Jitter is under 2 s; late events are 1..5 minutes old (some corrupted, some delivered twice).
    late = sum(t < now - timedelta(seconds=45) for t in times)
    assert stats.late > 0
    assert stats.late - stats.bad <= late <= stats.late + stats.duplicates


def test_bad_lines_that_repeat_an_earlier_one_are_counted(store):
    """A JSON object cut after a few characters is the same bytes whatever its event was; a
    rejected line is known by its bytes, so the streaming side books such a line as a
    redelivery of the first. The producer says how many of its bad lines did that."""
    stats = produce(store, rate=5000, duration=1.0, seed=3, bad_rate=1.0, flush_interval=0.5)
    lines = landed_lines(store)
    distinct_bad = {line for line in lines if isinstance(validate(line), Rejection)}
    assert stats.bad_repeats > 0, stats.describe()
    assert stats.bad - stats.bad_repeats == len(distinct_bad)
    assert f"{stats.bad_repeats:,} of them repeating an earlier bad line" in stats.describe()


def test_producer_stops_on_the_event_and_flushes(store):
    build_pools(3)  # the value pools take a second to build; the stop must come after that
    stop = threading.Event()
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(stats=produce(store, rate=200, stop=stop, seed=3,
                                                   flush_interval=10.0)))  # fmt: skip
    worker.start()
    time.sleep(0.6)
    stop.set()
    worker.join(timeout=10)
    assert not worker.is_alive()
    stats = result["stats"]
    assert stats.events > 0 and stats.batches == 1  # only the final flush ran
    assert len(landed_lines(store)) == stats.published == stats.events + stats.duplicates


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"rate": 10, "duration": 0}, "duration"),
        ({"rate": 10, "bad_rate": 1.5}, "bad_rate"),
        ({"rate": 10, "flush_interval": 0}, "flush_interval"),
        ({"rate": 10, "producer": "Bad"}, "producer"),
    ],
)
def test_bad_producer_arguments(store, kwargs, message):
    with pytest.raises(ValueError, match=message):
        produce(store, **kwargs)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="figstream")
    sub = parser.add_subparsers(dest="command", required=True)
    add_publish(sub)
    add_produce(sub)
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_publish_from_file(tmp_path, store, capsys):
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"a": 1}\n\n  \nnot json\n\xff\n{"crlf": 1}\r\n{"last": 1}')
    code = cli(["publish", str(source), "--home", str(store.root), "--batch-size", "2",
                "--producer", "loader"])  # fmt: skip
    assert code == 0
    out, err = capsys.readouterr()
    keys = out.split()
    assert keys == store.list(LANDING_PREFIX) and len(keys) == 3
    assert all(parse_batch_id(k).producer == "loader" for k in keys)
    assert landed_lines(store) == [b'{"a": 1}', b"not json", b"\xff", b'{"crlf": 1}\r',
                                   b'{"last": 1}']  # fmt: skip
    assert "published 5 records in 3 batches" in err and "skipped 2 blank lines" in err


def test_cli_publish_from_stdin_to_figstream_home(store, monkeypatch, capsys):
    monkeypatch.setenv("FIGSTREAM_HOME", str(store.root))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"a": 1}\n{"b": 2}\n')))
    assert cli(["publish"]) == 0
    (key,) = capsys.readouterr().out.split()
    assert parse_batch_id(key).producer.startswith("cli-")
    assert store.get(key) == b'{"a": 1}\n{"b": 2}\n'


def test_cli_publish_missing_file(tmp_path, capsys):
    assert cli(["publish", str(tmp_path / "nope.jsonl"), "--home", str(tmp_path)]) == 1
    assert "figstream publish: error:" in capsys.readouterr().err


def test_cli_produce(store, capsys):
    code = cli(["produce", "--rate", "300", "--duration", "0.5", "--seed", "4", "--home",
                str(store.root), "--flush-interval", "0.2"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "produced 150 events" in out and "seed 4" in out and "producer demo" in out
    assert len(landed_lines(store)) >= 150


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["produce", "--rate", "0"], "--rate: must be > 0"),
        (["produce", "--rate", "fast"], "--rate: expected a number"),
        (["produce", "--duration", "-1"], "--duration: must be > 0"),
        (["produce", "--bad-rate", "2"], "--bad-rate: must be within 0..1"),
        (["produce", "--producer", "Me"], "--producer: must be 1..64"),
        (["publish", "--batch-size", "0"], "--batch-size: must be > 0"),
        (["publish", "--batch-size", "1.5"], "--batch-size: expected an integer"),
    ],
)
def test_cli_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_ctrl_c_stops_produce_cleanly_after_flushing(tmp_path, spawn):
    script = (
        "import argparse, sys\n"
        "from figstream.cli.bus import add_produce\n"
        "p = argparse.ArgumentParser(); s = p.add_subparsers()\n"
        "add_produce(s)\n"
        "a = p.parse_args(sys.argv[1:]); sys.exit(a.handler(a))\n"
    )
    proc = spawn(
        [sys.executable, "-c", script, "produce", "--rate", "100", "--flush-interval", "0.3",
         "--seed", "1", "--home", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    store = LocalObjectStore(tmp_path)
    deadline = time.monotonic() + 30
    # Interrupt once it is producing: a first batch has landed.
    while not store.list(LANDING_PREFIX) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"Ctrl-C stops" in err
    lines = landed_lines(store)
    assert f"; {len(lines):,} records in {len(store.list(LANDING_PREFIX))} batches".encode() in out
