"""Export a table of a group (e.g. a case's lesions) to CSV or Parquet."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from geoseg.errors import StoreError
from geoseg.sinks._export import output_file, written
from geoseg.sinks._zarr import read_table, table_names

__all__ = ["export_table"]


def export_table(store: str | os.PathLike[str], name: str, table: str | None, out: str | os.PathLike[str]) -> Path | str:
    """Write ``<store>/<name>/<table>`` to ``out`` (a file or an object URL): Parquet for
    ``.parquet`` (any case), else CSV. ``table`` None: the group's only table (``lesions`` of a
    case, ``objects`` of a scene with instances)."""
    if table is None:
        tables = table_names(store, name)
        table = tables[0] if len(tables) == 1 else "lesions"
    columns = read_table(store, name, table)
    with output_file(out, "table") as staging:
        try:
            if os.fspath(out).lower().endswith(".parquet"):
                import pyarrow as pa  # noqa: PLC0415
                import pyarrow.parquet as pq  # noqa: PLC0415

                pq.write_table(pa.table(columns), staging)
            else:
                with staging.open("w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(columns)
                    w.writerows(zip(*(c.tolist() for c in columns.values()), strict=True))
        except OSError as e:
            raise StoreError(f"{out}: cannot write the table ({e.strerror}); check the folder exists") from None
    return written(out)
