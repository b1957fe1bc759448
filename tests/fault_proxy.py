"""A fault-injecting HTTP proxy in front of moto server: AWS's own error answers, over real HTTP.

The clients under test point their endpoint at the proxy (``FIGSTREAM_AWS_ENDPOINT``, pyarrow's
``endpoint_override``); the proxy forwards each request to moto server and, for a seeded random
share of the S3, SQS and DynamoDB requests, answers with the error the real service sends
when it throttles or fails:

* **before** (``rate``): the request is NOT forwarded, so a retry is always safe;
* **after** (``after_rate``): the request IS forwarded and its answer is replaced by a 500, as
  when a connection drops after the server acted. This is the dangerous case: the retry of a
  conditional write finds its own write and fails the condition, a retried ``ReceiveMessage``
  leaves the first answer's messages in flight until their visibility timeout.

Error shapes (what botocore and the AWS SDK for C++ classify as throttling or transient):

=========  ======================================================================================
S3         ``503 SlowDown`` and ``500 InternalError``, XML ``<Error>``; a ``HEAD`` gets no body
DynamoDB   ``400 ProvisionedThroughputExceededException``, ``400 ThrottlingException`` and
           ``500 InternalServerError``, JSON ``{"__type": ...}``
SQS        JSON protocol: ``400 RequestThrottled`` (``x-amzn-query-error`` header), ``500
           InternalError``, ``503 ServiceUnavailable``; the query protocol's XML
           ``<ErrorResponse>`` when the request is a form
=========  ======================================================================================

The service is read from the request's SigV4 credential scope; the operation from
``X-Amz-Target`` (JSON protocols) or the method and path (S3). :attr:`FaultProxy.counts`
counts what happened per (service, operation, outcome): ``forwarded``, ``before``, ``after``.
Faults are off until :meth:`FaultProxy.enable` (so infrastructure setup goes through clean).
"""

from __future__ import annotations

import http.client
import random
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

FAULTED = ("s3", "sqs", "dynamodb")
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([a-z0-9-]+)/aws4_request")
_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te"}


def _xml_error(code: str, message: str, query: bool) -> bytes:
    """S3's ``<Error>``, or the query protocol's ``<ErrorResponse>`` around it."""
    error = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    request_id = f"<RequestId>{uuid.uuid4().hex[:16]}</RequestId>"
    if query:
        return f"<ErrorResponse>{error}{request_id}</ErrorResponse>".encode()
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{error[:-8]}{request_id}</Error>'.encode()


def _json_error(prefix: str, code: str, message: str) -> bytes:
    return f'{{"__type": "{prefix}#{code}", "message": "{message}"}}'.encode()


# (status, code, message) per service; the first entries are throttling, the rest 5xx.
ERRORS = {
    "s3": [
        (503, "SlowDown", "Please reduce your request rate."),
        (500, "InternalError", "We encountered an internal error. Please try again."),
    ],
    "dynamodb": [
        (400, "ProvisionedThroughputExceededException", "The level of configured provisioned "
         "throughput for the table was exceeded."),
        (400, "ThrottlingException", "Rate of requests exceeds the allowed throughput."),
        (500, "InternalServerError", "Internal server error"),
    ],
    "sqs": [
        (400, "RequestThrottled", "Request is throttled."),
        (500, "InternalError", "We encountered an internal error. Please try again."),
        (503, "ServiceUnavailable", "The request has failed due to a temporary failure."),
    ],
}  # fmt: skip
# The error an "after" fault answers with: the server acted, the client saw a 5xx.
LOST = {
    "s3": (500, "InternalError", "We encountered an internal error. Please try again."),
    "dynamodb": (500, "InternalServerError", "Internal server error"),
    "sqs": (500, "InternalError", "We encountered an internal error. Please try again."),
}


def error_response(
    service: str, status: int, code: str, message: str, json_protocol: bool
) -> tuple[dict[str, str], bytes]:
    """(headers, body) of the service's error answer."""
    request_id = str(uuid.uuid4())
    if service == "s3":
        headers = {"Content-Type": "application/xml", "x-amz-request-id": request_id}
        return headers, _xml_error(code, message, query=False)
    if service == "dynamodb":
        prefix = (
            "com.amazon.coral.availability"
            if code == "ThrottlingException"
            else "com.amazonaws.dynamodb.v20120810"
        )
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": request_id}
        return headers, _json_error(prefix, code, message)
    if json_protocol:
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "x-amzn-RequestId": request_id,
            "x-amzn-query-error": f"{code};{'Sender' if status < 500 else 'Receiver'}",
        }
        return headers, _json_error("com.amazonaws.sqs", code, message)
    headers = {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}
    return headers, _xml_error(code, message, query=True)


def service_of(headers) -> str:
    found = _SCOPE.search(headers.get("Authorization", ""))
    return found.group(1) if found else "unknown"


def operation_of(service: str, method: str, path: str, headers) -> str:
    target = headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    if service != "s3":
        return method
    url = urlparse(path)
    query = url.query
    parts = [p for p in url.path.split("/") if p]
    if "uploadId=" in query:
        return {"PUT": "UploadPart", "POST": "CompleteMultipartUpload"}.get(
            method, "AbortMultipartUpload" if method == "DELETE" else "ListParts"
        )
    if "uploads" in query.split("&"):
        return "CreateMultipartUpload"
    if len(parts) <= 1:
        return {"GET": "ListObjects", "PUT": "CreateBucket", "HEAD": "HeadBucket"}.get(
            method, f"{method}Bucket"
        )
    return {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject"}.get(
        method, "DeleteObject" if method == "DELETE" else f"{method}Object"
    )


class FaultProxy:
    """``with FaultProxy(upstream, rate=0.1).serving() as endpoint: ...``"""

    def __init__(
        self,
        upstream: str,
        rate: float = 0.1,
        after_rate: float = 0.0,
        seed: int = 15,
        services: tuple[str, ...] = FAULTED,
        spare: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        if not (0 <= rate <= 1 and 0 <= after_rate <= 1 and rate + after_rate <= 1):
            raise ValueError(f"rates must lie in [0, 1] and sum to at most 1: {rate}, {after_rate}")
        unknown = set(services) - set(ERRORS)
        if unknown:
            raise ValueError(f"no error shapes for {sorted(unknown)}; known: {sorted(ERRORS)}")
        url = urlparse(upstream)
        self.upstream = (url.hostname, url.port or 80)
        self.rate, self.after_rate = rate, after_rate
        self.services = services
        self.spare = spare  # (service, operation) pairs never faulted
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.enabled = False
        self._server: ThreadingHTTPServer | None = None

    def enable(self, on: bool = True) -> None:
        self.enabled = on

    def injected(self, service: str, when: str | None = None) -> int:
        return sum(
            n
            for (s, _, outcome), n in self.counts.items()
            if s == service and outcome != "forwarded" and (when is None or outcome == when)
        )

    def summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (service, _, outcome), n in sorted(self.counts.items()):
            out.setdefault(service, Counter())[outcome] += n
        return {s: dict(c) for s, c in out.items()}

    def _decide(self, service: str, operation: str) -> str:
        if not self.enabled or service not in self.services or (service, operation) in self.spare:
            return "forwarded"
        with self._lock:
            draw = self._random.random()
        if draw < self.rate:
            return "before"
        if draw < self.rate + self.after_rate:
            return "after"
        return "forwarded"

    def _pick(self, service: str) -> tuple[int, str, str]:
        with self._lock:
            return self._random.choice(ERRORS[service])

    def _count(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self.counts[key] += 1

    @contextmanager
    def serving(self, host: str = "127.0.0.1") -> Iterator[str]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects
            upstream: http.client.HTTPConnection | None = None

            def log_message(self, *args) -> None:
                pass

            def finish(self) -> None:
                super().finish()
                if self.upstream is not None:
                    self.upstream.close()

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                for attempt in (1, 2):  # a pooled upstream connection moto closed: reopen once
                    if self.upstream is None:
                        self.upstream = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                    try:
                        self.upstream.request(self.command, self.path, body=body, headers=headers)
                        response = self.upstream.getresponse()
                        data = response.read()
                        return response.status, response.getheaders(), data
                    except (http.client.HTTPException, ConnectionError):
                        self.upstream.close()
                        self.upstream = None
                        if attempt == 2:
                            raise
                raise AssertionError("unreachable")

            def _answer(self, status: int, headers, body: bytes) -> None:
                self.send_response(status)
                length = None
                for key, value in headers:
                    if key.lower() in _HOP:
                        continue
                    if key.lower() == "content-length":
                        length = value
                        continue
                    self.send_header(key, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length", length or "0")
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, service: str, status: int, code: str, message: str) -> None:
                json_protocol = "json" in self.headers.get("Content-Type", "")
                headers, body = error_response(service, status, code, message, json_protocol)
                self._answer(status, list(headers.items()), b"" if self.command == "HEAD" else body)

            def _handle(self) -> None:
                body = self._body()
                service = service_of(self.headers)
                operation = operation_of(service, self.command, self.path, self.headers)
                outcome = proxy._decide(service, operation)
                proxy._count((service, operation, outcome))
                if outcome == "before":
                    self._error(service, *proxy._pick(service))
                    return
                status, headers, data = self._forward(body)
                if outcome == "after":
                    self._error(service, *LOST[service])
                    return
                self._answer(status, headers, data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        server = ThreadingHTTPServer((host, 0), Handler)
        server.daemon_threads = True
        self._server = server
        thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
        thread.start()
        try:
            yield f"http://{host}:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
