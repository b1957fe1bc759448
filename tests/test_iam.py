"""Least privilege: every AWS action the code calls is allowed to the role that calls it, and
each role's policy allows nothing more (platform/aws/iam/: one policy per role, and
actions.yaml saying which modules run in which role).

Three checks:

- static: an AST scan of figstream/, resources/, sensors/, assets/ and lambdas/ finds the boto3
  operations the code can call (client methods; operation names passed as strings, as
  ``Dynamo.call("put_item", ...)`` does; paginators and waiters), on the services the module
  makes clients for (``.client("s3")``), maps each onto its IAM action through botocore's
  service model and :data:`IAM_ACTION` (where the action is not the operation's name), and
  requires each in the union of the policies. It reads whatever code has landed, so a new call
  without a policy fails here;
- nothing more: each action in a role's policy is called by one of the role's modules, or is
  listed under the role's ``external`` in actions.yaml with the code that calls it (dagster-aws's
  EcsRunLauncher and PipesLambdaClient, the Lambda runtime, the ECS agent);
- dynamic: each role's code paths run against moto server, and every operation that
  ``figstream.storage.aws.CALLS`` recorded must be allowed by that role's policy; the rendered
  resources must cover the names AwsConfig derives for this deployment and no other prefix's.

Bad inputs tried: a policy with a ``*`` action or a service-wide ``s3:*``, a ``*`` resource for
an action that has resource-level permissions, an unknown placeholder, a module in actions.yaml
that does not exist, AWS code in a module no role lists, ARNs of another deployment's prefix.
"""

from __future__ import annotations

import ast
import datetime as dt
import fnmatch
import json
import string
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pytest
from conftest import ROOT
from ruamel.yaml import YAML

IAM = ROOT / "platform" / "aws" / "iam"
SCANNED = ("figstream", "resources", "sensors", "assets", "lambdas")
PLACEHOLDERS = {"prefix", "bucket", "region", "account"}
ACCOUNT = "123456789012"
STREAMS = ("postings", "boards")

# Operations whose IAM action is not ``<service>:<OperationName>``. Reads pin the object
# version (figstream/storage/s3_objects.py), so they need GetObjectVersion too; figstream's
# transactions hold conditional Puts only.
IAM_ACTION: dict[tuple[str, str], tuple[str, ...]] = {
    ("s3", "ListObjectsV2"): ("s3:ListBucket",),
    ("s3", "ListObjects"): ("s3:ListBucket",),
    ("s3", "HeadBucket"): ("s3:ListBucket",),
    ("s3", "HeadObject"): ("s3:GetObject", "s3:GetObjectVersion"),
    ("s3", "GetObject"): ("s3:GetObject", "s3:GetObjectVersion"),
    ("s3", "CreateMultipartUpload"): ("s3:PutObject",),
    ("s3", "UploadPart"): ("s3:PutObject",),
    ("s3", "CompleteMultipartUpload"): ("s3:PutObject",),
    ("s3", "DeleteObjects"): ("s3:DeleteObject",),
    ("s3", "GetBucketLifecycleConfiguration"): ("s3:GetLifecycleConfiguration",),
    ("s3", "PutBucketLifecycleConfiguration"): ("s3:PutLifecycleConfiguration",),
    ("lambda", "Invoke"): ("lambda:InvokeFunction",),
    ("sqs", "DeleteMessageBatch"): ("sqs:DeleteMessage",),
    ("sqs", "SendMessageBatch"): ("sqs:SendMessage",),
    ("sqs", "ChangeMessageVisibilityBatch"): ("sqs:ChangeMessageVisibility",),
    ("dynamodb", "TransactWriteItems"): ("dynamodb:PutItem",),
    ("dynamodb", "TransactGetItems"): ("dynamodb:GetItem",),
}


def iam_actions(service: str, operation: str) -> tuple[str, ...]:
    return IAM_ACTION.get((service, operation), (f"{service}:{operation}",))


# --- the policies ---------------------------------------------------------------------------


@cache
def table() -> dict:
    return YAML(typ="safe").load((IAM / "actions.yaml").read_text())


def roles() -> list[str]:
    return sorted(table()["roles"])


def policy_text(role: str) -> str:
    return (IAM / f"{role}.json").read_text()


def render(role: str, config, account: str = ACCOUNT) -> dict:
    """The role's policy for one deployment (what `envsubst` does with the same variables)."""
    values = {
        "prefix": config.prefix,
        "bucket": config.bucket_name,
        "region": config.region,
        "account": account,
    }
    return json.loads(string.Template(policy_text(role)).substitute(values))


def statements(policy: dict) -> list[dict]:
    found = policy["Statement"]
    return [found] if isinstance(found, dict) else found


def _list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allowed_actions(policy: dict) -> set[str]:
    return {a for s in statements(policy) if s["Effect"] == "Allow" for a in _list(s["Action"])}


def allows(policy: dict, action: str, resource: str | None = None) -> bool:
    for statement in statements(policy):
        if statement["Effect"] != "Allow" or action not in _list(statement["Action"]):
            continue
        if resource is None or any(
            fnmatch.fnmatchcase(resource, pattern) for pattern in _list(statement["Resource"])
        ):
            return True
    return False


def test_every_role_has_a_policy_and_every_policy_a_role() -> None:
    assert {p.stem for p in IAM.glob("*.json")} == set(roles())


@pytest.mark.parametrize("role", roles())
def test_policies_name_actions_and_resources_no_wider_than_aws_requires(role: str) -> None:
    text = policy_text(role)
    used = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(text)}
    assert used - {None} <= PLACEHOLDERS, f"{role}: unknown placeholders {used - PLACEHOLDERS}"
    policy = json.loads(text)
    assert policy["Version"] == "2012-10-17"
    star_only = set(table().get("star_resources", []))
    for statement in statements(policy):
        assert statement["Effect"] == "Allow", f"{role}: {statement}"
        assert "NotAction" not in statement and "NotResource" not in statement
        for action in _list(statement["Action"]):
            service, _, name = action.partition(":")
            assert service and name and "*" not in action and "?" not in action, (
                f"{role}: action {action!r} is a wildcard"
            )
        resources = _list(statement["Resource"])
        if "*" in resources:
            wide = set(_list(statement["Action"])) - star_only
            assert not wide, f"{role}: {sorted(wide)} granted on every resource"
            assert resources == ["*"]
        for resource in resources:
            assert resource == "*" or "${prefix}" in resource or "${bucket}" in resource, (
                f"{role}: {resource} is not scoped to this deployment's names"
            )


# --- the static scan --------------------------------------------------------------------------


@cache
def operations() -> dict[str, dict[str, str]]:
    """service -> {snake_case operation: OperationName}, for the services figstream uses."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    out = {}
    for service in ("s3", "dynamodb", "sqs", "events", "lambda", "ecs", "logs", "iam", "ecr"):
        model = session.get_service_model(service)
        out[model.signing_name or service] = {xform_name(op): op for op in model.operation_names}
    return out


def _waiter_operation(service: str, waiter: str) -> str | None:
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    try:
        model = session.get_waiter_model(service)
        names = {xform_name(name): name for name in model.waiter_names}
        return model.get_waiter(names[waiter]).operation if waiter in names else None
    except Exception:
        return None


def client_services(tree: ast.AST) -> set[str]:
    """The services a module makes clients for: ``.client("s3")``, ``boto3.client("sqs")``."""
    ops = operations()
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "client"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value in ops
    }


def imported_modules(tree: ast.AST) -> set[str]:
    return {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }


def scan_source(source: str, inherited: set[str] = frozenset()) -> set[tuple[str, str]]:
    """(service, OperationName) of every boto3 operation this module's code can call.
    ``inherited``: services of the modules it imports from (a shared call helper's clients)."""
    tree = ast.parse(source)
    ops = operations()
    services = client_services(tree) | set(inherited)
    # A module that is handed a client (no client in reach) is scanned on every service.
    candidates = services or set(ops)
    found: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            found |= {(s, ops[s][method]) for s in candidates if method in ops[s]}
            literal = (
                node.args[0].value
                if node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                else None
            )
            if method == "get_paginator" and literal:
                found |= {(s, ops[s][literal]) for s in candidates if literal in ops[s]}
            if method == "get_waiter" and literal:
                for s in candidates:
                    operation = _waiter_operation(s, literal)
                    if operation:
                        found.add((s, operation))
        # Operation names as strings (a generic call helper): only on services in reach.
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and services:
            found |= {(s, ops[s][node.value]) for s in services if node.value in ops[s]}
    return found


def module_path(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


@cache
def scanned_modules() -> dict[str, set[tuple[str, str]]]:
    trees = {}
    for root in SCANNED:
        for path in sorted((ROOT / root).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            trees[module.removesuffix(".__init__")] = path.read_text()
    own = {m: client_services(ast.parse(text)) for m, text in trees.items()}
    out = {}
    for module, text in trees.items():
        inherited = set().union(*(own.get(m, set()) for m in imported_modules(ast.parse(text))))
        out[module] = scan_source(text, inherited)
    return out


def actions_of(calls: Iterable[tuple[str, str]]) -> set[str]:
    return {action for service, op in calls for action in iam_actions(service, op)}


def test_the_scan_finds_calls_the_ways_figstream_makes_them() -> None:
    source = """
s3 = config.client("s3")
s3.put_object(Bucket=b, Key=k, Body=b"")
s3.get_paginator("list_objects_v2")
db = config.client("dynamodb")
db.get_waiter("table_exists")
self.call("batch_write_item", RequestItems={})
"""
    assert scan_source(source) == {
        ("s3", "PutObject"),
        ("s3", "ListObjectsV2"),
        ("dynamodb", "DescribeTable"),
        ("dynamodb", "BatchWriteItem"),
    }
    # Plain words are not operations of a service the module has no client for.
    assert scan_source('x = "query"\ny.put(1)\n') == set()
    # A module using another's call helper: its operation names count on that helper's clients.
    assert scan_source('db.call("query", TableName=t)', inherited={"dynamodb"}) == {
        ("dynamodb", "Query")
    }


def test_every_call_in_the_code_is_allowed_by_some_policy() -> None:
    union = set().union(*(allowed_actions(json.loads(policy_text(r))) for r in roles()))
    missing = {
        module: sorted(actions_of(calls) - union)
        for module, calls in scanned_modules().items()
        if actions_of(calls) - union
    }
    assert not missing, f"AWS calls no policy allows: {missing}"


def test_every_module_with_aws_calls_runs_in_a_role() -> None:
    assigned = {m for role in table()["roles"].values() for m in role["modules"]}
    for module in assigned:
        assert module_path(module).exists(), f"actions.yaml names {module}: no such module"
    unassigned = sorted(m for m, calls in scanned_modules().items() if calls and m not in assigned)
    assert not unassigned, f"modules calling AWS that no role in actions.yaml runs: {unassigned}"


@pytest.mark.parametrize("role", roles())
def test_a_policy_allows_nothing_its_role_does_not_call(role: str) -> None:
    spec = table()["roles"][role]
    called = set().union(*(actions_of(scanned_modules().get(m, set())) for m in spec["modules"]))
    external = set(spec.get("external") or {})
    extra = sorted(allowed_actions(json.loads(policy_text(role))) - called - external)
    assert not extra, f"{role} may {extra}, which none of its code calls"


# --- resources, rendered for one deployment -----------------------------------------------


def test_the_rendered_policies_cover_this_deployments_names_and_no_other() -> None:
    from figstream.storage.aws import AwsConfig

    config = AwsConfig(prefix="figprod")
    other = AwsConfig(prefix="figprodx")
    region, account = config.region, ACCOUNT

    def arns(c: AwsConfig) -> dict[str, tuple[str, str]]:
        return {
            "object": ("s3:PutObject", f"arn:aws:s3:::{c.bucket_name}/landing/x.jsonl"),
            "table": (
                "dynamodb:PutItem",
                f"arn:aws:dynamodb:{region}:{account}:table/{c.table_name('claims')}",
            ),
            "queue": (
                "sqs:ReceiveMessage",
                f"arn:aws:sqs:{region}:{account}:{c.queue_name('postings')}",
            ),
            "function": (
                "lambda:InvokeFunction",
                f"arn:aws:lambda:{region}:{account}:function:{c.function_name('validate-batch')}",
            ),
        }

    daemon, other_daemon = render("daemon", config), arns(other)
    for what, (action, arn) in arns(config).items():
        assert allows(daemon, action, arn), f"daemon cannot {action} on its own {what} {arn}"
    for what, (action, arn) in other_daemon.items():
        if what in ("table", "queue", "function"):
            # "<prefix>-*" also matches "<prefix>x-..."? It must not: the dash is in the pattern.
            assert not allows(daemon, action, arn), f"daemon may {action} on {arn}"
    bus = f"arn:aws:events:{region}:{account}:event-bus/{config.event_bus_name}"
    assert allows(render("producer", config), "events:PutEvents", bus)
    lam = render("lambda", config)
    assert allows(lam, "s3:GetObject", f"arn:aws:s3:::{config.bucket_name}/landing/a.jsonl")
    assert not allows(lam, "s3:PutObject", f"arn:aws:s3:::{config.bucket_name}/landing/a.jsonl")
    assert not allows(lam, "s3:GetObject", f"arn:aws:s3:::{config.bucket_name}/tables/x.parquet")


# --- dynamic: each role's code paths against moto server --------------------------------------


# What each role's scenario must at least have called (so a scenario that silently stopped
# calling AWS fails instead of passing vacuously).
EXPECTED = {
    "deployer": {("dynamodb", "CreateTable"), ("events", "PutRule"), ("sqs", "CreateQueue")},
    "producer": {("events", "PutEvents")},
    "daemon": {
        ("sqs", "ReceiveMessage"),
        ("sqs", "DeleteMessageBatch"),
        ("s3", "PutObject"),
        ("dynamodb", "PutItem"),
        ("dynamodb", "BatchGetItem"),
    },
    "run-worker": {("s3", "GetObject"), ("dynamodb", "PutItem")},
    "lambda": {("s3", "GetObject"), ("s3", "PutObject")},
}


def _check_recorded(role: str, config, recorded: dict[tuple[str, str], int]) -> None:
    missing = EXPECTED[role] - set(recorded)
    assert not missing, f"{role}: the scenario never called {sorted(missing)}"
    policy = render(role, config)
    denied = sorted(
        f"{service}:{op} -> {action}"
        for (service, op) in recorded
        for action in iam_actions(service, op)
        if not allows(policy, action)
    )
    assert not denied, f"{role} called what its policy does not allow: {denied}"


def _records(n: int = 24) -> list[bytes]:
    from figstream.ingest.generate import EventStream

    # The first n of a day of 12n: about two hours, so a run or two, not a range over the day.
    day = EventStream(dt.date(2026, 11, 1), days=1, events_per_day=12 * n, seed=3, bad_rate=0.1)
    return [record.line for record in day][:n]


@pytest.fixture
def deployed(aws_config):
    """The infrastructure of this test's prefix, made as the deployer makes it."""
    from figstream.cli.aws import setup
    from figstream.ingest.routing import Router
    from figstream.settings import routing_path
    from figstream.storage.aws import CALLS

    CALLS.reset()
    setup(aws_config, Router.from_file(routing_path()))
    _check_recorded("deployer", aws_config, CALLS.calls())
    return aws_config


def test_each_role_calls_only_what_its_policy_allows(deployed, tmp_path, monkeypatch) -> None:
    import dagster as dg

    from figstream.ingest.eventbridge import EventBridgePublisher
    from figstream.ingest.routing import Router
    from figstream.ingest.sqs_intake import drain_queue
    from figstream.settings import routing_path
    from figstream.storage.aws import CALLS
    from figstream.storage.s3_objects import S3ObjectStore
    from tests.streaming_harness import LEDGER

    config = deployed
    monkeypatch.setenv("FIGSTREAM_HOME", str(tmp_path / "home"))
    # moto cannot run Lambda code: the ingest step validates in process here, and the handler's
    # own calls are the lambda role's scenario below (its Invoke is the daemon's external).
    monkeypatch.setenv("FIGSTREAM_LAMBDA_INVOKER", "in_process")

    CALLS.reset()
    EventBridgePublisher(config, producer="iam-test").publish(_records())
    _check_recorded("producer", config, CALLS.calls())

    # daemon: the sensors drain the queues into landing batches, then streaming runs.
    CALLS.reset()
    objects = S3ObjectStore(config)
    landed = []
    for stream in Router.from_file(routing_path()).streams:
        report = drain_queue(config, stream, objects, wait_seconds=1)
        landed += [report.batch_key] if getattr(report, "batch_key", None) else []
    from assets.streaming import build_streaming_assets, stream_jobs
    from figstream.settings import streaming_settings
    from resources.profiles import resources_for
    from sensors.streams import stream_sensor

    jobs = stream_jobs()
    settings = streaming_settings()
    defs = dg.Definitions(
        assets=build_streaming_assets(LEDGER, settings),
        jobs=list(jobs.values()),
        sensors=[
            stream_sensor(s, jobs[s], jobs["stats"], settings) for s in ("postings", "boards")
        ],
        resources=resources_for("aws", LEDGER),
    )
    instance = dg.DagsterInstance.ephemeral()
    requests = []
    for stream in STREAMS:
        with dg.build_sensor_context(
            instance=instance, resources=resources_for("aws", LEDGER)
        ) as context:
            result = defs.get_sensor_def(f"{stream}_sensor")(context)
        requests += result.run_requests if isinstance(result, dg.SensorResult) else []
    assert requests, "the stream sensors requested no run for the landed events"
    for request in requests:
        job = defs.resolve_job_def(request.job_name)
        assert job.execute_in_process(
            run_config=request.run_config or {},
            partition_key=request.partition_key,
            instance=instance,
            tags=request.tags,
        ).success
    _check_recorded("daemon", config, CALLS.calls())

    # run worker: a backfill of one touched hour (what an ECS task runs).
    CALLS.reset()
    request = requests[0]
    partition = request.partition_key or request.tags["dagster/asset_partition_range_start"]
    job = defs.resolve_job_def(request.job_name)
    assert job.execute_in_process(partition_key=partition, instance=instance).success
    _check_recorded("run-worker", config, CALLS.calls())

    # lambda: the validate-batch handler on a landed batch of the hour.
    from lambdas.validate_batch import validate

    CALLS.reset()
    hour = next(
        r.partition_key or r.tags["dagster/asset_partition_range_start"]
        for r in requests
        if r.tags.get("figstream/stream") == "postings"
    )
    validate(
        {
            "stream": "postings",
            "partition": hour,
            "first_partition": "2026-11-01-00:00",
            "routing": routing_path().read_text(),
            "batch_keys": [k for k in landed if k],
            "objects": {"kind": "s3", "bucket": config.bucket_name},
        }
    )
    _check_recorded("lambda", config, CALLS.calls())
