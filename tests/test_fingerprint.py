"""run.json's data fingerprint: --resume and cg-export refuse a database whose rows changed since the run."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from climbgrade_train.config import TrainConfig, TrainError
from climbgrade_train.export import export_run
from climbgrade_train.train import resume_run, train_run

from conftest import run_script
from fakeboard import KILTER, make_database

FIX = "give --db the database the run trained on, or start a new run"


@pytest.fixture
def tiny_run(tmp_path: Path) -> tuple[str, Path]:
    """A one-epoch run of a tiny network on a small synthetic database of its own (the tests change it)."""
    db = str(make_database(tmp_path / "kilter.db", KILTER, climbs=100, seed=3, defects=False))
    run = tmp_path / "run"
    config = TrainConfig().replace(
        databases=(db,), epochs=1, d_model=16, n_heads=2, n_layers=1, d_ff=32, batch_size=128, device="cpu"
    )
    train_run(config, run)
    return db, run


def execute(db: str, *statements: str) -> None:
    with closing(sqlite3.connect(db)) as con, con:
        for statement in statements:
            con.execute(statement)


def change_a_grade(db: str) -> None:
    execute(db, "UPDATE climb_stats SET display_difficulty = display_difficulty + 1 WHERE rowid = 1")


def add_a_climb(db: str) -> None:
    """One more climb, graded at one angle: one more row."""
    execute(
        db,
        "INSERT INTO climbs (uuid, layout_id, name, frames_count, frames, is_draft, is_listed, angle) "
        "SELECT 'ADDEDCLIMB', layout_id, 'added', 1, frames, 0, 1, angle FROM climbs LIMIT 1",
        "INSERT INTO climb_stats (climb_uuid, angle, display_difficulty, ascensionist_count) "
        "SELECT 'ADDEDCLIMB', angle, 20.0, 5 FROM climb_stats LIMIT 1",
    )


def folder_bytes(run: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(run.iterdir())}


def recorded(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["fingerprint"][0]


def epochs_run(run: Path) -> int:
    return len((run / "history.csv").read_text().splitlines()) - 1


def test_run_json_records_what_the_run_was_trained_on(tiny_run):
    db, run = tiny_run
    info = json.loads((run / "run.json").read_text())
    split = json.loads((run / "split.json").read_text())
    with closing(sqlite3.connect(db)) as con:
        rows = con.execute("SELECT COUNT(*) FROM climb_stats").fetchone()[0]
    [entry] = info["fingerprint"]
    assert entry["path"] == db and entry["size"] == Path(db).stat().st_size
    assert entry["rows"] == rows == info["data"]["rows"]
    assert entry["climbs"] == 100 == sum(len(split[name]) for name in ("train", "val", "test"))
    assert len(entry["sha256"]) == 64 and int(entry["sha256"], 16)


def test_resume_and_export_refuse_a_changed_grade_and_leave_the_run_alone(tiny_run, tmp_path):
    db, run = tiny_run
    before = folder_bytes(run)
    change_a_grade(db)
    message = f"{db} has changed since {run} was trained: the rows' hash differs; {FIX}"
    with pytest.raises(TrainError) as refused:
        resume_run(run, epochs=2)
    assert str(refused.value) == message
    with pytest.raises(TrainError) as refused:
        export_run(run, tmp_path / "exports")
    assert str(refused.value) == message
    assert folder_bytes(run) == before and not (tmp_path / "exports").exists()
    # the changed database at another path (given with --db) is no better than in place
    moved = tmp_path / "elsewhere.db"
    shutil.copy(db, moved)
    with pytest.raises(TrainError) as refused:
        resume_run(run, epochs=2, databases=(str(moved),))
    assert (
        str(refused.value)
        == f"{moved} differs from {db}, the database {run} was trained on: the rows' hash differs; {FIX}"
    )
    assert folder_bytes(run) == before


def test_resume_refuses_an_added_climb_with_the_counts(tiny_run):
    db, run = tiny_run
    was = recorded(run)
    before = folder_bytes(run)
    add_a_climb(db)
    with pytest.raises(TrainError) as refused:
        resume_run(run, epochs=2)
    assert str(refused.value) == (
        f"{db} has changed since {run} was trained: {was['rows'] + 1:,} rows (was {was['rows']:,}), "
        f"{was['climbs'] + 1:,} climbs (was {was['climbs']:,}), the rows' hash differs; {FIX}"
    )
    assert folder_bytes(run) == before


@pytest.mark.slow
def test_cli_refusals_are_one_line_with_exit_2(tiny_run, tmp_path):
    db, run = tiny_run
    was = recorded(run)
    before = folder_bytes(run)
    add_a_climb(db)
    expected = (
        f"error: {db} has changed since {run} was trained: {was['rows'] + 1:,} rows (was {was['rows']:,}), "
        f"{was['climbs'] + 1:,} climbs (was {was['climbs']:,}), the rows' hash differs; {FIX}"
    )
    for command in (
        ["cg-train", "--out", str(run), "--resume", "--epochs", "2"],
        ["cg-export", str(run), "--out", str(tmp_path / "exports")],
    ):
        result = run_script(*command, check=False)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and errors == [expected] and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines()[-1] == expected
    assert folder_bytes(run) == before and not (tmp_path / "exports").exists()


def test_a_different_number_of_databases_is_refused_before_any_is_read(tiny_run, tmp_path):
    db, run = tiny_run
    before = folder_bytes(run)
    with pytest.raises(TrainError) as refused:
        resume_run(run, epochs=2, databases=(db, str(tmp_path / "not-there.db")))
    assert str(refused.value) == f"{run} was trained on 1 database(s) ({db}), not 2: {FIX}"
    assert folder_bytes(run) == before


def test_changes_outside_the_rows_used_are_accepted(tiny_run, caplog):
    """A bigger file whose rows the run uses are the same (a renamed climb, an unrelated table) resumes."""
    db, run = tiny_run
    size = Path(db).stat().st_size
    execute(
        db,
        "UPDATE climbs SET name = 'renamed' WHERE rowid = 1",
        "CREATE TABLE notes (note BLOB)",
        "INSERT INTO notes VALUES (randomblob(100000))",
    )
    grown = Path(db).stat().st_size
    assert grown > size
    with caplog.at_level(logging.INFO, logger="climbgrade_train"):
        resume_run(run, epochs=2)
    assert epochs_run(run) == 2
    assert f"{db}: {grown:,} bytes (was {size:,}), but the rows {run} uses are unchanged" in caplog.messages


@pytest.mark.slow
def test_a_byte_copy_elsewhere_resumes_and_exports(tiny_run, tmp_path):
    db, run = tiny_run
    moved = tmp_path / "moved" / "kilter.db"
    moved.parent.mkdir()
    shutil.move(db, moved)  # the data moved: the old path is gone
    resume_run(run, epochs=2, databases=(str(moved),))
    assert epochs_run(run) == 2
    assert export_run(run, tmp_path / "exports", databases=(str(moved),)).is_file()


def test_a_run_without_a_fingerprint_resumes_with_a_warning(tiny_run, caplog):
    _, run = tiny_run
    info = json.loads((run / "run.json").read_text())
    del info["fingerprint"]  # as a run made before climbgrade recorded one
    (run / "run.json").write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING, logger="climbgrade_train"):
        resume_run(run, epochs=2)
    assert epochs_run(run) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{run} has no data fingerprint (made by an earlier climbgrade): its data cannot be checked"]
