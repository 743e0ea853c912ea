"""Boardsesh snapshots read with their catalogue: the rows, splits and predictions of the boardlib databases
they were rewritten from, for cg-train, cg-eval and cg-serve --db; one-line errors for what is missing."""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from climbgrade_runtime import GradePredictor
from climbgrade_runtime.board_db import ClimbFilter, open_database
from climbgrade_runtime.errors import DatabaseError
from climbgrade_runtime.graded import Example, LoadedData, load_examples
from climbgrade_runtime.serve.climbs import ClimbSearch
from climbgrade_runtime.split import SplitRule

from boardsesh import write_catalog, write_snapshots
from conftest import REAL_DATA, TINY_MODEL, run_script


@dataclass(frozen=True)
class Snapshots:
    """boardlib databases and the same climbs in Boardsesh's layout: snapshots (one per layout) and a catalogue."""

    boardlib: tuple[str, ...]
    snapshots: tuple[str, ...]
    catalog: str

    @property
    def db_args(self) -> list[str]:
        return [w for db in self.snapshots for w in ("--db", db)] + ["--catalog", self.catalog]


def rewrite(folder: Path, databases: tuple[str, ...]) -> Snapshots:
    boards = {open_database(db).board: Path(db) for db in databases}
    snapshots = [str(p) for board, db in boards.items() for p in write_snapshots(folder, board, db)]
    return Snapshots(databases, tuple(snapshots), str(write_catalog(folder / "catalog.db", boards)))


@pytest.fixture(scope="module")
def fake_snapshots(tmp_path_factory: pytest.TempPathFactory, fake_dbs: tuple[str, str]) -> Snapshots:
    return rewrite(tmp_path_factory.mktemp("fake_snapshots"), fake_dbs)


@pytest.fixture(scope="module")
def real_snapshots(tmp_path_factory: pytest.TempPathFactory) -> Snapshots:
    assert REAL_DATA is not None  # real_data tests are skipped without it
    return rewrite(
        tmp_path_factory.mktemp("real_snapshots"), (str(REAL_DATA / "kilter.db"), str(REAL_DATA / "tension.db"))
    )


@pytest.fixture(scope="module", params=["fake", "real"])
def snapshots(request: pytest.FixtureRequest) -> Snapshots:
    return request.getfixturevalue(f"{request.param}_snapshots")


def row(e: Example) -> tuple[object, ...]:
    return (e.uuid, e.board, e.layout_id, e.angle, e.difficulty, e.ascents, e.name, e.route.holds)


def test_snapshots_hold_the_boardlib_rows_geometry_and_splits(snapshots):
    boardlib = load_examples(snapshots.boardlib, ClimbFilter())
    snapshot = load_examples(snapshots.snapshots, ClimbFilter(), snapshots.catalog)
    assert sorted(map(row, snapshot.examples)) == sorted(map(row, boardlib.examples))
    assert len(snapshot.examples) > 0 and snapshot.grades == boardlib.grades
    assert set(snapshot.layouts) == set(boardlib.layouts)
    for key, layout in snapshot.layouts.items():
        theirs = boardlib.layouts[key]
        assert (layout.placements, layout.mirrors, layout.roles, layout.own_roles) == (
            theirs.placements,
            theirs.mirrors,
            theirs.roles,
            theirs.own_roles,
        )
        # the catalogue has no angle table: a layout's angles are those its climbs are graded at
        graded_at = {e.angle for e in boardlib.examples if (e.board, e.layout_id) == key}
        assert graded_at <= set(layout.angles) <= set(theirs.angles)
    rule = SplitRule(seed=3)
    assert rule.split(e.uuid for e in snapshot.examples) == rule.split(e.uuid for e in boardlib.examples)
    assert skipped(snapshot) == skipped(boardlib)


def skipped(data: LoadedData) -> int:
    """The rows the reader left out, over every database."""
    found = data.summary["databases"]
    assert isinstance(found, list)
    return sum(sum(db["skipped"].values()) for db in found)


def test_snapshot_filters_are_boardlibs(fake_snapshots):
    where = ClimbFilter(min_ascents=20, layouts=(1,), min_angle=20, max_angle=50)
    boardlib = load_examples(fake_snapshots.boardlib, where)
    snapshot = load_examples(fake_snapshots.snapshots, where, fake_snapshots.catalog)
    assert sorted(map(row, snapshot.examples)) == sorted(map(row, boardlib.examples))


def sorted_lines(path: Path) -> list[str]:
    header, *rows = path.read_text().splitlines()
    return [header, *sorted(rows)]


def test_cg_eval_on_snapshots_gives_the_boardlib_predictions(pipeline, tmp_path):
    """The test split of the model's own run, from snapshots: the same climbs, the same predictions."""
    source = rewrite(tmp_path, pipeline.databases)
    outputs = []
    for name, db_args in (
        ("boardlib", [w for db in source.boardlib for w in ("--db", db)]),
        ("snapshot", source.db_args),
    ):
        path = tmp_path / f"{name}.csv"
        args = ["--model", str(pipeline.model), *db_args, "--split", "test", "--format", "json"]
        result = run_script("cg-eval", *args, "--predictions", str(path), "--outliers", "3")
        assert "the same" in result.stderr and "climbs the model was tested on" in result.stderr
        outputs.append((sorted_lines(path), json.loads(result.stdout)))
    (boardlib_rows, boardlib_report), (snapshot_rows, snapshot_report) = outputs
    assert len(snapshot_rows) > 1 and snapshot_rows == boardlib_rows
    # the same rows in another order: the metrics' sums may differ in their last bit
    assert snapshot_report["metrics"].keys() == boardlib_report["metrics"].keys()
    for board, metrics in boardlib_report["metrics"].items():
        assert snapshot_report["metrics"][board] == pytest.approx(metrics, rel=1e-12)
    assert snapshot_report["outliers"] == boardlib_report["outliers"]


@pytest.mark.slow
def test_cg_train_on_snapshots_splits_and_reads_as_on_boardlib(fake_pipeline, fake_snapshots, tmp_path):
    run_script(
        "cg-train",
        *fake_snapshots.db_args,
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        *TINY_MODEL,
    )
    ours, theirs = tmp_path / "run", fake_pipeline.run_dir
    assert json.loads((ours / "split.json").read_text()) == json.loads((theirs / "split.json").read_text())
    data = json.loads((ours / "run.json").read_text())
    assert data["config"]["catalog"] == fake_snapshots.catalog
    assert data["data"]["rows"] == json.loads((theirs / "run.json").read_text())["data"]["rows"]


def test_climb_search_in_snapshots_finds_the_boardlib_climbs(fake_pipeline, fake_snapshots):
    predictor = GradePredictor.load(fake_pipeline.model)
    found = []
    for specs, catalog in ((fake_snapshots.boardlib, None), (fake_snapshots.snapshots, fake_snapshots.catalog)):
        search = ClimbSearch(specs, predictor.tokenizer, predictor.grades, catalog)
        found.append([c.to_dict() for c in search.search("", limit=50)])
        search.close()
    assert len(found[0]) == 50 and found[1] == found[0]


def damaged(snapshots: Snapshots, folder: Path, sql: str) -> str:
    """A copy of the catalogue with `sql` run on it."""
    copy = folder / "damaged-catalog.db"
    copy.write_bytes(Path(snapshots.catalog).read_bytes())
    with sqlite3.connect(copy) as connection:
        connection.execute(sql)
    connection.close()
    return str(copy)


def test_what_a_snapshot_lacks_is_one_line_naming_the_fix(fake_snapshots, fake_pipeline, tmp_path):
    kilter = next(s for s in fake_snapshots.snapshots if Path(s).name.startswith("kilter"))
    no_kilter = damaged(fake_snapshots, tmp_path, "DELETE FROM board_products WHERE board_type = 'kilter'")
    for args, message in (
        ([kilter], "a Boardsesh snapshot needs --catalog PATH"),
        ([kilter, "--catalog", str(tmp_path / "none.db")], "does not exist: pass Boardsesh's catalogue"),
        ([kilter, "--catalog", no_kilter], "has no kilter board"),
        ([fake_snapshots.catalog], "is a Boardsesh catalogue"),
    ):
        result = run_script("cg-eval", "--model", str(fake_pipeline.model), "--db", *args, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    result = run_script("cg-train", "--db", kilter, "--out", str(tmp_path / "run"), check=False)
    assert result.returncode == 2 and "a Boardsesh snapshot needs --catalog PATH" in result.stderr


def test_a_layout_or_table_missing_from_the_catalogue_is_named(fake_snapshots, tmp_path):
    no_layout = damaged(fake_snapshots, tmp_path, "DELETE FROM board_layouts WHERE id = 1")
    with pytest.raises(DatabaseError, match=r"catalogue .*: layout 1 of kilter is not in its layouts table"):
        load_examples(fake_snapshots.snapshots, ClimbFilter(), no_layout)
    no_holes = damaged(fake_snapshots, tmp_path, "DROP TABLE board_holes")
    with pytest.raises(DatabaseError, match=r"catalogue .* has no table 'board_holes'"):
        open_database(fake_snapshots.snapshots[0], catalog=no_holes)


def test_a_snapshot_of_two_boards_needs_its_board_named(fake_snapshots, tmp_path):
    mixed = tmp_path / "mixed.db"
    mixed.write_bytes(Path(fake_snapshots.snapshots[0]).read_bytes())
    with sqlite3.connect(mixed) as connection:
        connection.execute("UPDATE board_climbs SET board_type = 'tension' WHERE rowid % 2 = 0")
    connection.close()
    with pytest.raises(DatabaseError, match="pass it as BOARD=PATH"):
        open_database(str(mixed), catalog=fake_snapshots.catalog)
    named = open_database(f"kilter={mixed}", catalog=fake_snapshots.catalog)
    assert named.board == "kilter" and named.count_climbs(ClimbFilter()) > 0


def test_a_catalogue_no_snapshot_needs_is_said_not_dropped(fake_snapshots, caplog):
    with caplog.at_level(logging.WARNING):
        load_examples(fake_snapshots.boardlib, ClimbFilter(), fake_snapshots.catalog)
    assert (
        f"--catalog {fake_snapshots.catalog} was not read: none of the databases is a Boardsesh snapshot" in caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_examples(fake_snapshots.snapshots, ClimbFilter(), fake_snapshots.catalog)
    assert "was not read" not in caplog.text
