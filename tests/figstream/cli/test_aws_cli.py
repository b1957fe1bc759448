"""``figstream aws setup`` over moto server: the plan, the resources it makes from the repo's
config, a second run that changes nothing, hand edits put back, and its clear errors."""

from __future__ import annotations

import json
import subprocess

import pytest

from figstream.cli.aws import MAX_RECEIVE_COUNT
from figstream.cli.main import main
from figstream.ingest.eventbridge import raw_pattern
from figstream.ingest.routing import Router
from figstream.settings import routing_path
from figstream.storage import dynamo_state
from tests.conftest import BIN, ROOT


def run(capsys, *args: str) -> tuple[int, list[str], str]:
    code = main(["aws", "setup", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_setup_dry_run_then_setup_then_nothing_to_change(aws_config, capsys):
    config = aws_config
    code, planned, err = run(capsys, "--dry-run")
    assert code == 0 and all(line.startswith("would: ") for line in planned)
    assert "change(s) planned" in err
    assert config.bucket_name not in [
        b["Name"] for b in config.client("s3").list_buckets()["Buckets"]
    ]
    assert config.client("sqs").list_queues(QueueNamePrefix=config.prefix).get("QueueUrls") is None

    code, made, err = run(capsys)
    assert code == 0 and all(line.startswith("did: ") for line in made)
    assert [line.removeprefix("would: ") for line in planned if "create" in line] == [
        line.removeprefix("did: ") for line in made if "create" in line
    ]
    assert "change(s) made" in err

    code, again, err = run(capsys)
    assert (code, again) == (0, [])
    assert "nothing to change" in err
    code, dry_again, _ = run(capsys, "--dry-run")
    assert (code, dry_again) == (0, [])


def test_setup_builds_what_the_routing_file_says(aws_config, capsys):
    config = aws_config
    assert run(capsys)[0] == 0
    router = Router.from_file(routing_path())
    events, sqs = config.client("events"), config.client("sqs")
    bus = config.event_bus_name
    for stream, spec in router.streams.items():
        rule = events.describe_rule(Name=config.rule_name(stream), EventBusName=bus)
        assert json.loads(rule["EventPattern"]) == spec.pattern.source  # as written
        raw = events.describe_rule(Name=config.rule_name(stream) + "-raw", EventBusName=bus)
        assert json.loads(raw["EventPattern"]) == raw_pattern(stream)
        url = sqs.get_queue_url(QueueName=config.queue_name(stream))["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        dlq_url = sqs.get_queue_url(QueueName=config.queue_name(stream, dlq=True))["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == dlq_arn["Attributes"]["QueueArn"]
        assert int(redrive["maxReceiveCount"]) == MAX_RECEIVE_COUNT
        [statement] = json.loads(attributes["Policy"])["Statement"]
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage"
        assert sorted(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == sorted(
            [rule["Arn"], raw["Arn"]]
        )
        for name in (config.rule_name(stream), config.rule_name(stream) + "-raw"):
            [target] = events.list_targets_by_rule(Rule=name, EventBusName=bus)["Targets"]
            assert target["Arn"] == attributes["QueueArn"]
            assert target["DeadLetterConfig"] == {"Arn": redrive["deadLetterTargetArn"]}
        dlq_policy = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["Policy"])
        [statement] = json.loads(dlq_policy["Attributes"]["Policy"])["Statement"]
        assert statement["Resource"] == redrive["deadLetterTargetArn"]
        assert sorted(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == sorted(
            [rule["Arn"], raw["Arn"]]
        )
    # Paged: the emulator holds other tests' tables too (100 names a page).
    pages = config.client("dynamodb").get_paginator("list_tables").paginate()
    tables = [name for page in pages for name in page["TableNames"]]
    assert {r["TableName"] for r in dynamo_state.table_definitions(config)} <= set(tables)
    s3 = config.client("s3")
    assert s3.get_bucket_versioning(Bucket=config.bucket_name)["Status"] == "Enabled"


def test_hand_edits_are_put_back_and_stale_rules_reported(aws_config, capsys):
    config = aws_config
    assert run(capsys)[0] == 0
    sqs, events = config.client("sqs"), config.client("events")
    url = sqs.get_queue_url(QueueName=config.queue_name("postings"))["QueueUrl"]
    policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]
    # The Policy sent along: moto drops one the call does not name, AWS would keep it.
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "5", **policy})
    events.put_rule(
        Name=config.rule_name("boards"),
        EventBusName=config.event_bus_name,
        EventPattern=json.dumps({"source": ["elsewhere"]}),
    )
    events.put_rule(
        Name=f"{config.prefix}-retired",
        EventBusName=config.event_bus_name,
        EventPattern=json.dumps({"source": ["x"]}),
    )
    code, changes, _ = run(capsys)
    assert code == 0
    assert changes == [
        f"did: set VisibilityTimeout on queue {config.queue_name('postings')}",
        f"did: put rule {config.rule_name('boards')} (pattern or state differed)",
        f"note: rule {config.prefix}-retired on bus {config.event_bus_name} matches no stream "
        "of the routing file; it was left in place (delete it by hand if the stream is gone)",
    ]
    assert (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"][
            "VisibilityTimeout"
        ]
        == "120"
    )
    assert [line for line in run(capsys)[1] if not line.startswith("note:")] == []


def test_names_over_aws_limits_are_refused_before_anything_is_made(aws_config, capsys, tmp_path,
                                                                   monkeypatch):  # fmt: skip
    routing = tmp_path / "routing.yaml"
    long_name = "s" * 40
    routing.write_text(
        "version: 1\ndefault_stream: " + long_name + "\nstreams:\n  " + long_name + ":\n"
        "    pattern:\n      detail-type: [x]\n"
    )
    monkeypatch.setenv("FIGSTREAM_AWS_PREFIX", "p" * 30)
    code, out, err = run(capsys, "--routing", str(routing))
    assert (code, out) == (1, [])
    assert "over EventBridge's 64: use a shorter FIGSTREAM_AWS_PREFIX" in err
    assert aws_config.client("s3").list_buckets()["Buckets"] == [] or all(
        not b["Name"].startswith("p" * 30)
        for b in aws_config.client("s3").list_buckets()["Buckets"]
    )


def test_an_unreadable_routing_file_and_an_endpoint_nobody_listens_on(
    aws_config, capsys, tmp_path, monkeypatch
):
    code, _, err = run(capsys, "--routing", str(tmp_path / "missing.yaml"))
    assert code == 1 and "cannot read the routing file" in err
    from tests.conftest import free_port

    monkeypatch.setenv("FIGSTREAM_AWS_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("FIGSTREAM_AWS_MAX_ATTEMPTS", "1")
    code, _, err = run(capsys)
    assert code == 1 and "figstream aws setup: error: Could not connect" in err


def test_the_console_script_runs_the_dry_run(aws_config):
    import os

    from tests.aws_server import aws_environ

    env = {**os.environ, **aws_environ(aws_config)}
    done = subprocess.run(
        [str(BIN / "figstream"), "aws", "setup", "--dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"would: create event bus {aws_config.event_bus_name}" in done.stdout.splitlines()


@pytest.mark.parametrize("args", [["aws"], ["aws", "nope"]])
def test_usage_errors_exit_2(args):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2


def test_status_reports_depths_and_exits_3_on_dead_letters(aws_config, capsys):
    from figstream.ingest.sqs_intake import queue_url

    assert main(["aws", "status"]) == 1
    assert "figstream aws setup" in capsys.readouterr().err  # no queue yet: says the fix
    assert run(capsys)[0] == 0
    sqs = aws_config.client("sqs")
    for body in ("a", "b"):
        sqs.send_message(QueueUrl=queue_url(aws_config, "postings"), MessageBody=body)
    sqs.receive_message(QueueUrl=queue_url(aws_config, "postings"), MaxNumberOfMessages=1)
    sqs.send_message(QueueUrl=queue_url(aws_config, "boards", dlq=True), MessageBody="poison")
    assert main(["aws", "status"]) == 3
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows == {"postings": ["1", "1", "0"], "boards": ["0", "0", "1"]}
    assert "dead-letter queue(s) of boards hold messages" in err
