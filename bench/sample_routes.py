"""Routes as users send them (JSON objects with frames) for the speed benchmarks: real ones when the data is here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from climbgrade_runtime.board_db import ClimbFilter
from climbgrade_runtime.graded import load_examples
from climbgrade_runtime.insight import frames_of

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "routes.json"


def data_folder() -> Path:
    """The real databases' folder: $CLIMBGRADE_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("CLIMBGRADE_DATA", ROOT.parent / "shared" / "data"))


DATA_OPTION = click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: str(data_folder()),
    help="Folder of the real databases (default: $CLIMBGRADE_DATA or ../shared/data); without any, the examples.",
)


def load_routes(limit: int, folder: Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """Up to `limit` real routes, evenly spread over every climb x angle row of the databases in `folder`
    (default: data_folder()), and where they came from; examples/routes.json when there are none."""
    folder = data_folder() if folder is None else folder
    dbs = [str(p) for p in sorted(folder.glob("*.db"))] if folder.is_dir() else []
    if not dbs:
        return json.loads(EXAMPLES.read_text()), str(EXAMPLES)
    examples = load_examples(dbs, ClimbFilter()).examples
    count = min(limit, len(examples))
    picked = (examples[i * len(examples) // count] for i in range(count))
    routes = [
        {"board": e.board, "layout_id": e.layout_id, "angle": e.angle, "frames": frames_of(e.route)} for e in picked
    ]
    return routes, f"{len(routes):,} routes of {', '.join(Path(db).name for db in dbs)}"
