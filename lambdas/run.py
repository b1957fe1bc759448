"""Run one Lambda handler invocation in this process, as the AWS Lambda Python runtime would.

``python -m lambdas.run <module>:<function> --result <path> [--timeout S] [--memory MB]`` reads
the event (JSON) from stdin, calls the handler with a context object like the runtime's, and
writes the outcome to ``<path>`` as JSON: ``{"result": <return value>}``, or the runtime's error
shape ``{"errorMessage", "errorType", "requestId", "stackTrace"}`` after printing the
``[ERROR]`` log line the runtime prints. stdout and stderr are the function's log. The exit
status is 0 in both cases; anything else means the runtime itself died (an import error, a
crash, a kill), which Lambda reports as ``Runtime.ExitError``.

``resources/lambda_invoke.py``'s ``SubprocessLambdaClient`` is the caller: it adds what the
Lambda service adds (request id, the START/END/REPORT log lines, the 4 KB log tail, the
timeout). Standard library only, so it runs from the deployment package as it is.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import sys
import time
import traceback
from typing import Any


class LambdaContext:
    """The attributes and method of the runtime's context object that handlers use."""

    def __init__(self, function_name: str, request_id: str, memory_mb: int, timeout_s: float):
        region = os.environ.get("AWS_REGION", "us-east-1")
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:000000000000:function:{function_name}"
        self.memory_limit_in_mb = str(memory_mb)
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class ImportModuleError(Exception):
    """The handler's module does not import (the runtime's ``Runtime.ImportModuleError``)."""


def load_handler(spec: str) -> Any:
    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise ValueError(f"handler {spec!r}: expected '<module>:<function>'")
    return getattr(importlib.import_module(module_name), function)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lambdas.run")
    parser.add_argument("handler")
    parser.add_argument("--result", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--memory", type=int, default=1024)
    args = parser.parse_args(argv)
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local")
    request_id = os.environ.get("FIGSTREAM_LAMBDA_REQUEST_ID", "00000000-local")
    try:
        event = json.loads(sys.stdin.buffer.read())
        try:
            handler = load_handler(args.handler)
        except ImportError as exc:
            raise ImportModuleError(f"Unable to import module {args.handler!r}: {exc}") from exc
        result = handler(event, LambdaContext(function_name, request_id, args.memory, args.timeout))
        outcome: dict[str, Any] = {"result": result}
    except Exception as exc:  # the runtime's shape for an unhandled error
        stack = traceback.format_tb(exc.__traceback__)
        kind = "Runtime.ImportModuleError" if isinstance(exc, ImportModuleError) else None
        outcome = {
            "errorMessage": str(exc),
            "errorType": kind or type(exc).__name__,
            "requestId": request_id,
            "stackTrace": stack,
        }
        print(f"[ERROR] {outcome['errorType']}: {exc}", flush=True)
        print("Traceback (most recent call last):\n" + "".join(stack).rstrip(), flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    outcome["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    try:
        text = json.dumps(outcome)
    except (TypeError, ValueError) as exc:  # a return value JSON cannot carry
        error = {"errorMessage": f"Unable to marshal response: {exc}", "requestId": request_id}
        text = json.dumps({**error, "errorType": "Runtime.MarshalError"})
    with open(args.result, "w", encoding="utf-8") as fh:
        fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
