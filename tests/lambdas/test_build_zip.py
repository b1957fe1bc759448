"""The Lambda deployment package: what it holds, that it is reproducible, and that the handler
runs from it alone, unpacked as Lambda unpacks it, with only a stand-in for the pyarrow layer.

Bad inputs tried: a handler module that does not import; wheels built for another platform,
another CPython, a newer glibc than Amazon Linux 2's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from figstream.ingest.landing import batch_key
from figstream.settings import routing_path
from figstream.storage.objects import LocalObjectStore
from lambdas import build_zip, validate_batch
from resources.lambda_invoke import SubprocessLambdaClient

SITE = Path(sysconfig.get_paths()["purelib"])


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> tuple[build_zip.Package, Path]:
    """The package, built once, and a directory it is unpacked in."""
    out = tmp_path_factory.mktemp("dist")
    built = build_zip.build(out / "lambda.zip")
    task = out / "task"
    with zipfile.ZipFile(built.path) as archive:
        archive.extractall(task)
    return built, task


@pytest.fixture(scope="module")
def layer(tmp_path_factory) -> Path:
    """What the AWS SDK for pandas layer provides that the handler needs: pyarrow and numpy
    (links to this environment's), and nothing else of it."""
    layer = tmp_path_factory.mktemp("layer")
    for name in ("pyarrow", "numpy", "numpy.libs", "pyarrow.libs"):
        if (SITE / name).exists():
            (layer / name).symlink_to(SITE / name)
    return layer


def test_the_package_holds_the_handler_its_core_and_dagster_pipes(package) -> None:
    built, _ = package
    names = set(zipfile.ZipFile(built.path).namelist())
    needed = {
        "lambdas/validate_batch.py", "lambdas/run.py", "dagster_pipes/__init__.py",
        "figstream/streaming/ingest.py", "figstream/events/schemas.py", "figstream/settings.py",
        "orjson/__init__.py", "msgspec/__init__.py",
    }  # fmt: skip
    assert needed <= names, needed - names
    tops = {name.split("/")[0] for name in names}
    assert not tops & {"pyarrow", "numpy", "pandas", "boto3", "botocore", "dagster"}
    assert not any(n.endswith(".pyc") or "__pycache__" in n for n in names)
    assert not any(n.startswith(("figstream/cli/", "figstream/migration/")) for n in names)
    assert "dagster-pipes" in built.distributions and built.zipped_bytes < 10 << 20


def test_the_build_is_reproducible(package, tmp_path) -> None:
    built, _ = package
    again = build_zip.build(tmp_path / "again.zip")
    assert again.sha256 == built.sha256 and again.files == built.files


def test_the_handler_imports_from_the_package_alone(package, layer) -> None:
    _, task = package
    probe = (
        "import sys, json, lambdas.validate_batch, lambdas.run, dagster_pipes, orjson\n"
        "print(json.dumps([m.__file__ for m in (lambdas.validate_batch, dagster_pipes, orjson)]"
        " + ['dagster' in sys.modules, 'boto3' in sys.modules]))"
    )
    env = {"PYTHONPATH": f"{task}{os.pathsep}{layer}", "PATH": os.environ.get("PATH", "")}
    done = subprocess.run([sys.executable, "-S", "-c", probe], cwd=task, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    *files, dagster_loaded, boto3_loaded = json.loads(done.stdout)
    assert all(f.startswith(str(task)) for f in files)
    assert not dagster_loaded and not boto3_loaded


def test_the_packaged_handler_validates_as_the_repositorys_does(
    package, layer, tmp_path, monkeypatch
) -> None:
    _, task = package
    store = LocalObjectStore(tmp_path / "home")
    # The function's store is its environment's (the subprocess inherits this one).
    monkeypatch.setenv("FIGSTREAM_PROFILE", "local")
    monkeypatch.setenv("FIGSTREAM_HOME", str(tmp_path / "home"))
    key = batch_key(datetime(2026, 11, 2, 10, 30, tzinfo=UTC), "test", 0)
    line = (
        b'{"id": "b1", "type": "board.merged", "source": "alpha", "version": 1, '
        b'"time": "2026-11-02T10:01:00Z", '
        b'"data": {"absorbed_board": "alpha", "surviving_board": "beta"}}'
    )
    store.put(key, b"\n".join([line, b"not json", b'{"type": "board.merged"}']))
    event = {
        "stream": "boards", "partition": "2026-11-02-10:00", "batch_keys": [key],
        "first_partition": "2026-10-01-00:00",
        "routing": routing_path().read_text(encoding="utf-8"),
        "objects": validate_batch.store_spec(store),
    }  # fmt: skip
    client = SubprocessLambdaClient({"fn": "lambdas.validate_batch:handler"}, path=[task, layer])
    response = client.invoke(FunctionName="fn", Payload=json.dumps(event), LogType="Tail")
    assert "FunctionError" not in response, response["Payload"].read()
    from_package = json.loads(response["Payload"].read())
    expected = validate_batch.handler(event, None)
    assert from_package == expected and expected["valid"] == 1 and expected["rejected"] == 1


def test_a_handler_that_does_not_import_stops_the_build(tmp_path) -> None:
    with pytest.raises(build_zip.BuildError, match="do not import"):
        build_zip.build(tmp_path / "x.zip", modules=["lambdas.no_such_handler"])
    assert not (tmp_path / "x.zip").exists()


@pytest.mark.parametrize(
    ("tags", "runs"),
    [
        (["py3-none-any"], True),
        (["cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"], True),
        (["cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux_2_28_x86_64"], True),
        (["cp311-cp311-manylinux_2_28_x86_64"], False),  # newer glibc than Amazon Linux 2
        (["cp312-cp312-manylinux_2_17_x86_64"], False),
        (["cp311-cp311-manylinux_2_17_aarch64"], False),
        (["cp311-cp311-macosx_11_0_arm64"], False),
        (["cp311-abi3-manylinux2014_x86_64"], True),
    ],
)
def test_wheels_are_taken_only_if_they_run_on_the_runtime(tags, runs) -> None:
    assert build_zip.wheel_runs_on_target(tags) is runs
