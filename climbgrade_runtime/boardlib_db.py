"""Read boardlib SQLite databases (what `boardlib database kilter kilter.db` writes).

Standard-library sqlite3 only, so the torch-free runtime can read a gym's own database too.
Only the tables a grade model needs are touched; a full boardlib database has more.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .errors import DatabaseError
from .geometry import BOARD_NAMES, LayoutGeometry
from .grades import GradeTable

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "products": ("id", "name"),
    "layouts": ("id", "product_id", "name"),
    "holes": ("id", "x", "y", "mirrored_hole_id"),
    "placements": ("id", "layout_id", "hole_id"),
    "placement_roles": ("id", "product_id", "name"),
    "products_angles": ("product_id", "angle"),
    "difficulty_grades": ("difficulty", "boulder_name", "is_listed"),
    "climbs": ("uuid", "layout_id", "frames", "frames_count", "is_draft", "is_listed"),
    "climb_stats": ("climb_uuid", "angle", "display_difficulty", "ascensionist_count"),
}


DATA_ENV = "CLIMBGRADE_DATA"
# The climbs a grade belongs to: single-frame, listed, not drafts (alias c = climbs); and the graded
# climb_stats rows (alias s). cg-train, cg-eval and cg-serve's climb search all read these rows.
USABLE_CLIMB_SQL = "c.frames_count = 1 AND c.is_listed = 1 AND COALESCE(c.is_draft, 0) = 0"
GRADED_STATS_SQL = "s.display_difficulty IS NOT NULL"


def databases_from_env() -> tuple[str, ...]:
    """Every .db file in the folder $CLIMBGRADE_DATA names (the default when no --db is given)."""
    folder = os.environ.get(DATA_ENV)
    if folder and Path(folder).is_dir():
        return tuple(str(p) for p in sorted(Path(folder).glob("*.db")))
    return ()


@dataclass(frozen=True)
class ClimbFilter:
    """What a user chooses to train or evaluate on."""

    min_ascents: int = 0
    layouts: tuple[int, ...] = ()  # empty = every layout with climbs
    min_angle: int | None = None
    max_angle: int | None = None


@dataclass(frozen=True)
class ClimbRow:
    """One graded (climb, angle) row, before its frames are checked against the geometry."""

    uuid: str
    board: str
    layout_id: int
    angle: int
    frames: str
    difficulty: float
    ascents: int
    name: str


@dataclass(frozen=True)
class BoardDatabase:
    """An opened, schema-checked boardlib database and the board it belongs to."""

    path: Path
    board: str
    connection: sqlite3.Connection
    # SQL for a climb's name (alias c), read once when the database is opened: the name where `climbs`
    # has the column, '' where it does not (a name is not needed to grade, so such a database is usable).
    climb_name_sql: str

    def read_grades(self) -> GradeTable:
        rows = self.connection.execute("SELECT difficulty, boulder_name, is_listed FROM difficulty_grades").fetchall()
        return GradeTable.from_rows(rows)

    def read_layouts(self, layout_ids: set[int]) -> dict[int, LayoutGeometry]:
        """Geometry of the given layouts; placements whose hole is missing are logged and left out."""
        out = {}
        for layout_id in sorted(layout_ids):
            row = self.connection.execute("SELECT product_id, name FROM layouts WHERE id = ?", (layout_id,)).fetchone()
            if row is None:
                raise DatabaseError(f"{self.path}: layout {layout_id} is not in the layouts table")
            product_id, name = row
            holes = self.connection.execute(
                "SELECT p.id, h.x, h.y, h.mirrored_hole_id, p.hole_id FROM placements p "
                "JOIN holes h ON h.id = p.hole_id WHERE p.layout_id = ?",
                (layout_id,),
            ).fetchall()
            if not holes:
                raise DatabaseError(f"{self.path}: layout {layout_id} ({name}) has no placements with holes")
            placement_of_hole = {hole_id: pid for pid, _, _, _, hole_id in holes}
            mirrors = {
                pid: placement_of_hole[mirror]
                for pid, _, _, mirror, _ in holes
                if mirror is not None and mirror in placement_of_hole
            }
            # Role ids are per product, but frames sometimes carry another product's id for the same
            # role (Kilter r22 is JUUL's "finish"): any id whose name is one of this product's roles counts.
            roles = dict(
                self.connection.execute(
                    "SELECT id, name FROM placement_roles WHERE name IN "
                    "(SELECT name FROM placement_roles WHERE product_id = ?)",
                    (product_id,),
                )
            )
            own_roles = {
                str(name): int(rid)
                for rid, name in self.connection.execute(
                    "SELECT id, name FROM placement_roles WHERE product_id = ? ORDER BY id DESC", (product_id,)
                )
            }
            angles = tuple(
                a
                for (a,) in self.connection.execute(
                    "SELECT angle FROM products_angles WHERE product_id = ? ORDER BY angle", (product_id,)
                )
            )
            if not roles or not angles:
                raise DatabaseError(
                    f"{self.path}: product {product_id} of layout {layout_id} has no placement_roles or products_angles rows"
                )
            out[layout_id] = LayoutGeometry(
                board=self.board,
                layout_id=layout_id,
                name=str(name),
                placements={pid: (int(x), int(y)) for pid, x, y, _, _ in holes},
                mirrors=mirrors,
                roles={int(k): str(v) for k, v in roles.items()},
                angles=angles,
                own_roles=own_roles,
            )
        return out

    def read_climbs(self, where: ClimbFilter) -> list[ClimbRow]:
        """Graded single-frame, listed, non-draft climb x angle rows that pass the filter."""
        sql = (
            "SELECT c.uuid, c.layout_id, s.angle, c.frames, s.display_difficulty, "
            f"COALESCE(s.ascensionist_count, 0), {self.climb_name_sql} "
            "FROM climbs c JOIN climb_stats s ON s.climb_uuid = c.uuid "
            f"WHERE {USABLE_CLIMB_SQL} AND {GRADED_STATS_SQL} AND COALESCE(s.ascensionist_count, 0) >= ?"
        )
        params: list[object] = [where.min_ascents]
        if where.layouts:
            sql += f" AND c.layout_id IN ({','.join('?' * len(where.layouts))})"
            params.extend(where.layouts)
        if where.min_angle is not None:
            sql += " AND s.angle >= ?"
            params.append(where.min_angle)
        if where.max_angle is not None:
            sql += " AND s.angle <= ?"
            params.append(where.max_angle)
        sql += " ORDER BY c.uuid, s.angle"
        return [
            ClimbRow(str(u), self.board, int(lay), int(a), str(fr or ""), float(d), int(n), str(nm))
            for u, lay, a, fr, d, n, nm in self.connection.execute(sql, params)
        ]


def open_database(spec: str, *, shared: bool = False) -> BoardDatabase:
    """Open `PATH` or `BOARD=PATH` read-only; without BOARD the board is told from the products table.

    `shared`: the connection may be used from other threads (the caller serialises its use).
    """
    board, sep, path_text = spec.partition("=")
    if not sep:
        board, path_text = "", spec
    path = Path(path_text)
    if not path.is_file():
        raise DatabaseError(f"database {path} does not exist: pass the file `boardlib database <board> FILE` wrote")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=not shared)
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"{path} is not a readable SQLite database ({exc})") from exc
    for table, columns in REQUIRED_COLUMNS.items():
        if table not in tables:
            raise DatabaseError(f"{path}: required table '{table}' is missing; is this a boardlib database?")
        present = _columns(connection, table)
        missing = [c for c in columns if c not in present]
        if missing:
            raise DatabaseError(f"{path}: table '{table}' lacks column(s) {', '.join(missing)}")
    if board:
        if board not in BOARD_NAMES:
            raise DatabaseError(f"unknown board {board!r} in --db {spec}: use one of {', '.join(BOARD_NAMES)}")
    else:
        board = _infer_board(path, connection)
    name_sql = "COALESCE(c.name, '')" if "name" in _columns(connection, "climbs") else "''"
    return BoardDatabase(path=path, board=board, connection=connection, climb_name_sql=name_sql)


def _columns(connection: sqlite3.Connection, table: str) -> set[str]:
    """The column names of `table` (empty if there is no such table)."""
    return {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}


def _infer_board(path: Path, connection: sqlite3.Connection) -> str:
    names = " ".join(n.lower() for (n,) in connection.execute("SELECT name FROM products"))
    found = [b for b in BOARD_NAMES if b in names]
    if len(found) != 1:
        raise DatabaseError(
            f"cannot tell which board {path} holds from its products table: pass it as BOARD=PATH "
            f"(BOARD one of {', '.join(BOARD_NAMES)})"
        )
    return found[0]
