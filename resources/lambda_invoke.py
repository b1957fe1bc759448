"""Lambda handlers invoked through Dagster Pipes: on AWS, or in a subprocess with the same
``invoke`` interface, and the resource the ingest asset validates its batches with.

:class:`SubprocessLambdaClient` stands in for boto3's Lambda client wherever there is no Lambda
(the local profile, the tests: moto cannot run Lambda code). Its ``invoke`` runs the handler
that a function name maps to in a fresh ``python -m lambdas.run`` process (a cold start every
time; a real function is often warm) and answers as the Lambda service does:

* ``StatusCode`` 200, the handler's return value as the ``Payload`` stream, and with
  ``LogType="Tail"`` the ``LogResult``: base64 of the **last 4 KB** of the log (the handler's
  stdout and stderr between the runtime's START and END/REPORT lines). Real Lambda cuts there,
  and so does this client, so that Pipes messages that would be lost on AWS are lost here too;
* a handler that raises: ``FunctionError: "Unhandled"`` and the runtime's error object as the
  payload; a runtime that dies (import error, crash): ``Runtime.ExitError``; a handler past its
  timeout is killed: ``Task timed out after N seconds``;
* request errors raise botocore's ``ClientError`` with Lambda's codes: an unknown function
  (``ResourceNotFoundException``), an event that is not JSON
  (``InvalidRequestContentException``), over 6 MB (``RequestTooLargeException``); a response
  over 6 MB is a ``Function.ResponseSizeTooLarge`` function error. Only synchronous
  (``RequestResponse``) and ``DryRun`` invocations: an asynchronous ``Event`` invocation needs
  the service's queue, which is not emulated (``InvalidParameterValueException``).

:class:`LambdaValidationResource` holds the choice of where the ingest step validates: in
process (the local default, no per-run process), through the subprocess client, or on AWS
Lambda (the aws profile), the last two through dagster-aws's ``PipesLambdaClient`` running
``lambdas/validate_batch.py``.

Bad inputs tried (see ``tests/lambdas/test_lambda_invoke.py``): each request error above, a
handler that raises, a handler that never returns, a handler module that does not import, a
Pipes message stream longer than the 4 KB tail, an unknown invoker.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from figstream.ingest.landing import parse_batch_key
from figstream.storage.aws import AwsConfig
from figstream.storage.objects import ObjectStore, read_parquet
from figstream.streaming.ingest import ValidatedBatch, Validator
from figstream.streaming.stores import Stores
from figstream.streaming.tables import EVENTS_SCHEMA, REJECTED_SCHEMA
from lambdas import validate_batch

ROOT = Path(__file__).resolve().parents[1]
LOG_TAIL_BYTES = 4096  # Lambda's LogResult: the last 4 KB of the execution log
PAYLOAD_LIMIT = 6 * 1024 * 1024  # synchronous request and response payloads
VALIDATE_BATCH = "validate-batch"  # AwsConfig.function_name(VALIDATE_BATCH) is the function
HANDLERS = {VALIDATE_BATCH: "lambdas.validate_batch:handler"}
INVOKERS = ("in_process", "subprocess", "aws")


def _client_error(code: str, message: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": message},
         "ResponseMetadata": {"HTTPStatusCode": status}},
        "Invoke",
    )  # fmt: skip


class SubprocessLambdaClient:
    """boto3's Lambda ``invoke``, answered by running the handler in a subprocess.

    ``handlers`` maps function names to ``<module>:<function>``. ``path``, when given, is the
    whole import path of the subprocess (an unpacked deployment package and its layers), run
    without site-packages as Lambda's runtime would; otherwise the repository is on the path
    of this interpreter's environment.
    """

    def __init__(
        self,
        handlers: Mapping[str, str],
        *,
        timeout_s: float = 60.0,
        memory_mb: int = 1024,
        path: Sequence[str] | None = None,
        python: str = sys.executable,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.handlers = dict(handlers)
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.path = None if path is None else [str(p) for p in path]
        self.python = python
        self.environment = dict(environment or {})

    def invoke(
        self,
        *,
        FunctionName: str,  # boto3's parameter names
        InvocationType: str = "RequestResponse",
        Payload: bytes | str | Any = b"{}",
        LogType: str = "None",
        **_: Any,
    ) -> dict[str, Any]:
        # A name, or an ARN arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]
        name = FunctionName.split(":")[6] if FunctionName.startswith("arn:") else FunctionName
        handler = self.handlers.get(name)
        if handler is None:
            raise _client_error("ResourceNotFoundException", f"Function not found: {name}", 404)
        if InvocationType == "DryRun":
            return {"StatusCode": 204, "Payload": io.BytesIO(b"")}
        if InvocationType != "RequestResponse":
            raise _client_error(
                "InvalidParameterValueException",
                f"InvocationType {InvocationType!r}: only RequestResponse and DryRun are emulated",
                400,
            )
        payload = _payload_bytes(Payload)
        if len(payload) > PAYLOAD_LIMIT:
            raise _client_error(
                "RequestTooLargeException",
                f"Request must be smaller than {PAYLOAD_LIMIT} bytes for the InvokeFunction "
                "operation",
                413,
            )
        try:
            json.loads(payload or b"{}")
        except ValueError:
            raise _client_error(
                "InvalidRequestContentException", "Could not parse request body into json", 400
            ) from None
        return self._run(name, handler, payload or b"{}", LogType == "Tail")

    def _run(self, name: str, handler: str, payload: bytes, tail: bool) -> dict[str, Any]:
        request_id = str(uuid.uuid4())
        env = dict(os.environ)
        env.update(self.environment)
        env.update(
            AWS_LAMBDA_FUNCTION_NAME=name,
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(self.memory_mb),
            FIGSTREAM_LAMBDA_REQUEST_ID=request_id,
            PYTHONUNBUFFERED="1",
        )
        command = [self.python]
        if self.path is None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            cwd = str(ROOT)
        else:  # only the package and its layers, as on Lambda
            env["PYTHONPATH"] = os.pathsep.join(self.path)
            command.append("-S")
            cwd = self.path[0]
        with tempfile.TemporaryDirectory(prefix="lambda-") as scratch:
            result_path = Path(scratch) / "result.json"
            command += [
                "-m", "lambdas.run", handler, "--result", str(result_path),
                "--timeout", str(self.timeout_s), "--memory", str(self.memory_mb),
            ]  # fmt: skip
            started = time.monotonic()
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            timed_out = False
            try:
                log, _ = proc.communicate(payload, timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                log, _ = proc.communicate()
            elapsed_ms = (time.monotonic() - started) * 1000
            outcome = (
                json.loads(result_path.read_text(encoding="utf-8"))
                if result_path.exists() and not timed_out
                else None
            )
        response: dict[str, Any] = {"StatusCode": 200, "ExecutedVersion": "$LATEST"}
        memory_used = (outcome or {}).pop("max_rss_mb", 0)
        if timed_out:
            body: Any = {"errorMessage": f"Task timed out after {self.timeout_s:.2f} seconds"}
            log += f"{body['errorMessage']}\n".encode()
            response["FunctionError"] = "Unhandled"
        elif outcome is None:
            body = {"errorType": "Runtime.ExitError", "errorMessage": (
                f"RequestId: {request_id} Error: Runtime exited with error: exit status "
                f"{proc.returncode}")}  # fmt: skip
            response["FunctionError"] = "Unhandled"
        elif "result" in outcome:
            body = outcome["result"]
        else:
            body = outcome
            response["FunctionError"] = "Unhandled"
        data = json.dumps(body).encode()
        if len(data) > PAYLOAD_LIMIT:
            data = json.dumps({"errorType": "Function.ResponseSizeTooLarge", "errorMessage": (
                f"Response payload size ({len(data)} bytes) exceeded maximum allowed payload "
                f"size ({PAYLOAD_LIMIT} bytes).")}).encode()  # fmt: skip
            response["FunctionError"] = "Unhandled"
        response["Payload"] = io.BytesIO(data)
        if tail:
            billed = math.ceil(elapsed_ms)
            full = (
                f"START RequestId: {request_id} Version: $LATEST\n".encode()
                + log
                + (
                    f"END RequestId: {request_id}\n"
                    f"REPORT RequestId: {request_id}\tDuration: {elapsed_ms:.2f} ms\t"
                    f"Billed Duration: {billed} ms\tMemory Size: {self.memory_mb} MB\t"
                    f"Max Memory Used: {memory_used} MB\t\n"
                ).encode()
            )
            response["LogResult"] = base64.b64encode(full[-LOG_TAIL_BYTES:]).decode("ascii")
        return response


def _payload_bytes(payload: bytes | str | Any) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    return payload.read()  # a file-like object, as boto3 also accepts


class LambdaResultError(RuntimeError):
    """The function ran but its answer is unusable (no result message, or counts that its
    outputs do not match)."""


class LambdaValidationResource(dg.ConfigurableResource):
    """Where the ingest step validates and upcasts its batches.

    ``invoker``: ``in_process`` (no Lambda: the local default), ``subprocess`` (the
    ``validate-batch`` handler through :class:`SubprocessLambdaClient`, so the local profile
    and the tests exercise the deployed code path) or ``aws`` (the function
    ``function_name`` on AWS Lambda, through the AWS config's endpoint). Deploy the function
    with a timeout of at most ``timeout_s`` (60 s): the Lambda client's read timeout is 70 s
    (``AwsConfig.client_config``), and an invocation carries at most
    ``validate_batch.MAX_BATCHES`` batches.
    """

    invoker: str = "in_process"
    function_name: str = "figstream-validate-batch"
    timeout_s: float = 60.0
    handler: str = HANDLERS[VALIDATE_BATCH]  # what the subprocess invoker runs

    @classmethod
    def for_profile(
        cls, profile: str, environ: Mapping[str, str] | None = None
    ) -> LambdaValidationResource:
        """The profile's default (local: in process; aws: the Lambda function), unless
        ``FIGSTREAM_LAMBDA_INVOKER`` says otherwise."""
        env = os.environ if environ is None else environ
        default = "aws" if profile == "aws" else "in_process"
        invoker = (env.get("FIGSTREAM_LAMBDA_INVOKER") or default).strip()
        name = (
            AwsConfig.from_env(dict(env)).function_name(VALIDATE_BATCH)
            if profile == "aws"
            else f"figstream-{VALIDATE_BATCH}"
        )
        return cls(invoker=invoker, function_name=name)

    def lambda_client(self) -> Any:
        if self.invoker == "aws":
            return AwsConfig.from_env().client("lambda")
        if self.invoker == "subprocess":
            return SubprocessLambdaClient(
                {self.function_name: self.handler}, timeout_s=self.timeout_s
            )
        raise ValueError(f"invoker {self.invoker!r}: no Lambda client (one of {INVOKERS})")

    def validator(
        self, context: dg.AssetExecutionContext, stores: Stores, stream: str, routing_text: str
    ) -> Validator | None:
        """None (validate in process), or a validator that invokes the function per
        partition and reads back what it wrote."""
        if self.invoker not in INVOKERS:
            raise ValueError(f"invoker {self.invoker!r}: expected one of {', '.join(INVOKERS)}")
        if self.invoker == "in_process":
            return None
        from dagster_aws.pipes import PipesLambdaClient

        pipes = PipesLambdaClient(client=self.lambda_client())
        base = {
            "stream": stream,
            "first_partition": stores.first_partition,
            "routing": routing_text,
            "objects": validate_batch.store_spec(stores.objects),
        }

        def validate(partition: str, keys: Sequence[str]) -> Iterator[ValidatedBatch | None]:
            keys = list(keys)
            step = validate_batch.MAX_BATCHES
            chunks = [keys[i : i + step] for i in range(0, len(keys), step)]
            # Every invocation first: a failed one fails the step before anything is claimed.
            summaries = []
            for chunk in chunks:
                event = {**base, "partition": partition, "batch_keys": chunk}
                invocation = pipes.run(context=context, function_name=self.function_name,
                                       event=event)  # fmt: skip
                summaries.append(_summary(invocation.get_custom_messages(), partition, chunk))
            for chunk, summary in zip(chunks, summaries, strict=True):
                check_outputs(stores.objects, stream, partition, chunk, summary)
            for chunk, summary in zip(chunks, summaries, strict=True):
                yield from read_outputs(stores.objects, stream, partition, chunk, summary)

        return validate


def _summary(messages: Iterable[Any], partition: str, chunk: Sequence[str]) -> dict[str, Any]:
    found = [
        m for m in messages if isinstance(m, dict) and m.get("kind") == validate_batch.MESSAGE_KIND
    ]
    if len(found) != 1:
        raise LambdaResultError(
            f"the validate-batch function sent {len(found)} result messages for {partition} "
            f"({len(chunk)} batches from {chunk[0]}), expected 1; its Pipes messages ride in "
            "the last 4 KB of its log, and a handler that prints after them pushes them out"
        )
    summary = found[0]
    if summary.get("partition") != partition or summary.get("batches") != len(chunk):
        raise LambdaResultError(f"the validate-batch result is for {summary.get('partition')} "
                                f"and {summary.get('batches')} batches, not {partition} and "
                                f"{len(chunk)}")  # fmt: skip
    return summary


def check_outputs(
    objects: ObjectStore,
    stream: str,
    partition: str,
    keys: Sequence[str],
    summary: Mapping[str, Any],
) -> None:
    """Raise :class:`LambdaResultError` unless the objects the function wrote for ``keys``
    hold the (records, valid, rejected) it reported; reads only their Parquet footers."""
    empty = set(summary["empty"])
    valid = rejected = 0
    for i, key in enumerate(keys):
        if i in empty:
            continue
        valid_key, rejected_key = validate_batch.output_keys(key, stream, partition)
        try:
            valid += _rows(objects, valid_key)
            rejected += _rows(objects, rejected_key)
        except FileNotFoundError as exc:
            raise LambdaResultError(f"validate-batch reported {key} done, but: {exc}") from None
    reported = (summary["records"], summary["valid"], summary["rejected"])
    if (valid + rejected, valid, rejected) != reported:
        raise LambdaResultError(
            f"validate-batch outputs of {partition} hold (records, valid, rejected) "
            f"{(valid + rejected, valid, rejected)}, but the function reported {reported}"
        )


def _rows(objects: ObjectStore, key: str) -> int:
    with objects.open(key) as source:
        return pq.read_metadata(source).num_rows


def read_outputs(
    objects: ObjectStore,
    stream: str,
    partition: str,
    keys: Sequence[str],
    summary: Mapping[str, Any],
) -> Iterator[ValidatedBatch | None]:
    """What the function made of each batch of ``keys``, read back one batch at a time and
    then deleted (the fragments and dead letters written from them are the outputs)."""
    empty = set(summary["empty"])
    for i, key in enumerate(keys):
        if i in empty:
            yield None
            continue
        valid_key, rejected_key = validate_batch.output_keys(key, stream, partition)
        good = read_parquet(objects, valid_key).cast(EVENTS_SCHEMA)
        bad = read_parquet(objects, rejected_key).cast(REJECTED_SCHEMA)
        yield ValidatedBatch(parse_batch_key(key)[1], good.num_rows + bad.num_rows, good, bad)
        objects.delete(valid_key)
        objects.delete(rejected_key)
