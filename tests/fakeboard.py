"""A small synthetic boardlib database (same tables and columns as `boardlib database ...`).

Lets the suite run without ../shared/data. Climbs get a made-up difficulty that depends on the
angle and the holds, so a model can learn something in a few seconds.
"""

from __future__ import annotations

import sqlite3
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE products (id INT PRIMARY KEY, name TEXT NOT NULL, is_listed BOOLEAN NOT NULL,
    password TEXT, min_count_in_frame INT, max_count_in_frame INT);
CREATE TABLE product_sizes (id INT PRIMARY KEY, product_id INT NOT NULL, edge_left INT, edge_right INT,
    edge_bottom INT, edge_top INT, name TEXT, description TEXT, image_filename TEXT, position INT, is_listed BOOLEAN);
CREATE TABLE layouts (id INT PRIMARY KEY, product_id INT NOT NULL, name TEXT NOT NULL, instagram_caption TEXT,
    is_mirrored BOOLEAN, is_listed BOOLEAN, password TEXT, created_at TEXT);
CREATE TABLE sets (id INT PRIMARY KEY, name TEXT, hsm INT);
CREATE TABLE product_sizes_layouts_sets (id INT PRIMARY KEY, product_size_id INT, layout_id INT, set_id INT,
    image_filename TEXT, is_listed BOOLEAN);
CREATE TABLE holes (id INT PRIMARY KEY, product_id INT NOT NULL, name TEXT, x INT NOT NULL, y INT NOT NULL,
    mirrored_hole_id INT, mirror_group INT DEFAULT 0);
CREATE TABLE placements (id INT PRIMARY KEY, layout_id INT NOT NULL, hole_id INT NOT NULL, set_id INT,
    default_placement_role_id INT);
CREATE TABLE placement_roles (id INT PRIMARY KEY, product_id INT NOT NULL, position INT, name TEXT NOT NULL,
    full_name TEXT, led_color TEXT, screen_color TEXT);
CREATE TABLE difficulty_grades (difficulty INT PRIMARY KEY, boulder_name TEXT NOT NULL, route_name TEXT,
    is_listed BOOLEAN NOT NULL);
CREATE TABLE products_angles (product_id INT NOT NULL, angle INT NOT NULL, PRIMARY KEY (product_id, angle));
CREATE TABLE climbs (uuid TEXT UNIQUE PRIMARY KEY, layout_id INT, setter_id INT, setter_username TEXT, name TEXT,
    description TEXT DEFAULT '', hsm INT, edge_left INT, edge_right INT, edge_bottom INT, edge_top INT, angle INT,
    frames_count INT DEFAULT 1, frames_pace INT DEFAULT 0, frames TEXT, is_draft BOOLEAN DEFAULT 0,
    is_listed BOOLEAN, created_at TEXT);
CREATE TABLE climb_stats (climb_uuid TEXT, angle INT, display_difficulty DOUBLE, benchmark_difficulty DOUBLE,
    ascensionist_count BIGINT, difficulty_average DOUBLE, quality_average DOUBLE, fa_username TEXT, fa_at TIMESTAMP,
    PRIMARY KEY (climb_uuid, angle));
"""

GRADES = [
    (1, "1a/V0"),
    (2, "1b/V0"),
    (3, "1c/V0"),
    (4, "2a/V0"),
    (5, "2b/V0"),
    (6, "2c/V0"),
    (7, "3a/V0"),
    (8, "3b/V0"),
    (9, "3c/V0"),
    (10, "4a/V0"),
    (11, "4b/V0"),
    (12, "4c/V0"),
    (13, "5a/V1"),
    (14, "5b/V1"),
    (15, "5c/V2"),
    (16, "6a/V3"),
    (17, "6a+/V3"),
    (18, "6b/V4"),
    (19, "6b+/V4"),
    (20, "6c/V5"),
    (21, "6c+/V5"),
    (22, "7a/V6"),
    (23, "7a+/V7"),
    (24, "7b/V8"),
    (25, "7b+/V8"),
    (26, "7c/V9"),
    (27, "7c+/V10"),
    (28, "8a/V11"),
    (29, "8a+/V12"),
    (30, "8b/V13"),
    (31, "8b+/V14"),
    (32, "8c/V15"),
    (33, "8c+/V16"),
    (34, "9a/V17"),
]


@dataclass(frozen=True)
class FakeBoard:
    """Ids of one synthetic board, mirroring the real Kilter / TB2 numbering."""

    product_id: int
    product_name: str
    layout_id: int
    layout_name: str
    role_ids: tuple[int, int, int, int]  # start, middle, finish, foot
    first_placement: int
    angles: tuple[int, ...]
    columns: int = 9
    rows: int = 12


KILTER = FakeBoard(
    1, "Kilter Board Original", 1, "Kilter Board Original", (12, 13, 14, 15), 1073, tuple(range(0, 75, 5))
)
TENSION = FakeBoard(5, "Tension Board 2", 11, "Tension Board 2 Spray", (5, 6, 7, 8), 802, tuple(range(0, 70, 5)))


def placements_of(board: FakeBoard) -> dict[int, tuple[int, int]]:
    """Placement id -> (x, y) on a grid centred on x = 0, like TB2."""
    out = {}
    for r in range(board.rows):
        for c in range(board.columns):
            x = (c - board.columns // 2) * 8
            out[board.first_placement + r * board.columns + c] = (x, 4 + 8 * r)
    return out


def frames_of(holds: list[tuple[int, int]]) -> str:
    return "".join(f"p{p}r{r}" for p, r in holds)


def make_database(path: Path, board: FakeBoard, climbs: int, seed: int, *, defects: bool = True) -> Path:
    """Write a database with `climbs` good climbs (1-3 angles each) and, optionally, one of each defect."""
    rng = np.random.default_rng(seed)
    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    con.execute("INSERT INTO products VALUES (?, ?, 1, NULL, 2, 35)", (board.product_id, board.product_name))
    con.execute(
        "INSERT INTO product_sizes VALUES (?, ?, -40, 40, 0, 100, 'Full', '', '', 0, 1)",
        (board.product_id * 10, board.product_id),
    )
    con.execute(
        "INSERT INTO layouts VALUES (?, ?, ?, '', 0, 1, NULL, '2020-01-01')",
        (board.layout_id, board.product_id, board.layout_name),
    )
    con.execute("INSERT INTO sets VALUES (1, 'Holds', 1)")
    con.execute(
        "INSERT INTO product_sizes_layouts_sets VALUES (1, ?, ?, 1, '', 1)", (board.product_id * 10, board.layout_id)
    )
    places = placements_of(board)
    hole_of = {pid: 5000 + pid for pid in places}
    by_xy = {xy: pid for pid, xy in places.items()}
    for pid, (x, y) in places.items():
        mirror = hole_of[by_xy[(-x, y)]]
        con.execute(
            "INSERT INTO holes VALUES (?, ?, ?, ?, ?, ?, 0)", (hole_of[pid], board.product_id, f"h{pid}", x, y, mirror)
        )
        con.execute("INSERT INTO placements VALUES (?, ?, ?, 1, NULL)", (pid, board.layout_id, hole_of[pid]))
    for position, (rid, name) in enumerate(zip(board.role_ids, ("start", "middle", "finish", "foot")), start=1):
        con.execute(
            "INSERT INTO placement_roles VALUES (?, ?, ?, ?, ?, '00FF00', '00FF00')",
            (rid, board.product_id, position, name, name.title()),
        )
    con.executemany(
        "INSERT INTO difficulty_grades VALUES (?, ?, '', ?)", [(d, name, int(10 <= d <= 33)) for d, name in GRADES]
    )
    con.executemany("INSERT INTO products_angles VALUES (?, ?)", [(board.product_id, a) for a in board.angles])

    pids = sorted(places)
    start, middle, finish, foot = board.role_ids
    for n in range(climbs):
        count = int(rng.integers(3, 14))
        chosen = sorted(rng.choice(pids, size=count, replace=False), key=lambda p: places[p][1])
        roles = [start] + [middle] * (count - 2) + [finish]
        roles = [foot if (r == middle and rng.random() < 0.25) else r for r in roles]
        holds = list(zip(chosen, roles))
        rng.shuffle(holds)  # real frames are not in a canonical order
        spread = np.mean([abs(places[p][0]) for p in chosen]) / 8
        base = 11 + spread + 6.0 / count * 3
        uid = uuidlib.UUID(int=int(rng.integers(0, 2**62)) * 7919 + n).hex.upper()
        _insert_climb(con, uid, board.layout_id, frames_of(holds), f"climb {n}")
        for angle in rng.choice(board.angles, size=int(rng.integers(1, 4)), replace=False):
            difficulty = float(np.clip(base + angle / 7 + rng.normal(0, 0.7), 10, 33))
            _insert_stats(con, uid, int(angle), difficulty, int(rng.integers(1, 40)))
    if defects:
        good = frames_of([(pids[0], start), (pids[10], finish)])
        bad: dict[str, tuple[str, dict[str, int]]] = {  # name -> (frames, climbs columns other than the defaults)
            "DRAFT": (good, dict(is_draft=1)),
            "UNLISTED": (good, dict(is_listed=0)),
            "MULTIFRAME": (good + "," + good, dict(frames_count=2)),
            "BADFRAMES": ("p12x34", {}),
            "OFFBOARD": (frames_of([(pids[0], start), (999_999, finish)]), {}),
            "TWICE": (frames_of([(pids[0], start), (pids[0], finish)]), {}),
            "BADROLE": (frames_of([(pids[0], start), (pids[3], 99)]), {}),
        }
        for name, (frames, columns) in bad.items():
            _insert_climb(con, f"DEFECT{name}", board.layout_id, frames, name, **columns)
            _insert_stats(con, f"DEFECT{name}", board.angles[0], 15.0, 5)
        _insert_climb(con, "DEFECTNOSTATS", board.layout_id, good, "no stats")
    con.commit()
    con.close()
    return path


def _insert_climb(
    con: sqlite3.Connection,
    uid: str,
    layout_id: int,
    frames: str,
    name: str,
    *,
    is_draft: int = 0,
    is_listed: int = 1,
    frames_count: int = 1,
) -> None:
    con.execute(
        "INSERT INTO climbs (uuid, layout_id, name, frames_count, frames, is_draft, is_listed, angle) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 40)",
        (uid, layout_id, name, frames_count, frames, is_draft, is_listed),
    )


def _insert_stats(con: sqlite3.Connection, uid: str, angle: int, difficulty: float, ascents: int) -> None:
    con.execute(
        "INSERT INTO climb_stats (climb_uuid, angle, display_difficulty, ascensionist_count, quality_average) "
        "VALUES (?, ?, ?, ?, 3.0)",
        (uid, angle, difficulty, ascents),
    )
