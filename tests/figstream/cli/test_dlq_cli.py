"""``figstream dlq list|show|replay``: output, filters, the real landing zone, user errors."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from figstream.cli.dlq import add_dlq
from figstream.events.validation import Rejection, validate
from figstream.storage.deadletter import DEAD_LETTER_SCHEMA, SqliteDeadLetterStore, deadletter_path

LONG = "x" * 300


def envelope(**data) -> dict:
    return {
        "id": "evt-1",
        "type": "job.posted",
        "source": "hireloop",
        "version": 1,
        "time": "2025-03-01T10:00:00Z",
        "data": {
            "job_id": "j1",
            "title": "Dev",
            "company": "Acme",
            "location": "Oslo",
            "employment_type": "full_time",
            "remote": True,
            "url": "https://x.example/j1",
            **data,
        },
    }


WRONG_TYPE = orjson.dumps(envelope(salary_min="100"))
UNKNOWN_VERSION = orjson.dumps({**envelope(), "id": "evt-2", "version": 9})
NOT_UTF8 = b'{"id":"bad\xff","type":"\x1b[31mjob.posted"}'


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="figstream")
    add_dlq(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.handler(args)


def row(batch_id: str, line_no: int, payload: bytes, **extra) -> dict:
    reason = validate(payload)
    assert isinstance(reason, Rejection)
    return {
        "batch_id": batch_id,
        "line_no": line_no,
        "stream": "jobs",
        "partition_key": "2025-03-01-10:00",
        "event_id": None,
        "event_time": None,
        "code": reason.code,
        "detail": reason.detail,
        "payload": payload,
        **extra,
    }


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    store = SqliteDeadLetterStore(deadletter_path(home))
    rows = [
        row("b1", 1, WRONG_TYPE, event_id="evt-1"),
        row("b1", 2, UNKNOWN_VERSION, event_id="evt-2"),
        row("b2", 1, NOT_UTF8, detail=LONG, partition_key="2025-03-01-11:00"),
    ]
    store.add(pa.Table.from_pylist(rows, schema=DEAD_LETTER_SCHEMA))
    return home


def landed(home: Path) -> list[Path]:
    return sorted((home / "landing").rglob("*.jsonl"))


def test_list_prints_a_table_with_truncated_detail(home, capsys):
    assert run("dlq", "list", "--home", str(home)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STREAM", "PARTITION", "CODE", "DETAIL", "EVENT_ID"]
    # The newest first: what a user looking for what just went wrong wants to see.
    assert [line.split()[0] for line in lines[1:4]] == ["b2:1", "b1:2", "b1:1"]
    assert "wrong_type" in lines[3] and "evt-1" in lines[3]
    assert "x" * 57 + "..." in lines[1] and LONG not in out
    assert lines[-1] == "3 of 3 outstanding dead letters, newest first"
    assert run("dlq", "list", "--home", str(home), "--oldest") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["b1:1", "b1:2", "b2:1"]
    assert lines[-1] == "3 of 3 outstanding dead letters, oldest first"


def test_list_filters_and_limit(home, capsys):
    assert run("dlq", "list", "--home", str(home), "--code", "unknown_version") == 0
    out = capsys.readouterr().out
    assert "b1:2" in out and "b1:1" not in out
    assert out.endswith("1 of 1 outstanding dead letters, newest first\n")
    assert run("dlq", "list", "--home", str(home), "--partition", "2025-03-01-11:00") == 0
    assert "b2:1" in capsys.readouterr().out
    assert run("dlq", "list", "--home", str(home), "--stream", "other") == 0
    assert capsys.readouterr().out == "no outstanding dead letters\n"
    assert run("dlq", "list", "--home", str(home), "--limit", "1") == 0
    out = capsys.readouterr().out
    assert "b2:1" in out and "1 of 3 outstanding dead letters, newest first; raise --limit" in out


def test_list_json_lines_keep_the_exact_payload(home, capsys):
    assert run("dlq", "list", "--home", str(home), "--json", "--oldest") == 0
    records = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in records] == ["b1:1", "b1:2", "b2:1"]
    assert records[0]["payload_encoding"] == "utf-8"
    assert records[0]["payload"].encode() == WRONG_TYPE
    assert records[2]["payload_encoding"] == "base64"
    assert base64.b64decode(records[2]["payload"]) == NOT_UTF8
    assert records[2]["detail"] == LONG and records[0]["replayed_at"] is None


def test_show_prints_the_full_reason_and_payload(home, capsys):
    assert run("dlq", "show", "b1:1", "--home", str(home)) == 0
    out = capsys.readouterr().out
    assert "wrong_type" in out and "data.salary_min" in out
    assert WRONG_TYPE.decode() in out

    assert run("dlq", "show", "b2:1", "--home", str(home)) == 0
    out = capsys.readouterr().out
    assert LONG in out and "not valid UTF-8" in out
    assert "\x1b" not in out and "\\x1b[31m" in out  # a control character cannot reach the TTY
    assert base64.b64encode(NOT_UTF8).decode() in out


def test_replay_with_a_fix_lands_once(home, tmp_path, capsys):
    fix = tmp_path / "fix.json"
    fix.write_bytes(orjson.dumps(envelope(salary_min=100), option=orjson.OPT_INDENT_2) + b"\n")
    argv = ["dlq", "replay", "--home", str(home), "--fix", f"b1:1={fix}", "--id", "b1:2"]

    assert run(*argv) == 0
    out = capsys.readouterr().out
    assert "published: 1" in out and "  b1:1" in out
    assert "still failing: 1" in out and "b1:2  unknown_version" in out
    (batch,) = landed(home)
    assert batch.read_bytes() == orjson.dumps(envelope(salary_min=100)) + b"\n"
    assert batch.relative_to(home).as_posix() in out

    assert run(*argv) == 0
    out = capsys.readouterr().out
    assert "published: 0" in out and "already replayed, skipped: 1" in out
    assert len(landed(home)) == 1

    assert run("dlq", "list", "--home", str(home)) == 0
    assert "b1:1" not in capsys.readouterr().out
    assert run("dlq", "list", "--home", str(home), "--all") == 0
    out = capsys.readouterr().out
    assert "REPLAYED_TO" in out and batch.relative_to(home).as_posix() in out


def test_replay_refuses_a_conflicting_redelivery_named_by_id(home, tmp_path, capsys):
    from figstream.storage.deadletter import CONFLICTING_REDELIVERY

    second = orjson.dumps(envelope(title="Second"))  # valid; evt-1 landed first elsewhere
    store = SqliteDeadLetterStore(deadletter_path(home))
    letter = {**row("b3", 4, WRONG_TYPE), "payload": second, "event_id": "evt-1",
              "code": CONFLICTING_REDELIVERY, "detail": "seen before, other content"}  # fmt: skip
    store.add(pa.Table.from_pylist([letter], schema=DEAD_LETTER_SCHEMA))
    assert run("dlq", "replay", "--home", str(home), "--id", "b3:4") == 1
    out = capsys.readouterr().out
    assert "published: 0" in out and "refused (left in the store): 1" in out
    assert "b3:4  a conflicting redelivery of event evt-1" in out
    assert landed(home) == [] and not store.get("b3:4").replayed
    # Given a new event id by a fix, it lands as another event.
    fix = tmp_path / "fix.json"
    fix.write_bytes(orjson.dumps({**envelope(title="Second"), "id": "evt-1b"}))
    assert run("dlq", "replay", "--home", str(home), "--fix", f"b3:4={fix}") == 0
    assert "published: 1" in capsys.readouterr().out
    assert b'"id":"evt-1b"' in landed(home)[0].read_bytes()
    assert store.get("b3:4").replayed


def test_replay_without_selection_tries_every_outstanding_record(home, capsys):
    assert run("dlq", "replay", "--home", str(home)) == 0
    out = capsys.readouterr().out
    assert "published: 0" in out and "still failing: 3" in out
    assert landed(home) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "show", "nope"],
        ["dlq", "replay", "--id", "nope"],
        ["dlq", "replay", "--id", "b1:1", "--fix", "nope=/dev/null"],
    ],
)
def test_an_unknown_id_is_a_clear_error(home, capsys, argv):
    assert run(*argv, "--home", str(home)) == 1
    printed = capsys.readouterr()
    assert printed.err == "figstream dlq: error: no dead letter with id 'nope'\n"
    assert printed.out == ""
    assert landed(home) == []


def test_a_home_without_a_store(tmp_path, capsys):
    empty = str(tmp_path / "empty")
    assert run("dlq", "list", "--home", empty) == 0
    assert "no dead letters" in capsys.readouterr().out
    assert run("dlq", "show", "b1:1", "--home", empty) == 1
    assert "no dead letter with id 'b1:1'" in capsys.readouterr().err
    assert run("dlq", "replay", "--home", empty) == 0
    assert "nothing to replay" in capsys.readouterr().out
    assert not (tmp_path / "empty").exists()  # reading creates nothing


def test_an_unreadable_fix_file_and_a_damaged_store(home, tmp_path, capsys):
    assert run("dlq", "replay", "--home", str(home), "--fix", f"b1:1={tmp_path}/absent") == 1
    assert "cannot read the fix for b1:1" in capsys.readouterr().err
    damaged = tmp_path / "damaged"
    deadletter_path(damaged).parent.mkdir(parents=True)
    deadletter_path(damaged).write_bytes(b"not a database" * 100)
    assert run("dlq", "list", "--home", str(damaged)) == 1
    assert "cannot be read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dlq", "replay", "--fix", "b1:1"], "expected ID=PATH"),
        (["dlq", "list", "--limit", "0"], "must be >= 1"),
        (["dlq", "list", "--limit", "x"], "expected an integer"),
        (["dlq"], "required"),
    ],
)
def test_argument_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        run(*argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_home_defaults_to_figstream_home(home, monkeypatch, capsys):
    monkeypatch.setenv("FIGSTREAM_HOME", str(home))
    assert run("dlq", "show", "b1:2") == 0
    assert "unknown_version" in capsys.readouterr().out
