"""Boardsesh's snapshot layout, for the tests: its published tables, and a boardlib database rewritten into them.

The DDL follows what Boardsesh publishes (docs/board-snapshots-dataset.md; board_climbs and
board_climb_stats as in packages/shared/offline-sync/src/db/schema.ts; the catalogue's board_<table>
tables, each with a board_type column, as in its database migrations), in SQLite types. snapshot_meta's
columns are not published: here it is key/value bookkeeping, which the reader never reads.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SNAPSHOT_DDL = """
CREATE TABLE board_climbs (uuid TEXT PRIMARY KEY, board_type TEXT, layout_id INTEGER, setter_id INTEGER,
    setter_username TEXT, name TEXT, description TEXT, hsm INTEGER, edge_left INTEGER, edge_right INTEGER,
    edge_bottom INTEGER, edge_top INTEGER, angle INTEGER, frames_count INTEGER, frames_pace INTEGER, frames TEXT,
    is_draft INTEGER, is_listed INTEGER, created_at TEXT, published_at TEXT, user_id TEXT, required_set_ids TEXT,
    compatible_size_ids TEXT, hold_fingerprint TEXT, updated_at TEXT, sync_seq INTEGER);
CREATE TABLE board_climb_stats (board_type TEXT NOT NULL, climb_uuid TEXT NOT NULL, angle INTEGER NOT NULL,
    display_difficulty REAL, benchmark_difficulty REAL, ascensionist_count INTEGER, difficulty_average REAL,
    quality_average REAL, fa_username TEXT, fa_at TEXT, updated_at TEXT, sync_seq INTEGER,
    PRIMARY KEY (board_type, climb_uuid, angle));
CREATE TABLE snapshot_meta (key TEXT PRIMARY KEY, value TEXT);
"""

CATALOG_DDL = """
CREATE TABLE board_products (board_type TEXT NOT NULL, id INTEGER NOT NULL, name TEXT, is_listed INTEGER,
    password TEXT, min_count_in_frame INTEGER, max_count_in_frame INTEGER, PRIMARY KEY (board_type, id));
CREATE TABLE board_layouts (board_type TEXT NOT NULL, id INTEGER NOT NULL, product_id INTEGER, name TEXT,
    instagram_caption TEXT, is_mirrored INTEGER, is_listed INTEGER, password TEXT, created_at TEXT,
    PRIMARY KEY (board_type, id));
CREATE TABLE board_product_sizes (board_type TEXT NOT NULL, id INTEGER NOT NULL, product_id INTEGER NOT NULL,
    edge_left INTEGER, edge_right INTEGER, edge_bottom INTEGER, edge_top INTEGER, name TEXT, description TEXT,
    image_filename TEXT, position INTEGER, is_listed INTEGER, PRIMARY KEY (board_type, id));
CREATE TABLE board_sets (board_type TEXT NOT NULL, id INTEGER NOT NULL, name TEXT, hsm INTEGER,
    PRIMARY KEY (board_type, id));
CREATE TABLE board_placement_roles (board_type TEXT NOT NULL, id INTEGER NOT NULL, product_id INTEGER,
    position INTEGER, name TEXT, full_name TEXT, led_color TEXT, screen_color TEXT, PRIMARY KEY (board_type, id));
CREATE TABLE board_holes (board_type TEXT NOT NULL, id INTEGER NOT NULL, product_id INTEGER, name TEXT, x INTEGER,
    y INTEGER, mirrored_hole_id INTEGER, mirror_group INTEGER DEFAULT 0, PRIMARY KEY (board_type, id));
CREATE TABLE board_placements (board_type TEXT NOT NULL, id INTEGER NOT NULL, layout_id INTEGER, hole_id INTEGER,
    set_id INTEGER, default_placement_role_id INTEGER, PRIMARY KEY (board_type, id));
CREATE TABLE board_product_sizes_layouts_sets (board_type TEXT NOT NULL, id INTEGER NOT NULL,
    product_size_id INTEGER, layout_id INTEGER, set_id INTEGER, image_filename TEXT, is_listed INTEGER,
    PRIMARY KEY (board_type, id));
CREATE TABLE board_difficulty_grades (board_type TEXT NOT NULL, difficulty INTEGER NOT NULL, boulder_name TEXT,
    route_name TEXT, is_listed INTEGER, PRIMARY KEY (board_type, difficulty));
"""

# boardlib's geometry tables, each of which the catalogue holds as board_<table> for every board.
GEOMETRY_TABLES = (
    "products",
    "layouts",
    "product_sizes",
    "sets",
    "placement_roles",
    "holes",
    "placements",
    "product_sizes_layouts_sets",
    "difficulty_grades",
)


def _columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in connection.execute(f"PRAGMA {table}")]


def _copy(connection: sqlite3.Connection, source: str, target: str, board: str, where: str = "") -> None:
    """INSERT the columns `source` (in the attached boardlib file) shares with `target`, tagged with `board`."""
    schema, table = target.split(".")
    wanted = _columns(connection, f"{schema}.table_info({table})")
    have = set(_columns(connection, f"boardlib.table_info({source})"))
    shared = [c for c in wanted if c in have]
    connection.execute(
        f"INSERT INTO {target} (board_type, {', '.join(shared)}) "
        f"SELECT ?, {', '.join(shared)} FROM boardlib.{source} {where}",
        (board,),
    )


def write_catalog(path: Path, boards: dict[str, Path]) -> Path:
    """One catalogue holding the geometry of each board of `boards` (board name -> its boardlib database)."""
    connection = sqlite3.connect(path)
    connection.executescript(CATALOG_DDL)
    for board, database in boards.items():
        connection.execute("ATTACH DATABASE ? AS boardlib", (str(database),))
        for table in GEOMETRY_TABLES:
            _copy(connection, table, f"main.board_{table}", board)
        connection.commit()
        connection.execute("DETACH DATABASE boardlib")
    connection.close()
    return path


def write_snapshots(folder: Path, board: str, database: Path) -> list[Path]:
    """A boardlib database's climbs as Boardsesh publishes them: one snapshot per layout, `<board>-<layout>.db`."""
    source = sqlite3.connect(database)
    layouts = [lid for (lid,) in source.execute("SELECT DISTINCT layout_id FROM climbs ORDER BY layout_id")]
    source.close()
    paths = []
    for layout in layouts:
        path = folder / f"{board}-{layout}.db"
        connection = sqlite3.connect(path)
        connection.executescript(SNAPSHOT_DDL)
        connection.execute("ATTACH DATABASE ? AS boardlib", (str(database),))
        _copy(connection, "climbs", "main.board_climbs", board, f"WHERE layout_id = {int(layout)}")
        _copy(
            connection,
            "climb_stats",
            "main.board_climb_stats",
            board,
            f"WHERE climb_uuid IN (SELECT uuid FROM boardlib.climbs WHERE layout_id = {int(layout)})",
        )
        connection.execute("INSERT INTO snapshot_meta VALUES ('formatVersion', '1')")
        connection.commit()
        connection.close()
        paths.append(path)
    return paths
