"""Legacy's outputs on disk: ``<home>/legacy/<day>/<file>.csv``, read and written as Arrow."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from figstream.migration.parity import View
from figstream.migration.views import LEGACY_OUTPUTS, TASKS
from figstream.storage.objects import LocalObjectStore


def legacy_dir(data_root: Path, day: str) -> Path:
    """``<data_root>/legacy/<day>``: where the legacy tasks of ``day`` write (``legacy_target``)."""
    return Path(data_root) / "legacy" / day


# --- reading legacy -------------------------------------------------------------------------------


def read_csv(path: Path) -> pa.Table:
    """A legacy CSV as legacy's ``read_csv`` sees it, every column a string exactly as the
    file holds it ("" for an empty cell)."""
    data = Path(path).read_bytes()
    if b"\r" not in data:
        header = next(csv.reader(io.StringIO(data[: data.find(b"\n") + 1].decode("utf-8"))), None)
        if header is None:
            return pa.table({})
        return pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    # Arrow's reader differs from the csv module on carriage returns (legacy writes a bare
    # "\r" in a value unquoted, and its reader then splits the row there): read as legacy does,
    # a short row's missing cells empty and a long row's extra cells, which DictReader files
    # under no column, dropped.
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    if not rows:
        return pa.table({})
    header, width = rows[0], len(rows[0])
    # DictReader skips a row with no cells at all (a bare "\r" line), so do we.
    cells = [(row + [""] * width)[:width] for row in rows[1:] if row]
    columns = list(zip(*cells, strict=True)) if cells else [()] * width
    return pa.table([pa.array(c, pa.string()) for c in columns], names=header)


def read_legacy(task: str, day: str, data_root: Path) -> pa.Table | None:
    """The task's main output of ``day`` as all-string columns; None if it does not exist."""
    path = legacy_dir(data_root, day) / LEGACY_OUTPUTS[task][0]
    return read_csv(path) if path.exists() else None


# --- the bridge -----------------------------------------------------------------------------------


def csv_bytes(table: pa.Table) -> bytes:
    """The table as legacy's ``write_csv`` writes it: the csv module's default dialect with
    ``lineterminator="\\n"``, UTF-8, a header row; the same bytes, but for one fix.

    With that line terminator the csv module does not quote a value holding a carriage
    return, so legacy's own reader splits that row (a legacy flaw); a row holding one is
    written with every value quoted, which the same reader reads back intact.
    """
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(table.column_names)
    columns = [table[name].to_pylist() for name in table.column_names]
    for row in zip(*columns, strict=True):
        if any(isinstance(v, str) and "\r" in v for v in row):
            quoted.writerow(row)
        else:
            writer.writerow(row)
    return out.getvalue().encode("utf-8")


def write_legacy_outputs(task: str, day: str, view: View, data_root: Path) -> list[Path]:
    """Write the task's legacy files of ``day`` from ``view``, where Luigi's ``output()`` looks.

    Each file is written to a temporary name and renamed, the main output last, so Luigi
    (which calls a task complete when all its outputs exist) never sees a half-written day.
    Returns the paths, main output first.
    """
    outputs = TASKS[task].outputs
    tables = {}
    for index, (name, columns) in enumerate(outputs):
        table = view.table if index == 0 else view.extra_outputs.get(name)
        if table is None:
            raise ValueError(f"{task}: the view has no {name!r} to write")
        if tuple(table.column_names) != columns:
            raise ValueError(
                f"{task}: {name} needs the columns {list(columns)}, got {table.column_names}"
            )
        tables[name] = table.cast(pa.schema([(c, pa.string()) for c in columns]))
    # LocalObjectStore.put: temp file in the same directory, fsync, rename, fsync the directory
    store = LocalObjectStore(data_root)
    names = [name for name, _ in outputs]
    for name in [*names[1:], names[0]]:
        store.put(f"legacy/{day}/{name}", csv_bytes(tables[name]))
    return [legacy_dir(data_root, day) / name for name in names]
