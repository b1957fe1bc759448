"""``figstream aws setup`` and ``status``: the aws profile's infrastructure, made from the repo's
own config, and the state of the streams' queues.

One command, idempotent, against the emulator (``FIGSTREAM_AWS_ENDPOINT``) or a real account
(the environment's credentials); every name comes from ``AwsConfig`` (one prefix):

* the bucket (``config.bucket_name``), versioned, with a lifecycle that expires old versions
  and aborts abandoned multipart uploads (:func:`ensure_bucket`);
* the custom event bus ``config.event_bus_name``;
* per stream of ``platform/routing.yaml`` (``FIGSTREAM_ROUTING``): a dead-letter queue; the
  stream's queue with a redrive policy to it (``maxReceiveCount`` :data:`MAX_RECEIVE_COUNT`) and
  a queue policy letting the stream's rules (only those) send to it; the rule
  ``config.rule_name(stream)`` with the stream's pattern as written (routing.yaml's patterns
  match the EventBridge form of an event, so they are EventBridge patterns as they stand);
  a second rule ``<rule>-raw`` for the records that travel in the raw form
  (:func:`figstream.ingest.eventbridge.raw_pattern`); each rule targets the queue, with the
  DLQ as the target's dead-letter queue (an event EventBridge cannot deliver is parked there,
  not dropped), and both queues' policies let the two rules send;
* the DynamoDB tables of the state and dead-letter stores
  (:func:`figstream.storage.dynamo_state.ensure_tables`).

Each resource is read first and written only if it is missing or differs, so a second run
changes nothing and says so. ``--dry-run`` prints the plan and writes nothing. A rule on the
bus under the prefix that no stream needs any more is reported, never deleted.

``figstream aws status`` prints each stream's queue depth, messages in flight and dead-letter
queue depth, and exits 3 when a dead-letter queue holds messages (a poison message, reported).

Bad inputs tried (see ``tests/figstream/cli/test_aws_cli.py``): names over AWS's limits (a long
prefix with a long stream name), an unreadable routing file, an endpoint nothing listens on,
a queue whose attributes were changed by hand (put back), a rule whose pattern was changed by
hand (put back), ``status`` before setup (no queue: exit 1 naming the fix).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MAX_RECEIVE_COUNT = 5  # receives before SQS moves a message to the stream's DLQ
VISIBILITY_TIMEOUT = 120  # seconds a received message stays hidden: above a sensor tick
RETENTION = 4 * 24 * 3600  # the stream queue keeps a message 4 days (SQS's default)
DLQ_RETENTION = 14 * 24 * 3600  # the dead-letter queue keeps it 14 days (SQS's maximum)
MAX_RULE_NAME, MAX_QUEUE_NAME = 64, 80
TARGET_ID = "sqs"
# Days before an old object version (and an abandoned multipart upload) is removed.
NONCURRENT_DAYS = 1
_MISSING_CODES = {"404", "NoSuchBucket", "NotFound"}


def add_aws(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "aws",
        help="the aws profile's infrastructure (bucket, event bus, rules, queues, tables)",
        description="Tools for the aws profile; names come from FIGSTREAM_AWS_PREFIX.",
    )
    commands = parser.add_subparsers(dest="aws_command", required=True, metavar="COMMAND")
    setup = commands.add_parser(
        "setup",
        help="create or update the infrastructure from the repo's config (idempotent)",
        description=(
            "Create what is missing and put back what differs: the bucket, the event bus, "
            "per stream of the routing file its rules, queue and dead-letter queue, and the "
            "DynamoDB tables. Prints one line per change; a second run changes nothing."
        ),
    )
    setup.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    setup.add_argument(
        "--routing",
        type=Path,
        default=None,
        help="routing file (default: $FIGSTREAM_ROUTING or platform/routing.yaml)",
    )
    setup.set_defaults(handler=_run_setup)
    status = commands.add_parser(
        "status",
        help="each stream's queue depth, messages in flight and dead-letter queue depth",
        description=(
            "Per stream of the routing file: messages waiting in its queue, in flight (received, "
            "not yet deleted) and parked in its dead-letter queue. Exits 3 when a dead-letter "
            "queue holds messages, so a check can alert on poison messages."
        ),
    )
    status.add_argument("--routing", type=Path, default=None, help="routing file")
    status.set_defaults(handler=_run_status)


def _run_setup(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from figstream.ingest.routing import Router, RoutingError
    from figstream.settings import routing_path
    from figstream.storage.aws import AwsConfig

    try:
        config = AwsConfig.from_env()
        router = Router.from_file(args.routing or routing_path())
        changes, notes = setup(config, router, dry_run=args.dry_run)
    except (ValueError, RoutingError, ClientError, BotoCoreError) as exc:
        print(f"figstream aws setup: error: {exc}", file=sys.stderr)
        return 1
    where = config.endpoint_url or f"AWS {config.region}"
    verb = "would" if args.dry_run else "did"
    for change in changes:
        print(f"{verb}: {change}")
    for note in notes:
        print(f"note: {note}")
    if changes:
        print(f"{len(changes)} change(s) {'planned' if args.dry_run else 'made'} on {where} "
              f"(prefix {config.prefix})", file=sys.stderr)  # fmt: skip
    else:
        print(f"up to date on {where} (prefix {config.prefix}): nothing to change",
              file=sys.stderr)  # fmt: skip
    return 0


def queue_status(config: Any, stream: str) -> dict[str, int]:
    """``waiting``, ``in_flight`` and ``dead_letters`` of a stream's queues (SQS's counts)."""
    from figstream.ingest.sqs_intake import queue_url

    sqs = config.client("sqs")
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    held = sqs.get_queue_attributes(QueueUrl=queue_url(config, stream), AttributeNames=names)
    dlq = sqs.get_queue_attributes(
        QueueUrl=queue_url(config, stream, dlq=True), AttributeNames=names[:1]
    )
    return {
        "waiting": int(held["Attributes"][names[0]]),
        "in_flight": int(held["Attributes"][names[1]]),
        "dead_letters": int(dlq["Attributes"][names[0]]),
    }


def _run_status(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from figstream.ingest.routing import Router, RoutingError
    from figstream.settings import routing_path
    from figstream.storage.aws import AwsConfig

    try:
        config = AwsConfig.from_env()
        router = Router.from_file(args.routing or routing_path())
        rows = {stream: queue_status(config, stream) for stream in router.streams}
    except (ValueError, LookupError, RoutingError, ClientError, BotoCoreError) as exc:
        print(f"figstream aws status: error: {exc}", file=sys.stderr)
        return 1
    print(f"{'stream':<20} {'waiting':>9} {'in flight':>9} {'dead letters':>12}")
    for stream, row in rows.items():
        print(f"{stream:<20} {row['waiting']:>9,} {row['in_flight']:>9,} "
              f"{row['dead_letters']:>12,}")  # fmt: skip
    poisoned = [s for s, row in rows.items() if row["dead_letters"]]
    if poisoned:
        print(f"dead-letter queue(s) of {', '.join(poisoned)} hold messages SQS gave up on after "
              f"{MAX_RECEIVE_COUNT} receives: inspect them there", file=sys.stderr)  # fmt: skip
        return 3
    return 0


def check_names(config: Any, streams: list[str]) -> None:
    """AWS's name limits, checked before anything is created."""
    for stream in streams:
        for name in (config.rule_name(stream), config.rule_name(stream) + "-raw"):
            if len(name) > MAX_RULE_NAME:
                raise ValueError(
                    f"rule name {name!r} is {len(name)} characters, over EventBridge's "
                    f"{MAX_RULE_NAME}: use a shorter FIGSTREAM_AWS_PREFIX or stream name"
                )
        name = config.queue_name(stream, dlq=True)
        if len(name) > MAX_QUEUE_NAME:
            raise ValueError(
                f"queue name {name!r} is {len(name)} characters, over SQS's {MAX_QUEUE_NAME}: "
                "use a shorter FIGSTREAM_AWS_PREFIX or stream name"
            )


def setup(
    config: Any, router: Any, dry_run: bool = False, tables: bool = True
) -> tuple[list[str], list[str]]:
    """Bring the infrastructure to what ``config`` and ``router`` describe. Returns the changes
    made (or, dry, planned), one line each, and notes (stale rules). ``tables=False`` leaves
    the DynamoDB tables out (tests of the intake alone)."""
    streams = list(router.streams)
    check_names(config, streams)
    changes = ensure_bucket(config, dry_run=dry_run)
    changes += _ensure_bus(config, dry_run)
    for stream in streams:
        changes += _ensure_stream(config, stream, router.streams[stream].pattern.source, dry_run)
    if tables:
        changes += ensure_tables(config, dry_run)
    return changes, _stale_rules(config, streams)


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _ensure_bus(config: Any, dry_run: bool) -> list[str]:
    events = config.client("events")
    try:
        events.describe_event_bus(Name=config.event_bus_name)
        return []
    except events.exceptions.ResourceNotFoundException:
        pass
    if not dry_run:
        events.create_event_bus(Name=config.event_bus_name)
    return [f"create event bus {config.event_bus_name}"]


def _ensure_queue(config: Any, name: str, wanted: dict[str, str], dry_run: bool) -> tuple:
    """(changes, queue url or None when dry and missing, queue arn or None)."""
    sqs = config.client("sqs")
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        if dry_run:
            return [f"create queue {name}"], None, None
        url = sqs.create_queue(QueueName=name, Attributes=wanted)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return [f"create queue {name}"], url, arn["Attributes"]["QueueArn"]
    held = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    differ = {k: v for k, v in wanted.items() if not _same_attribute(k, held.get(k), v)}
    if differ and not dry_run:
        # moto's SetQueueAttributes drops a Policy the call does not name (AWS keeps it):
        # sending the held one along keeps it on both.
        kept = {"Policy": held["Policy"]} if held.get("Policy") and "Policy" not in wanted else {}
        sqs.set_queue_attributes(QueueUrl=url, Attributes={**kept, **differ})
    changes = [f"set {', '.join(sorted(differ))} on queue {name}"] if differ else []
    return changes, url, held["QueueArn"]


def _same_attribute(name: str, held: str | None, wanted: str) -> bool:
    if held is None:
        return False
    if name in ("RedrivePolicy", "Policy"):
        # AWS hands JSON back reformatted (and maxReceiveCount as a number or a string).
        return _normal(json.loads(held)) == _normal(json.loads(wanted))
    return str(held) == str(wanted)


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_normal(v) for v in value]
        return items[0] if len(items) == 1 else sorted(items, key=json.dumps)
    return str(value)


def _ensure_rule(
    config: Any,
    name: str,
    pattern: dict,
    queue_arn: str | None,
    dlq_arn: str | None,
    dry_run: bool,
) -> tuple[list[str], str | None]:
    """(changes, rule arn or None when dry and missing). The target is the stream's queue; an
    event EventBridge cannot deliver there (the queue gone, its policy wrong, a message over
    SQS's size limit) goes to the stream's DLQ after EventBridge's retries, not nowhere."""
    events, bus = config.client("events"), config.event_bus_name
    changes: list[str] = []
    arn = None
    try:
        held = events.describe_rule(Name=name, EventBusName=bus)
        arn = held["Arn"]
        if json.loads(held.get("EventPattern") or "null") != pattern or held["State"] != "ENABLED":
            changes.append(f"put rule {name} (pattern or state differed)")
    except events.exceptions.ResourceNotFoundException:
        changes.append(f"create rule {name} on bus {bus}: {json.dumps(pattern)}")
    if changes and not dry_run:
        arn = events.put_rule(
            Name=name, EventBusName=bus, EventPattern=json.dumps(pattern), State="ENABLED"
        )["RuleArn"]
    targets = []
    if arn is not None:
        targets = events.list_targets_by_rule(Rule=name, EventBusName=bus)["Targets"]
    target = {"Id": TARGET_ID, "Arn": queue_arn, "DeadLetterConfig": {"Arn": dlq_arn}}
    if not any(
        t["Id"] == TARGET_ID
        and t["Arn"] == queue_arn
        and t.get("DeadLetterConfig", {}).get("Arn") == dlq_arn
        for t in targets
    ):
        changes.append(f"target rule {name} at queue {queue_arn or '(new)'}, undeliverable "
                       f"events to {dlq_arn or '(new)'}")  # fmt: skip
        if not dry_run:
            events.put_targets(Rule=name, EventBusName=bus, Targets=[target])
    return changes, arn


def queue_policy(queue_arn: str, rule_arns: list[str]) -> dict[str, Any]:
    """EventBridge may send to the queue, for the stream's own rules only."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "figstream-stream-rules",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arns}},
            }
        ],
    }


def _ensure_stream(config: Any, stream: str, pattern: dict, dry_run: bool) -> list[str]:
    from figstream.ingest.eventbridge import raw_pattern

    dlq_name, name = config.queue_name(stream, dlq=True), config.queue_name(stream)
    changes, _, dlq_arn = _ensure_queue(
        config, dlq_name, {"MessageRetentionPeriod": str(DLQ_RETENTION)}, dry_run
    )
    wanted = {
        "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
        "MessageRetentionPeriod": str(RETENTION),
    }
    if dlq_arn is not None:
        wanted["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
        )
    else:
        changes.append(f"redrive queue {name} to {dlq_name} after {MAX_RECEIVE_COUNT} receives")
    more, _, queue_arn = _ensure_queue(config, name, wanted, dry_run)
    changes += more
    rule_arns = []
    for rule, rule_pattern in (
        (config.rule_name(stream), pattern),
        (config.rule_name(stream) + "-raw", raw_pattern(stream)),
    ):
        more, arn = _ensure_rule(config, rule, rule_pattern, queue_arn, dlq_arn, dry_run)
        changes += more
        rule_arns.append(arn)
    for queue, arn in ((name, queue_arn), (dlq_name, dlq_arn)):
        if arn is None or None in rule_arns:
            changes.append(f"allow rules {config.rule_name(stream)}(-raw) to send to {queue}")
            continue
        policy = {"Policy": json.dumps(queue_policy(arn, rule_arns))}
        changes += _ensure_queue(config, queue, policy, dry_run)[0]
    return changes


def ensure_tables(config: Any, dry_run: bool) -> list[str]:
    """The DynamoDB tables of the state and dead-letter stores, with TTL on the claims."""
    from figstream.storage import dynamo_state

    dynamodb = config.client("dynamodb")
    changes = []
    for request in dynamo_state.table_definitions(config):
        try:
            dynamodb.describe_table(TableName=request["TableName"])
        except dynamodb.exceptions.ResourceNotFoundException:
            changes.append(f"create table {request['TableName']}")
    missing = {c.removeprefix("create table ") for c in changes}
    for name, attribute in dynamo_state.ttl_settings(config).items():
        if name in missing:
            changes.append(f"enable TTL on {name}.{attribute}")
            continue
        held = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if held.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            changes.append(f"enable TTL on {name}.{attribute}")
    if changes and not dry_run:
        dynamo_state.ensure_tables(config)
    return changes


def _stale_rules(config: Any, streams: list[str]) -> list[str]:
    events = config.client("events")
    pages = events.get_paginator("list_rules").paginate(
        EventBusName=config.event_bus_name, NamePrefix=config.prefix
    )
    try:
        rules = [rule for page in pages for rule in page.get("Rules", [])]
    except events.exceptions.ResourceNotFoundException:
        return []  # a dry run before the bus exists
    wanted = {config.rule_name(s) for s in streams}
    wanted |= {name + "-raw" for name in wanted}
    return [
        f"rule {rule['Name']} on bus {config.event_bus_name} matches no stream of the routing "
        "file; it was left in place (delete it by hand if the stream is gone)"
        for rule in rules
        if rule["Name"].startswith(config.prefix + "-") and rule["Name"] not in wanted
    ]


def bucket_settings(config: Any) -> dict[str, Any]:
    """What :func:`ensure_bucket` applies: versioning on, and a lifecycle that removes old
    versions and abandoned multipart uploads after :data:`NONCURRENT_DAYS`."""
    return {
        "Versioning": {"Status": "Enabled"},
        "Lifecycle": {
            "Rules": [
                {
                    "ID": "figstream-old-versions-and-uploads",
                    "Filter": {"Prefix": ""},
                    "Status": "Enabled",
                    "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": NONCURRENT_DAYS},
                }
            ]
        },
    }


def ensure_bucket(config: Any, dry_run: bool = False) -> list[str]:
    """Create the bucket if it is missing and apply :func:`bucket_settings`; idempotent.
    Returns what was (or, dry, would be) changed, one line each."""
    s3 = config.client("s3")
    bucket = config.bucket_name
    changes: list[str] = []
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError as exc:
        if _code(exc) not in _MISSING_CODES:
            raise
        changes.append(f"create bucket {bucket}")
        if not dry_run:
            args: dict[str, Any] = {"Bucket": bucket}
            if config.region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": config.region}
            s3.create_bucket(**args)
    wanted = bucket_settings(config)
    created = bool(changes)
    versioning = {} if created else s3.get_bucket_versioning(Bucket=bucket)
    if versioning.get("Status") != "Enabled":
        changes.append(f"enable versioning on bucket {bucket}")
        if not dry_run:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=wanted["Versioning"])
    rules: list[dict[str, Any]] = []
    if not created:
        try:
            rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
        except s3.exceptions.ClientError as exc:
            if _code(exc) != "NoSuchLifecycleConfiguration":
                raise
    wanted_rule = wanted["Lifecycle"]["Rules"][0]
    if not any(r.get("ID") == wanted_rule["ID"] for r in rules):
        changes.append(f"put lifecycle rule {wanted_rule['ID']} on bucket {bucket}")
        if not dry_run:
            kept = [r for r in rules if r.get("ID") != wanted_rule["ID"]]
            s3.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": [*kept, wanted_rule]}
            )
    return changes
