"""The resources each deployment profile binds, keyed by the names assets ask for."""

from __future__ import annotations

from typing import Any

from figstream import settings
from figstream.migration.gate import evidence_path
from figstream.migration.ledger import Ledger
from figstream.storage.deadletter import deadletter_path
from figstream.storage.state import state_path
from resources.luigi_runner import LuigiRunner
from resources.migration import MigrationResource
from resources.stores import (
    LocalObjectStoreResource,
    RoutingResource,
    SqliteDeadLetterResource,
    SqliteStateStoreResource,
    StreamingResources,
)


def resources_for(profile: str, ledger: Ledger) -> dict[str, Any]:
    home = settings.data_home()
    luigi_runner = LuigiRunner(data_root=str(home), epoch=ledger.legacy_epoch.isoformat())
    if profile == "local":
        streaming = StreamingResources(
            objects=LocalObjectStoreResource(root=str(home)),
            state=SqliteStateStoreResource(
                path=str(state_path(home)),
                claim_ttl_days=settings.streaming_settings().claim_ttl_days,
            ),
            dead_letters=SqliteDeadLetterResource(path=str(deadletter_path(home))),
            routing=RoutingResource(path=str(settings.routing_path())),
            first_partition=f"{ledger.legacy_epoch.isoformat()}-00:00",
        )
        migration = MigrationResource(
            ledger_path=str(settings.ledger_path()),
            evidence_path=str(evidence_path(home)),
            data_root=str(home),
        )
        return {"luigi_runner": luigi_runner, "streaming": streaming, "migration": migration}
    raise NotImplementedError(
        f"FIGSTREAM_PROFILE={profile!r}: the AWS profile is not built yet; use 'local'"
    )
