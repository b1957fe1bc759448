"""Dagster resources for the streaming path's stores, one interface each.

The stores themselves live in ``figstream/`` (no Dagster there, so the CLI and the benchmarks
use the same code); these resources only carry configuration and hand out a store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import dagster as dg

from figstream.ingest.routing import Router
from figstream.storage.aws import AwsConfig
from figstream.storage.deadletter import DeadLetterStore, SqliteDeadLetterStore
from figstream.storage.objects import LocalObjectStore, ObjectStore
from figstream.storage.state import SqliteStateStore, StateStore
from figstream.streaming.stores import Stores
from resources.lambda_invoke import LambdaValidationResource

if TYPE_CHECKING:
    from figstream.ingest.sqs_intake import DrainReport


class ObjectStoreResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def store(self) -> ObjectStore: ...


class LocalObjectStoreResource(ObjectStoreResource):
    """A directory; writes are atomic and fsynced before they are visible."""

    root: str

    def store(self) -> ObjectStore:
        return LocalObjectStore(self.root)


class AwsResource(dg.ConfigurableResource):
    """Where the aws profile's resources are: :class:`figstream.storage.aws.AwsConfig`'s
    fields, read from the environment when the code location loads (its docstring lists the
    variables). Credentials are never configuration: boto3's own chain finds them (the task
    role on ECS, the environment or profile elsewhere)."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    prefix: str = "figstream"
    bucket: str | None = None
    retry_mode: str = "adaptive"
    max_attempts: int = 10

    @classmethod
    def from_config(cls, config: AwsConfig) -> AwsResource:
        return cls(
            region=config.region,
            endpoint_url=config.endpoint_url,
            prefix=config.prefix,
            bucket=config.bucket,
            retry_mode=config.retry_mode,
            max_attempts=config.max_attempts,
        )

    def config(self) -> AwsConfig:
        return AwsConfig(
            region=self.region,
            endpoint_url=self.endpoint_url,
            prefix=self.prefix,
            bucket=self.bucket,
            retry_mode=self.retry_mode,
            max_attempts=self.max_attempts,
        )


class S3ObjectStoreResource(ObjectStoreResource):
    """The landing zone, tables and archive in one S3 bucket."""

    aws: AwsResource

    def store(self) -> ObjectStore:
        from figstream.storage.s3_objects import S3ObjectStore

        return S3ObjectStore(self.aws.config())


class StateStoreResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def store(self) -> StateStore: ...


class SqliteStateStoreResource(StateStoreResource):
    path: str
    claim_ttl_days: int = 14  # how long an event id's claim holds (platform/streaming.yaml)

    def store(self) -> StateStore:
        return SqliteStateStore(self.path, claim_ttl_s=self.claim_ttl_days * 86_400)


class DynamoStateStoreResource(StateStoreResource):
    aws: AwsResource
    claim_ttl_days: int = 14  # the claims' TTL horizon (platform/streaming.yaml)

    def store(self) -> StateStore:
        from figstream.storage.dynamo_state import DynamoStateStore

        return DynamoStateStore(self.aws.config(), claim_ttl_s=self.claim_ttl_days * 86_400)


class DeadLetterResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def store(self) -> DeadLetterStore: ...


class SqliteDeadLetterResource(DeadLetterResource):
    path: str

    def store(self) -> DeadLetterStore:
        return SqliteDeadLetterStore(self.path)


class DynamoDeadLetterResource(DeadLetterResource):
    aws: AwsResource

    def store(self) -> DeadLetterStore:
        from figstream.storage.dynamo_deadletter import DynamoDeadLetterStore

        return DynamoDeadLetterStore(self.aws.config())


class RoutingResource(dg.ConfigurableResource):
    """The stream routing rules (``platform/routing.yaml``)."""

    path: str

    def router(self) -> Router:
        return Router.from_file(self.path)


class QueueIntakeResource(dg.ConfigurableResource):
    """The aws profile's intake: EventBridge delivers each stream's events to its SQS queue,
    and the stream's sensor drains the queue into one durable landing batch a tick before it
    lists the landing zone (``figstream.ingest.sqs_intake``). On the local profile producers
    land batches themselves and there is no queue."""

    aws: AwsResource
    max_messages: int = 10_000

    def drain(self, stream: str, objects: ObjectStore) -> DrainReport:
        from figstream.ingest.sqs_intake import drain_queue

        return drain_queue(self.aws.config(), stream, objects, max_messages=self.max_messages)


class StreamingResources(dg.ConfigurableResource):
    """The stores one streaming step needs, bundled so assets ask for one thing."""

    objects: ObjectStoreResource
    state: StateStoreResource
    dead_letters: DeadLetterResource
    routing: RoutingResource
    first_partition: str
    intake: QueueIntakeResource | None = None  # None: producers land batches themselves
    # How the ingest step validates and upcasts its batches: in process, or as the
    # validate-batch Lambda through Dagster Pipes (None: in process).
    validation: LambdaValidationResource | None = None

    def drain(self, stream: str, objects: ObjectStore) -> DrainReport | None:
        """Land what waits in the stream's queue (aws); None where there is no queue."""
        return None if self.intake is None else self.intake.drain(stream, objects)

    def stores(self) -> Stores:
        return Stores(
            objects=self.objects.store(),
            state=self.state.store(),
            dead_letters=self.dead_letters.store(),
            router=self.routing.router(),
            first_partition=self.first_partition,
        )
