import pytest

from figstream.migration.ledger import LedgerError, Stage, load_ledger, parse_ledger
from figstream.settings import ledger_path

TASKS = ["ExtractFeeds", "CleanPostings"]
VALID = """
version: 1
legacy_epoch: 2026-11-01
tasks:
  ExtractFeeds: {stage: legacy}
  CleanPostings: {stage: shadow, replaced_by: clean_postings, parity_partitions_required: 4}
"""


def test_valid_ledger_parses():
    ledger = parse_ledger(VALID, "ledger.yaml", TASKS)
    assert ledger.stage("CleanPostings") is Stage.SHADOW
    assert ledger.tasks["CleanPostings"].parity_partitions_required == 4


def test_the_shipped_ledger_shadows_every_task_with_parity_rules():
    """Shadow needs no evidence; nothing is past it without parity evidence."""
    from figstream.migration.flaws import KNOWN_FLAWS
    from figstream.migration.views import TASKS as VIEWS
    from legacy.pipeline import TASKS as LEGACY_TASKS

    names = [t.__name__ for t in LEGACY_TASKS]
    ledger = load_ledger(ledger_path(), names)
    assert {ledger.stage(n) for n in names} == {Stage.SHADOW}
    for name in names:
        parity = ledger.tasks[name].parity
        assert parity is not None and name in VIEWS, name
        assert set(parity.known_flaws) <= set(KNOWN_FLAWS), name


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        (VALID.replace("stage: shadow", "stage: shaddow"), "tasks.CleanPostings.stage"),
        (
            VALID.replace("parity_partitions_required: 4", "parity_partitions_required: 0"),
            "tasks.CleanPostings.parity_partitions_required",
        ),
        (VALID.replace("replaced_by:", "replaced_with:"), "tasks.CleanPostings.replaced_with"),
        (VALID.replace("legacy_epoch: 2026-11-01", "legacy_epoch: someday"), "legacy_epoch"),
        (VALID.replace("version: 1", "version: 7"), "version"),
        (VALID + "  SomeOtherTask: {stage: legacy}\n", "tasks.SomeOtherTask"),
        (VALID.replace("  CleanPostings:", "  #"), "tasks.CleanPostings"),
        ("tasks: [unclosed", "not valid YAML: line 1, column 17: expected ',' or ']'"),
        # A repeated key is refused, not read as its last value (YAML 1.2).
        (VALID + "tasks: {}\n", "not valid YAML: line 7, column 1: found duplicate key"),
        (VALID + "\x07\n", "not valid YAML: character 170 (#x0007)"),
        (VALID.replace("stage: legacy", "stage: yes"), "tasks.ExtractFeeds.stage"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_malformed_ledger_names_file_and_entry(text, mentions):
    with pytest.raises(LedgerError) as err:
        parse_ledger(text, "platform/ledger.yaml", TASKS)
    assert str(err.value).startswith("platform/ledger.yaml: ")
    assert mentions in str(err.value)
    assert "\n" not in str(err.value) and "<unicode string>" not in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(LedgerError, match="cannot read the migration ledger"):
        load_ledger(tmp_path / "nope.yaml")
