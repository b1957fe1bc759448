"""Starts the real Dagster webserver and reads the asset graph through its GraphQL API."""

import subprocess
import time

import pytest
import requests
from conftest import BIN, ROOT, free_port

QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
  assetNodes { assetKey { path } groupName isPartitioned dependencyKeys { path } }
}
"""


@pytest.mark.slow
def test_webserver_serves_the_legacy_asset_graph(spawn, figstream_env, tmp_path):
    """Then a rollback through the CLI reloads the location: the graph follows the ledger."""
    ledger = tmp_path / "ledger.yaml"
    ledger.write_text((ROOT / "platform" / "migration_ledger.yaml").read_text())
    figstream_env = {**figstream_env, "FIGSTREAM_LEDGER": str(ledger)}
    port = free_port()
    log = (tmp_path / "webserver.log").open("w")
    proc = spawn(
        [
            str(BIN / "dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=figstream_env,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
        try:
            if requests.get(f"{url}/server_info", timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "webserver did not come up"
        time.sleep(0.5)

    body = requests.post(f"{url}/graphql", json={"query": QUERY}, timeout=60).json()
    assert "errors" not in body, body
    entries = body["data"]["workspaceOrError"]["locationEntries"]
    assert [e["name"] for e in entries] == ["figstream"]
    assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation", entries

    nodes = {"/".join(n["assetKey"]["path"]): n for n in body["data"]["assetNodes"]}
    boards = nodes["legacy/legacy_board_stats"]
    assert boards["groupName"] == "legacy" and boards["isPartitioned"]
    assert {"/".join(d["path"]) for d in boards["dependencyKeys"]} == {
        "legacy/legacy_active_jobs",
        "legacy/legacy_dedupe_postings",
    }
    assert {
        "/".join(d["path"]) for d in nodes["legacy/legacy_extract_feeds"]["dependencyKeys"]
    } == {"legacy/feed_dump"}
    assert "parity/parity_clean_postings" in nodes and "clean_postings" in nodes

    # Roll every task back to legacy through the CLI, reloading through this webserver.
    for task in ("ExtractFeeds", "CleanPostings", "DedupePostings", "ActiveJobs", "BoardStats",
                 "SeoRedirects"):  # fmt: skip
        command = [str(BIN / "figstream"), "migration", "rollback", task]
        command += ["--ledger", str(ledger), "--home", str(tmp_path), "--webserver", url]
        done = subprocess.run(
            command, env=figstream_env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr
        assert "Reloaded code location 'figstream'" in done.stdout, done.stdout
    body = requests.post(f"{url}/graphql", json={"query": QUERY}, timeout=60).json()
    nodes = {"/".join(n["assetKey"]["path"]) for n in body["data"]["assetNodes"]}
    assert "parity/parity_clean_postings" not in nodes and "clean_postings" not in nodes
    assert "legacy/legacy_clean_postings" in nodes
