"""A tiny code location for the launcher tests: reads a file at import, as definitions.py
reads the ledger, and reports which process ran it."""

import json
import os
import time
from pathlib import Path

import dagster as dg
import location_lib

STAGE = (Path(__file__).parent / "stage.txt").read_text().strip()


@dg.op(config_schema={"out": str, "sleep": float})
def report(context: dg.OpExecutionContext) -> None:
    time.sleep(context.op_config["sleep"])
    facts = {"stage": STAGE, "lib": location_lib.VERSION, "pid": os.getpid(), "ppid": os.getppid()}
    Path(context.op_config["out"]).write_text(json.dumps(facts))


@dg.job(executor_def=dg.in_process_executor)
def report_job():
    report()


defs = dg.Definitions(jobs=[report_job])
