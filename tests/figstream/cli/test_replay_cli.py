"""``figstream replay`` and ``figstream compact`` from the command line.

Bad inputs tried: ``--to`` at or before ``--from``, unparsable times, an unknown stream,
``--max-hours 0``, ``--max-fold-jobs 0``, a missing ``--to``.
"""

from __future__ import annotations

import pytest

from figstream.cli.main import main
from figstream.cli.replay import moment


def test_replay_then_compact_then_replay_again(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("FIGSTREAM_HOME", str(home))
    assert main(["generate", "--start", "2026-11-01", "--days", "1", "--events-per-day", "120",
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["replay", "--from", "2026-11-01", "--to", "2026-11-02T00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "replayed 24 hours, 2026-11-01-00:00 .. 2026-11-01-23:00" in out
    assert "postings:" in out and "boards:" in out
    assert main(["compact", "--now", "2026-12-02T00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "archived" in out and "into 1 daily archives" in out
    assert not list((home / "landing").rglob("*.jsonl"))
    assert main(["replay", "--from", "2026-11-01T05:00", "--to", "2026-11-01T07:00",
                 "--stream", "postings"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "replayed 2 hours" in out and "dead-lettered" in out and "boards:" not in out
    # 35 days (day_rows_keep_days) before --now: the day rows up to then are folded
    assert main(["compact", "--now", "2027-01-15T00:00Z", "--max-fold-jobs", "1000"]) == 0
    assert "day rows folded through 2026-12-11" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["replay", "--from", "2026-11-02", "--to", "2026-11-01"], "is not after the start", 1),
        (["replay", "--from", "2026-11-02", "--to", "2026-11-02"], "is not after the start", 1),
        (["replay", "--from", "yesterday", "--to", "2026-11-01"], "expected an ISO 8601 time", 2),
        (["replay", "--from", "2026-11-01"], "the following arguments are required: --to", 2),
        (["replay", "--from", "2026-11-01", "--to", "2026-11-02", "--stream", "jobs"],
         "unknown stream 'jobs'", 1),
        (["compact", "--max-hours", "0"], "--max-hours: must be >= 1", 2),
        (["compact", "--max-fold-jobs", "0"], "--max-fold-jobs: must be >= 1", 2),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(tmp_path, monkeypatch, capsys, args, message, code):
    monkeypatch.setenv("FIGSTREAM_HOME", str(tmp_path))
    if code == 2:
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2
    else:
        assert main(args) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_times_without_an_offset_are_utc():
    assert moment("2026-11-01T10:00").isoformat() == "2026-11-01T10:00:00+00:00"
    assert moment("2026-11-01T10:00+01:00").utcoffset().total_seconds() == 3600
