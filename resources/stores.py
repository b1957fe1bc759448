"""Dagster resources for the streaming path's stores, one interface each.

The stores themselves live in ``figstream/`` (no Dagster there, so the CLI and the benchmarks
use the same code); these resources only carry configuration and hand out a store.
"""

from abc import ABC, abstractmethod

import dagster as dg

from figstream.ingest.routing import Router
from figstream.storage.deadletter import DeadLetterStore, SqliteDeadLetterStore
from figstream.storage.objects import LocalObjectStore, ObjectStore
from figstream.storage.state import SqliteStateStore, StateStore
from figstream.streaming.stores import Stores


class ObjectStoreResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def store(self) -> ObjectStore: ...


class LocalObjectStoreResource(ObjectStoreResource):
    """A directory; writes are atomic and fsynced before they are visible."""

    root: str

    def store(self) -> ObjectStore:
        return LocalObjectStore(self.root)


class StateStoreResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def store(self) -> StateStore: ...


class SqliteStateStoreResource(StateStoreResource):
    path: str
    claim_ttl_days: int = 14  # how long an event id's claim holds (platform/streaming.yaml)

    def store(self) -> StateStore:
        return SqliteStateStore(self.path, claim_ttl_s=self.claim_ttl_days * 86_400)


class DeadLetterResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def store(self) -> DeadLetterStore: ...


class SqliteDeadLetterResource(DeadLetterResource):
    path: str

    def store(self) -> DeadLetterStore:
        return SqliteDeadLetterStore(self.path)


class RoutingResource(dg.ConfigurableResource):
    """The stream routing rules (``platform/routing.yaml``)."""

    path: str

    def router(self) -> Router:
        return Router.from_file(self.path)


class StreamingResources(dg.ConfigurableResource):
    """The stores one streaming step needs, bundled so assets ask for one thing."""

    objects: ObjectStoreResource
    state: StateStoreResource
    dead_letters: DeadLetterResource
    routing: RoutingResource
    first_partition: str

    def stores(self) -> Stores:
        return Stores(
            objects=self.objects.store(),
            state=self.state.store(),
            dead_letters=self.dead_letters.store(),
            router=self.routing.router(),
            first_partition=self.first_partition,
        )
