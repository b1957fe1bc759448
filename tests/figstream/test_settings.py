"""The streaming settings file: what it accepts and how it refuses the rest.

Bad inputs tried: an unknown key, zero, a negative number, a boolean, a string, zero where
zero turns a setting off, malformed YAML, a repeated key and a list at the top level."""

import pytest

from figstream.settings import StreamingSettings, streaming_settings


def test_the_project_file_reads(tmp_path):
    settings = streaming_settings()
    assert isinstance(settings, StreamingSettings) and settings.max_runs_in_flight >= 1


def _read(tmp_path, text: str) -> StreamingSettings:
    path = tmp_path / "streaming.yaml"
    path.write_text("version: 1\n" + text)
    return streaming_settings(path)


def test_zero_turns_overlap_and_reconciliation_off_and_nothing_else_may_be_zero(tmp_path):
    assert _read(tmp_path, "overlap_max_bytes: 0\n").overlap_max_bytes == 0
    assert _read(tmp_path, "overlap_max_bytes: 5000\n").overlap_max_bytes == 5000
    assert _read(tmp_path, "reconcile_every_seconds: 0\n").reconcile_every_seconds == 0
    with pytest.raises(ValueError, match="max_runs_in_flight: must be a positive number"):
        _read(tmp_path, "max_runs_in_flight: 0\n")
    with pytest.raises(ValueError, match="reconcile_days: must be a positive number"):
        _read(tmp_path, "reconcile_days: 0\n")


def test_the_reconciliation_defaults_are_the_project_files():
    settings = streaming_settings()
    assert settings.reconcile_every_seconds == StreamingSettings.reconcile_every_seconds == 300
    assert settings.reconcile_days == StreamingSettings.reconcile_days == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("overlap_max_bytes: -1\n", "must be a number >= 0"),
        ("overlap_max_bytes: true\n", "must be a number >= 0"),
        ("max_batches_per_tick: many\n", "must be a positive number"),
        ("max_batches_per_tick: -3\n", "must be a positive number"),
        ("overlap_bytes: 10\n", "unknown setting"),
        ("max_runs_per_tick: [6\n", "not valid YAML: line 3, column 1: expected ',' or ']'"),
        ("max_runs_per_tick: 6\nmax_runs_per_tick: 7\n", "line 3, column 1: found duplicate key"),
        ("- 6\n", "not valid YAML: line 2, column 1"),
    ],
)
def test_bad_entries_are_refused_naming_the_file(tmp_path, text, message):
    with pytest.raises(ValueError, match=message) as refused:
        _read(tmp_path, text)
    assert "streaming.yaml" in str(refused.value)


def test_a_top_level_list_is_refused(tmp_path):
    path = tmp_path / "streaming.yaml"
    path.write_text("- max_runs_per_tick: 6\n")
    with pytest.raises(ValueError, match="expected a mapping at the top level, got list"):
        streaming_settings(path)
