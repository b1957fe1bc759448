"""Where the aws profile's resources are, and the one way figstream makes an AWS client.

Every AWS call in figstream goes through :func:`client`, so every call:

* can be pointed at an emulator (moto server in the tests, ``make dev-aws``) by one setting,
  ``FIGSTREAM_AWS_ENDPOINT`` (or boto3's own ``AWS_ENDPOINT_URL``);
* retries throttling and 5xx through botocore's own retry modes (``adaptive`` by default: the
  standard mode's exponential back-off plus a client-side rate limiter), never a hand-written
  loop. Partial failures that are not errors (``UnprocessedItems`` of ``BatchWriteItem``,
  ``FailedEntryCount`` of ``PutEvents``) are the callers' to resend.

Names are derived from one prefix, so two deployments (or two tests) on one account or one
emulator never see each other's tables, queues or bucket:

===================  ====================================  =====================================
setting              environment                           default
===================  ====================================  =====================================
region               ``FIGSTREAM_AWS_REGION`` /            ``us-east-1``
                     ``AWS_DEFAULT_REGION``
endpoint             ``FIGSTREAM_AWS_ENDPOINT`` /          none (the real AWS endpoints)
                     ``AWS_ENDPOINT_URL``
name prefix          ``FIGSTREAM_AWS_PREFIX``              ``figstream``
bucket               ``FIGSTREAM_S3_BUCKET``               ``<prefix>-data``
retry mode           ``FIGSTREAM_AWS_RETRY_MODE``          ``adaptive`` (or ``standard``)
max attempts         ``FIGSTREAM_AWS_MAX_ATTEMPTS``        10
===================  ====================================  =====================================

Every client :func:`client` makes also reports each API call it makes (once per call, not per
retry) to :data:`CALLS`, a process-wide :class:`CallRecorder`: the IAM test
(``tests/test_iam.py``) runs each role's code paths and checks every recorded operation against
that role's policy in ``platform/aws/iam/``.

Bad inputs tried (see ``tests/figstream/storage/test_aws_config.py``): a prefix with characters
AWS names refuse or over 40 characters, an endpoint that is not an http(s) URL, an unknown
retry mode, a max-attempts that is not a positive integer.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, replace
from functools import cache
from typing import Any
from urllib.parse import urlparse

RETRY_MODES = ("adaptive", "standard")
# Lowercase letters, digits and '-': valid in bucket, table, queue and rule names alike.
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


@dataclass(frozen=True)
class AwsConfig:
    region: str = "us-east-1"
    endpoint_url: str | None = None
    prefix: str = "figstream"
    bucket: str | None = None
    retry_mode: str = "adaptive"
    max_attempts: int = 10

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ValueError(
                f"AWS name prefix {self.prefix!r}: use 1-40 lowercase letters, digits and '-', "
                "starting with a letter or digit"
            )
        if self.endpoint_url is not None:
            url = urlparse(self.endpoint_url)
            if url.scheme not in ("http", "https") or not url.netloc:
                raise ValueError(f"AWS endpoint {self.endpoint_url!r} is not an http(s) URL")
        if self.retry_mode not in RETRY_MODES:
            raise ValueError(
                f"AWS retry mode {self.retry_mode!r} is not one of {', '.join(RETRY_MODES)}"
            )
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"AWS max attempts {self.max_attempts!r}: a positive integer")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AwsConfig:
        env = os.environ if environ is None else environ
        attempts = env.get("FIGSTREAM_AWS_MAX_ATTEMPTS", "10")
        if not attempts.strip().isdigit():
            raise ValueError(f"FIGSTREAM_AWS_MAX_ATTEMPTS={attempts!r}: a positive integer")
        return cls(
            region=env.get("FIGSTREAM_AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint_url=env.get("FIGSTREAM_AWS_ENDPOINT") or env.get("AWS_ENDPOINT_URL") or None,
            prefix=env.get("FIGSTREAM_AWS_PREFIX") or "figstream",
            bucket=env.get("FIGSTREAM_S3_BUCKET") or None,
            retry_mode=env.get("FIGSTREAM_AWS_RETRY_MODE") or "adaptive",
            max_attempts=int(attempts),
        )

    def with_prefix(self, prefix: str) -> AwsConfig:
        return replace(self, prefix=prefix)

    # --- names, all derived from the prefix -------------------------------------------------
    @property
    def bucket_name(self) -> str:
        return self.bucket or f"{self.prefix}-data"

    def table_name(self, kind: str) -> str:
        """A DynamoDB table: ``jobs``, ``claims``, ``registry``, ``mergers``, ``landing`` or
        ``deadletters`` (``figstream.storage.dynamo_state.table_definitions``)."""
        return f"{self.prefix}-{kind}"

    def queue_name(self, stream: str, dlq: bool = False) -> str:
        return f"{self.prefix}-{stream}{'-dlq' if dlq else ''}"

    def rule_name(self, stream: str) -> str:
        return f"{self.prefix}-{stream}"

    @property
    def event_bus_name(self) -> str:
        return f"{self.prefix}-events"

    def function_name(self, handler: str) -> str:
        return f"{self.prefix}-{handler}"

    # --- clients ----------------------------------------------------------------------------
    def client_config(self) -> Any:
        from botocore.config import Config

        return Config(
            region_name=self.region,
            # total_max_attempts counts tries; botocore's max_attempts would count retries.
            retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
            connect_timeout=5,
            read_timeout=70,  # above SQS's 20 s long poll and Lambda's synchronous invokes
            max_pool_connections=32,
        )

    def client(self, service: str) -> Any:
        return _client(self, service)

    def s3_filesystem(self) -> Any:
        """pyarrow's S3 filesystem on the same endpoint (it ignores ``AWS_ENDPOINT_URL``, so
        the endpoint and scheme are passed explicitly) and with the same number of tries: the
        AWS SDK for C++'s standard retry strategy (throttling and 5xx, exponential back-off;
        it has no adaptive mode, so ``adaptive`` maps onto it too)."""
        from pyarrow import fs

        options: dict[str, Any] = {
            "region": self.region,
            "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
        }
        if self.endpoint_url:
            url = urlparse(self.endpoint_url)
            options.update(endpoint_override=url.netloc, scheme=url.scheme)
        return fs.S3FileSystem(**options)


class CallRecorder:
    """The AWS operations this process has called: ``(signing name, operation name)`` counts.

    A botocore ``before-call`` hook on every client :func:`client` makes; it fires once per API
    call (retries are below it), costs a lock and a dict increment, and is thread-safe. The
    signing name is the IAM service prefix (``s3``, ``dynamodb``, ``sqs``, ``events``,
    ``lambda``); the operation name is the API's (``PutItem``), which the IAM test maps onto
    its action.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def record(self, model: Any, **_: Any) -> None:
        service = model.service_model
        key = (service.signing_name or service.endpoint_prefix, model.name)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def calls(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


CALLS = CallRecorder()


@cache
def _client(config: AwsConfig, service: str) -> Any:
    # boto3's clients are thread-safe; one per (config, service) per process.
    import boto3

    made = boto3.session.Session().client(
        service,
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        config=config.client_config(),
    )
    made.meta.events.register("before-call", CALLS.record)
    return made


def client(service: str, config: AwsConfig | None = None) -> Any:
    return (config or AwsConfig.from_env()).client(service)
