"""Drives the streaming path in-process: real sensors, real jobs, an ephemeral instance."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from assets.streaming import build_streaming_assets, stream_jobs
from figstream.ingest.publish import Publisher
from figstream.migration.ledger import parse_ledger
from figstream.settings import streaming_settings
from figstream.storage.deadletter import DeadLetterStore
from figstream.storage.objects import read_parquet
from figstream.storage.state import StateStore
from figstream.streaming import index_export
from legacy.pipeline import TASKS
from resources.profiles import resources_for
from resources.stores import ObjectStoreResource
from sensors.streams import stream_sensor

EPOCH = dt.date(2026, 11, 1)
LEDGER = parse_ledger(
    "version: 1\nlegacy_epoch: 2026-11-01\ntasks:\n"
    + "".join(f"  {t.__name__}: {{stage: legacy}}\n" for t in TASKS),
    "test-ledger.yaml",
)


class Harness:
    """``profile="aws"`` needs the ``aws_config`` fixture first (the emulator and its
    environment): the harness then creates the infrastructure (``figstream aws setup``), and
    :meth:`publish` goes through EventBridge and SQS, which each sensor tick drains."""

    def __init__(
        self,
        home: Path,
        monkeypatch,
        profile: str = "local",
        objects: ObjectStoreResource | None = None,
        **settings,
    ) -> None:
        """``objects``: the object store resource to run with instead of the profile's (a
        store that injects faults, say)."""
        monkeypatch.setenv("FIGSTREAM_HOME", str(home))
        self.home = home
        self.profile = profile
        self.settings = dataclasses.replace(streaming_settings(), **settings)
        if profile == "aws":
            from figstream.cli.aws import setup
            from figstream.ingest.routing import Router
            from figstream.settings import routing_path
            from figstream.storage.aws import AwsConfig

            self.aws = AwsConfig.from_env()
            setup(self.aws, Router.from_file(routing_path()))
        self.jobs = stream_jobs()
        self.resources = resources_for(profile, LEDGER)
        if objects is not None:
            streaming = self.resources["streaming"]
            self.resources["streaming"] = streaming.model_copy(update={"objects": objects})
        self.defs = dg.Definitions(
            assets=build_streaming_assets(LEDGER, self.settings),
            jobs=list(self.jobs.values()),
            sensors=[
                stream_sensor(s, self.jobs[s], self.jobs["stats"], self.settings)
                for s in ("postings", "boards")
            ],
            resources=self.resources,
        )
        self.stores = self.resources["streaming"].stores()
        self.objects = self.stores.objects
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursors: dict[str, str | None] = {"postings": None, "boards": None}

    def tick(self, stream: str):
        sensor = self.defs.get_sensor_def(f"{stream}_sensor")
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursors[stream], resources=self.resources
        ) as context:
            result = sensor(context)
        if isinstance(result, dg.SensorResult) and result.cursor:
            self.cursors[stream] = result.cursor
        return result

    def run(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        result = self.attempt(request)
        assert result.success
        return result

    def attempt(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """Run ``request`` and return its result, whether it succeeded or failed."""
        job = self.defs.resolve_job_def(request.job_name)
        return job.execute_in_process(
            run_config=request.run_config or {},
            partition_key=request.partition_key,
            instance=self.instance,
            tags=request.tags,
            raise_on_error=False,
        )

    def drain(self) -> list[dg.RunRequest]:
        """Tick every sensor and run what it asks until nothing new is requested."""
        done = []
        while True:
            requested = []
            for stream in ("postings", "boards"):
                result = self.tick(stream)
                if isinstance(result, dg.SensorResult):
                    requested += result.run_requests or []
            if not requested:
                return done
            for request in requested:
                self.run(request)
            done += requested

    def backfill(self, job_name: str, partitions: list[str]) -> None:
        job = self.defs.resolve_job_def(job_name)
        for partition in partitions:
            assert job.execute_in_process(partition_key=partition, instance=self.instance).success

    def publisher(self, producer: str = "test"):
        """The profile's intake: landing batches (local), or the event bus, whose queues the
        next ticks drain (aws)."""
        if self.profile == "aws":
            from figstream.ingest.eventbridge import EventBridgePublisher

            return EventBridgePublisher(self.aws, producer=producer)
        return Publisher(self.objects, producer=producer)

    def publish(self, records: list, producer: str = "test") -> list[str]:
        return self.publisher(producer).publish(records)

    def table(self, name: str) -> pa.Table:
        keys = [k for k in self.objects.list(f"tables/{name}/") if k.endswith(".parquet")]
        if not keys:
            return pa.table({})
        return pa.concat_tables([read_parquet(self.objects, k) for k in keys])

    def state(self) -> StateStore:
        return self.stores.state

    def index(self) -> pa.Table:
        """The whole search index, as a consumer builds it from snapshot and changes."""
        return index_export.current_index(self.objects)

    def duplicates(self) -> pa.Table:
        """job_id, duplicate_of_job_id of every duplicate in the registry."""
        registry = self.state().registry()
        duplicates = registry.filter(pc.is_valid(registry["duplicate_of"]))
        return pa.table(
            {"job_id": duplicates["job_id"], "duplicate_of_job_id": duplicates["duplicate_of"]}
        )

    def dead_letters(self) -> DeadLetterStore:
        return self.stores.dead_letters
