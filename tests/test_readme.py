"""The README, word for word: every command in its shell blocks runs as written.

Each ```bash block of README.md runs in a fresh ``bash -eo pipefail`` from a work directory
that looks like the checkout (``.venv``, ``definitions.py``, ``workspace.yaml``, ``luigi.cfg``
linked; ``.figstream`` the test's own home, generated and replayed the way the README says),
with ``FIGSTREAM_HOME`` and ``DAGSTER_HOME`` pointing at that home and ``TMPDIR`` inside the
test's tmp dir (a block's ``$(mktemp -d)`` home stays there). Each command must exit 0. Where
the README shows what a command prints (the bill of ``figstream cost``, the message of a broken
ledger), the output must say that. Commands that start servers or run for minutes are not run:
``EXCLUDED`` names each with the reason, and a command that is neither run nor excluded fails
the test, so a new README command is either checked or explained.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import orjson
import pytest
from conftest import BIN, ROOT

README = ROOT / "README.md"
# End to end: every README command in a subprocess on a generated, replayed home (minutes on
# the 2-core machine). `make test-slow` runs it, in CI too.
pytestmark = pytest.mark.slow
# The start of a command (``.venv/bin/`` and leading VAR=value dropped) -> why it is not run.
EXCLUDED = {
    "make dev": "starts dagster dev; tests/test_ui_browser.py drives a real one in a browser",
    "make test": "is the suite this test is part of",
    "make dev-aws": "starts moto server, Postgres and dagster dev (tests/test_aws_e2e.py)",
    "make lambda-zip": "writes dist/ in the checkout (tests/lambdas/ build the package)",
    "dagster job backfill": "needs the daemon of a running `make dev`, as the README says",
    "dagster asset materialize -m definitions --select raw_events,clean_postings": (
        "a day of hourly partitions through Dagster: minutes here; tests/assets/ backfill hours"
    ),
    "dagster asset materialize -m definitions --select board_daily_stats": (
        "a week's rollup through Dagster: minutes here; tests/assets/ cover the daily stats"
    ),
    "figstream produce --rate 200 --duration 60": "produces for a minute",
    "figstream dlq replay --fix": (
        "needs a corrected payload a user writes (tests/figstream/cli/test_dlq_cli.py replays one)"
    ),
    "figstream produce --schema-version 2": (
        "produces for 30 s; tests/test_schema_rollout_e2e.py switches a producer to v2"
    ),
}
# Shown in the README next to the command that prints it (``What it costs``).
COST_TABLE = re.compile(
    r"^\| [\d,]+ .*\| (\$[\d,.]+) \| (\$[\d,.]+) \| (\$[\d,.]+) \| `([^`]+)` \|$"
)
EVENTS = (
    orjson.dumps(
        {
            "id": "readme-0001",
            "type": "job.posted",
            "source": "workwave",
            "version": 1,
            "time": "2026-11-02T10:00:00Z",
            "data": {
                "job_id": "readme-1",
                "title": "Data Engineer",
                "company": "Figstream README",
                "location": "Lisbon, PT",
                "employment_type": "full_time",
                "remote": True,
                "salary_min": 70000,
                "salary_max": 90000,
                "currency": "EUR",
                "url": "https://workwave.example/jobs/readme-1",
            },
        }
    )
    + b"\nnot json\n"
)
BAD_LEDGER = re.compile(r"^`(platform/migration_ledger\.yaml: entry [^`]+\(got '(\w+)'\))`\.?$")


def shell_blocks(text: str) -> list[list[str]]:
    """The ```bash blocks, each a list of logical commands: continuations joined, and a quoted
    string over several lines (a ``python -c`` program) kept in one command."""
    blocks = re.findall(r"^ *```bash\n(.*?)^ *```", text, flags=re.S | re.M)
    out = []
    for block in blocks:
        commands: list[str] = []
        pending = ""
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            pending = f"{pending}\n{line}" if pending else line.strip()
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on
                continue
            if pending and not pending.startswith("#"):
                commands.append(pending)
            pending = ""
        assert not pending, f"unterminated command in a README block: {pending}"
        out.append(commands)
    return out


def command_name(command: str) -> str:
    words = shlex.split(command, comments=True)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        words.pop(0)
    return " ".join(words).replace(".venv/bin/", "")


def excluded(command: str) -> str | None:
    name = command_name(command)
    return next((why for start, why in EXCLUDED.items() if name.startswith(start)), None)


def test_every_readme_command_is_run_or_excluded_with_a_reason():
    commands = [c for block in shell_blocks(README.read_text()) for c in block]
    assert len(commands) > 30
    used = {start for start in EXCLUDED if any(command_name(c).startswith(start) for c in commands)}
    assert used == set(EXCLUDED), f"excluded but no longer in the README: {set(EXCLUDED) - used}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A checkout-like directory whose ``.figstream`` is a home with four generated days,
    replayed through the streaming steps (so it has dead letters, books and a trace)."""
    root = tmp_path_factory.mktemp("readme")
    work, home = root / "work", root / "work" / ".figstream"
    work.mkdir()
    # .git: `schema check --against HEAD` reads the published snapshot at a git ref.
    for name in (".git", ".venv", "definitions.py", "workspace.yaml", "luigi.cfg", "platform"):
        (work / name).symlink_to(ROOT / name)
    # `schema export --output figstream/events/registry.json` writes here, not the checkout.
    (work / "figstream" / "events").mkdir(parents=True)
    # `figstream publish events.jsonl`: "your own JSON lines", one good and one not JSON.
    (work / "events.jsonl").write_bytes(EVENTS)
    (root / "tmp").mkdir()
    env = {
        **os.environ,
        "FIGSTREAM_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "TMPDIR": str(root / "tmp"),
        "FIGSTREAM_PROFILE": "local",
    }
    (home / "dagster_home").mkdir(parents=True)
    (home / "dagster_home" / "dagster.yaml").write_text(
        (ROOT / "platform" / "local" / "dagster.yaml").read_text()
    )
    for command in (
        # Bad records on the last day only, like the demo data: Luigi runs its clean days.
        "generate --start 2026-11-01 --days 4 --events-per-day 500 --clean-days 3",
        "replay --from 2026-11-01T00:00 --to 2026-11-05T00:00",
    ):
        args = [str(BIN / "figstream"), *shlex.split(command)]
        done = subprocess.run(args, cwd=work, env=env, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
    return work, env


# A block whose every command is excluded (make dev, say) has nothing to run here: the
# exclusion list says why, and test_every_readme_command_is_run_or_excluded_with_a_reason checks
# that every command is one or the other.
BLOCKS = [b for b in shell_blocks(README.read_text()) if any(not excluded(c) for c in b)]


@pytest.mark.parametrize(
    "block", BLOCKS, ids=[f"{n}-{command_name(b[0]).split()[0]}" for n, b in enumerate(BLOCKS)]
)
def test_a_readme_block_runs_as_written(block: list[str], workdir):
    work, env = workdir
    runnable = [c for c in block if not excluded(c)]
    script = "\n".join(["set -eo pipefail", *runnable])
    done = subprocess.run(
        ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    text = README.read_text()
    if any(command_name(c).startswith("figstream cost --from") for c in runnable):
        # The measured row of the README's bill is what this block's commands print.
        measured = next(
            m for m in map(COST_TABLE.match, text.splitlines()) if m and "--from" in m[4]
        )
        check_bill(measured, done.stdout)
    if any(command_name(c).startswith("figstream schema export") for c in runnable):
        exported = (work / "figstream" / "events" / "registry.json").read_text()
        assert exported == (ROOT / "figstream" / "events" / "registry.json").read_text()


def check_bill(row: re.Match, printed: str) -> None:
    """The README's row (streaming total, always-on share, legacy) against the printed bill."""
    streaming, always_on, legacy, command = row.groups()
    assert f"| **streaming platform** | **{streaming}** |" in printed, (command, printed)
    assert f"| legacy nightly EC2 batch, same volume | {legacy} |" in printed, (command, printed)
    services = dict(re.findall(r"^\| (ECS Fargate|RDS Postgres) \| \$([\d,.]+) \|$", printed, re.M))
    shown = sum(float(services[s].replace(",", "")) for s in ("ECS Fargate", "RDS Postgres"))
    assert f"${shown:,.2f}" == always_on, (command, services)


def test_the_bill_the_readme_shows_is_what_figstream_cost_prints():
    rows = [m for m in map(COST_TABLE.match, README.read_text().splitlines()) if m]
    assert len(rows) == 3
    for row in rows:
        command = row[4]
        if "--from" in command:
            continue  # measured: checked on the generated home of its block
        done = subprocess.run(
            [str(BIN / "figstream"), *shlex.split(command)[1:]], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        check_bill(row, done.stdout)


def test_a_broken_ledger_is_reported_as_the_readme_shows(tmp_path):
    (shown,) = [m for m in map(BAD_LEDGER.match, README.read_text().splitlines()) if m]
    message, typo = shown.groups()
    ledger = (ROOT / "platform" / "migration_ledger.yaml").read_text()
    broken = tmp_path / "platform" / "migration_ledger.yaml"
    broken.parent.mkdir()
    task = re.search(r"entry tasks\.(\w+)\.stage", message)[1]
    broken.write_text(re.sub(rf"(\n  {task}:\n    stage: )\w+", rf"\g<1>{typo}", ledger))
    assert broken.read_text() != ledger
    done = subprocess.run(
        [
            str(BIN / "figstream"),
            "migration",
            "status",
            "--ledger",
            "platform/migration_ledger.yaml",
        ],
        cwd=tmp_path,
        env={**os.environ, "FIGSTREAM_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert message in done.stdout + done.stderr


def test_migration_status_reads_cleanly_into_a_pipe(tmp_path):
    """`figstream migration status | head` ends without a broken-pipe error."""
    env = {**os.environ, "FIGSTREAM_HOME": str(tmp_path)}
    done = subprocess.run(
        f"{BIN / 'figstream'} migration status | head -n 2",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 2, done
    assert "Broken pipe" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_dg_check_defs_loads_the_code_location(figstream_env):
    """`.venv/bin/dg check defs`, as the README says: [tool.dg] points dg at definitions.py."""
    done = subprocess.run(
        [str(BIN / "dg"), "check", "defs"],
        cwd=ROOT,
        env=figstream_env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully." in done.stdout + done.stderr
