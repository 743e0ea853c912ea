"""A run's data fingerprint (run.json's "fingerprint"), so --resume and cg-export refuse changed databases.

Both re-read the run's databases: a refreshed one would silently change the rows of the run's split.
Per database, in the order given: its path and size, and the climbs, rows and a sha256 of the rows the
run uses, over everything of a row that training reads. A database found elsewhere (data moved) or of
another size with the same rows (e.g. vacuumed, or grown in climbs the filters leave out) is accepted.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from pathlib import Path
from typing import Any

from climbgrade_runtime.graded import LoadedData

from .config import TrainError

logger = logging.getLogger(__name__)

KEY = "fingerprint"  # run.json's key
FIX = "give --db the database the run trained on, or start a new run"


def data_fingerprint(data: LoadedData) -> list[dict[str, Any]]:
    """Per database of `data`: path, size (bytes), climbs and rows used, and the sha256 of those rows.

    A database's rows are hashed in the order they are read, which is canonical (by uuid, then angle);
    a route's holds sorted, as their order in `frames` does not change training (the graph sorts them).
    One streaming hash per database: a full catalogue's 300k rows take a second or two.
    """
    examples = iter(data.examples)
    out = []
    for database in data.summary["databases"]:
        digest, climbs = hashlib.sha256(), set()
        for e in itertools.islice(examples, database["rows"]):
            climbs.add(e.uuid)
            holds = ",".join(f"{pid}:{role}" for pid, role in sorted(e.route.given))
            row = f"{e.uuid}\t{e.board}\t{e.layout_id}\t{e.angle}\t{e.difficulty!r}\t{e.ascents}\t{holds}\n"
            digest.update(row.encode())
        out.append(
            {
                "path": database["path"],
                "size": Path(database["path"]).stat().st_size,
                "climbs": len(climbs),
                "rows": database["rows"],
                "sha256": digest.hexdigest(),
            }
        )
    return out


def recorded_fingerprint(
    run_info: dict[str, Any], databases: tuple[str, ...], run: Path
) -> list[dict[str, Any]] | None:
    """The fingerprint in `run_info` (run.json), checked against the number of `databases` before any is read;
    None, with a warning, for a run made before run.json held one."""
    recorded: list[dict[str, Any]] | None = run_info.get(KEY)
    if recorded is None:
        logger.warning("%s has no data fingerprint (made by an earlier climbgrade): its data cannot be checked", run)
    elif len(recorded) != len(databases):
        raise TrainError(
            f"{run} was trained on {len(recorded)} database(s) ({', '.join(d['path'] for d in recorded)}), "
            f"not {len(databases)}: {FIX}"
        )
    return recorded


def check_fingerprint(recorded: list[dict[str, Any]], found: list[dict[str, Any]], run: Path) -> None:
    """TrainError naming the first database whose rows differ from those the run was trained on."""
    for was, now in zip(recorded, found):
        differences = [
            f"{now[key]:,} {key} (was {was[key]:,})" for key in ("rows", "climbs") if now[key] != was[key]
        ] + (["the rows' hash differs"] if now["sha256"] != was["sha256"] else [])
        if differences:
            what = (
                f"has changed since {run} was trained"
                if now["path"] == was["path"]
                else f"differs from {was['path']}, the database {run} was trained on"
            )
            raise TrainError(f"{now['path']} {what}: {', '.join(differences)}; {FIX}")
        if now["size"] != was["size"]:
            logger.info(
                "%s: %s bytes (was %s), but the rows %s uses are unchanged",
                now["path"],
                f"{now['size']:,}",
                f"{was['size']:,}",
                run,
            )
