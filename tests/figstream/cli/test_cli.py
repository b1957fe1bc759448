"""``figstream generate`` from the command line: happy paths, defaults and argument errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from figstream.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
SMALL = ["--start", "2025-02-01", "--days", "2", "--events-per-day", "150", "--seed", "3"]


def test_generate_happy_path(tmp_path, capsys):
    out = tmp_path / "home"
    code = main(["generate", "--out", str(out), *SMALL, "--bad-rate", "0.1", "--clean-days", "1",
                 "--batch-size", "40", "--no-progress"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr()
    assert "generated" in printed.out and "merger: jobnest -> hireloop" in printed.out
    assert printed.err == ""
    manifest = orjson.loads((out / "generate-manifest.json").read_bytes())
    assert (manifest["seed"], manifest["days"], manifest["batch_size"]) == (3, 2, 40)
    assert manifest["bad_total"] > 0
    assert all(b["date"] == "2025-02-02" for b in manifest["bad_records"])
    assert (out / "feeds" / "2025-02-01" / "_SUCCESS").exists()
    assert (out / "feeds" / "2025-02-02" / "_SUCCESS").exists()
    batches = list((out / "landing").rglob("*.jsonl"))
    assert len(batches) == manifest["batches"]
    assert max(len(p.read_bytes().splitlines()) for p in batches) <= 40


def test_out_defaults_to_figstream_home(tmp_path, monkeypatch):
    from figstream.cli.main import build_parser
    from figstream.settings import PROJECT_ROOT

    monkeypatch.delenv("FIGSTREAM_HOME", raising=False)
    assert build_parser().parse_args(["generate"]).out == PROJECT_ROOT / ".figstream"
    monkeypatch.setenv("FIGSTREAM_HOME", str(tmp_path / "home"))
    assert main(["generate", *SMALL]) == 0
    assert (tmp_path / "home" / "generate-manifest.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "0"], "--days: must be >= 1"),
        (["--days", "two"], "--days: expected an integer"),
        (["--events-per-day", "-5"], "--events-per-day: must be >= 1"),
        (["--start", "2025-02-30"], "--start: expected a date as YYYY-MM-DD"),
        (["--bad-rate", "1.5"], "--bad-rate: must be within 0..1"),
        (["--batch-size", "0"], "--batch-size: must be >= 1"),
        (["--clean-days", "-1"], "--clean-days: must be >= 0"),
        (["--batch-seconds", "0"], "--batch-seconds: must be > 0"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_argparse_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--out", str(tmp_path), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "feeds").exists()


def test_missing_or_unknown_subcommand(capsys):
    for argv in ([], ["frobnicate"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "usage: figstream" in capsys.readouterr().err


def test_existing_output_needs_overwrite(tmp_path, capsys):
    args = ["generate", "--out", str(tmp_path), *SMALL]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "already holds generated" in err and "--overwrite" in err and "--out" in err
    assert main([*args, "--overwrite"]) == 0


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`figstream ... | head`: no traceback, no error line, exit 0 (the pipe's reader is gone
    before the command writes a line)."""
    script = ROOT / ".venv" / "bin" / "figstream"
    proc = subprocess.Popen(
        [str(script), "migration", "status"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"FIGSTREAM_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""


def test_console_script_runs_without_dagster(tmp_path):
    script = ROOT / ".venv" / "bin" / "figstream"
    result = subprocess.run(
        [str(script), "generate", "--out", str(tmp_path), *SMALL],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "generated" in result.stdout
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys, figstream.cli.main, figstream.ingest.generate; "
         "figstream.cli.main.main(['generate', '--out', sys.argv[1], '--days', '1', "
         "'--events-per-day', '20']); "
         "assert not [m for m in sys.modules if m.split('.')[0] == 'dagster'], 'dagster imported'",
         str(tmp_path / "probe")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr


def test_demo_data_generates_epoch_to_yesterday_once(tmp_path, capsys):
    import datetime as dt

    from figstream.migration.ledger import load_ledger
    from figstream.settings import ledger_path

    out = tmp_path / "home"
    assert main(["demo-data", "--out", str(out), "--events-per-day", "50"]) == 0
    days = sorted(p.name for p in (out / "feeds").iterdir())
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    assert days[0] == load_ledger(ledger_path()).legacy_epoch.isoformat()
    assert days[-1] == yesterday.isoformat()
    before = {p: p.stat().st_mtime_ns for p in (out / "feeds").rglob("*.jsonl")}
    assert main(["demo-data", "--out", str(out)]) == 0
    assert "already present" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "feeds").rglob("*.jsonl")} == before
