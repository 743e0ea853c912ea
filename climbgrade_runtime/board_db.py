"""Read a board's climbs from SQLite: a boardlib database, or a Boardsesh snapshot with its catalogue.

boardlib (`boardlib database kilter kilter.db`) writes one file with Aurora's tables. Boardsesh publishes
one snapshot per (board, layout) with `board_climbs` and `board_climb_stats`, and one catalogue with every
board's geometry as `board_<table>` rows tagged by `board_type`. A snapshot's tables are shown to the reader
under boardlib's names (temporary views of this connection), so everything after open_database is one code
path: the same filters, role ids and errors. Standard-library sqlite3 only, so the torch-free runtime can
read a gym's own database too. Only the tables a grade model needs are touched.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .errors import DatabaseError
from .geometry import BOARD_NAMES, LayoutGeometry
from .grades import GradeTable
from .options import check_options, option

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
# Where a snapshot keeps each table boardlib has: (file, Boardsesh table); "catalog" is the --catalog file.
SNAPSHOT_TABLES: dict[str, tuple[str, str]] = {
    "climbs": ("main", "board_climbs"),
    "climb_stats": ("main", "board_climb_stats"),
    "products": ("catalog", "board_products"),
    "layouts": ("catalog", "board_layouts"),
    "holes": ("catalog", "board_holes"),
    "placements": ("catalog", "board_placements"),
    "placement_roles": ("catalog", "board_placement_roles"),
    "difficulty_grades": ("catalog", "board_difficulty_grades"),
}
# Boardsesh's catalogue has no table of wall angles (its apps carry them in code): unless a catalogue has
# one, a layout's angles are those its climbs are graded at in the snapshot (views named as above).
ANGLES_FROM_STATS_SQL = (
    "SELECT DISTINCT l.product_id AS product_id, s.angle AS angle FROM climb_stats s "
    "JOIN climbs c ON c.uuid = s.climb_uuid JOIN layouts l ON l.id = c.layout_id"
)
SNAPSHOT_ANGLES_TABLE = "board_products_angles"

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

    min_ascents: int = option(0, "Only climb x angle rows with at least this many ascents.", "data", minimum=0)
    layouts: tuple[int, ...] = option(
        (), "Aurora layout id to keep (repeatable). Default: every layout with climbs.", "data", flag="--layout"
    )
    min_angle: int | None = option(None, "Only rows at this wall angle or steeper.", "data")
    max_angle: int | None = option(None, "Only rows at this wall angle or less steep.", "data")

    def __post_init__(self) -> None:
        check_options(self)


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
    """An opened, schema-checked database (boardlib, or a snapshot with its catalogue) and its board."""

    path: Path
    board: str
    connection: sqlite3.Connection
    # The file the geometry is read from, as errors name it: the database itself, or a snapshot's catalogue.
    geometry: str
    snapshot: bool  # a Boardsesh snapshot (read with a catalogue), not a boardlib database
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
                raise DatabaseError(f"{self.geometry}: layout {layout_id} of {self.board} is not in its layouts table")
            product_id, name = row
            holes = self.connection.execute(
                "SELECT p.id, h.x, h.y, h.mirrored_hole_id, p.hole_id FROM placements p "
                "JOIN holes h ON h.id = p.hole_id WHERE p.layout_id = ?",
                (layout_id,),
            ).fetchall()
            if not holes:
                raise DatabaseError(f"{self.geometry}: layout {layout_id} ({name}) has no placements with holes")
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
                    f"{self.geometry}: product {product_id} of layout {layout_id} has no placement_roles or products_angles rows"
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

    def read_climbs(self, where: ClimbFilter) -> Iterator[ClimbRow]:
        """Graded single-frame, listed, non-draft climb x angle rows that pass the filter, by uuid and angle.

        The rows are stepped from the cursor as they are read, so a full catalogue is never held at once.
        """
        columns = (
            "c.uuid, c.layout_id, s.angle, c.frames, s.display_difficulty, "
            f"COALESCE(s.ascensionist_count, 0), {self.climb_name_sql}"
        )
        sql, params = _climbs_query(columns, where)
        for u, lay, a, fr, d, n, nm in self.connection.execute(sql + " ORDER BY c.uuid, s.angle", params):
            yield ClimbRow(str(u), self.board, int(lay), int(a), str(fr or ""), float(d), int(n), str(nm))

    def count_climbs(self, where: ClimbFilter) -> int:
        """How many rows read_climbs will yield (before any is checked against the geometry)."""
        sql, params = _climbs_query("COUNT(*)", where)
        return int(self.connection.execute(sql, params).fetchone()[0])


def _climbs_query(columns: str, where: ClimbFilter) -> tuple[str, list[object]]:
    """SELECT `columns` of the graded, usable climb x angle rows that pass `where`, and its parameters."""
    sql = (
        f"SELECT {columns} FROM climbs c JOIN climb_stats s ON s.climb_uuid = c.uuid "
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
    return sql, params


def open_database(spec: str, *, catalog: str | None = None, shared: bool = False) -> BoardDatabase:
    """Open `PATH` or `BOARD=PATH` read-only: a boardlib database, or a Boardsesh snapshot (told by its tables).

    A snapshot's geometry is read from `catalog` (one catalogue holds every board's). Without BOARD the
    board is told from the products table (boardlib) or the climbs' board_type (snapshot).
    `shared`: the connection may be used from other threads (the caller serialises its use).
    """
    board, sep, path_text = spec.partition("=")
    if not sep:
        board, path_text = "", spec
    path = Path(path_text)
    if not path.is_file():
        raise DatabaseError(
            f"database {path} does not exist: pass a Boardsesh snapshot (with --catalog) or the file "
            "`boardlib database <board> FILE` wrote"
        )
    if board and board not in BOARD_NAMES:
        raise DatabaseError(f"unknown board {board!r} in --db {spec}: use one of {', '.join(BOARD_NAMES)}")
    try:
        connection = sqlite3.connect(_read_only_uri(path), uri=True, check_same_thread=not shared)
        tables = _tables(connection, "main")
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"{path} is not a readable SQLite database ({exc})") from exc
    geometry, snapshot = str(path), SNAPSHOT_TABLES["climbs"][1] in tables
    if snapshot:
        board = _open_snapshot(connection, path, board, catalog)
        geometry = f"catalogue {catalog}"
    elif "climbs" not in tables and SNAPSHOT_TABLES["holes"][1] in tables:
        raise DatabaseError(
            f"{path} is a Boardsesh catalogue (board geometry, no climbs): pass it as --catalog and a "
            "board's snapshot as --db"
        )
    else:
        for table, columns in REQUIRED_COLUMNS.items():
            _check_columns(connection, "main", table, columns, f"{path}: required table '{table}'")
        board = board or _infer_board(path, connection)
    name_sql = "COALESCE(c.name, '')" if "name" in _columns(connection, "climbs") else "''"
    return BoardDatabase(
        path=path, board=board, connection=connection, geometry=geometry, snapshot=snapshot, climb_name_sql=name_sql
    )


def _open_snapshot(connection: sqlite3.Connection, path: Path, board: str, catalog: str | None) -> str:
    """Attach a snapshot's catalogue and show both under boardlib's table names, for `board`; the board."""
    if catalog is None:
        raise DatabaseError(
            f"{path} is a Boardsesh snapshot: a Boardsesh snapshot needs --catalog PATH, the catalogue file "
            "with every board's holes and placements"
        )
    if not Path(catalog).is_file():
        raise DatabaseError(f"catalogue {catalog} does not exist: pass Boardsesh's catalogue file as --catalog PATH")
    try:
        connection.execute("ATTACH DATABASE ? AS catalog", (_read_only_uri(Path(catalog)),))
        catalog_tables = _tables(connection, "catalog")
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"catalogue {catalog} is not a readable SQLite database ({exc})") from exc
    for name, (schema, table) in SNAPSHOT_TABLES.items():
        where = f"{path}: table" if schema == "main" else f"catalogue {catalog}: table"
        if schema == "catalog" and table not in catalog_tables:
            raise DatabaseError(f"catalogue {catalog} has no table '{table}': is it Boardsesh's catalogue file?")
        _check_columns(connection, schema, table, (*REQUIRED_COLUMNS[name], "board_type"), f"{where} '{table}'")
    types = [t for (t,) in connection.execute("SELECT DISTINCT board_type FROM main.board_climbs LIMIT 2")]
    if not board:
        if len(types) != 1:
            raise DatabaseError(
                f"cannot tell which board {path} holds from its board_climbs: pass it as BOARD=PATH "
                f"(BOARD one of {', '.join(BOARD_NAMES)})"
            )
        board = str(types[0])
        if board not in BOARD_NAMES:
            raise DatabaseError(f"{path} holds {board} climbs; climbgrade reads {', '.join(BOARD_NAMES)}")
    if connection.execute("SELECT 1 FROM catalog.board_products WHERE board_type = ?", (board,)).fetchone() is None:
        raise DatabaseError(
            f"catalogue {catalog} has no {board} board (no board_products rows for it): pass the catalogue "
            "Boardsesh publishes for every board"
        )
    literal = f"'{board}'"  # one of BOARD_NAMES: plain letters, safe to spell into the views
    for name, (schema, table) in SNAPSHOT_TABLES.items():
        connection.execute(f"CREATE TEMP VIEW {name} AS SELECT * FROM {schema}.{table} WHERE board_type = {literal}")
    if SNAPSHOT_ANGLES_TABLE in catalog_tables:
        angles = f"SELECT * FROM catalog.{SNAPSHOT_ANGLES_TABLE} WHERE board_type = {literal}"
    else:
        angles = ANGLES_FROM_STATS_SQL
    connection.execute(f"CREATE TEMP VIEW products_angles AS {angles}")
    return board


def _read_only_uri(path: Path) -> str:
    """An SQLite URI opening `path` read-only (any character of the path quoted)."""
    return f"file:{quote(str(path))}?mode=ro"


def _tables(connection: sqlite3.Connection, schema: str) -> set[str]:
    return {name for (name,) in connection.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")}


def _check_columns(
    connection: sqlite3.Connection, schema: str, table: str, columns: tuple[str, ...], what: str
) -> None:
    """DatabaseError naming `what` (the table as the user knows it) if `table` is missing or lacks `columns`."""
    present = _columns(connection, table, schema)
    if not present:
        raise DatabaseError(f"{what} is missing; is this a boardlib database or a Boardsesh snapshot?")
    missing = [c for c in columns if c not in present]
    if missing:
        raise DatabaseError(f"{what} lacks column(s) {', '.join(missing)}")


def _columns(connection: sqlite3.Connection, table: str, schema: str | None = None) -> set[str]:
    """The column names of `table` (empty if there is no such table)."""
    prefix = f"{schema}." if schema else ""
    return {row[1] for row in connection.execute(f"PRAGMA {prefix}table_info({table})")}


def _infer_board(path: Path, connection: sqlite3.Connection) -> str:
    names = " ".join(n.lower() for (n,) in connection.execute("SELECT name FROM products"))
    found = [b for b in BOARD_NAMES if b in names]
    if len(found) != 1:
        raise DatabaseError(
            f"cannot tell which board {path} holds from its products table: pass it as BOARD=PATH "
            f"(BOARD one of {', '.join(BOARD_NAMES)})"
        )
    return found[0]
