"""The container image and the ECS task definitions (platform/aws/), checked statically.

No Docker engine runs here, so the image is not built: the checks read the Dockerfile and the
task definitions. Every file a COPY, a RUN or a command names exists; every package the
project ships is copied; the image runs as a non-root user; and the image's entry module loads
from a copy of exactly what the Dockerfile copies (on the aws profile, as the code server
starts it). The task definitions' commands name files that exist, their roles are the IAM
policies' roles, the run task's container is the one EcsRunLauncher overrides, and only the
authenticating proxy exposes the webserver.

Bad inputs tried: a COPY of a path that does not exist, a package left out of the image, a
root user, a command naming a missing file, a task role without a policy.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import string
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT
from ruamel.yaml import YAML

AWS = ROOT / "platform" / "aws"
DOCKERFILE = AWS / "Dockerfile"
TASKS = sorted((AWS / "ecs").glob("*.json"))


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def copies() -> list[tuple[str, str]]:
    """(source, destination) of every COPY from the build context."""
    out = []
    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from"):
            *sources, dest = shlex.split(rest)
            out += [(source, dest) for source in sources]
    return out


def test_the_image_is_python_311_slim_with_the_locked_dependencies() -> None:
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "uv sync --locked --no-dev" in runs  # the lock, not a fresh resolution
    assert ("WORKDIR", "/opt/figstream") in steps


def test_every_copied_path_exists_and_every_package_is_copied() -> None:
    for source, _ in copies():
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    packages = shipped["targets"]["wheel"]["packages"]
    copied = {source.rstrip("/") for source, _ in copies()}
    assert set(packages) <= copied, f"packages not in the image: {set(packages) - copied}"
    # What the code location reads from its working directory at run time.
    assert {"definitions.py", "workspace.yaml", "luigi.cfg", "platform"} <= copied


def test_the_image_runs_as_a_non_root_user_and_serves_the_code_location() -> None:
    steps = instructions()
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    last_user = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    assert all(word != "RUN" for word, _ in steps[last_user:])  # nothing after it runs as root
    command = json.loads(next(rest for word, rest in steps if word == "CMD"))
    assert command[:3] == ["dagster", "code-server", "start"]
    assert (ROOT / command[command.index("-f") + 1]).is_file()
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    for path in re.findall(r"\bplatform/[\w/.-]+", runs):
        assert (ROOT / path).exists(), f"RUN names {path}: not in the repository"


def test_the_images_entry_module_loads_from_what_the_image_holds(tmp_path: Path) -> None:
    image = tmp_path / "opt" / "figstream"
    image.mkdir(parents=True)
    for source, _ in copies():
        target = image / source.rstrip("/")
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / source, target)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FIGSTREAM_", "DAGSTER_", "PYTHON"))
    }
    env.update(
        FIGSTREAM_PROFILE="aws",
        FIGSTREAM_HOME=str(tmp_path / "home"),
        FIGSTREAM_AWS_REGION="us-east-1",
        FIGSTREAM_AWS_PREFIX="figimage",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    probe = (
        "import json, definitions, figstream, dagster as dg\n"
        "d = definitions.defs\n"
        "print(json.dumps({'files': [definitions.__file__, figstream.__file__],\n"
        "  'jobs': len(list(d.resolve_all_job_defs())), 'sensors': len(list(d.sensors or []))}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=image,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(Path(f).is_relative_to(image) for f in loaded["files"]), loaded["files"]
    assert loaded["jobs"] > 0 and loaded["sensors"] > 0


# --- ECS task definitions -----------------------------------------------------------------


def _task(path: Path) -> dict:
    text = path.read_text()
    names = {m.group("braced") or m.group("named") for m in string.Template.pattern.finditer(text)}
    assert "prefix" in names
    return json.loads(text)


@pytest.mark.parametrize("path", TASKS, ids=[p.stem for p in TASKS])
def test_task_definitions_name_files_that_exist_and_roles_that_have_policies(path: Path) -> None:
    task = _task(path)
    roles = {p.stem for p in (AWS / "iam").glob("*.json")}
    for arn in (task["taskRoleArn"], task["executionRoleArn"]):
        role = arn.rsplit("role/${prefix}-", 1)[1]
        assert role in roles, f"{path.name}: role {role} has no policy in platform/aws/iam/"
    for container in task["containerDefinitions"]:
        command = container.get("command", [])
        for flag in ("-f", "-w"):
            if flag in command and container["image"] == "${image}":
                assert (ROOT / command[command.index(flag) + 1]).is_file(), command


def test_the_run_task_is_what_the_launcher_overrides_and_the_daemon_may_run() -> None:
    instance = YAML(typ="safe").load((AWS / "dagster.yaml").read_text())
    ecs = instance["run_launcher"]["config"]["ecs"]
    run = _task(AWS / "ecs" / "run-worker.json")
    assert [c["name"] for c in run["containerDefinitions"]] == [ecs["container_name"]]
    daemon_policy = (AWS / "iam" / "daemon.json").read_text()
    assert f"task-definition/{run['family']}:*" in daemon_policy
    daemon = _task(AWS / "ecs" / "daemon.json")
    env = {e["name"]: e["value"] for c in daemon["containerDefinitions"] for e in c["environment"]}
    assert env["FIGSTREAM_ECS_RUN_TASK_DEFINITION"] == run["family"]
    assert f"cluster/{env['FIGSTREAM_ECS_CLUSTER']}" in daemon_policy


def test_only_the_authenticating_proxy_exposes_the_webserver() -> None:
    web = _task(AWS / "ecs" / "webserver.json")
    by_name = {c["name"]: c for c in web["containerDefinitions"]}
    command = by_name["webserver"]["command"]
    assert command[command.index("-h") + 1] == "127.0.0.1"
    assert "portMappings" not in by_name["webserver"]
    exposed = [name for name, c in by_name.items() if c.get("portMappings")]
    assert exposed == ["auth-proxy"]
    assert "--upstream=http://127.0.0.1:3000" in by_name["auth-proxy"]["command"]
