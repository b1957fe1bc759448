"""Loads the whole code location the way `dagster dev` does; this catches a broken UI start."""

import subprocess

import dagster as dg
import pytest
from conftest import BIN, ROOT

from legacy.pipeline import TASKS

LEGACY_KEYS = {
    "legacy/legacy_extract_feeds": {"legacy/feed_dump"},
    "legacy/legacy_clean_postings": {"legacy/legacy_extract_feeds"},
    "legacy/legacy_dedupe_postings": {"legacy/legacy_clean_postings"},
    # ActiveJobs also builds on its own day before, which Luigi resolves inside the run (see
    # test_the_self_dependency_stays_with_luigi).
    "legacy/legacy_active_jobs": {"legacy/legacy_dedupe_postings"},
}


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    import definitions

    dg.Definitions.validate_loadable(definitions.defs)
    return definitions.defs


# The Luigi tasks by the names their assets carry (legacy/legacy_<name>).
LEGACY_TASKS = (
    "extract_feeds", "clean_postings", "dedupe_postings", "active_jobs", "board_stats",
    "seo_redirects",
)  # fmt: skip


def test_local_profile_loads_every_legacy_task(defs):
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    expected = {"legacy/feed_dump"} | {f"legacy/legacy_{t}" for t in LEGACY_TASKS}
    assert expected <= keys
    assert len(TASKS) == 6
    for key, parents in LEGACY_KEYS.items():
        node = graph.get(dg.AssetKey.from_user_string(key))
        assert {p.to_user_string() for p in node.parent_keys} == parents, key
        assert node.group_name == "legacy"
        assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)


def test_nightly_job_runs_every_legacy_task(defs):
    job = defs.resolve_job_def("legacy_nightly_job")
    assert set(job.graph.node_names()) == {
        "legacy__feed_dump",
        *(f"legacy__legacy_{t}" for t in LEGACY_TASKS),
    }
    assert isinstance(job.partitions_def, dg.DailyPartitionsDefinition)


def test_the_self_dependency_stays_with_luigi(defs):
    """ActiveJobs requires its own day before (Luigi says so); in Dagster that edge would split
    a backfill of the group into two runs, 30 s apart on the backfill daemon's loop, so it is
    written on the asset instead and Luigi resolves it inside the run."""
    from legacy import graph as luigi_graph
    from legacy.pipeline import ActiveJobs

    graph = defs.resolve_asset_graph()
    key = dg.AssetKey(["legacy", "legacy_active_jobs"])
    epoch = graph.get(key).partitions_def.start.date()
    assert any(
        r.task == "ActiveJobs" and r.latest == -1
        for r in luigi_graph.requirements(ActiveJobs, epoch)
    ), "the premise: Luigi's ActiveJobs requires yesterday's snapshot"
    assert key not in graph.get(key).parent_keys
    spec = defs.resolve_assets_def(key).specs_by_key[key]
    assert "day before" in spec.metadata["figstream/builds_on"]
    # SeoRedirects reads ActiveJobs of today and yesterday: today's stands for both.
    redirects = dg.AssetKey(["legacy", "legacy_seo_redirects"])
    same_day = graph.get_partition_mapping(redirects, key)
    assert not isinstance(same_day, dg.TimeWindowPartitionMapping) or (
        same_day.start_offset,
        same_day.end_offset,
    ) == (0, 0)


def run_validate(env):
    return subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_cli_validation_passes(figstream_env):
    result = run_validate(figstream_env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_malformed_ledger_fails_loading_naming_file_and_entry(figstream_env, tmp_path):
    bad = tmp_path / "ledger.yaml"
    text = (ROOT / "platform" / "migration_ledger.yaml").read_text()
    bad.write_text(text.replace("stage: shadow", "stage: retird", 1))
    result = run_validate({**figstream_env, "FIGSTREAM_LEDGER": str(bad)})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert str(bad) in output
    assert "tasks.ExtractFeeds.stage" in output


def test_unknown_profile_is_a_clear_error(figstream_env):
    result = run_validate({**figstream_env, "FIGSTREAM_PROFILE": "azure"})
    assert result.returncode != 0
    assert "FIGSTREAM_PROFILE='azure'" in result.stdout + result.stderr


def test_streaming_assets_sensors_and_jobs_are_defined(defs):
    graph = defs.resolve_asset_graph()
    for name in (
        "raw_events",
        "board_mergers",
        "clean_postings",
        "deduped_postings",
        "job_state",
        "search_index",
    ):
        node = graph.get(dg.AssetKey(name))
        assert isinstance(node.partitions_def, dg.HourlyPartitionsDefinition), name
        assert node.group_name == "streaming"
    stats = graph.get(dg.AssetKey("board_daily_stats"))
    assert isinstance(stats.partitions_def, dg.DailyPartitionsDefinition)
    mapping = graph.get_partition_mapping(stats.key, dg.AssetKey("raw_events"))
    assert isinstance(mapping, dg.TimeWindowPartitionMapping)
    for stream in ("postings", "boards"):
        sensor = defs.get_sensor_def(f"{stream}_sensor")
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_job_def("postings_job").executor_def.name == "in_process"


def test_the_aws_profile_loads_the_same_assets_sensors_and_jobs(defs, monkeypatch):
    """Both profiles run the same code location; only the resources differ."""
    import definitions
    from figstream.migration.ledger import load_ledger
    from figstream.settings import ledger_path

    monkeypatch.setenv("FIGSTREAM_AWS_ENDPOINT", "http://127.0.0.1:1")  # never called at load
    monkeypatch.setenv("FIGSTREAM_AWS_PREFIX", "defs-check")
    aws = definitions.build_definitions(load_ledger(ledger_path()), profile="aws")
    dg.Definitions.validate_loadable(aws)

    def keys(d: dg.Definitions) -> set[str]:
        return {k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()}

    assert keys(aws) == keys(defs)
    assert {s.name for s in aws.sensors} == {s.name for s in defs.sensors}
    streaming = aws.resources["streaming"]
    assert type(streaming.objects).__name__ == "S3ObjectStoreResource"
    assert type(streaming.state).__name__ == "DynamoStateStoreResource"
    assert type(streaming.dead_letters).__name__ == "DynamoDeadLetterResource"
    assert streaming.state.aws.prefix == "defs-check"
    assert streaming.state.aws.endpoint_url == "http://127.0.0.1:1"
    # The kinds the UI shows say what each profile runs on.
    graph, local = aws.resolve_asset_graph(), defs.resolve_asset_graph()
    job_state = dg.AssetKey("job_state")
    assert graph.get(job_state).kinds == {"dynamodb"} and local.get(job_state).kinds == {"sqlite"}
    raw = dg.AssetKey("raw_events")
    assert graph.get(raw).kinds == {"parquet", "s3"} and local.get(raw).kinds == {"parquet"}


def test_the_aws_profile_passes_dagster_validation(figstream_env):
    env = {**figstream_env, "FIGSTREAM_PROFILE": "aws", "FIGSTREAM_AWS_PREFIX": "defs-check"}
    result = run_validate(env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_loading_the_code_location_prints_no_warnings():
    """What a newcomer sees when `dagster dev` starts: no warning about what the project uses
    on purpose (each silenced one is named, with why, where it is silenced)."""
    loaded = subprocess.run(
        [str(BIN / "python"), "-W", "default", "-c", "import definitions"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "Warning" not in loaded.stderr, loaded.stderr
