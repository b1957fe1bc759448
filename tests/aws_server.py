"""moto server as a real HTTP endpoint for the aws profile's tests (no mock decorators).

One server per test process (pytest-xdist workers each start their own), bound to 127.0.0.1 on
a free port, started in its own process group and stopped with it. Tests share the server but
not its resources: each gets its own name prefix (tables, queues, rules and bucket), so no test
sees another's data. moto slows down on deep SQS queues: tests drain what they fill.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from figstream.storage.aws import AwsConfig

BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_server(port: int, log: Path) -> Iterator[str]:
    """Start ``moto_server`` on 127.0.0.1:``port``; yield its endpoint URL; stop it."""
    from tests.conftest import stop_group

    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer in 60 s; see {log}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        stop_group(proc, grace=5.0)


def emulator_config(endpoint: str, prefix: str | None = None) -> AwsConfig:
    """A config on the emulator with a fresh name prefix (one per test)."""
    return AwsConfig(
        endpoint_url=endpoint,
        prefix=prefix or f"t{uuid.uuid4().hex[:12]}",
        retry_mode="standard",
        max_attempts=5,
    )


def aws_environ(config: AwsConfig, invoker: str = "in_process") -> dict[str, str]:
    """The environment a subprocess (CLI, daemon, webserver) needs to use ``config``."""
    env = dict(CREDENTIALS)
    env.update(
        FIGSTREAM_PROFILE="aws",
        FIGSTREAM_AWS_ENDPOINT=config.endpoint_url or "",
        FIGSTREAM_AWS_REGION=config.region,
        FIGSTREAM_AWS_PREFIX=config.prefix,
        FIGSTREAM_AWS_RETRY_MODE=config.retry_mode,
        FIGSTREAM_AWS_MAX_ATTEMPTS=str(config.max_attempts),
        # moto cannot run Lambda code: the ingest step validates in process here (each
        # subprocess invoke is a ~4 s cold start); tests/lambdas and the aws daemon test run
        # the same handler through PipesLambdaClient and the subprocess client.
        FIGSTREAM_LAMBDA_INVOKER=invoker,
    )
    return env


def set_credentials() -> None:
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
