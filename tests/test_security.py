"""The security controls of SECURITY.md, each checked where it lives.

- bind: ``make dev`` / ``make dev-aws`` and the ECS webserver task bind the webserver to
  127.0.0.1 (the Makefile as ``make -n`` expands it, the task definition as JSON), the only
  port the webserver task exposes is the authenticating proxy's, and the deploy guide says so;
- secrets: no tracked file holds a credential (AWS key ids, private keys, secret keys,
  Postgres URLs with a password; moto's documented dummies allowed), and a real Dagster run on
  each profile, with recognisable fake secrets in its environment, leaves neither in its event
  log, run storage, compute logs or the process's output;
- IAM (beside ``tests/test_iam.py``): the deployment's Lambda function and the roles it passes
  are named exactly, never by a wildcard;
- identifiers: every external identifier that becomes a path, an object key or a URL is
  refused with a clear error when hostile (``../``, absolute paths, NUL, ``%2e%2e``,
  backslashes, newlines, other scripts' digits), and nothing is written outside the store;
- world-writable paths: the Luigi and Dagster configs, the workspaces and the Makefile name no
  shared temporary directory, and what a run creates is not world-writable.

Bad inputs are the hostile values of :data:`HOSTILE` (and the cases of each test).
"""

from __future__ import annotations

import ast
import collections
import configparser
import json
import os
import re
import shlex
import stat
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from conftest import ROOT
from streaming_harness import EPOCH, Harness
from test_iam import render, statements

from figstream.cli.main import main as figstream_main
from figstream.ingest.dataset import generate
from figstream.ingest.landing import batch_key, parse_batch_key
from figstream.storage.aws import CALLS, AwsConfig
from figstream.storage.objects import LocalObjectStore, check_key, check_prefix
from figstream.streaming.landing_index import split_batch_keys

# Each must be refused wherever an identifier becomes a path, key or URL.
HOSTILE = [
    "../x",
    "../../etc/passwd",
    "a/../../b",
    "/etc/passwd",
    "x\x00y",
    "..\\..\\x",
    "a\nb",
    "a\rb",
    "a\tb",
    "",
    "..",
    ".hidden",
]
# Literal names (nothing decodes a key): accepted, and they stay inside the store.
LITERAL = ["%2e%2e/%2e%2e/x", "%2F..%2Fx"]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


# --- the webserver binds to 127.0.0.1 ---------------------------------------------------------


def _dagster_dev_host(target: str, **variables: str) -> str:
    """The ``-h`` of the ``dagster dev`` command ``make -n TARGET`` would run."""
    overrides = [f"{k}={v}" for k, v in variables.items()]
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "MAKEFLAGS", "MFLAGS")}
    out = subprocess.run(
        ["make", "-s", "-n", "-C", str(ROOT), target, *overrides],
        capture_output=True, text=True, check=True, env=env, timeout=60,
    ).stdout  # fmt: skip
    commands = out.replace("\\\n", " ").splitlines()
    found = []
    for command in commands:
        words = shlex.split(command, comments=False)
        for i, word in enumerate(words):
            if word.endswith("dagster") and words[i + 1 : i + 2] == ["dev"]:
                args = words[i + 2 :]
                found.append(args[args.index("-h") + 1] if "-h" in args else "(default)")
    assert len(found) == 1, f"make -n {target}: expected one dagster dev command, got {out!r}"
    return found[0]


@pytest.mark.parametrize("target", ["dev", "dev-aws"])
def test_make_dev_binds_the_webserver_to_loopback(target: str) -> None:
    assert _dagster_dev_host(target) == "127.0.0.1"
    # The variable is the one knob, and it reaches the command: 0.0.0.0 is opted into.
    assert _dagster_dev_host(target, HOST="0.0.0.0") == "0.0.0.0"


def _task(name: str) -> dict:
    return json.loads((ROOT / "platform" / "aws" / "ecs" / f"{name}.json").read_text())


def _option(command: list[str], name: str) -> str:
    values = [c.split("=", 1)[1] for c in command if c.startswith(f"{name}=")]
    values += [command[i + 1] for i, c in enumerate(command[:-1]) if c == name]
    assert len(values) == 1, f"{name} given {len(values)} times in {command}"
    return values[0]


def test_the_ecs_webserver_binds_loopback_behind_the_auth_proxy() -> None:
    containers = {c["name"]: c for c in _task("webserver")["containerDefinitions"]}
    assert set(containers) == {"webserver", "auth-proxy"}
    web, proxy = containers["webserver"], containers["auth-proxy"]
    assert web["command"][0] == "dagster-webserver"
    assert _option(web["command"], "-h") == "127.0.0.1"
    port = _option(web["command"], "-p")
    assert not web.get("portMappings"), "the webserver itself must expose no port"
    # The proxy is the task's only way in, authenticates with OIDC, and forwards to loopback.
    assert [m["containerPort"] for m in proxy["portMappings"]] == [4180]
    command = proxy["command"]
    assert _option(command, "--upstream") == f"http://127.0.0.1:{port}"
    assert _option(command, "--provider") == "oidc"
    assert _option(command, "--email-domain") not in ("*", "")
    assert _option(command, "--cookie-secure") == "true"
    secrets = {s["name"] for s in proxy["secrets"]}
    assert {"OAUTH2_PROXY_CLIENT_SECRET", "OAUTH2_PROXY_COOKIE_SECRET"} <= secrets
    assert not {e["name"] for e in proxy.get("environment", [])} & secrets


def test_no_other_task_exposes_the_webserver() -> None:
    for name in ("daemon", "run-worker"):
        for container in _task(name)["containerDefinitions"]:
            command = container.get("command") or []
            assert "dagster-webserver" not in command and "webserver" not in command[:2], name
            ports = {m["containerPort"] for m in container.get("portMappings", [])}
            assert ports <= {4000}, f"{name}/{container['name']} exposes {ports}"


def _listeners() -> dict[str, str]:
    """Every host:port a container of the image listens on: the ECS tasks' commands and the
    Dockerfile's default command (its exec-form JSON array)."""
    found = {}
    for task in ("webserver", "daemon", "run-worker"):
        for container in _task(task)["containerDefinitions"]:
            command = container.get("command") or []
            for flag in ("-h", "--http-address"):
                if any(c == flag or c.startswith(f"{flag}=") for c in command):
                    found[f"{task}/{container['name']}"] = _option(command, flag)
    text = (ROOT / "platform" / "aws" / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    found["image CMD"] = _option(cmd, "-h")
    return found


def test_only_the_auth_proxy_and_the_code_server_listen_beyond_loopback() -> None:
    """0.0.0.0 only where a security group is the guard (docs/deploy-aws.md section 4): the
    proxy's 4180 (from the ALB) and the code server's 4000 (from the webserver task)."""
    wide = {k: v for k, v in _listeners().items() if not v.startswith("127.0.0.1")}
    assert wide == {
        "webserver/auth-proxy": "0.0.0.0:4180",
        "daemon/code-server": "0.0.0.0",
        "image CMD": "0.0.0.0",
    }
    assert _listeners()["webserver/webserver"] == "127.0.0.1"


def _section(markdown: str, heading: str) -> str:
    match = re.search(rf"^## \d+\. {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"docs/deploy-aws.md has no section {heading!r}"
    return " ".join(match.group(1).split())


def test_the_deploy_guide_puts_authentication_in_front_of_the_webserver() -> None:
    text = _section(
        (ROOT / "docs" / "deploy-aws.md").read_text(), "Authentication in front of the webserver"
    )
    for fact in (
        "binds to **127.0.0.1**",
        "oauth2-proxy",
        "its security group is the only way in",
        "Never give the webserver's task a public IP",
        "--email-domain",
        "code server",
    ):
        assert fact in text, f"the deploy guide's authentication section does not say {fact!r}"


# --- no secrets in the repository -------------------------------------------------------------

DUMMIES = {"dev", "testing", "test", "", "changeme-not-a-secret"}
SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "AWS secret access key": re.compile(
        r"aws_secret_access_key[\"']?\s*[=:]\s*[\"']?(?P<value>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
        re.I,
    ),
    "Postgres URL with a password": re.compile(
        r"postgres(?:ql)?(?:\+\w+)?://[^\s:/@\"']+:(?P<value>[^\s@/\"']*)@", re.I
    ),
    "secret in an assignment": re.compile(
        r"\b(?:AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|[A-Z_]*PASSWORD|[A-Z_]*CLIENT_SECRET)"
        r"=(?P<value>[^\s$\"'`;)\\]+)"
    ),
}
# AWS's documentation example key id, which no account has.
ALLOWED_KEY_IDS = {"AKIAIOSFODNN7EXAMPLE"}


def secrets_in(text: str) -> list[tuple[str, str]]:
    found = []
    for what, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            value = match.groupdict().get("value", match.group(0))
            if value in DUMMIES or value in ALLOWED_KEY_IDS or value.startswith(("{", "<")):
                continue
            found.append((what, match.group(0)))
    return found


def test_the_secret_scan_finds_what_it_looks_for() -> None:
    key_id = "AKIA" + "Q" * 16
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "x" * 10
    text = "\n".join(
        [
            f"id = {key_id}",
            "-----BEGIN " + "RSA PRIVATE KEY-----",
            f"aws_secret_access_key = {secret}",
            "url = postgresql://dagster:" + "hunter2" + "@db:5432/dagster",
            "DAGSTER_PG_PASSWORD=" + "hunter2",
        ]
    )
    kinds = [what for what, _ in secrets_in(text)]
    assert sorted(set(kinds)) == sorted(SECRET_PATTERNS), kinds
    allowed = (
        "AWS_SECRET_ACCESS_KEY=dev DAGSTER_PG_PASSWORD= postgresql://u:@h/db AKIAIOSFODNN7EXAMPLE"
    )
    assert secrets_in(allowed) == []


def test_no_tracked_file_holds_a_secret() -> None:
    files = (
        subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    assert len(files) > 100, "git ls-files found too few files to have scanned the repository"
    found = []
    for name in filter(None, files):
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the working tree
        text = path.read_bytes().decode("utf-8", "replace")
        found += [(name, what, hit[:80]) for what, hit in secrets_in(text)]
    assert found == []


# --- no secrets in a run's logs ---------------------------------------------------------------


def fake_secrets() -> dict[str, str]:
    """Recognisable values no code could print by chance (40 characters, like an AWS secret)."""
    tag = uuid.uuid4().hex[:12].upper()
    return {
        "AWS_SECRET_ACCESS_KEY": f"FIGSECRET{tag}AwsSecret0123456789abcdefgh"[:40],
        "AWS_SESSION_TOKEN": f"FIGSECRET{tag}SessionToken",
        "DAGSTER_PG_PASSWORD": f"FIGSECRET{tag}PgPassword",
    }


def leaks(paths: list[Path], secrets: dict[str, str], extra: str = "") -> list[str]:
    """Where any of ``secrets`` appears in the files under ``paths`` or in ``extra``."""
    found = [f"{name} in the process output" for name, v in secrets.items() if v in extra]
    for root in paths:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{name} in {path}" for name, v in secrets.items() if v.encode() in data]
    return found


def test_the_leak_check_sees_a_secret_in_a_compute_log(tmp_path: Path) -> None:
    secrets = fake_secrets()
    log = tmp_path / "storage" / "run" / "compute_logs" / "x.err"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"boom: " + secrets["DAGSTER_PG_PASSWORD"].encode())
    assert leaks([tmp_path], secrets) == [f"DAGSTER_PG_PASSWORD in {log}"]
    assert leaks([], secrets, extra=secrets["AWS_SESSION_TOKEN"]) == [
        "AWS_SESSION_TOKEN in the process output"
    ]


def compute_logs(dagster_home: Path) -> list[Path]:
    return [p for p in dagster_home.rglob("*") if p.suffix in (".out", ".err", ".complete")]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# Debian's default for users with their own group: group-writable, never world-writable.
RUN_UMASK = 0o002


def one_hour(scratch: Path) -> list[bytes]:
    """A generated day's records of its busiest hour, bad ones included: a run's worth (a whole
    day is 24 partitions of event-log writes on a real instance, a minute on a loaded machine)."""
    generate(scratch, start=EPOCH, days=1, seed=5, events_per_day=600, bad_rate=0.05)
    lines = [
        ln for p in sorted(scratch.glob("landing/*/*.jsonl")) for ln in p.read_bytes().split(b"\n")
    ]
    hours = collections.Counter(re.findall(rb'"time":"(2026-11-01T\d\d):', b"\n".join(lines)))
    busiest = hours.most_common(1)[0][0]
    hour = [ln for ln in lines if busiest + b":" in ln]
    assert len(hour) >= 10, hours
    return hour


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A generated day streamed by the real sensors and jobs into a Dagster instance on a
    temporary DAGSTER_HOME (SQLite storage, compute logs captured), with fake secrets in the
    environment, under a group-writable umask."""
    base = tmp_path_factory.mktemp("local-run")
    home, dagster_home = base / "home", base / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((ROOT / "platform/local/dagster.yaml").read_text())
    secrets = fake_secrets()
    with pytest.MonkeyPatch.context() as monkeypatch, umask(RUN_UMASK):
        for name, value in secrets.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
        harness = Harness(home, monkeypatch)
        harness.instance = dg.DagsterInstance.get()
        try:
            harness.publish(one_hour(base / "generated"), producer="sec")
            runs = harness.drain()
            yield {
                "home": home, "dagster_home": dagster_home, "secrets": secrets,
                "runs": runs, "harness": harness, "instance": harness.instance,
            }  # fmt: skip
        finally:
            harness.instance.dispose()


def test_a_local_run_logs_no_secret(local_run: dict, capfd: pytest.CaptureFixture) -> None:
    instance: dg.DagsterInstance = local_run["instance"]
    records = instance.get_run_records()
    assert len(records) == len(local_run["runs"]) > 0
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
    logs = compute_logs(local_run["dagster_home"])
    assert logs, "the instance captured no compute logs: the check would see nothing"
    out = capfd.readouterr()
    # The event log, run storage and compute logs all live in DAGSTER_HOME (SQLite, files):
    # a marker written through the event log is found there, the secrets are not.
    marker = {"marker": f"figstream-security-marker-{uuid.uuid4().hex}"}
    instance.report_engine_event(marker["marker"], records[0].dagster_run)
    assert leaks([local_run["dagster_home"]], marker)
    assert leaks([local_run["dagster_home"]], local_run["secrets"], out.out + out.err) == []


# --- the aws profile: moto server, the Postgres instance --------------------------------------


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake secrets in this test's environment (set before any instance or client reads it)."""
    values = fake_secrets()
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def pg_instance(
    secrets: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """platform/aws/dagster.yaml on a throw-away database of the machine's Postgres (trust
    auth: the fake password is sent and ignored)."""
    from test_instance_postgres import PG, _admin

    name = f"figstream_sec_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((ROOT / "platform/aws/dagster.yaml").read_text())
    for key, value in {
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]),
        "DAGSTER_PG_USER": PG["user"],
        "DAGSTER_PG_DB": name,
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("FIGSTREAM_ECS_CLUSTER", "FIGSTREAM_ECS_RUN_TASK_DEFINITION"):
        monkeypatch.delenv(key, raising=False)
    instance = dg.DagsterInstance.get()
    try:
        yield instance
    finally:
        instance.dispose()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def database_text(name: str) -> str:
    """Every row of every table of the database, as text."""
    import psycopg2
    from test_instance_postgres import PG

    with psycopg2.connect(dbname=name, connect_timeout=5, **PG) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [t for (t,) in cur.fetchall()]
        chunks = []
        for table in tables:
            cur.execute(f'SELECT t::text FROM "{table}" t')
            chunks += [row for (row,) in cur.fetchall()]
    assert tables and chunks, f"database {name} holds nothing: the check would see nothing"
    return "\n".join(chunks)


@pytest.mark.slow
def test_an_aws_run_logs_no_secret(
    moto_endpoint: str,
    secrets: dict[str, str],
    pg_instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
) -> None:
    """The aws profile end to end (EventBridge → SQS → landing batch in S3 → runs on the
    Postgres instance, the ingest step's Lambda as a subprocess through Dagster Pipes), with
    the fake AWS secret signing every call and the fake Postgres password in the environment."""
    from tests.aws_server import aws_environ, emulator_config

    environ = aws_environ(emulator_config(moto_endpoint), "subprocess")
    for key, value in environ.items():
        if key not in secrets:  # the fake secrets sign the calls (moto takes any)
            monkeypatch.setenv(key, value)
    lines = one_hour(tmp_path / "generated")
    harness = Harness(tmp_path / "home", monkeypatch, profile="aws")
    harness.instance = pg_instance
    harness.publish(lines, producer="sec")
    runs = harness.drain()
    assert runs, "no run was requested: nothing was checked"
    records = pg_instance.get_run_records()
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
    assert compute_logs(Path(os.environ["DAGSTER_HOME"]))
    out = capfd.readouterr()
    # The dump reads the event log: a marker written through it is found.
    marker = f"figstream-security-marker-{uuid.uuid4().hex}"
    pg_instance.report_engine_event(marker, records[0].dagster_run)
    text = database_text(os.environ["DAGSTER_PG_DB"])
    assert marker in text
    assert [n for n, v in secrets.items() if v in text] == []
    assert leaks([Path(os.environ["DAGSTER_HOME"])], secrets, out.out + out.err) == []


# --- least privilege, beside tests/test_iam.py ------------------------------------------------


def test_fixed_sets_of_aws_resources_are_named_exactly_not_by_wildcard() -> None:
    """A deployment has one Lambda function and passes two roles: a wildcard over them would
    let a role invoke or pass whatever else someone names with the prefix."""
    from resources.lambda_invoke import VALIDATE_BATCH

    config = AwsConfig(prefix="figprod")
    function = f"arn:aws:lambda:{config.region}:123456789012:function:"
    checked = 0
    for path in sorted((ROOT / "platform/aws/iam").glob("*.json")):
        for statement in statements(render(path.stem, config)):
            resources = statement["Resource"]
            for resource in [resources] if isinstance(resources, str) else resources:
                if resource.startswith(("arn:aws:lambda:", "arn:aws:iam:")):
                    checked += 1
                    assert "*" not in resource and "?" not in resource, (path.name, resource)
                if resource.startswith(function):
                    assert resource == function + config.function_name(VALIDATE_BATCH)
    assert checked >= 4  # the daemon's and run worker's invokes, the daemon's two roles


# --- identifiers become paths, keys and URLs only when safe -----------------------------------


@pytest.mark.parametrize("key", HOSTILE + [f"landing/{h}" for h in HOSTILE if h])
def test_hostile_object_keys_are_refused_and_nothing_is_written(tmp_path: Path, key: str) -> None:
    (tmp_path / "sandbox").mkdir()
    store = LocalObjectStore(tmp_path / "sandbox" / "store")
    with pytest.raises(ValueError) as refused:
        store.put(key, b"x")
    assert "object key" in str(refused.value)
    for call in (store.get, store.exists, store.delete):
        with pytest.raises(ValueError):
            call(key)
    assert tree(tmp_path) == {"sandbox"}  # nothing in the store, nothing beside it


@pytest.mark.parametrize("prefix", ["../", "/etc/", "a/../", "a\nb", "a\\b", "x\x00"])
def test_hostile_listing_prefixes_are_refused(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ValueError):
        LocalObjectStore(tmp_path).list(prefix)
    with pytest.raises(ValueError):
        check_prefix(prefix)


@pytest.mark.parametrize("key", LITERAL)
def test_percent_encoded_dots_are_literal_names_inside_the_store(tmp_path: Path, key: str) -> None:
    root = tmp_path / "store"
    store = LocalObjectStore(root)
    store.put(key, b"x")
    assert store.list() == [key] and store.get(key) == b"x"
    assert tree(tmp_path) == {"store", *(f"store/{p}" for p in tree(root))}
    assert all(p.resolve().is_relative_to(root) for p in root.rglob("*"))


@pytest.mark.slow
def test_s3_refuses_hostile_keys_before_any_call_and_keeps_literal_ones(aws_config) -> None:
    from figstream.cli.aws import ensure_bucket
    from figstream.storage.s3_objects import S3ObjectStore

    ensure_bucket(aws_config)
    store = S3ObjectStore(aws_config)
    CALLS.reset()
    for key in HOSTILE:
        with pytest.raises(ValueError):
            store.put(key, b"x")
        with pytest.raises(ValueError):
            store.get(key)
    assert CALLS.calls() == {}, "a hostile key reached S3"
    for key in LITERAL:
        store.put(key, b"x")
    # S3 does not decode keys either: the objects are exactly the literal names.
    assert store.list() == sorted(LITERAL)
    # Anyone with PutObject on landing/ can name an object anything S3 takes ("..", tabs,
    # backslashes; moto's HTTP layer refuses a newline): the listing hands it over as is, and
    # the sensors' split leaves it out of the batches.
    raw = ["landing/x/../../y.jsonl", "landing/2026-11-01/..\\..\\x.jsonl", LANDING + "\t"]
    for key in raw:
        aws_config.client("s3").put_object(Bucket=aws_config.bucket_name, Key=key, Body=b"x")
    listed = store.list("landing/")
    assert sorted(listed) == sorted(raw)
    assert split_batch_keys(listed) == ([], listed)


LANDING = "landing/2026-11-01/20261101T100000000000Z-000001.jsonl"


@pytest.mark.parametrize(
    "key",
    [
        *HOSTILE,
        "landing/../../etc/20261101T100000000000Z-000001.jsonl",
        "/landing/2026-11-01/20261101T100000000000Z-000001.jsonl",
        "landing/2026-11-01/../20261101T100000000000Z-000001.jsonl",
        "landing%2F2026-11-01%2F20261101T100000000000Z-000001.jsonl",
        LANDING.replace("-000001", "-../x-000001"),
        LANDING.replace("-000001", "-a\\b-000001"),
        LANDING + "\n",
        LANDING.replace(".jsonl", "\x00.jsonl"),
        # Arabic-Indic digits read as a time, but would sort after every real key.
        "landing/2026-11-01/" + "٢٠٢٦١١٠١" + "T100000000000Z-000001.jsonl",
    ],
)
def test_hostile_landing_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="landing"):
        parse_batch_key(key)


@pytest.mark.parametrize("producer", [*HOSTILE, "sqs-../x", "UPPER", "a_b", "x" * 65])
def test_hostile_producer_names_never_make_a_landing_key(producer: str) -> None:
    from datetime import UTC, datetime

    with pytest.raises(ValueError, match="producer"):
        batch_key(datetime(2026, 11, 1, tzinfo=UTC), producer, 1)


def test_a_landing_key_round_trips_and_is_a_valid_object_key() -> None:
    from datetime import UTC, datetime

    key = batch_key(datetime(2026, 11, 1, 10, tzinfo=UTC), "sqs-postings", 7)
    assert check_key(key) == key and parse_batch_key(key)[1].endswith("-sqs-postings-000007")


@pytest.mark.slow
def test_sqs_bodies_never_name_the_landing_key(aws_config, tmp_path: Path) -> None:
    """A message is a line of a batch whose key the drain makes; hostile ids, keys and paths
    in the body stay data (the ingest step dead-letters what is not a valid envelope)."""
    from figstream.ingest.sqs_intake import drain_queue

    stream = "postings"
    sqs = aws_config.client("sqs")
    url = sqs.create_queue(QueueName=aws_config.queue_name(stream))["QueueUrl"]
    bodies = [
        json.dumps({"batch_key": "../../etc/passwd", "key": "/etc/passwd"}),
        json.dumps(
            {
                "source": "../../boards",
                "detail-type": "job.posted",
                "detail": {
                    "id": "../../x\n",
                    "version": 1,
                    "time": "2026-11-01T10:00:00Z",
                    "data": {"job_id": "..\\..\\y", "board": "%2e%2e"},
                },
            }
        ),
        "landing/../../x.jsonl",
    ]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    root = tmp_path / "sandbox" / "store"
    report = drain_queue(aws_config, stream, LocalObjectStore(root), check_dlq=False)
    assert report.received == 3 and report.deleted == 3
    assert parse_batch_key(report.batch_key)  # a key of the landing layout
    assert LocalObjectStore(root).list() == [report.batch_key]
    assert tree(tmp_path) == {
        "sandbox",
        "sandbox/store",
        *(f"sandbox/store/{p}" for p in tree(root)),
    }
    assert len((root / report.batch_key).read_bytes().splitlines()) == 3


@pytest.mark.parametrize("partition", ["../../x", "/etc/passwd", "2026-11-01-10:00/../x", "a\nb"])
def test_hostile_partition_keys_are_refused_by_the_partitions(
    local_run: dict, partition: str
) -> None:
    harness: Harness = local_run["harness"]
    before = tree(local_run["home"])
    job = harness.defs.resolve_job_def("postings_job")
    with pytest.raises(dg.DagsterUnknownPartitionError):
        job.execute_in_process(partition_key=partition, instance=harness.instance)
    tags = {
        "dagster/asset_partition_range_start": partition,
        "dagster/asset_partition_range_end": "2026-11-01-23:00",
    }
    # Dagster parses a range's ends as hours (a ValueError naming the format) before any step.
    with pytest.raises((dg.DagsterError, ValueError)):
        job.execute_in_process(tags=tags, instance=harness.instance)
    assert new_data(local_run["home"], before) == set()


def new_data(home: Path, before: set[str]) -> set[str]:
    """Paths under ``home`` that were not in ``before`` (SQLite's -wal/-shm files aside)."""
    return {p for p in tree(home) - before if not p.endswith(("-wal", "-shm"))}


@pytest.mark.parametrize(
    "key", ["../../x.jsonl", "/etc/passwd", LANDING.replace("-000001", "-../x-000001")]
)
def test_hostile_batch_keys_in_run_config_fail_the_run_without_writing(
    local_run: dict, key: str
) -> None:
    """A run launched by hand (the launchpad, GraphQL) with batch keys that are not landing
    keys fails, naming the key, and writes no data: ingest takes only the batches the landing
    index holds for the hour (so it reads none of these), the next steps refuse the key."""
    harness: Harness = local_run["harness"]
    home = local_run["home"]
    before = tree(home)
    job = harness.defs.resolve_job_def("postings_job")
    ops = ("raw_events", "clean_postings", "deduped_postings", "job_state", "search_index")
    config = {"ops": {op: {"config": {"batch_keys": [key]}} for op in ops}}
    result = job.execute_in_process(
        run_config=config, partition_key="2026-11-01-10:00", instance=harness.instance,
        raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures and all(
        "not a landing batch key" in str(e.step_failure_data.error) for e in failures
    )
    assert new_data(home, before) == set()


STRAYS = ["evil\nname.jsonl", "..%2f..%2fx.jsonl", "notes.txt", "a\\b.jsonl"]


def test_stray_objects_under_landing_are_left_alone_not_read(local_run: dict) -> None:
    """Objects under ``landing/`` that are not batch keys (put there by hand, or by anyone who
    may write the prefix; a newline in a name is possible on disk, bypassing the store) are
    never read or indexed: the sensors tick on, warn, and request no run for them."""
    harness: Harness = local_run["harness"]
    day = next((local_run["home"] / "landing").iterdir())
    for name in STRAYS:
        (day / name).write_bytes(b'{"id": "stray"}\n')
    try:
        for stream in ("postings", "boards"):
            result = harness.tick(stream)
            requests = result.run_requests if isinstance(result, dg.SensorResult) else []
            keys = [
                key
                for r in requests or []
                for op in (r.run_config or {}).get("ops", {}).values()
                for key in op["config"].get("batch_keys", [])
            ]
            assert all(parse_batch_key(key) for key in keys)
        indexed = harness.stores.state.batches_for("postings", "2026-11-01-10:00")
        assert not any("stray" in key or "evil" in key for key in indexed)
    finally:
        for name in STRAYS:
            (day / name).unlink()


@pytest.mark.parametrize(
    "source",
    ["a" * 300, "../x", "a/b", "a\nb", "..", "٢٣", "\uff41\uff42", "-", "_SUCCESS", "x\x00"],
)
def test_hostile_sources_never_name_a_mirrored_feed_file(tmp_path: Path, source: str) -> None:
    """The legacy mirror names a feed file after each record's source (raw lines, invalid ones
    too): one that is no safe file name goes to _unattributed.jsonl, and the day still
    mirrors (a 300-character source used to fail the whole day's key)."""
    import orjson

    from figstream.ingest.publish import Publisher
    from figstream.migration.mirror import UNATTRIBUTED, mirror_day
    from figstream.streaming.stores import Stores

    home = tmp_path / "sandbox" / "home"
    stores = Stores.local(home, "2026-11-01-00:00")
    good = {"id": "e1", "type": "job.posted", "source": "alpha", "version": 1,
            "time": "2026-11-01T10:00:00Z", "data": {"job_id": "j1"}}  # fmt: skip
    bad = {**good, "id": "e2", "source": source}
    Publisher(stores.objects, producer="sec").publish([orjson.dumps(good), orjson.dumps(bad)])
    report = mirror_day(stores, "2026-11-01")
    assert report.written and report.by_board == {"alpha": 1, UNATTRIBUTED: 1}
    feeds = stores.objects.list("feeds/")
    names = ("alpha.jsonl", f"{UNATTRIBUTED}.jsonl", "_MIRROR.json", "_SUCCESS")
    assert set(feeds) == {f"feeds/2026-11-01/{n}" for n in names}
    assert tree(tmp_path) == {"sandbox", *(f"sandbox/{p}" for p in tree(tmp_path / "sandbox"))}
    assert all(p.resolve().is_relative_to(home) for p in home.rglob("*"))


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = figstream_main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


CLI_CASES = {
    "dlq show": lambda v: ["dlq", "show", v],
    "trace": lambda v: ["trace", v],
    "replay --stream": lambda v: [
        "replay",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-02",
        "--stream",
        v,
    ],
    "replay --from": lambda v: ["replay", "--from", v, "--to", "2026-11-02"],
    "replay --to": lambda v: ["replay", "--from", "2026-11-01", "--to", v],
    "books --stream": lambda v: ["books", "--stream", v],
}


@pytest.mark.parametrize("value", [h for h in HOSTILE if h] + LITERAL)
@pytest.mark.parametrize("command", sorted(CLI_CASES))
def test_hostile_cli_identifiers_get_one_clear_error_and_write_nothing(
    local_run: dict, command: str, value: str, capsys, monkeypatch, tmp_path: Path
) -> None:
    home = local_run["home"]
    monkeypatch.chdir(tmp_path)
    before = tree(home)
    code, out, err = run_cli([*CLI_CASES[command](value), "--home", str(home)], capsys)
    assert code in (1, 2), (code, out, err)
    assert "Traceback" not in err and err.strip(), err
    # One error line naming the command (argparse's usage error ends with it).
    assert any(ln.startswith("figstream ") and ": error: " in ln for ln in err.splitlines()), err
    assert new_data(home, before) == set()
    assert tree(tmp_path) == set()  # nothing in the working directory either


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "file:///etc/passwd", "http://", "http://a b", "http://x\n\x1b[2J"],
)
def test_trace_refuses_a_webserver_that_is_not_an_http_url(
    local_run: dict, url: str, capsys, monkeypatch
) -> None:
    home = str(local_run["home"])
    code, _, err = run_cli(["trace", "some-id", "--home", home, "--webserver", url], capsys)
    assert code == 2 and "http(s) URL" in err
    monkeypatch.setenv("FIGSTREAM_WEBSERVER_URL", url)
    code, _, err = run_cli(["trace", "some-id", "--home", home], capsys)
    assert code == 1 and "the webserver for run links" in err and "Traceback" not in err


# --- no world-writable paths --------------------------------------------------------------------

SHARED = re.compile(r"(?<![\w.])(/tmp|/var/tmp|/dev/shm|/run/shm|/var/lock)(?![\w])")


def yaml_strings(node) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from yaml_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from yaml_strings(item)
    elif node is not None:
        yield str(node)


def config_files() -> list[Path]:
    return [
        ROOT / "luigi.cfg",
        ROOT / "workspace.yaml",
        *sorted((ROOT / "platform").rglob("dagster.yaml")),
        *sorted((ROOT / "platform").rglob("workspace.yaml")),
    ]


def test_the_luigi_and_dagster_configs_name_no_shared_temporary_directory() -> None:
    from figstream.settings import load_yaml

    for path in config_files():
        if path.suffix == ".cfg":
            parser = configparser.ConfigParser(interpolation=None)
            parser.read(path)
            values = [v for s in parser.sections() for v in parser[s].values()]
        else:
            values = list(yaml_strings(load_yaml(path.read_text())))
        assert values, f"{path}: read nothing"
        shared = [v for v in values if SHARED.search(v)]
        assert shared == [], f"{path.relative_to(ROOT)} puts state in a shared directory: {shared}"
        for value in values:
            assert ".." not in Path(value).parts or path.suffix == ".cfg", (path, value)


def test_luigi_takes_no_lock_in_a_shared_directory() -> None:
    """Luigi's pid lock defaults to /tmp/luigi; ``luigi.build`` skips it (``no_lock``) unless
    the caller or luigi.cfg asks for it, and the local scheduler keeps no state file."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "luigi.cfg")
    core = parser["core"] if parser.has_section("core") else {}
    assert core.get("no_lock", "true").lower() not in ("false", "0", "no")
    assert "lock_pid_dir" not in core and not parser.has_option("scheduler", "state_path")
    source = (ROOT / "resources" / "luigi_runner.py").read_text()
    builds = [
        node for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "luigi.build"
    ]  # fmt: skip
    assert builds, "resources/luigi_runner.py no longer calls luigi.build: update this check"
    for call in builds:
        keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert keywords.get("local_scheduler") == "True"
        assert "no_lock" not in keywords and "lock_pid_dir" not in keywords


def make_defaults() -> dict[str, str]:
    """The Makefile's variables as make itself expands them (``make -p``, nothing run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIGSTREAM_", "DAGSTER_"))}
    out = subprocess.run(
        ["make", "-p", "-n", "-C", str(ROOT), "-f", "Makefile", "lint"],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    ).stdout  # fmt: skip
    found = {}
    for line in out.splitlines():
        match = re.match(r"^(?:export )?([A-Z_]+) :?= (.*)$", line)
        if match:
            found[match[1]] = match[2]
    return found


def test_the_makefile_keeps_state_in_the_checkout() -> None:
    variables = make_defaults()
    home = variables["FIGSTREAM_HOME"].replace("$(CURDIR)", str(ROOT))
    dagster_home = variables["DAGSTER_HOME"].replace("$(FIGSTREAM_HOME)", home)
    for value in (home, dagster_home):
        # Inside the checkout, wherever the checkout is (a clone under /tmp is fine): the
        # shared-directory check applies to what the Makefile spells, not to where it lives.
        assert Path(value).is_relative_to(ROOT), value
        assert not SHARED.search(value[len(str(ROOT)) :]), value
    assert not any(SHARED.search(variables[name]) for name in ("FIGSTREAM_HOME", "DAGSTER_HOME"))
    assert variables["HOST"] == "127.0.0.1"


def world_writable(root: Path) -> list[str]:
    bad = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        if mode & stat.S_IWOTH and not (stat.S_ISDIR(mode) and mode & stat.S_ISVTX):
            bad.append(f"{oct(stat.S_IMODE(mode))} {path}")
    return bad


def test_what_a_run_creates_is_not_world_writable(local_run: dict) -> None:
    home, dagster_home = local_run["home"], local_run["dagster_home"]
    created = {p.name for p in home.iterdir()}
    assert {"landing", "tables", "state"} <= created, created  # the data the run wrote
    assert compute_logs(dagster_home)
    assert world_writable(home) == [] and world_writable(dagster_home) == []
    assert chmods_to_world_writable() == []


def chmods_to_world_writable() -> list[str]:
    """Calls that set modes regardless of the umask (``chmod``, and ``mode=`` of figstream's
    atomic writer, which chmods) with a world-writable constant."""
    found = []
    for package in ("figstream", "resources", "assets", "sensors", "legacy", "lambdas"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                name = ast.unparse(node.func).rsplit(".", 1)[-1]
                args = [*node.args] if name in ("chmod", "fchmod", "lchmod") else []
                args += [k.value for k in node.keywords if k.arg == "mode"]
                found += [
                    f"{path.relative_to(ROOT)}:{node.lineno}"
                    for arg in args
                    if isinstance(arg, ast.Constant)
                    and isinstance(arg.value, int)
                    and arg.value & stat.S_IWOTH
                ]
    return found


def test_the_image_runs_as_a_user_with_a_private_home() -> None:
    text = (ROOT / "platform" / "aws" / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "FIGSTREAM_HOME=/var/lib/figstream" in text and not SHARED.search(text)
    assert "chmod" not in text or not re.search(r"chmod\s+(-R\s+)?[0-7]*[2367]\b", text)
