"""The private Dagster names in ``resources/dagster_internals.py``: each one is still where the
adapter imports it from and still has the shape figstream relies on, and no other module imports
``dagster._…``.

A failure here after a Dagster upgrade names the private API that moved or changed and the
Dagster version; fix the adapter (and its docstring) before anything else.
"""

import ast
import importlib
import inspect
import sys
from pathlib import Path

import dagster as dg
import pytest

import resources.dagster_internals as internals
from resources.run_launcher import LocalRunLauncher

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "launcher_fixture"
ADAPTER = ROOT / "resources" / "dagster_internals.py"
# Where our Python lives (the .venv beside it is not ours).
SOURCES = ["assets", "sensors", "resources", "figstream", "legacy", "lambdas", "tests", "bench"]


def _moved(what: str, how: str) -> str:
    return f"dagster {dg.__version__}: {what} {how}; see resources/dagster_internals.py"


def _takes(fn, *params: str) -> None:
    have = inspect.signature(fn).parameters
    missing = [p for p in params if p not in have]
    assert not missing, _moved(fn.__qualname__, f"no longer takes {missing} (takes {list(have)})")


@pytest.fixture(scope="module")
def job_origin():
    """The origin of a run of the launcher fixture, built as tests/test_run_launcher.py does
    (nothing is imported from the fixture)."""
    repo = internals.ReconstructableRepository.for_file(
        str(FIXTURE / "location.py"), "defs", working_directory=str(FIXTURE)
    )
    return repo.get_reconstructable_job("report_job").get_python_origin()


def check_tags():
    assert internals.PARENT_RUN_ID_TAG == "dagster/parent_run_id", _moved(
        "PARENT_RUN_ID_TAG", f"is now {internals.PARENT_RUN_ID_TAG!r}"
    )
    assert internals.RETRY_NUMBER_TAG == "dagster/retry_number", _moved(
        "RETRY_NUMBER_TAG", f"is now {internals.RETRY_NUMBER_TAG!r}"
    )
    assert internals.RUN_KEY_TAG == "dagster/run_key", _moved(
        "RUN_KEY_TAG", f"is now {internals.RUN_KEY_TAG!r}"
    )


def check_defs_state_storage():
    with dg.instance_for_test() as instance:
        assert internals.DefsStateStorage.get() is instance.defs_state_storage, _moved(
            "DefsStateStorage.get()", "no longer what DagsterInstance.__enter__ sets"
        )
    internals.forget_defs_state_storage()
    assert internals.DefsStateStorage.get() is None, _moved(
        "_current_storage", "is no longer the current storage's context variable"
    )


def check_launch_run_context():
    run = dg.DagsterRun(job_name="j", run_id="r1")
    context = internals.LaunchRunContext(dagster_run=run, workspace=None)
    assert context.dagster_run is run, _moved("LaunchRunContext", "lost .dagster_run")


def check_health_result():
    for member in ("RUNNING", "FAILED"):
        assert hasattr(internals.WorkerStatus, member), _moved("WorkerStatus", f"lost .{member}")
    result = internals.CheckRunHealthResult(internals.WorkerStatus.FAILED, "gone")
    assert (result.status, result.msg) == (internals.WorkerStatus.FAILED, "gone"), _moved(
        "CheckRunHealthResult(status, msg)", f"reads back as {result!r}"
    )


def check_execute_run_args(job_origin):
    _takes(internals.ExecuteRunArgs, "job_origin", "run_id", "instance_ref")
    args = internals.ExecuteRunArgs(job_origin=job_origin, run_id="r1", instance_ref=None)
    back = dg.deserialize_value(dg.serialize_value(args), internals.ExecuteRunArgs)
    assert back == args, _moved("ExecuteRunArgs", "no longer survives serialize_value")


def check_execute_run_command():
    callback = getattr(internals.execute_run_command, "callback", None)
    assert callable(callback), _moved("execute_run_command", "is no longer a click command")
    _takes(callback, "input_json", "compressed_input_json")


def check_repository_origin(job_origin):
    origin = job_origin.repository_origin
    assert isinstance(origin, internals.RepositoryPythonOrigin), _moved(
        "RepositoryPythonOrigin", f"is not a run's repository origin ({type(origin)})"
    )
    pointer = origin.code_pointer
    assert pointer.python_file and pointer.working_directory == str(FIXTURE), _moved(
        "RepositoryPythonOrigin.code_pointer", f"lost python_file/working_directory: {pointer!r}"
    )
    assert origin.executable_path, _moved("RepositoryPythonOrigin", "lost .executable_path")
    back = dg.deserialize_value(dg.serialize_value(origin), internals.RepositoryPythonOrigin)
    assert back == origin, _moved("RepositoryPythonOrigin", "no longer survives serialize_value")


def check_recon_repository_from_origin(job_origin):
    origin = job_origin.repository_origin
    recon = internals.recon_repository_from_origin(origin)
    assert callable(getattr(recon, "get_definition", None)), _moved(
        "recon_repository_from_origin", "returns nothing with .get_definition()"
    )
    assert recon.get_python_origin() == origin, _moved(
        "recon_repository_from_origin", "returns a repository of another origin"
    )


def check_reconstructable_repository(job_origin):
    _takes(internals.ReconstructableRepository.for_file, "working_directory")
    assert job_origin.repository_origin.code_pointer.fn_name == "defs", _moved(
        "ReconstructableRepository.for_file", "points somewhere else"
    )


def check_engine_event_data():
    metadata = internals.EngineEventData.in_process(4242).metadata
    assert int(metadata["pid"].value) == 4242, _moved(
        "EngineEventData.in_process(pid)", f"records the pid as {metadata!r}"
    )


def check_tick_types():
    import dagster as dg

    tick = internals.TickData(
        instigator_origin_id="origin",
        instigator_name="s",
        instigator_type=internals.InstigatorType.SENSOR,
        status=internals.TickStatus.SKIPPED,
        timestamp=1.0,
        selector_id="selector",
    )
    assert tick.status is internals.TickStatus.SKIPPED, _moved("TickData", "changed its fields")
    assert {"SKIPPED", "SUCCESS", "FAILURE", "STARTED"} <= set(internals.TickStatus.__members__)
    assert internals.InstigatorType.SENSOR.value == "SENSOR"
    assert dg.DagsterInstance  # the instance's schedule storage takes these ticks


CHECKS = {
    "InstigatorType": ("dagster._core.scheduler.instigation", check_tick_types),
    "TickData": ("dagster._core.scheduler.instigation", check_tick_types),
    "TickStatus": ("dagster._core.scheduler.instigation", check_tick_types),
    "PARENT_RUN_ID_TAG": ("dagster._core.storage.tags", check_tags),
    "RETRY_NUMBER_TAG": ("dagster._core.storage.tags", check_tags),
    "RUN_KEY_TAG": ("dagster._core.storage.tags", check_tags),
    "_current_storage": ("dagster._core.storage.defs_state.base", check_defs_state_storage),
    "DefsStateStorage": ("dagster._core.storage.defs_state.base", check_defs_state_storage),
    "LaunchRunContext": ("dagster._core.launcher", check_launch_run_context),
    "CheckRunHealthResult": ("dagster._core.launcher.base", check_health_result),
    "WorkerStatus": ("dagster._core.launcher.base", check_health_result),
    "ExecuteRunArgs": ("dagster._grpc.types", check_execute_run_args),
    "execute_run_command": ("dagster._cli.api", check_execute_run_command),
    "RepositoryPythonOrigin": ("dagster._core.origin", check_repository_origin),
    "recon_repository_from_origin": (
        "dagster._utils.hosted_user_process",
        check_recon_repository_from_origin,
    ),
    "ReconstructableRepository": (
        "dagster._core.definitions.reconstruct",
        check_reconstructable_repository,
    ),
    "EngineEventData": ("dagster._core.events", check_engine_event_data),
}
PRELOADED = ["dagster._cli.api", "dagster._core.execution.api", "dagster._core.executor.in_process"]


def test_every_adapted_name_has_a_check():
    assert sorted(internals.__all__) == sorted(CHECKS), (
        "resources/dagster_internals.py and this test list different names"
    )


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_each_private_name_is_still_where_and_what_we_rely_on(name, request):
    module_name, check = CHECKS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        pytest.fail(_moved(module_name, f"is gone ({error}), so is {name}"))
    assert getattr(module, name, None) is getattr(internals, name), _moved(
        f"{module_name}.{name}", "is gone or no longer what the adapter imports"
    )
    params = inspect.signature(check).parameters
    check(*(request.getfixturevalue(p) for p in params))


@pytest.mark.parametrize("module_name", PRELOADED)
def test_the_modules_a_pre_loaded_worker_holds_are_loaded_with_the_adapter(module_name):
    assert module_name in sys.modules, _moved(module_name, "is not loaded by the adapter")


def test_the_run_launcher_methods_we_override_still_exist():
    """A renamed hook would leave our override silently unused."""
    ours = [n for n in vars(LocalRunLauncher) if not n.startswith("_")]
    gone = [n for n in ours if not hasattr(dg.DefaultRunLauncher, n)]
    assert not gone, _moved("DefaultRunLauncher", f"no longer has {gone}")
    _takes(dg.DefaultRunLauncher.__init__, "inst_data")


def test_the_launchers_private_members_still_work_as_we_use_them():
    """``_instance`` is the instance it serves; ``join`` waits for the runs in ``_run_ids``."""
    instance = dg.DagsterInstance.ephemeral()
    launcher = dg.DefaultRunLauncher()
    launcher.register_instance(instance)
    assert launcher._instance is instance, _moved("DefaultRunLauncher._instance", "changed")
    assert isinstance(launcher._run_ids, set), _moved("DefaultRunLauncher._run_ids", "changed")
    run = instance.create_run_for_job(dg.GraphDefinition("g").to_job())
    launcher._run_ids.add(run.run_id)
    with pytest.raises(Exception, match=run.run_id):
        launcher.join(timeout=0.05)  # the run never finishes: join must wait for it


def _private_imports(source: str) -> list[str]:
    """``line: name`` for each import of a ``dagster._…`` module in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue
        found += [f"{node.lineno}: {n}" for n in names if n.startswith("dagster._")]
    return found


def test_no_module_but_the_adapter_imports_private_dagster():
    files = {ROOT / "definitions.py", *ROOT.glob("*.py")}
    for top in SOURCES:
        files.update((ROOT / top).rglob("*.py"))
    assert len(files) > 50  # the scan sees the tree
    offenders = [
        f"{path.relative_to(ROOT)}:{hit}"
        for path in sorted(files - {ADAPTER})
        for hit in _private_imports(path.read_text())
    ]
    assert not offenders, (
        f"import private Dagster names through resources/dagster_internals.py: {offenders}"
    )


def test_the_scan_sees_every_form_of_private_import():
    source = (
        "import dagster._core.events\n"
        "from dagster._serdes import serialize_value\n"
        "from dagster import _check, asset\n"
        "importlib.import_module('dagster._cli.api')\n"
        "NAME = 'dagster._daemon run'  # a process name, not an import\n"
        "import dagster_aws\n"
    )
    assert sorted(hit.split(":")[0] for hit in _private_imports(source)) == ["1", "2", "3", "4"]
