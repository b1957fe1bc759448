"""The aws profile's run launcher: streaming runs in warm local workers, heavy runs on ECS.

Dagster OSS has one run launcher per instance, and the two kinds of run want different ones:

- a streaming run must start in seconds (the freshness bench's launch, run created to
  RUN_START, is 0.44 s p50 from a pre-loaded worker); an ECS task takes about a minute to
  start (image pull, ENI attach, container start), longer than the whole publish-to-index path;
- a backfill over weeks or a legacy night wants its own CPU and memory, and must not starve
  the streams of the host they run on.

So this launcher is :class:`resources.run_launcher.LocalRunLauncher` (forks of a pre-loaded
worker in the daemon's task, with its worker health check) for every run, except those routed
to dagster-aws's own ``EcsRunLauncher``, which runs them as one ECS task each:

- runs tagged ``figstream/launcher: ecs`` (and never those tagged ``local``);
- runs of a backfill (``dagster/backfill``), when ``backfills_on_ecs`` is on;
- runs of the jobs in ``ecs_jobs`` (``legacy_nightly_job`` in ``platform/aws/dagster.yaml``).

The ECS launcher is built on the first run routed to it, so an instance without ECS settings
(``make dev-aws``, the tests) loads and launches streaming runs. Its cluster and network come
from the environment when it is built (``FIGSTREAM_ECS_CLUSTER``; ``FIGSTREAM_ECS_SUBNETS`` and
``FIGSTREAM_ECS_SECURITY_GROUPS``, comma-separated): ``run_task_kwargs`` in ``dagster.yaml``
takes literals only, and an ``env:`` there is required when the instance loads.

Bad inputs tried (``tests/test_instance_postgres.py``): an unknown ``figstream/launcher`` value
(refused when the run is launched, naming the tag), a run whose routing tags disagree
(``local`` wins: an operator's explicit choice).
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from resources.dagster_internals import CheckRunHealthResult, LaunchRunContext
from resources.run_launcher import LocalRunLauncher

LAUNCHER_TAG = "figstream/launcher"
BACKFILL_TAG = "dagster/backfill"
ROUTES = ("local", "ecs")


def route_for(tags: dict[str, str], job_name: str, ecs_jobs: list[str], backfills: bool) -> str:
    """``local`` or ``ecs`` for a run with these tags of this job."""
    chosen = tags.get(LAUNCHER_TAG)
    if chosen is not None:
        if chosen not in ROUTES:
            raise ValueError(f"run tag {LAUNCHER_TAG}={chosen!r}: use one of {', '.join(ROUTES)}")
        return chosen
    if job_name in ecs_jobs or (backfills and BACKFILL_TAG in tags):
        return "ecs"
    return "local"


def run_task_kwargs_from_env(environ: dict[str, str]) -> dict[str, Any]:
    """The ``run_task_kwargs`` the environment sets: the cluster and the task's network."""
    kwargs: dict[str, Any] = {}
    if environ.get("FIGSTREAM_ECS_CLUSTER"):
        kwargs["cluster"] = environ["FIGSTREAM_ECS_CLUSTER"]
    network = _network_from_env(environ)
    if network is not None:
        kwargs["networkConfiguration"] = network
    return kwargs


def _network_from_env(environ: dict[str, str]) -> dict[str, Any] | None:
    subnets = [s for s in environ.get("FIGSTREAM_ECS_SUBNETS", "").split(",") if s.strip()]
    if not subnets:
        return None
    groups = [g for g in environ.get("FIGSTREAM_ECS_SECURITY_GROUPS", "").split(",") if g.strip()]
    vpc: dict[str, Any] = {"subnets": [s.strip() for s in subnets], "assignPublicIp": "DISABLED"}
    if groups:
        vpc["securityGroups"] = [g.strip() for g in groups]
    return {"awsvpcConfiguration": vpc}


class RoutedRunLauncher(LocalRunLauncher):
    """Warm local workers for streaming runs; ``EcsRunLauncher`` for the runs routed to ECS."""

    def __init__(
        self,
        inst_data=None,
        ecs: dict | None = None,
        ecs_jobs: list | None = None,
        backfills_on_ecs: bool = True,
        **local,
    ):
        # ``local``: LocalRunLauncher's own options (warm workers, preload, ...), passed through
        # so that a new one cannot be left out here again.
        super().__init__(inst_data=inst_data, **local)
        self.ecs_config = dict(ecs or {})
        self.ecs_jobs = list(ecs_jobs or [])
        self.backfills_on_ecs = backfills_on_ecs
        self._ecs = None

    @classmethod
    def config_type(cls):
        from dagster_aws.ecs import EcsRunLauncher

        return {
            **LocalRunLauncher.config_type(),
            # EcsRunLauncher's own schema, checked when the instance loads.
            "ecs": dg.Field(EcsRunLauncher.config_type(), is_required=False),
            "ecs_jobs": dg.Field([str], is_required=False, default_value=[]),
            "backfills_on_ecs": dg.Field(bool, is_required=False, default_value=True),
        }

    def route(self, run: dg.DagsterRun) -> str:
        return route_for(dict(run.tags), run.job_name, self.ecs_jobs, self.backfills_on_ecs)

    @property
    def ecs_launcher(self):
        if self._ecs is None:
            from dagster_aws.ecs import EcsRunLauncher

            config = dict(self.ecs_config)
            # What dagster.yaml sets wins over the environment.
            kwargs = run_task_kwargs_from_env(dict(os.environ)) | dict(
                config.get("run_task_kwargs") or {}
            )
            if kwargs:
                config["run_task_kwargs"] = kwargs
            launcher = EcsRunLauncher(**config)
            launcher.register_instance(self._instance)
            self._ecs = launcher
        return self._ecs

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if self.route(run) == "ecs":
            self._instance.add_run_tags(run.run_id, {LAUNCHER_TAG: "ecs"})
            self.ecs_launcher.launch_run(context)
            return
        super().launch_run(context)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is not None and run.tags.get(LAUNCHER_TAG) == "ecs":
            return self.ecs_launcher.terminate(run_id)
        return super().terminate(run_id)

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        if run.tags.get(LAUNCHER_TAG) == "ecs":
            return self.ecs_launcher.check_run_worker_health(run)
        return super().check_run_worker_health(run)

    def dispose(self) -> None:
        if self._ecs is not None:
            self._ecs.dispose()
        super().dispose()
