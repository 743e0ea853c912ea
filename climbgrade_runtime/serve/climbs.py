"""cg-serve --db: find a gym's climbs by name or uuid in its databases, with their community grades.

boardlib databases or Boardsesh snapshots; standard-library sqlite3 only, read-only, with the same climb
rules cg-train and cg-eval use (board_db). Only climbs on layouts the model knows, whose holds it can take, are answered: the
kiosk loads a found climb straight into the grader.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..board_db import GRADED_STATS_SQL, USABLE_CLIMB_SQL, BoardDatabase, open_database
from ..errors import RouteError
from ..grades import GradeTable
from ..routes import Route, parse_frames
from ..tokenizer import Tokenizer

MAX_LIMIT = 100  # climbs per search


@dataclass(frozen=True)
class CommunityGrade:
    """A climb's grade at one angle as its ascensionists gave it."""

    angle: int
    difficulty: float
    font: str
    v_grade: str
    ascents: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "angle": self.angle,
            "difficulty": self.difficulty,
            "font": self.font,
            "v_grade": self.v_grade,
            "ascents": self.ascents,
        }


@dataclass(frozen=True)
class Climb:
    """A climb of a database, graded at each angle it has been climbed at (`angles`, lowest first)."""

    uuid: str
    name: str
    board: str
    layout_id: int
    frames: str
    angles: tuple[CommunityGrade, ...]

    @property
    def ascents(self) -> int:
        return sum(a.ascents for a in self.angles)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "name": self.name,
            "board": self.board,
            "layout_id": self.layout_id,
            "frames": self.frames,
            "angles": [a.to_dict() for a in self.angles],
        }


class ClimbSearch:
    """The databases of one cg-serve, searched from any thread (one lock per database connection)."""

    def __init__(
        self, specs: Sequence[str], tokenizer: Tokenizer, grades: GradeTable, catalog: str | None = None
    ) -> None:
        """Open each `[BOARD=]PATH` read-only (snapshots with `catalog`); DatabaseError names one that cannot be used."""
        self.tokenizer = tokenizer
        self.grades = grades
        self._databases: list[tuple[BoardDatabase, threading.Lock]] = []
        try:
            for spec in specs:
                self._databases.append((open_database(spec, catalog=catalog, shared=True), threading.Lock()))
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        """Close every connection (each after any search using it); searching afterwards is an error."""
        for db, lock in self._databases:
            with lock:
                db.connection.close()

    def boards_unknown_to_model(self) -> list[str]:
        """The databases whose board has no layout in the model (nothing of theirs can be found)."""
        known = {board for board, _ in self.tokenizer.layouts}
        return [f"{db.path} ({db.board})" for db, _ in self._databases if db.board not in known]

    def search(self, text: str, board: str | None = None, layout_id: int | None = None, limit: int = 20) -> list[Climb]:
        """Climbs whose name contains `text` (case-insensitive) or whose uuid starts with it, most climbed first."""
        found: list[Climb] = []
        for db, lock in self._databases:
            layouts = [lid for b, lid in self.tokenizer.layouts if b == db.board and layout_id in (None, lid)]
            if (board is not None and board != db.board) or not layouts:
                continue
            with lock:
                found.extend(self._search(db, text, layouts, limit))
        found.sort(key=lambda c: (-c.ascents, c.uuid))
        return found[:limit]

    def _search(self, db: BoardDatabase, text: str, layouts: list[int], limit: int) -> list[Climb]:
        """The `limit` most climbed matching climbs the model takes: candidates are read most climbed first
        until enough are gradable (or none are left), so the model's gaps never shorten the list; only the
        chosen climbs get their community grades read."""
        pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        graded = f"SELECT {{}} FROM climb_stats s WHERE s.climb_uuid = c.uuid AND {GRADED_STATS_SQL}"
        candidates = db.connection.execute(
            f"SELECT c.uuid, {db.climb_name_sql}, c.layout_id, c.frames, "
            f"({graded.format('SUM(COALESCE(s.ascensionist_count, 0))')}) AS ascents "
            f"FROM climbs c WHERE {USABLE_CLIMB_SQL} AND c.layout_id IN ({','.join('?' * len(layouts))}) "
            f"AND ({db.climb_name_sql} LIKE ? ESCAPE '\\' OR c.uuid LIKE ? ESCAPE '\\') "
            f"AND EXISTS ({graded.format('1')}) ORDER BY ascents DESC, c.uuid",
            [*layouts, f"%{pattern}%", f"{pattern}%"],
        )
        chosen: list[tuple[str, str, int, str]] = []
        for uuid, name, lid, frames, _ in candidates:  # sqlite3 steps the rows as they are read
            if self._gradable(db.board, int(lid), str(frames or "")):
                chosen.append((str(uuid), str(name), int(lid), str(frames)))
                if len(chosen) == limit:
                    break
        candidates.close()
        if not chosen:
            return []
        grades: dict[str, list[CommunityGrade]] = {uuid: [] for uuid, _, _, _ in chosen}
        for uuid, angle, difficulty, ascents in db.connection.execute(
            "SELECT s.climb_uuid, s.angle, s.display_difficulty, COALESCE(s.ascensionist_count, 0) FROM climb_stats s "
            f"WHERE s.climb_uuid IN ({','.join('?' * len(chosen))}) AND {GRADED_STATS_SQL} ORDER BY s.angle",
            list(grades),
        ):
            grade = self.grades.grade(float(difficulty))
            grades[uuid].append(CommunityGrade(int(angle), float(difficulty), grade.font, grade.v, int(ascents)))
        return [Climb(uuid, name, db.board, lid, frames, tuple(grades[uuid])) for uuid, name, lid, frames in chosen]

    def _gradable(self, board: str, layout_id: int, frames: str) -> bool:
        """Whether the model takes the climb's holds (at any angle of its layout)."""
        angle = self.tokenizer.layouts[board, layout_id].angles[0]
        try:
            self.tokenizer.resolve(Route(board, layout_id, angle, parse_frames(frames)))
        except RouteError:
            return False
        return True
