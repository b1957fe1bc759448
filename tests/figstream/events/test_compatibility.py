"""The compatibility rules, the load-time check, and ``figstream schema check``'s exit codes.

Each kind of change is tried under each mode, with and without the upcaster or downcaster that
mends it; a rehearsal registry (``UPCASTERS.extended``) holds the candidate versions, leaving the
real one alone. The load-time check is tried on the real ``build_definitions`` with a step
removed from the real registry. The command runs in-process through ``figstream.cli.main``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import orjson
import pytest

from figstream.cli.main import main
from figstream.events import compatibility
from figstream.events.compatibility import check_step, describe
from figstream.events.schemas import JobExpiredV1, JobId, _Data
from figstream.events.upcasters import UPCASTERS, RegistryError, check_registry

REPO = Path(__file__).resolve().parents[3]


class ExpiredAddOptional(_Data):
    job_id: JobId
    reason: Literal["filled", "expired", "withdrawn"]
    note: str | None = None


class ExpiredAddRequired(_Data):
    job_id: JobId
    reason: Literal["filled", "expired", "withdrawn"]
    reopenable: bool


class ExpiredRemoveRequired(_Data):
    job_id: JobId


class ExpiredChangeType(_Data):
    job_id: JobId
    reason: int


class ExpiredMakeOptional(_Data):
    job_id: JobId
    reason: Literal["filled", "expired", "withdrawn"] = "expired"


OLD = describe(JobExpiredV1)
CASES = {
    "add_optional": ExpiredAddOptional,
    "add_required": ExpiredAddRequired,
    "remove_required": ExpiredRemoveRequired,
    "change_type": ExpiredChangeType,
    "make_optional": ExpiredMakeOptional,
}
# change -> the modes it breaks without any caster
BROKEN = {
    "add_optional": set(),
    "add_required": {"BACKWARD", "FULL"},
    "remove_required": {"FORWARD", "FULL"},
    "change_type": {"BACKWARD", "FORWARD", "FULL"},
    "make_optional": {"FORWARD", "FULL"},
}


@pytest.mark.parametrize("change", sorted(CASES))
@pytest.mark.parametrize("mode", compatibility.MODES)
def test_each_mode_refuses_exactly_its_breaking_changes(change, mode):
    new = describe(CASES[change])
    found = check_step("job.expired", 2, OLD, new, mode, upcaster=False, downcaster=False)
    assert bool(found) == (mode in BROKEN[change]), found
    assert all(v.change == change for v in found)
    # the casters mend what they are for: an upcaster BACKWARD, a downcaster FORWARD
    mended = check_step("job.expired", 2, OLD, new, mode, upcaster=True, downcaster=True)
    assert mended == []


def test_a_refusal_names_type_version_field_rule_and_consumers():
    new = describe(ExpiredChangeType)
    backward, forward = check_step("job.expired", 2, OLD, new, "FULL", False, False)
    assert (backward.event_type, backward.version, backward.field) == ("job.expired", 2, "reason")
    assert "upcaster v1 -> v2" in backward.rule and "job_state" in backward.consumers
    assert "downcaster v2 -> v1" in forward.rule
    assert forward.consumers == (compatibility.LEGACY_FEED,)
    text = str(backward)
    for part in ("job.expired v2", "'reason'", "change_type", "FULL", "job_state"):
        assert part in text


def test_a_removed_optional_field_and_the_changes_listed():
    with_note = describe(ExpiredAddOptional)
    assert compatibility.changes(with_note, OLD) == [("note", "remove_optional", "removed")]
    assert check_step("job.expired", 2, with_note, OLD, "FULL", False, False) == []
    assert compatibility.changes(OLD, OLD) == []


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown compatibility mode 'SIDEWAYS'"):
        check_step("job.expired", 2, OLD, OLD, "SIDEWAYS", False, False)
    with pytest.raises(RegistryError, match="unknown compatibility mode"):
        UPCASTERS.extended(modes={"job.expired": "SIDEWAYS"}).check()


def test_the_real_registry_passes_and_v2_postings_need_both_casters():
    check_registry()
    assert UPCASTERS.mode("job.posted") == "FULL" and UPCASTERS.mode("job.expired") == "BACKWARD"
    no_down = UPCASTERS.extended()
    del no_down.downsteps[("job.posted", 2)]
    problems = no_down.problems()
    assert problems and all("job.posted v2" in p and "downcaster v2 -> v1" in p for p in problems)
    assert any("'location'" in p and compatibility.LEGACY_FEED in p for p in problems)
    no_up = UPCASTERS.extended()
    del no_up.steps[("job.updated", 1)]
    with pytest.raises(RegistryError, match=r"job\.updated v1 has no upcaster to v2"):
        no_up.check()


def test_a_step_that_breaks_on_its_version_stops_the_check_naming_the_field():
    broken = UPCASTERS.extended()
    broken.steps[("job.posted", 1)] = lambda data: data.drop_columns(["title"])
    with pytest.raises(RegistryError, match=r"job.posted v1 -> v2: the output lacks field 'title'"):
        broken.check()
    mistyped = UPCASTERS.extended()
    mistyped.downsteps[("job.posted", 2)] = lambda data: data  # location stays an object
    with pytest.raises(RegistryError, match=r"job.posted v2 -> v1: field 'location'"):
        mistyped.check()


def test_a_broken_chain_stops_build_definitions(monkeypatch):
    import definitions
    from figstream.migration.ledger import load_ledger
    from figstream.settings import ledger_path

    monkeypatch.delitem(UPCASTERS.steps, ("job.posted", 1))
    with pytest.raises(RegistryError, match=r"job\.posted v1 has no upcaster to v2"):
        definitions.build_definitions(load_ledger(ledger_path()))


# --- figstream schema check -------------------------------------------------------------------

REHEARSAL = """
from typing import Literal
from figstream.events.schemas import JobId, _Data
from figstream.events.upcasters import UPCASTERS

class JobExpiredV2(_Data):
    job_id: JobId
    reason: Literal["filled", "expired", "withdrawn"]
    reopenable: bool

BREAKING = UPCASTERS.extended({("job.expired", 2): JobExpiredV2})
MENDED = UPCASTERS.extended({("job.expired", 2): JobExpiredV2})
MENDED.register("job.expired", 1)(
    lambda data: data.append_column("reopenable", data["reason"].is_valid())
)
NOT_A_REGISTRY = 42
"""


@pytest.fixture
def rehearsal(tmp_path, monkeypatch) -> str:
    (tmp_path / "rehearsal_registry.py").write_text(REHEARSAL)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "rehearsal_registry"
    sys.modules.pop("rehearsal_registry", None)


def test_schema_check_exit_codes(rehearsal, capsys):
    assert main(["schema", "check"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["schema", "check", "--registry", f"{rehearsal}:BREAKING"]) == 1
    err = capsys.readouterr().err
    assert "REFUSED" in err
    assert "job.expired v2: field 'reopenable'" in err and "job_state" not in err
    assert "needs an upcaster v1 -> v2" in err and "raw_events" in err
    assert main(["schema", "check", "--registry", f"{rehearsal}:MENDED"]) == 0
    capsys.readouterr()
    assert main(["schema", "check", "--registry", f"{rehearsal}:NOT_A_REGISTRY"]) == 2
    assert main(["schema", "check", "--registry", "no_such_module_anywhere"]) == 2


def test_schema_check_against_a_published_snapshot(tmp_path, capsys):
    published = UPCASTERS.snapshot()
    same = tmp_path / "same.json"
    same.write_bytes(orjson.dumps(published))
    assert main(["schema", "check", "--against", str(same)]) == 0
    # v2 as it was published had a required location string: the code changed it in place
    edited = orjson.loads(orjson.dumps(published))
    fields = edited["types"]["job.posted"]["versions"]["2"]["fields"]
    fields["location"] = {"type": "string", "required": True}
    edited["types"]["job.expired"]["versions"]["2"] = edited["types"]["job.expired"]["versions"][
        "1"
    ]
    changed = tmp_path / "changed.json"
    changed.write_bytes(orjson.dumps(edited))
    capsys.readouterr()
    assert main(["schema", "check", "--against", str(changed)]) == 1
    err = capsys.readouterr().err
    assert "job.posted v2: field 'location' type string -> struct" in err
    assert "published versions are immutable" in err and "clean_postings" in err
    assert "job.expired v2: published, but no longer registered" in err
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"not": "a snapshot"}')
    assert main(["schema", "check", "--against", str(garbage)]) == 2
    assert main(["schema", "check", "--against", "no-such-ref-or-file"]) == 2


def test_the_committed_snapshot_is_the_registry(tmp_path):
    out = tmp_path / "registry.json"
    assert main(["schema", "export", "--output", str(out)]) == 0
    committed = REPO / "figstream" / "events" / "registry.json"
    assert orjson.loads(committed.read_bytes()) == orjson.loads(out.read_bytes()), (
        "figstream/events/registry.json is stale: run figstream schema export --output it"
    )
