"""Drives the streaming path in-process: real sensors, real jobs, an ephemeral instance."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets.streaming import build_streaming_assets, stream_jobs
from figstream.migration.ledger import parse_ledger
from figstream.settings import streaming_settings
from figstream.storage.deadletter import SqliteDeadLetterStore, deadletter_path
from figstream.storage.objects import LocalObjectStore
from figstream.storage.state import SqliteStateStore, state_path
from figstream.streaming import index_export
from legacy.pipeline import TASKS
from resources.profiles import resources_for
from sensors.streams import stream_sensor

EPOCH = dt.date(2026, 11, 1)
LEDGER = parse_ledger(
    "version: 1\nlegacy_epoch: 2026-11-01\ntasks:\n"
    + "".join(f"  {t.__name__}: {{stage: legacy}}\n" for t in TASKS),
    "test-ledger.yaml",
)


class Harness:
    def __init__(self, home: Path, monkeypatch, **settings) -> None:
        monkeypatch.setenv("FIGSTREAM_HOME", str(home))
        self.home = home
        self.settings = dataclasses.replace(streaming_settings(), **settings)
        self.jobs = stream_jobs()
        self.defs = dg.Definitions(
            assets=build_streaming_assets(LEDGER, self.settings),
            jobs=list(self.jobs.values()),
            sensors=[
                stream_sensor(s, self.jobs[s], self.jobs["stats"], self.settings)
                for s in ("postings", "boards")
            ],
            resources=resources_for("local", LEDGER),
        )
        self.resources = resources_for("local", LEDGER)
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
        job = self.defs.resolve_job_def(request.job_name)
        result = job.execute_in_process(
            run_config=request.run_config or {},
            partition_key=request.partition_key,
            instance=self.instance,
            tags=request.tags,
        )
        assert result.success
        return result

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

    def table(self, name: str) -> pa.Table:
        files = sorted((self.home / "tables" / name).rglob("*.parquet"))
        if not files:
            return pa.table({})
        return pa.concat_tables([pq.read_table(f) for f in files])

    def state(self) -> SqliteStateStore:
        return SqliteStateStore(state_path(self.home))

    def index(self) -> pa.Table:
        """The whole search index, as a consumer builds it from snapshot and changes."""
        return index_export.current_index(LocalObjectStore(self.home))

    def duplicates(self) -> pa.Table:
        """job_id, duplicate_of_job_id of every duplicate in the registry."""
        registry = self.state().registry()
        duplicates = registry.filter(pc.is_valid(registry["duplicate_of"]))
        return pa.table(
            {"job_id": duplicates["job_id"], "duplicate_of_job_id": duplicates["duplicate_of"]}
        )

    def dead_letters(self) -> SqliteDeadLetterStore:
        return SqliteDeadLetterStore(deadletter_path(self.home))
