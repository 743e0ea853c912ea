"""Full-catalogue-size boardlib databases made from ../shared/data, for bench/scale.py and cg-eval's memory test.

A copy of a real database whose climbs (and their climb_stats rows) are repeated `factor` times, each
copy under new uuids: the real layouts, hold counts and mix of ascent counts, at 4x or 8x the rows.
Built in /tmp, never in the repository (the rows are the real data's).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path


def new_uuid(uuid: str, copy: int) -> str:
    """A uuid for the `copy`-th repeat of a climb: copy 0 keeps its own, others get 32 fresh hex digits."""
    return uuid if copy == 0 else hashlib.sha256(f"{copy}/{uuid}".encode()).hexdigest()[:32].upper()


def replicate(source: str | Path, target: str | Path, factor: int) -> Path:
    """Copy `source` to `target` with every climb repeated `factor` times (copy 0 is the original)."""
    if factor < 1:
        raise ValueError("factor must be at least 1")
    target = Path(target)
    target.unlink(missing_ok=True)
    shutil.copyfile(source, target)
    connection = sqlite3.connect(target)
    connection.create_function("new_uuid", 2, new_uuid, deterministic=True)
    connection.execute("ATTACH DATABASE ? AS source", (str(source),))
    with connection:
        for table, key in (("climbs", "uuid"), ("climb_stats", "climb_uuid")):
            columns = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
            for copy in range(1, factor):
                values = ", ".join(f"new_uuid({c}, {copy})" if c == key else c for c in columns)
                connection.execute(
                    f"INSERT INTO main.{table} ({', '.join(columns)}) SELECT {values} FROM source.{table}"
                )
    connection.close()
    return target
