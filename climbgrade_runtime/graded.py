"""Graded routes read from boardlib databases: cg-train's training data and cg-eval's test data.

Unusable rows (a placement not on the layout, a role the board lacks, ...) are skipped and counted,
never fatal, so the same reader serves a user's full database.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .boardlib_db import ClimbFilter, open_database
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
    examples: list[Example]
    layouts: dict[tuple[str, int], LayoutGeometry]
    grades: GradeTable
    summary: dict[str, object] = field(default_factory=dict)

    @property
    def max_len(self) -> int:
        """Sequence length that covers the longest route loaded."""
        return PREFIX_TOKENS + max(len(e.route.holds) for e in self.examples)


def load_examples(db_specs: Sequence[str], where: ClimbFilter) -> LoadedData:
    """Read every usable row; unusable climbs are skipped and counted, never fatal."""
    if not db_specs:
        raise DatabaseError("no database given: pass --db PATH (or set CLIMBGRADE_DATA to a folder of .db files)")
    examples: list[Example] = []
    layouts: dict[tuple[str, int], LayoutGeometry] = {}
    grades: GradeTable | None = None
    db_summaries = []
    for spec in db_specs:
        db = open_database(spec)
        rows = db.read_climbs(where)
        for layout in db.read_layouts({r.layout_id for r in rows}).values():
            if layouts.setdefault(layout.key, layout) != layout:
                raise DatabaseError(
                    f"{db.path}: layout {layout.board}/{layout.layout_id} differs from another database's"
                )
        table = db.read_grades()
        if grades is not None and table != grades:
            raise DatabaseError(f"{db.path}: its difficulty_grades table differs from the first database's")
        grades = table
        skipped: Counter[str] = Counter()
        first_skip: dict[str, str] = {}
        kept = 0
        for row in rows:
            try:
                route = Route(row.board, row.layout_id, row.angle, parse_frames(row.frames))
                resolved = resolve_route(route, layouts)
            except RouteError as exc:
                reason = skip_reason(str(exc))
                skipped[reason] += 1
                first_skip.setdefault(reason, f"climb {row.uuid} at {row.angle} deg: {exc}")
                continue
            examples.append(
                Example(row.uuid, row.board, row.layout_id, row.angle, row.difficulty, row.ascents, resolved, row.name)
            )
            kept += 1
        for reason, count in skipped.items():
            logger.warning("%s: skipped %d row(s) where %s (e.g. %s)", db.path, count, reason, first_skip[reason])
        logger.info("%s: %s board, %d usable climb x angle rows", db.path, db.board, kept)
        db_summaries.append({"path": str(db.path), "board": db.board, "rows": kept, "skipped": dict(skipped)})
    if not examples or grades is None:
        raise DatabaseError("no usable climbs in the given database(s) with these filters")
    summary = {
        "databases": db_summaries,
        "filter": {
            "min_ascents": where.min_ascents,
            "layouts": list(where.layouts),
            "min_angle": where.min_angle,
            "max_angle": where.max_angle,
        },
        "rows": len(examples),
        "climbs": len({e.uuid for e in examples}),
        "rows_by_board": dict(sorted(Counter(e.board for e in examples).items())),
    }
    return LoadedData(examples, layouts, grades, summary)


def skip_reason(message: str) -> str:
    """Group skip messages by kind (the message text without its numbers)."""
    return " ".join("N" if word.strip("'\",()").isdigit() else word for word in message.split())
