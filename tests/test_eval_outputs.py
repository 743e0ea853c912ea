"""cg-eval beyond the metrics: every graded row to a file, the outliers (with pictures), progress, name-less databases."""

from __future__ import annotations

import csv
import errno
import json
import os
import pty
import re
import shutil
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from climbgrade_runtime import GradePredictor
from climbgrade_runtime.board_db import ClimbFilter
from climbgrade_runtime.errors import ClimbgradeError
from climbgrade_runtime.evaluation import (
    EVAL_CHUNK_ROWS,
    GradedRow,
    OutlierFinder,
    PredictionWriter,
    check_predictions_path,
    evaluate,
    prediction_columns,
    write_pictures,
)
from climbgrade_runtime.graded import load_examples

from conftest import BIN, run_script
from fakeboard import KILTER, make_database


def cg_eval(pipeline, *args: str, check: bool = True):
    dbs = [arg for db in pipeline.databases for arg in ("--db", db)]
    return run_script("cg-eval", "--model", str(pipeline.model), *dbs, *args, check=check)


INTERVAL_COLUMNS = prediction_columns(True)  # the session's models have the shipped head: an interval


def read_predictions(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            assert tuple(reader.fieldnames or ()) == INTERVAL_COLUMNS
            return list(reader)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(tuple(row) == INTERVAL_COLUMNS for row in rows)
    return rows


def test_predictions_file_has_every_graded_row(fake_pipeline, tmp_path):
    out = cg_eval(fake_pipeline, "--format", "json", "--predictions", str(tmp_path / "p.csv"))
    graded = json.loads(out.stdout)["metrics"]
    cg_eval(fake_pipeline, "--predictions", str(tmp_path / "p.jsonl"))
    rows = read_predictions(tmp_path / "p.csv")
    lines = read_predictions(tmp_path / "p.jsonl")
    assert len(rows) == len(lines) == graded["all"]["count"]
    for board in ("kilter", "tension"):
        assert sum(r["board"] == board for r in rows) == graded[board]["count"]
    grades = GradePredictor.load(fake_pipeline.model).grades
    for row, line in zip(rows, lines):
        assert row == {k: str(v) for k, v in line.items()}  # the two formats hold the same rows
        community, predicted = float(row["community_difficulty"]), float(row["predicted_difficulty"])
        assert float(row["residual"]) == pytest.approx(predicted - community, abs=2e-4)
        assert (row["community_font"], row["community_v_grade"]) == (
            grades.grade(community).font,
            grades.grade(community).v,
        )
        assert (row["predicted_font"], row["predicted_v_grade"]) == (
            grades.grade(predicted).font,
            grades.grade(predicted).v,
        )
        assert row["name"].startswith("climb ")  # fakeboard names its climbs "climb <n>"
    assert len({(r["uuid"], r["angle"]) for r in rows}) == len(rows)
    assert f"wrote {len(rows)} graded rows" in out.stderr
    assert "grading" not in out.stderr  # no progress bar when stderr is not a terminal


def furthest_climbs(rows: list[dict], count: int) -> list[tuple[str, int]]:
    """(uuid, angle) of the first row of each of the first `count` climbs in `rows` (furthest first)."""
    firsts: dict[str, int] = {}
    for row in rows:
        firsts.setdefault(row["uuid"], row["angle"])
    return list(firsts.items())[:count]


def test_outliers_are_the_extremes_of_the_predictions(fake_pipeline, tmp_path):
    """N distinct climbs each way, each by its furthest row; community above the model = soft, below = sandbag."""
    out = cg_eval(
        fake_pipeline,
        "--min-ascents",
        "5",
        "--outliers",
        "3",
        "--format",
        "json",
        "--predictions",
        str(tmp_path / "p.jsonl"),
        "--svg",
        str(tmp_path / "svg"),
    )
    rows = read_predictions(tmp_path / "p.jsonl")
    assert rows and min(r["ascents"] for r in rows) >= 5
    by_residual = sorted(rows, key=lambda r: (r["residual"], r["uuid"], r["angle"]))
    outliers = json.loads(out.stdout)["outliers"]
    key = lambda r: (r["uuid"], r["angle"])  # noqa: E731
    assert [key(r) for r in outliers["above"]] == furthest_climbs([r for r in by_residual if r["residual"] < 0], 3)
    below = [r for r in by_residual[::-1] if r["residual"] > 0]
    assert [key(r) for r in outliers["below"]] == furthest_climbs(below, 3)
    for side in ("above", "below"):
        assert len({r["uuid"] for r in outliers[side]}) == len(outliers[side]) == 3
    assert all(r["residual"] < 0 for r in outliers["above"]) and all(r["residual"] > 0 for r in outliers["below"])

    pictures = sorted((tmp_path / "svg").iterdir())
    assert [p.name.split("-")[:2] for p in pictures] == [
        ["above", "1"],
        ["above", "2"],
        ["above", "3"],
        ["below", "1"],
        ["below", "2"],
        ["below", "3"],
    ]
    for picture, row in zip(pictures, outliers["above"] + outliers["below"]):
        root = ET.parse(picture).getroot()
        assert row["name"] in (root.findtext("{http://www.w3.org/2000/svg}title") or "")
        assert sum("data-placement-id" in c.attrib for c in root.iter("{http://www.w3.org/2000/svg}circle")) >= 2

    table = cg_eval(fake_pipeline, "--min-ascents", "5", "--outliers", "3").stdout
    assert "graded above the model (community grade higher than predicted: likely soft touches)" in table
    assert "graded below the model (community grade lower than predicted: likely sandbags)" in table
    above = table.split("likely soft touches")[1].split("likely sandbags")[0]
    below = table.split("likely sandbags")[1]
    assert all(r["uuid"] in above and r["name"] in above for r in outliers["above"])
    assert all(r["uuid"] in below and r["name"] in below for r in outliers["below"])


def graded_rows(pipeline, **options) -> list[GradedRow]:
    """Every row evaluate grades, in database order (what its sinks are handed)."""
    rows: list[GradedRow] = []
    evaluate(GradePredictor.load(pipeline.model), pipeline.databases, sinks=[rows.append], **options)
    return rows


def find_outliers(rows: list[GradedRow], count: int) -> tuple[list[GradedRow], list[GradedRow]]:
    finder = OutlierFinder(count)
    for row in rows:
        finder.add(row)
    return finder.found()


def predicted_off(row: GradedRow, residual: float) -> GradedRow:
    """`row` with the model's grade moved to `residual` from the community's."""
    return replace(row, prediction=replace(row.prediction, difficulty=row.example.difficulty + residual))


def test_outliers_list_each_climb_once_by_its_furthest_row(fake_pipeline):
    """A climb graded far off at two angles takes one place in the list, not two."""
    rows = graded_rows(fake_pipeline)
    angles = Counter(r.example.uuid for r in rows)
    twice = next(uuid for uuid, n in angles.items() if n >= 2)
    first, second = [i for i, r in enumerate(rows) if r.example.uuid == twice][:2]
    for i, shift in ((first, -20.0), (second, -19.0)):  # predicted far below the community: the top two rows
        rows[i] = predicted_off(rows[i], shift)
    ordered = sorted(rows, key=lambda r: r.residual)
    assert [r.example.uuid for r in ordered[:2]] == [twice, twice]  # a row-wise top 2 would list it twice

    above, below = find_outliers(rows, 2)
    assert above[0] is rows[first] and above[1].example.uuid != twice
    assert above[1] is next(r for r in ordered if r.example.uuid != twice)
    for i, shift in ((first, 20.0), (second, 19.0)):
        rows[i] = predicted_off(rows[i], shift)
    above, below = find_outliers(rows, 2)
    assert below[0] is rows[first] and below[1].example.uuid != twice


def test_bad_options_are_one_line_errors_before_any_work(fake_pipeline, tmp_path):
    for args, message in (
        (["--predictions", str(tmp_path / "p.txt")], "name a .csv or .jsonl file"),
        (["--predictions", str(tmp_path / "none" / "p.csv")], f"the folder {tmp_path / 'none'} does not exist"),
        (["--predictions", str(Path(__file__) / "p.csv")], f"{Path(__file__)} is not a folder"),
        (["--svg", str(tmp_path / "svg")], "--svg draws the outliers"),
        (["--predictions", str(tmp_path / "p.csv"), "--model", str(tmp_path / "none.onnx")], "does not exist"),
    ):
        result = cg_eval(fake_pipeline, *args, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_an_unwritable_predictions_folder_is_refused(tmp_path, monkeypatch):
    """Checked with os.access, as cg-eval does before grading (faked: the tests may run as root, who writes anywhere)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(
        "climbgrade_runtime.evaluation.os.access", lambda path, mode: Path(path) != locked or not mode & os.W_OK
    )
    with pytest.raises(ClimbgradeError) as refused:
        check_predictions_path(locked / "p.csv")
    assert str(refused.value) == f"--predictions {locked / 'p.csv'}: the folder {locked} is not writable"
    check_predictions_path(tmp_path / "p.csv")  # a writable folder passes


def test_a_failed_write_is_one_line_naming_the_file(fake_pipeline, tmp_path, monkeypatch):
    """A write that fails after the checks (disk full, folder gone) says which file and why, not a raw errno."""
    rows = graded_rows(fake_pipeline)

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("climbgrade_runtime.files.tempfile.mkstemp", full)
    written = rf"^cannot write {re.escape(str(tmp_path / 'p.csv'))}: No space left"
    with pytest.raises(ClimbgradeError, match=written), PredictionWriter(tmp_path / "p.csv", interval=False) as writer:
        writer.write(rows[0])
    with pytest.raises(ClimbgradeError, match=r"^cannot write .*above-1.*\.svg: No space left"):
        write_pictures(rows[:1], tmp_path, "above")


def test_a_database_without_climb_names_is_graded(fake_pipeline, tmp_path):
    for db in fake_pipeline.databases:
        shutil.copy(db, tmp_path / Path(db).name)
        with sqlite3.connect(tmp_path / Path(db).name) as con:
            con.execute("ALTER TABLE climbs DROP COLUMN name")
    dbs = [arg for db in fake_pipeline.databases for arg in ("--db", str(tmp_path / Path(db).name))]
    result = run_script(
        "cg-eval",
        "--model",
        str(fake_pipeline.model),
        *dbs,
        "--outliers",
        "2",
        "--predictions",
        str(tmp_path / "p.csv"),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    nameless = read_predictions(tmp_path / "p.csv")
    cg_eval(fake_pipeline, "--predictions", str(tmp_path / "named.csv"))
    named = read_predictions(tmp_path / "named.csv")
    assert [r["name"] for r in nameless] == [""] * len(named)
    assert [{**r, "name": ""} for r in named] == nameless


def test_evaluate_reports_the_progress_of_every_row(fake_pipeline):
    predictor = GradePredictor.load(fake_pipeline.model)
    calls: list[tuple[str, int]] = []

    class Recorder:
        def __init__(self, total: int) -> None:
            calls.append(("total", total))

        def __enter__(self) -> Recorder:
            return self

        def __exit__(self, *exc: object) -> None:
            calls.append(("closed", 0))

        def update(self, n_steps: int) -> None:
            calls.append(("update", n_steps))

    graded: list[GradedRow] = []
    result = evaluate(predictor, fake_pipeline.databases, progress=Recorder, batch_size=16, sinks=[graded.append])
    summary = load_examples(fake_pipeline.databases, ClimbFilter()).summary["databases"]
    assert isinstance(summary, list)
    skipped = sum(sum(db["skipped"].values()) for db in summary)  # rows the reader leaves out count too
    assert skipped > 0
    rows = result.metrics["all"]["count"] + sum(result.not_graded.values()) + skipped
    assert calls[0] == ("total", rows) and calls[-1] == ("closed", 0)
    updates = [n for kind, n in calls if kind == "update"]
    assert sum(updates) == rows
    assert len(updates) >= -(-result.metrics["all"]["count"] // 16)  # one update per onnxruntime batch at least
    assert len(graded) == result.metrics["all"]["count"]


def test_progress_bar_shows_when_stderr_is_a_terminal(fake_pipeline):
    primary, secondary = pty.openpty()
    dbs = [arg for db in fake_pipeline.databases for arg in ("--db", db)]
    with subprocess.Popen(
        [str(BIN / "cg-eval"), "--model", str(fake_pipeline.model), *dbs], stdout=subprocess.PIPE, stderr=secondary
    ) as process:
        os.close(secondary)
        shown = b""
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:  # the terminal closes when cg-eval exits
                break
            if not data:
                break
            shown += data
        stdout = process.stdout.read() if process.stdout else b""
    os.close(primary)
    assert process.returncode == 0
    assert b"grading" in shown and b"100%" in shown
    assert b"grading" not in stdout and b"MAE" in stdout  # the bar never mixes into the results


def peak_rss_kb(*command: str, report: Path) -> int:
    """Peak RSS of a console script run on its own, as GNU time measures it (in KB)."""
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(report), *command], check=True, capture_output=True)
    return int(report.read_text().split()[-1])


@pytest.mark.slow
def test_cg_eval_memory_stays_flat_as_the_database_grows(fake_pipeline, tmp_path):
    """Five times the rows, every one written to --predictions and offered to --outliers, in the same memory.

    Both databases fill at least one of cg-eval's chunks, so only what is kept per row could grow: holding
    the 50,000 rows as before (about 5 KB of objects each) would add well over 100 MB.
    """
    peaks, rows = [], []
    for name, climbs in (("small", 5_000), ("large", 25_000)):
        db = make_database(tmp_path / f"{name}.db", KILTER, climbs=climbs, seed=climbs, defects=False)
        out = tmp_path / f"{name}.csv"
        args = ["--model", str(fake_pipeline.model), "--db", str(db), "--predictions", str(out), "--outliers", "5"]
        peaks.append(peak_rss_kb(str(BIN / "cg-eval"), *args, report=tmp_path / f"{name}.time"))
        rows.append(len(out.read_text().splitlines()) - 1)
    assert rows[0] > EVAL_CHUNK_ROWS and rows[1] > 4.5 * rows[0]
    assert 50_000 < peaks[0] < 400_000, f"implausible peak RSS {peaks[0]} KB: is the measurement broken?"
    assert peaks[1] - peaks[0] < 25_000, f"peak RSS grew by {(peaks[1] - peaks[0]) / 1024:.0f} MB ({peaks} KB)"
