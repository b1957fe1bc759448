"""SubprocessLambdaClient answers as Lambda's Invoke does, and PipesLambdaClient runs on it.

Bad inputs tried: an unknown function, an event that is not JSON, an event over 6 MB, an
asynchronous invocation, a handler that raises, one that never returns, one whose module does not
import, one that kills its runtime, a Pipes message stream longer than the 4 KB log tail, an
unknown invoker.
"""

import base64
import json
import textwrap
from pathlib import Path

import dagster as dg
import pytest
from botocore.exceptions import ClientError
from dagster_aws.pipes import PipesLambdaClient

from resources.lambda_invoke import LOG_TAIL_BYTES, LambdaValidationResource, SubprocessLambdaClient

HANDLERS = textwrap.dedent(
    """
    import os, sys, time
    from dagster_pipes import PipesContext, PipesMappingParamsLoader, open_dagster_pipes

    def echo(event, context):
        print("hello from", context.function_name, context.aws_request_id)
        assert context.get_remaining_time_in_millis() > 0
        return {"got": event, "memory": context.memory_limit_in_mb}

    def fails(event, context):
        raise ValueError("no such batch: landing/x.jsonl")

    def sleeps(event, context):
        time.sleep(30)

    def dies(event, context):
        os._exit(3)

    def chatty(event, context):
        sys.stdout.write("x" * 10_000 + "\\n")
        return "done"

    def messages(event, context):
        PipesContext._instance = None
        with open_dagster_pipes(params_loader=PipesMappingParamsLoader(event)) as pipes:
            for i in range(event["count"]):
                pipes.report_custom_message({"n": i, "pad": "p" * 60})
        return "sent"
    """
)


@pytest.fixture
def client(tmp_path: Path, monkeypatch) -> SubprocessLambdaClient:
    (tmp_path / "fake_handlers.py").write_text(HANDLERS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    names = ("echo", "fails", "sleeps", "dies", "chatty", "messages")
    handlers = {name: f"fake_handlers:{name}" for name in names}
    handlers["broken"] = "no_such_module:handler"
    return SubprocessLambdaClient(handlers, timeout_s=20, memory_mb=256)


def log_of(response: dict) -> str:
    return base64.b64decode(response["LogResult"]).decode()


def test_a_handler_answers_with_its_payload_and_the_log_tail(client) -> None:
    response = client.invoke(FunctionName="echo", Payload=json.dumps({"a": 1}), LogType="Tail")
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    assert json.loads(response["Payload"].read()) == {"got": {"a": 1}, "memory": "256"}
    log = log_of(response)
    assert log.startswith("START RequestId: ") and "hello from echo" in log
    assert log.splitlines()[-2].startswith("END RequestId: ")
    assert "Memory Size: 256 MB" in log.splitlines()[-1]
    assert "LogResult" not in client.invoke(FunctionName="echo", Payload=b"{}")


def test_a_function_arn_names_the_function_too(client) -> None:
    for arn in ("arn:aws:lambda:us-east-1:123456789012:function:echo",
                "arn:aws:lambda:us-east-1:123456789012:function:echo:live"):  # fmt: skip
        assert client.invoke(FunctionName=arn, Payload="{}")["StatusCode"] == 200


def test_the_log_result_is_only_the_last_4_kb(client) -> None:
    log = base64.b64decode(client.invoke(FunctionName="chatty", LogType="Tail")["LogResult"])
    assert len(log) == LOG_TAIL_BYTES
    assert not log.startswith(b"START") and log.rstrip().splitlines()[-1].startswith(b"REPORT")


def test_a_handler_that_raises_is_a_function_error(client) -> None:
    response = client.invoke(FunctionName="fails", Payload="{}", LogType="Tail")
    assert response["StatusCode"] == 200 and response["FunctionError"] == "Unhandled"
    error = json.loads(response["Payload"].read())
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "no such batch: landing/x.jsonl"
    assert error["stackTrace"] and error["requestId"]
    assert "[ERROR] ValueError: no such batch" in log_of(response)


@pytest.mark.parametrize(
    ("function", "error_type", "message"),
    [
        ("broken", "Runtime.ImportModuleError", "Unable to import module"),
        ("dies", "Runtime.ExitError", "exit status 3"),
    ],
)
def test_a_runtime_that_cannot_run_the_handler_is_a_function_error(
    client, function, error_type, message
) -> None:
    response = client.invoke(FunctionName=function, Payload="{}")
    error = json.loads(response["Payload"].read())
    assert response["FunctionError"] == "Unhandled" and error["errorType"] == error_type
    assert message in error["errorMessage"]


def test_a_handler_past_its_timeout_is_killed(client) -> None:
    client.timeout_s = 1.0
    response = client.invoke(FunctionName="sleeps", Payload="{}", LogType="Tail")
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read()) == {
        "errorMessage": "Task timed out after 1.00 seconds"
    }
    assert "Task timed out" in log_of(response)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"FunctionName": "nope"}, "ResourceNotFoundException"),
        ({"FunctionName": "echo", "Payload": "{not json"}, "InvalidRequestContentException"),
        ({"FunctionName": "echo", "Payload": b'"' + b"x" * (6 << 20) + b'"'},
         "RequestTooLargeException"),
        ({"FunctionName": "echo", "InvocationType": "Event"}, "InvalidParameterValueException"),
    ],
)  # fmt: skip
def test_a_bad_request_raises_lambdas_client_error(client, kwargs, code) -> None:
    with pytest.raises(ClientError) as raised:
        client.invoke(**kwargs)
    assert raised.value.response["Error"]["Code"] == code


def test_a_dry_run_runs_nothing(client) -> None:
    assert client.invoke(FunctionName="sleeps", InvocationType="DryRun")["StatusCode"] == 204


def error_text(result: dg.ExecuteInProcessResult) -> str:
    """The step failure's message with its causes."""
    error, parts = result.get_step_failure_events()[0].step_failure_data.error, []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def _pipes_asset(client: SubprocessLambdaClient, function: str, event: dict):
    @dg.asset
    def through_lambda(context: dg.AssetExecutionContext):
        invocation = PipesLambdaClient(client=client).run(
            context=context, function_name=function, event=event
        )
        messages = invocation.get_custom_messages()
        return dg.MaterializeResult(metadata={"messages": len(messages)})

    return through_lambda


def test_pipes_messages_beyond_the_log_tail_are_lost_as_on_lambda(client) -> None:
    few = dg.materialize([_pipes_asset(client, "messages", {"count": 5})])
    assert few.asset_materializations_for_node("through_lambda")[0].metadata[
        "messages"
    ] == dg.IntMetadataValue(5)
    many = dg.materialize([_pipes_asset(client, "messages", {"count": 200})])
    kept = many.asset_materializations_for_node("through_lambda")[0].metadata["messages"].value
    assert 20 < kept < 60  # ~100-byte messages, 4 KB of tail


def test_pipes_lambda_client_fails_the_step_with_the_handlers_error(client) -> None:
    result = dg.materialize([_pipes_asset(client, "fails", {})], raise_on_error=False)
    assert not result.success
    error = error_text(result)
    assert "Lambda Function Error (Unhandled)" in error
    assert "no such batch: landing/x.jsonl" in error


def test_an_unknown_invoker_is_refused() -> None:
    resource = LambdaValidationResource(invoker="carrier-pigeon")
    with pytest.raises(ValueError, match="carrier-pigeon"):
        resource.validator(None, None, "postings", "")  # type: ignore[arg-type]


def test_the_profiles_defaults_and_the_setting() -> None:
    local = LambdaValidationResource.for_profile("local", {})
    assert local.invoker == "in_process"
    switched = LambdaValidationResource.for_profile(
        "local", {"FIGSTREAM_LAMBDA_INVOKER": "subprocess"}
    )
    assert switched.invoker == "subprocess"
    aws = LambdaValidationResource.for_profile("aws", {"FIGSTREAM_AWS_PREFIX": "prod"})
    assert (aws.invoker, aws.function_name) == ("aws", "prod-validate-batch")
