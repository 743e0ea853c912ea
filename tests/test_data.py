"""Reading boardlib databases, the climb-grouped split, and the metrics."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections import Counter

import numpy as np
import pytest

from climbgrade_runtime.board_db import ClimbFilter, open_database
from climbgrade_runtime.errors import DatabaseError
from climbgrade_runtime.graded import load_examples
from climbgrade_runtime.grades import GradeTable
from climbgrade_runtime.metrics import metrics_by_board, regression_metrics
from climbgrade_runtime.split import SplitRule
from climbgrade_train.dataset import length_batches

from conftest import REAL_DATA
from fakeboard import GRADES, KILTER, make_database


def test_loader_skips_and_counts_unusable_climbs(fake_dbs, caplog):
    with caplog.at_level(logging.WARNING):
        data = load_examples(fake_dbs[:1], ClimbFilter())
    uuids = {e.uuid for e in data.examples}
    assert not any(u.startswith("DEFECT") for u in uuids)
    databases = data.summary["databases"]
    assert isinstance(databases, list)
    skipped = databases[0]["skipped"]
    assert sum(skipped.values()) == 4  # bad frames, off-board placement, placement twice, bad role
    assert "DEFECTBADFRAMES" in caplog.text and "DEFECTOFFBOARD" in caplog.text
    assert data.summary["rows_by_board"] == {"kilter": len(data.examples)}


def test_loader_reads_geometry(fake_dbs):
    data = load_examples(fake_dbs, ClimbFilter())
    layout = data.layouts[("kilter", 1)]
    assert layout.roles == {12: "start", 13: "middle", 14: "finish", 15: "foot"}
    assert layout.angles == KILTER.angles
    xs = [xy[0] for xy in layout.normalised.values()]
    ys = [xy[1] for xy in layout.normalised.values()]
    assert min(xs) == min(ys) == -1 and max(xs) == max(ys) == 1
    some = next(iter(layout.mirrors))
    assert layout.placements[layout.mirrors[some]] == (-layout.placements[some][0], layout.placements[some][1])
    assert set(data.layouts) == {("kilter", 1), ("tension", 11)}


def test_loader_filters(fake_dbs):
    everything = load_examples(fake_dbs, ClimbFilter())
    filtered = load_examples(fake_dbs, ClimbFilter(min_ascents=20, layouts=(1,), min_angle=20, max_angle=50))
    assert 0 < len(filtered.examples) < len(everything.examples)
    assert all(e.ascents >= 20 and e.layout_id == 1 and 20 <= e.angle <= 50 for e in filtered.examples)


def test_board_is_told_from_products_or_given(fake_dbs, tmp_path):
    assert open_database(fake_dbs[1]).board == "tension"
    copy = tmp_path / "mystery.db"
    shutil.copy(fake_dbs[0], copy)
    con = sqlite3.connect(copy)
    con.execute("UPDATE products SET name = 'Home Wall'")
    con.commit()
    con.close()
    with pytest.raises(DatabaseError, match="pass it as BOARD=PATH"):
        open_database(str(copy))
    assert open_database(f"kilter={copy}").board == "kilter"


@pytest.mark.parametrize(
    "damage, message",
    [
        ("DROP TABLE placements", "required table 'placements' is missing"),
        (
            "ALTER TABLE climb_stats DROP COLUMN display_difficulty",
            "table 'climb_stats' lacks column(s) display_difficulty",
        ),
    ],
)
def test_database_missing_table_or_column(fake_dbs, tmp_path, damage, message):
    copy = tmp_path / "broken.db"
    shutil.copy(fake_dbs[0], copy)
    con = sqlite3.connect(copy)
    con.execute(damage)
    con.commit()
    con.close()
    with pytest.raises(DatabaseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_database(str(copy))


def test_not_a_database(tmp_path):
    (tmp_path / "x.db").write_text("hello")
    with pytest.raises(DatabaseError, match="not a readable SQLite database"):
        open_database(str(tmp_path / "x.db"))
    with pytest.raises(DatabaseError, match="does not exist"):
        open_database(str(tmp_path / "missing.db"))


def test_split_is_grouped_by_climb_and_seeded(fake_dbs):
    data = load_examples(fake_dbs, ClimbFilter())
    uuids = [e.uuid for e in data.examples]
    split = SplitRule(seed=5).split(uuids)
    sets = [set(split[name]) for name in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set().union(*sets) == set(uuids)
    assert split == SplitRule(seed=5).split(reversed(uuids))
    assert split != SplitRule(seed=6).split(uuids)
    for board in ("kilter", "tension"):  # both boards have test climbs
        test_boards = {e.board for e in data.examples if e.uuid in sets[2]}
        assert board in test_boards
    # A climb's split depends only on its uuid: a subset of climbs (a filtered database) keeps it.
    subset = SplitRule(seed=5).split(uuids[::3])
    assert set(subset["test"]) == sets[2] & set(uuids[::3])


@pytest.mark.real_data
def test_real_split_keeps_every_climbs_angles_together():
    assert REAL_DATA is not None
    data = load_examples([str(REAL_DATA / "kilter.db"), str(REAL_DATA / "tension.db")], ClimbFilter())
    split = SplitRule(seed=0).split(e.uuid for e in data.examples)
    where = {u: name for name, ids in split.items() for u in ids}
    assert len(where) == sum(len(ids) for ids in split.values()) == data.summary["climbs"]
    angles_per_climb = Counter(e.uuid for e in data.examples)
    assert sum(n > 1 for n in angles_per_climb.values()) > 5000  # many climbs have several angles...
    rows_per_split = Counter(where[e.uuid] for e in data.examples)  # ...and each lands whole in one split
    assert rows_per_split["test"] / len(data.examples) == pytest.approx(0.1, abs=0.02)
    rows = data.summary["rows"]
    assert isinstance(rows, int) and rows > 40_000
    assert data.max_len == 3 + max(len(e.route.holds) for e in data.examples) >= 60


def test_length_batches_pad_little():
    lengths = np.random.default_rng(0).integers(4, 90, size=1000)
    batches = length_batches(lengths, 64, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    waste = sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)
    fixed_waste = int(lengths.max()) * len(lengths) - int(lengths.sum())  # padding every route to the max
    assert waste < 0.1 * fixed_waste


GRADE_TABLE = GradeTable.from_rows([(d, name, int(10 <= d <= 33)) for d, name in GRADES])


def test_grade_table_groups_v_grades():
    assert (GRADE_TABLE.lowest, GRADE_TABLE.highest) == (10, 33)
    assert GRADE_TABLE.grade(16.4).font == "6a" and GRADE_TABLE.grade(16.5).font == "6a+"
    assert GRADE_TABLE.grade(3).v == "V0" and GRADE_TABLE.grade(40).v == "V16"
    assert GRADE_TABLE.v_numbers(np.array([10, 12.4, 13, 15, 16, 17, 24, 25])).tolist() == [0, 0, 1, 2, 3, 3, 8, 8]


def test_metrics_hand_computed():
    true = np.array([16.0, 18.0, 20.0, 24.0])
    pred = np.array([17.0, 18.5, 23.0, 25.0])  # V3->V3, V4->V4, V5->V7, V8->V8
    m = regression_metrics(true, pred, GRADE_TABLE)
    assert m["mae"] == pytest.approx((1 + 0.5 + 3 + 1) / 4)
    assert m["rmse"] == pytest.approx(np.sqrt((1 + 0.25 + 9 + 1) / 4))
    assert m["within_1_difficulty"] == 0.75 and m["within_2_difficulty"] == 0.75
    assert m["exact_grouped_v"] == 0.75 and m["within_1_vgrade"] == 0.75 and m["within_2_vgrades"] == 1.0
    by_board = metrics_by_board(["a", "a", "b", "b"], true, pred, GRADE_TABLE)
    assert by_board["a"]["mae"] == pytest.approx(0.75) and by_board["all"]["count"] == 4


def test_missing_table_in_fresh_database_names_it(tmp_path):
    path = make_database(tmp_path / "k.db", KILTER, climbs=5, seed=0, defects=False)
    con = sqlite3.connect(path)
    con.execute("DROP TABLE difficulty_grades")
    con.commit()
    con.close()
    with pytest.raises(DatabaseError, match="difficulty_grades"):
        load_examples([str(path)], ClimbFilter())


def test_scalar_and_vectorised_grading_agree():
    """grade() (hot path, plain Python) and v_numbers() (batches, numpy) must round the same way."""
    values = np.concatenate([np.arange(0.0, 45.0, 0.25), np.random.default_rng(0).uniform(-5, 50, 2000)])
    assert [GRADE_TABLE.grade(v).v_number for v in values] == GRADE_TABLE.v_numbers(values).tolist()
    assert GRADE_TABLE.grade(18.0).name == "6b/V4"
