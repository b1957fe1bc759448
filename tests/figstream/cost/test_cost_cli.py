"""``figstream cost`` from the command line: measured on a small generated home that has been
replayed (so its landing index and dead letters are the platform's own), a what-if, the stale
table warning at a faked date, and bad input as one clear line."""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal

import pytest

from figstream.cli.main import main
from figstream.cost.prices import prices_path
from figstream.storage.deadletter import SqliteDeadLetterStore, deadletter_path


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("cost-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIGSTREAM_HOME", str(home))
        assert main(["generate", "--start", "2026-11-01", "--days", "1", "--events-per-day",
                     "150", "--bad-rate", "0.05", "--no-progress"]) == 0  # fmt: skip
        assert main(["replay", "--from", "2026-11-01", "--to", "2026-11-02"]) == 0
    return home


def landed_lines(home) -> list[bytes]:
    return [
        line for p in (home / "landing").rglob("*.jsonl") for line in p.read_bytes().splitlines()
    ]


def run_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["cost", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def charge(bill: dict, price: str) -> dict:
    (found,) = [c for c in bill["charges"] if c["price"] == price]
    return found


def test_measured_on_a_generated_home(home, capsys):
    lines = landed_lines(home)
    rejected = SqliteDeadLetterStore(deadletter_path(home)).count()
    assert rejected > 0  # the generator's bad records reached the dead-letter store
    out = run_json(capsys, "--home", str(home), "--from", "2026-11-01", "--to", "2026-11-02")
    # one day of records scaled to a 730-hour month: x 730 / 24
    assert f"measured: {len(lines):,} records" in out["basis"]
    assert Decimal(charge(out["streaming"], "eventbridge_events")["quantity"]) == math.ceil(
        len(lines) * 730 / 24
    )
    # valid events x 5.5 write units, dead letters one unit each (lines under 724 bytes),
    # one landing-index write per (batch, stream, hour)
    writes = Decimal(charge(out["streaming"], "dynamodb_write_units")["quantity"])
    valid = (len(lines) - rejected) * 730 / 24
    assert writes >= math.ceil(valid * 5.5)
    total = sum(Decimal(c["cost"]) for c in out["streaming"]["charges"])
    assert Decimal(out["streaming"]["total"]) == total
    assert Decimal(out["difference"]) == total - Decimal(out["legacy"]["total"])
    # a few hundred events a month sit inside every free tier that has one
    assert charge(out["streaming"], "lambda_requests")["cost"] == "0.00"
    assert charge(out["streaming"], "sqs_requests")["billable"] != "0"  # idle polls pass 1M


def test_a_window_with_no_traffic_costs_the_always_on_services_only(home, capsys):
    out = run_json(capsys, "--home", str(home), "--from", "2026-10-01", "--to", "2026-10-02")
    assert "measured: 0 records" in out["basis"]
    assert charge(out["streaming"], "eventbridge_events")["cost"] == "0.00"
    assert Decimal(out["streaming"]["by_service"]["ECS Fargate"]) > 0


def test_flags_override_what_was_measured(home, capsys):
    base = run_json(capsys, "--home", str(home), "--from", "2026-11-01", "--to", "2026-11-02")
    big = run_json(capsys, "--home", str(home), "--from", "2026-11-01", "--to", "2026-11-02",
                   "--avg-event-bytes", "200000")  # fmt: skip
    put = [Decimal(charge(o["streaming"], "eventbridge_events")["quantity"]) for o in (base, big)]
    month = len(landed_lines(home)) * 730 / 24
    assert put == [math.ceil(month), math.ceil(month * 4)]  # 200,000 bytes: 4 chunks of 64 KB


def test_a_what_if_prints_the_breakdown(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FIGSTREAM_HOME", str(tmp_path / "nothing-here"))
    assert main(["cost", "--events-per-day", "2000000", "--avg-event-bytes", "700",
                 "--as-of", "2026-12-03"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    assert "what-if: 2,000,000 events a day of 700 bytes" in out
    assert "| **streaming platform** |" in out and "legacy nightly EC2 batch" in out
    assert "warning" not in err
    assert not (tmp_path / "nothing-here").exists()  # a what-if touches no store


def test_the_stale_table_warning_at_a_faked_date(tmp_path, capsys):
    # the repo's table with every price read on 2026-01-01, judged at fixed dates
    prices = tmp_path / "prices.yaml"
    prices.write_text(re.sub(r"read_on: \S+", "read_on: 2026-01-01", prices_path().read_text()))
    args = ["cost", "--events-per-day", "1000", "--prices", str(prices), "--json"]
    capsys.readouterr()
    assert main([*args, "--as-of", "2027-01-02"]) == 0  # 366 days
    printed, err = capsys.readouterr()
    out = json.loads(printed)
    assert "366 days old" in out["warning"] and "2026-01-01" in out["warning"]
    assert err.startswith("figstream cost: warning: the price table") and "366 days old" in err
    assert main([*args, "--as-of", "2027-01-01"]) == 0  # 365 days: not more than a year
    printed, err = capsys.readouterr()
    assert json.loads(printed)["warning"] is None and err == ""


def test_the_aws_profile_before_setup_is_one_clear_line(aws_config, capsys):
    # FIGSTREAM_PROFILE=aws on the emulator, with no table or bucket made for this prefix
    assert main(["cost", "--from", "2026-11-01", "--to", "2026-11-02"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("figstream cost: error:") and "Traceback" not in err
    assert "ResourceNotFoundException" in err  # AWS's own reason, passed on


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--from", "2026-11-02", "--to", "2026-11-01"], "must be after --from", 1),
        (["--events-per-day", "10", "--from", "2026-11-01"], "give one", 1),
        (["--batches-per-day", "10"], "belongs to a what-if", 1),
        (["--events-per-day", "-5"], "must be > 0", 2),
        (["--bad-rate", "2", "--events-per-day", "5"], "must be within 0..1", 2),
        (["--lambda-memory-mb", "64", "--events-per-day", "5"], "must be >= 128", 2),
        (["--events-per-day", "5", "--prices", "/nonexistent/prices.yaml"], "cannot be read", 1),
        ([], "no state store", 1),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(tmp_path, monkeypatch, capsys, args, message, code):
    monkeypatch.setenv("FIGSTREAM_HOME", str(tmp_path))
    if code == 2:
        with pytest.raises(SystemExit) as exit_:
            main(["cost", *args])
        assert exit_.value.code == 2
    else:
        assert main(["cost", *args]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
