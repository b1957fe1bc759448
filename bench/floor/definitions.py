"""The freshness floor: the least a sensor-triggered run costs on this Dagster instance.

One sensor watches ``$FIGSTREAM_BENCH_FLOOR_DIR/markers`` for ``<seq>-<id>.marker`` files and
requests one run of a one-asset job per new marker; the asset writes the marker id to
``out/<id>.txt``. Same daemon, same run launcher, in-process executor and sensor interval as
the figstream stream sensors, but no work and no imports beyond dagster: the difference
between a figstream probe and a floor probe is what figstream itself costs.
"""

import os
from pathlib import Path

import dagster as dg


def floor_dir() -> Path:
    return Path(os.environ.get("FIGSTREAM_BENCH_FLOOR_DIR", "/tmp/figstream-bench-floor"))


class Marker(dg.Config):
    marker_id: str


@dg.asset
def floor_marker(config: Marker) -> dg.MaterializeResult:
    out = floor_dir() / "out"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{config.marker_id}.tmp"
    tmp.write_text(config.marker_id)
    tmp.rename(out / f"{config.marker_id}.txt")
    return dg.MaterializeResult(metadata={"marker_id": config.marker_id})


floor_job = dg.define_asset_job(
    "floor_job", selection=[floor_marker], executor_def=dg.in_process_executor
)


@dg.sensor(job=floor_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def floor_sensor(context: dg.SensorEvaluationContext):
    markers = floor_dir() / "markers"
    names = sorted(
        p.name
        for p in (markers.glob("*.marker") if markers.is_dir() else [])
        if p.name > (context.cursor or "")
    )
    if not names:
        return dg.SkipReason("no new markers")
    requests = []
    for name in names:
        marker_id = name.removesuffix(".marker").split("-", 1)[1]
        requests.append(
            dg.RunRequest(
                run_key=name,
                run_config={"ops": {"floor_marker": {"config": {"marker_id": marker_id}}}},
                tags={"floor/marker": marker_id},
            )
        )
    return dg.SensorResult(run_requests=requests, cursor=names[-1])


defs = dg.Definitions(assets=[floor_marker], jobs=[floor_job], sensors=[floor_sensor])
