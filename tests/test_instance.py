"""The local Dagster instance (platform/local/dagster.yaml), loaded as a real instance."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
from conftest import ROOT


def test_the_local_instance_loads_and_bounds_tick_history(tmp_path: Path) -> None:
    shutil.copy(ROOT / "platform" / "local" / "dagster.yaml", tmp_path / "dagster.yaml")
    # from_config validates the file against Dagster's instance schema: a bad key fails here.
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        retention = instance.get_settings("retention")
    sensor = retention["sensor"]["purge_after_days"]
    assert set(sensor) == {"skipped", "started", "success", "failure"}  # no tick kept forever
    assert all(0 < days <= 30 for days in sensor.values()), sensor
    assert sensor["skipped"] <= sensor["success"] <= sensor["failure"]
    assert 0 < retention["schedule"]["purge_after_days"] <= 366
