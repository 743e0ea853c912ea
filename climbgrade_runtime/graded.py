"""Graded routes read from boardlib databases or Boardsesh snapshots: cg-train's and cg-eval's data.

Unusable rows (a placement not on the layout, a role the board lacks, ...) are skipped and counted,
never fatal, so the same reader serves a user's full database.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .board_db import BoardDatabase, ClimbFilter, open_database
from .errors import DatabaseError, RouteError
from .geometry import LayoutGeometry
from .grades import GradeTable
from .routes import Route, parse_frames
from .tokenizer import PREFIX_TOKENS, ResolvedRoute, resolve_route

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One graded (climb, angle) row, checked against its board's geometry."""

    uuid: str
    board: str
    layout_id: int
    angle: int
    difficulty: float
    ascents: int
    route: ResolvedRoute
    name: str = ""  # the climb's name, for cg-eval's predictions and outliers; '' where the database has none


@dataclass
class LoadedData:
    """The examples, database by database in the order given (summary["databases"] counts each one's rows)."""

    examples: list[Example]
    layouts: dict[tuple[str, int], LayoutGeometry]
    grades: GradeTable
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def max_len(self) -> int:
        """Sequence length that covers the longest route loaded."""
        return PREFIX_TOKENS + max(len(e.route.holds) for e in self.examples)


def load_examples(db_specs: Sequence[str], where: ClimbFilter, catalog: str | None = None) -> LoadedData:
    """Read every usable row; unusable climbs are skipped and counted, never fatal."""
    reader = ExampleReader(db_specs, where, catalog)
    examples = list(reader)
    if not examples or reader.grades is None:
        raise DatabaseError("no usable climbs in the given database(s) with these filters")
    return LoadedData(examples, reader.layouts, reader.grades, reader.summary(examples))


class ExampleReader:
    """The usable rows of databases, read one at a time (cg-eval grades a full catalogue in flat memory).

    Each database is opened and checked when iteration reaches it, each layout read when its first
    climb is; `layouts`, `grades` and the per-database counts fill in as the rows are read.
    """

    def __init__(self, db_specs: Sequence[str], where: ClimbFilter, catalog: str | None = None) -> None:
        if not db_specs:
            raise DatabaseError("no database given: pass --db PATH (or set CLIMBGRADE_DATA to a folder of .db files)")
        self.db_specs, self.where, self.catalog = tuple(db_specs), where, catalog
        self.layouts: dict[tuple[str, int], LayoutGeometry] = {}
        self.grades: GradeTable | None = None
        self.databases: list[dict[str, Any]] = []
        self.rows_read = 0  # rows read from the databases so far, usable or skipped

    def count(self) -> int:
        """How many rows the databases hold for the filter, before any is checked (for a progress bar)."""
        return sum(open_database(spec, catalog=self.catalog).count_climbs(self.where) for spec in self.db_specs)

    def __iter__(self) -> Iterator[Example]:
        snapshots = 0
        for spec in self.db_specs:
            db = open_database(spec, catalog=self.catalog)
            snapshots += db.snapshot
            yield from self._read(db)
        if self.catalog is not None and not snapshots:
            logger.warning("--catalog %s was not read: none of the databases is a Boardsesh snapshot", self.catalog)

    def _read(self, db: BoardDatabase) -> Iterator[Example]:
        table = db.read_grades()
        if self.grades is not None and table != self.grades:
            raise DatabaseError(f"{db.path}: its difficulty_grades table differs from the first database's")
        self.grades = table
        skipped: Counter[str] = Counter()
        first_skip: dict[str, str] = {}
        kept, before = 0, len(self.layouts)
        read: set[int] = set()
        for row in db.read_climbs(self.where):
            self.rows_read += 1
            if row.layout_id not in read:
                read.add(row.layout_id)
                for layout in db.read_layouts({row.layout_id}).values():
                    if self.layouts.setdefault(layout.key, layout) != layout:
                        raise DatabaseError(
                            f"{db.path}: layout {layout.board}/{layout.layout_id} differs from another database's"
                        )
            try:
                route = Route(row.board, row.layout_id, row.angle, parse_frames(row.frames))
                resolved = resolve_route(route, self.layouts)
            except RouteError as exc:
                reason = skip_reason(str(exc))
                skipped[reason] += 1
                first_skip.setdefault(reason, f"climb {row.uuid} at {row.angle} deg: {exc}")
                continue
            kept += 1
            yield Example(
                row.uuid, row.board, row.layout_id, row.angle, row.difficulty, row.ascents, resolved, row.name
            )
        for reason, count in skipped.items():
            logger.warning("%s: skipped %d row(s) where %s (e.g. %s)", db.path, count, reason, first_skip[reason])
        logger.info("%s: %s board, %d usable climb x angle rows", db.path, db.board, kept)
        self.databases.append({"path": str(db.path), "board": db.board, "rows": kept, "skipped": dict(skipped)})
        db.connection.close()
        # Database by database, each one's layouts by id: the order a model's sidecar lists them in.
        items = list(self.layouts.items())
        self.layouts = dict(items[:before] + sorted(items[before:], key=lambda item: item[0][1]))

    def summary(self, examples: Sequence[Example]) -> dict[str, Any]:
        """What was read (run.json's data section): per database, the filter, rows, climbs, rows per board."""
        return {
            "databases": self.databases,
            "filter": {
                "min_ascents": self.where.min_ascents,
                "layouts": list(self.where.layouts),
                "min_angle": self.where.min_angle,
                "max_angle": self.where.max_angle,
            },
            "rows": len(examples),
            "climbs": len({e.uuid for e in examples}),
            "rows_by_board": dict(sorted(Counter(e.board for e in examples).items())),
        }


def skip_reason(message: str) -> str:
    """Group skip messages by kind (the message text without its numbers)."""
    return " ".join("N" if word.strip("'\",()").isdigit() else word for word in message.split())
