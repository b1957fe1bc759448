"""Every private Dagster name figstream uses (``dagster._…``), imported here and nowhere else.

Dagster promises nothing about these across releases, so they sit in one place, and
``tests/resources/test_dagster_internals.py`` checks each one's shape (the attributes, methods,
parameters, enum members and tag values relied on here), naming the name and the Dagster version
when an upgrade moves or changes it. What has a public equivalent is used publicly instead:
``dg.Field``, ``dg.DagsterEventType``, ``dg.DagsterRunStatus``, ``dg.DefaultRunLauncher``,
``dg.serialize_value`` and ``dg.deserialize_value``.

Names, where they are used, and why no public API serves:

- ``PARENT_RUN_ID_TAG``, ``RETRY_NUMBER_TAG``, ``RUN_KEY_TAG`` (``dagster._core.storage.tags``),
  in ``sensors/streams.py``: the tags run retries put on a retried run, and the run key the
  sensor daemon puts on a sensor's run (a stranded run is launched again by it). Dagster
  exports no run-tag constant but ``MAX_RUNTIME_SECONDS_TAG``; importing them keeps the
  sensor on the same tags as the daemons'.
- ``LaunchRunContext``, ``CheckRunHealthResult``, ``WorkerStatus``
  (``dagster._core.launcher``), in ``resources/run_launcher.py``: the argument and return types
  of the run-launcher methods that ``LocalRunLauncher`` overrides. ``RunLauncher`` is a
  documented extension point, but these types are not exported; Dagster's own launchers
  (docker, ECS, k8s) import them from the same place.
- ``ExecuteRunArgs`` (``dagster._grpc.types``), in ``resources/run_launcher.py``: what
  ``dagster api execute_run`` reads. A pre-loaded worker runs exactly that command, so it takes
  exactly that input; no public type describes it.
- ``execute_run_command`` (``dagster._cli.api``), in ``resources/warm_worker.py``: the run worker
  itself (``dagster api execute_run``), called in a forked child. The public way to run it is a
  fresh process, which is the 3 s the pre-loaded worker exists to save.
- ``recon_repository_from_origin`` (``dagster._utils.hosted_user_process``) and
  ``RepositoryPythonOrigin`` (``dagster._core.origin``), in ``resources/warm_worker.py``: load
  the code location from the run's origin once, in the pre-loaded worker, as the run worker
  would. Origins are Dagster's own serialised objects; nothing public builds one.
- ``dagster._core.execution.api``, ``dagster._core.executor.in_process``: imported for their side
  effect, so that a pre-loaded worker has what a run executes in memory before it forks.
- ``ReconstructableRepository`` (``dagster._core.definitions.reconstruct``) and
  ``EngineEventData`` (``dagster._core.events``), in ``tests/test_run_launcher.py`` only: a run
  with a code origin, as a launcher receives it, and the engine event a run worker records its pid
  with. ``dg.reconstructable`` builds a job, not a repository origin with a working directory.
- ``InstigatorType``, ``TickData``, ``TickStatus`` (``dagster._core.scheduler.instigation``), in
  ``tests/test_instance_postgres.py`` only: a sensor tick written straight into the Postgres
  schedule storage with a chosen age, to check the retention settings purge it; ticks are
  only created by the daemon otherwise.

- ``DefsStateStorage`` and its context variable ``_current_storage``
  (``dagster._core.storage.defs_state.base``), in ``tests/conftest.py`` only, through
  :func:`forget_defs_state_storage`:
  ``DagsterInstance.__enter__`` makes its defs-state storage the current one (a context
  variable) and ``__exit__`` never resets it, so after a test's ``with dg.instance_for_test()``
  every later definitions load in that process asks a disposed instance (``Attempted to
  resolve undefined DagsterInstance weakref``, or its deleted temp dir). Tests reset it between
  tests; nothing public can.

Private members of public classes, used in place and checked by the same test:
``DefaultRunLauncher._instance`` (the instance a launcher serves, as every custom launcher
reaches it) and ``DefaultRunLauncher._run_ids`` (the runs its ``join`` waits for; a pre-loaded
worker's run is added to it).
"""

# Imported for their side effect: a pre-loaded worker holds them before it forks.
import dagster._core.execution.api
import dagster._core.executor.in_process  # noqa: F401
from dagster._cli.api import execute_run_command
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.events import EngineEventData
from dagster._core.launcher import LaunchRunContext
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.origin import RepositoryPythonOrigin
from dagster._core.scheduler.instigation import InstigatorType, TickData, TickStatus
from dagster._core.storage.defs_state.base import DefsStateStorage, _current_storage
from dagster._core.storage.tags import PARENT_RUN_ID_TAG, RETRY_NUMBER_TAG, RUN_KEY_TAG
from dagster._grpc.types import ExecuteRunArgs
from dagster._utils.hosted_user_process import recon_repository_from_origin

__all__ = [
    "PARENT_RUN_ID_TAG",
    "RETRY_NUMBER_TAG",
    "RUN_KEY_TAG",
    "CheckRunHealthResult",
    "DefsStateStorage",
    "EngineEventData",
    "ExecuteRunArgs",
    "InstigatorType",
    "LaunchRunContext",
    "ReconstructableRepository",
    "RepositoryPythonOrigin",
    "TickData",
    "TickStatus",
    "WorkerStatus",
    "_current_storage",
    "execute_run_command",
    "recon_repository_from_origin",
]


def forget_defs_state_storage() -> None:
    """No current defs-state storage, as before any instance was entered (see above)."""
    _current_storage.set(None)
