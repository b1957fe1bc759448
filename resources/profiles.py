"""The resources each deployment profile binds, keyed by the names assets ask for."""

from __future__ import annotations

from typing import Any

from figstream import settings
from figstream.migration.gate import evidence_path
from figstream.migration.ledger import Ledger
from figstream.storage.aws import AwsConfig
from figstream.storage.deadletter import deadletter_path
from figstream.storage.state import state_path
from resources.lambda_invoke import LambdaValidationResource
from resources.luigi_runner import LuigiRunner
from resources.migration import MigrationResource
from resources.stores import (
    AwsResource,
    DynamoDeadLetterResource,
    DynamoStateStoreResource,
    LocalObjectStoreResource,
    QueueIntakeResource,
    RoutingResource,
    S3ObjectStoreResource,
    SqliteDeadLetterResource,
    SqliteStateStoreResource,
    StreamingResources,
)


def resources_for(profile: str, ledger: Ledger) -> dict[str, Any]:
    """``local``: everything in the data home (a directory, SQLite). ``aws``: objects in S3,
    state and dead letters in DynamoDB, events through EventBridge and SQS (where:
    ``figstream.storage.aws``). Both run the same assets and sensors; the legacy Luigi side
    and the migration evidence stay on the host's disk in both (the legacy night runs where
    its feed dumps are)."""
    home = settings.data_home()
    luigi_runner = LuigiRunner(data_root=str(home), epoch=ledger.legacy_epoch.isoformat())
    ttl_days = settings.streaming_settings().claim_ttl_days
    routing = RoutingResource(path=str(settings.routing_path()))
    first_partition = f"{ledger.legacy_epoch.isoformat()}-00:00"
    if profile == "local":
        streaming = StreamingResources(
            objects=LocalObjectStoreResource(root=str(home)),
            state=SqliteStateStoreResource(path=str(state_path(home)), claim_ttl_days=ttl_days),
            dead_letters=SqliteDeadLetterResource(path=str(deadletter_path(home))),
            routing=routing,
            first_partition=first_partition,
            validation=LambdaValidationResource.for_profile(profile),
        )
    elif profile == "aws":
        aws = AwsResource.from_config(AwsConfig.from_env())
        streaming = StreamingResources(
            objects=S3ObjectStoreResource(aws=aws),
            state=DynamoStateStoreResource(aws=aws, claim_ttl_days=ttl_days),
            dead_letters=DynamoDeadLetterResource(aws=aws),
            routing=routing,
            first_partition=first_partition,
            validation=LambdaValidationResource.for_profile(profile),
            intake=QueueIntakeResource(
                aws=aws, max_messages=settings.streaming_settings().queue_max_messages_per_tick
            ),
        )
    else:
        raise ValueError(f"FIGSTREAM_PROFILE={profile!r} is not one of {settings.PROFILES}")
    migration = MigrationResource(
        ledger_path=str(settings.ledger_path()),
        evidence_path=str(evidence_path(home)),
        data_root=str(home),
    )
    return {"luigi_runner": luigi_runner, "streaming": streaming, "migration": migration}
