"""Build the Lambda deployment package: ``python -m lambdas.build_zip`` writes ``dist/lambda.zip``.

What goes in: ``lambdas/``, the figstream core packages the handlers import, and the third-party
distributions they import (``dagster_pipes``, a single module; ``orjson``, ``msgspec`` and
``pydantic`` for the parser; ``ruamel.yaml`` for the routing rules), copied from this
environment. Which ones is not a hand-kept list: a clean interpreter imports every handler
(:data:`HANDLER_MODULES`) and the package takes what it loaded.

What stays out, and where it comes from instead:

* **pyarrow and numpy** (and pandas with pytz, which pyarrow loads when present): ~150 MB unpacked,
  beyond what a zip may carry with room to spare. On AWS they come from a Lambda layer, the
  AWS SDK for pandas layer (``AWSSDKPandas-Python311``, which ships pyarrow, numpy and pandas
  built for the runtime), or the function is deployed as a container image instead (the code
  location's image, ``platform/aws/``, with ``lambdas.validate_batch.handler`` as the command
  and the ``awslambdaric`` runtime client). The layer's pyarrow must read and write the same
  Parquet as the code location's (any pyarrow of the last years does). pyarrow imports pandas
  on its first ``pa.array`` when pandas is there, which is over a third of the handler's
  import time: a layer of only pyarrow and numpy (``pip install --target python/
  --platform manylinux2014_x86_64 --only-binary=:all: pyarrow numpy``) cold-starts faster;
* **boto3 and botocore** (with s3transfer, jmespath, dateutil, urllib3, six): the Lambda Python
  runtime provides them.

The target is the ``python3.11`` runtime on x86_64 (Amazon Linux 2, glibc 2.26): a compiled
distribution is taken only if one of its wheel tags runs there (``cp311``, ``manylinux`` up to
2.26 or ``manylinux2014``); anything else stops the build, naming the distribution, because the
package would fail on its first import. The zip is reproducible: entries sorted, fixed
timestamps and modes, no bytecode. A function's package may be 50 MB zipped when uploaded
directly and 250 MB unpacked with its layers; the build refuses past those.

Bad inputs tried (see ``tests/lambdas/test_build_zip.py``): a handler module that does not
import, a distribution built for another platform.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "dist" / "lambda.zip"
HANDLER_MODULES = (
    "lambdas.run",
    "lambdas.validate_batch",
    "lambdas.redirect_edge",  # stdlib and figstream.redirects.keys only
    "figstream.storage.aws",
    "figstream.storage.s3_objects",  # imported when an event names the S3 store
)
# The AWS SDK for pandas layer: pyarrow imports pandas (and so pytz) when it is there.
LAYER = {"pyarrow", "numpy", "pandas", "pytz", "tzdata"}
RUNTIME = {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"}
PROJECT = {"figstream", "lambdas"}
ZIP_LIMIT = 50 * 1024 * 1024  # direct upload
UNZIPPED_LIMIT = 250 * 1024 * 1024  # with the layers
MAX_GLIBC = (2, 26)  # Amazon Linux 2, the python3.11 runtime's OS
_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_x86_64")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


class BuildError(RuntimeError):
    """The package cannot be built for the target runtime; the message says why."""


@dataclass
class Package:
    path: Path
    files: int = 0
    zipped_bytes: int = 0
    unzipped_bytes: int = 0
    sha256: str = ""
    distributions: dict[str, str] = field(default_factory=dict)  # name -> version

    def summary(self) -> dict:
        return {
            "path": str(self.path),
            "files": self.files,
            "zipped_bytes": self.zipped_bytes,
            "unzipped_bytes": self.unzipped_bytes,
            "sha256": self.sha256,
            "distributions": self.distributions,
            "from_layer": sorted(LAYER),
            "from_runtime": sorted(RUNTIME),
        }


# What the handlers import beyond what the interpreter had loaded before (its site hooks).
_PROBE = """
import importlib, json, sys
before = set(sys.modules)
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def imported_modules(modules: Iterable[str] = HANDLER_MODULES) -> list[str]:
    """Every module a clean interpreter holds after importing ``modules``."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise BuildError(f"the handlers do not import: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout)


def _stdlib(name: str) -> bool:
    return name in sys.stdlib_module_names or name in sys.builtin_module_names


def wheel_runs_on_target(tags: Iterable[str]) -> bool:
    """Whether a distribution with these wheel tags runs on CPython 3.11, x86_64, glibc 2.26."""
    for tag in tags:
        interpreter, abi, platform = tag.split("-", 2)
        if interpreter not in ("py3", "cp311", "py2.py3") or abi not in ("none", "cp311", "abi3"):
            continue
        if platform == "any" or platform in ("manylinux2014_x86_64", "manylinux1_x86_64"):
            return True
        match = _MANYLINUX.fullmatch(platform)
        if match and (int(match[1]), int(match[2])) <= MAX_GLIBC:
            return True
    return False


def _tags(dist: metadata.Distribution) -> list[str]:
    text = dist.read_text("WHEEL") or ""
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


def third_party_files(top_levels: set[str]) -> tuple[dict[str, Path], dict[str, str]]:
    """Archive name -> file of every distribution that provides one of ``top_levels``, and
    the distributions' versions; raises :class:`BuildError` for one built for elsewhere."""
    providers = metadata.packages_distributions()
    files: dict[str, Path] = {}
    versions: dict[str, str] = {}
    for top in sorted(top_levels):
        for name in providers.get(top, []):
            dist = metadata.distribution(name)
            if dist.metadata["Name"] in versions:
                continue
            tags = _tags(dist)
            if not wheel_runs_on_target(tags):
                raise BuildError(
                    f"{dist.metadata['Name']} {dist.version} is built for {', '.join(tags)}, "
                    "not the python3.11 x86_64 runtime (Amazon Linux 2): install its "
                    "manylinux2014 wheel or deploy the function as a container image"
                )
            versions[dist.metadata["Name"]] = dist.version
            for entry in dist.files or []:
                parts = entry.parts
                if parts[0].endswith((".dist-info", ".data")) or "__pycache__" in parts:
                    continue
                if parts[0] != top and not parts[0].startswith(f"{top}."):
                    continue  # another top level of the same distribution, if not imported
                files[entry.as_posix()] = Path(entry.locate())
    return files, versions


def project_files(imported: list[str]) -> dict[str, Path]:
    """The project's packages: ``lambdas/`` whole, and of ``figstream`` its ``__init__`` and
    the sub-packages the handlers import (not the CLI, the migration or the redirects)."""
    files: dict[str, Path] = {}
    for path in sorted((ROOT / "lambdas").rglob("*.py")):
        files[path.relative_to(ROOT).as_posix()] = path
    wanted = {m.split(".")[1] for m in imported if m.startswith("figstream.")}
    for path in sorted((ROOT / "figstream").rglob("*.py")):
        relative = path.relative_to(ROOT)
        first = relative.parts[1].removesuffix(".py")
        if (len(relative.parts) == 2 and first == "__init__") or first in wanted:
            files[relative.as_posix()] = path
    return files


def build(output: Path = OUTPUT, modules: Iterable[str] = HANDLER_MODULES) -> Package:
    """Write the deployment package to ``output`` and describe it."""
    imported = imported_modules(modules)
    tops = {m.split(".")[0] for m in imported}
    outside = {t for t in tops if not _stdlib(t)} - LAYER - RUNTIME - PROJECT
    files, versions = third_party_files(outside)
    files.update(project_files(imported))
    output.parent.mkdir(parents=True, exist_ok=True)
    package = Package(output, distributions=dict(sorted(versions.items())))
    partial = output.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(files):
            data = files[name].read_bytes()
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            executable = name.endswith(".so") or ".so." in name
            info.external_attr = ((0o755 if executable else 0o644) | 0o100000) << 16
            archive.writestr(info, data)
            package.files += 1
            package.unzipped_bytes += len(data)
    package.zipped_bytes = partial.stat().st_size
    if package.zipped_bytes > ZIP_LIMIT or package.unzipped_bytes > UNZIPPED_LIMIT:
        partial.unlink()
        raise BuildError(
            f"the package is {package.zipped_bytes} bytes zipped, {package.unzipped_bytes} "
            f"unpacked: over Lambda's {ZIP_LIMIT} / {UNZIPPED_LIMIT}"
        )
    partial.replace(output)
    package.sha256 = hashlib.sha256(output.read_bytes()).hexdigest()
    return package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lambdas.build_zip", description=__doc__)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    try:
        package = build(args.output)
    except BuildError as exc:
        print(f"lambda-zip: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(package.summary(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
