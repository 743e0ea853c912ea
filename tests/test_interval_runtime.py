"""The runtime side of a model's calibrated interval (ONNX outputs difficulty, low, high).

On the session's tiny model of the shipped configuration (a bins head, its interval calibrated by
cg-train --calibrate and exported by cg-export), every way a prediction is shown carries
low <= difficulty <= high: predict, predict_many, sweep, explain, JSON, cg-infer's table, the HTTP API,
cg-eval (coverage, width, --predictions). A value-head model (no interval) answers as it always did,
and a sidecar that disagrees with its graph about the outputs is refused.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from climbgrade_runtime import GradePredictor, ModelError, Prediction
from climbgrade_runtime.evaluation import (
    PREDICTION_COLUMNS,
    TRUSTED_ASCENTS,
    GradedRow,
    evaluate,
    prediction_columns,
)
from climbgrade_runtime.insight import Mirror
from climbgrade_runtime.metrics import interval_metrics, interval_metrics_by_board
from climbgrade_runtime.model_io import INTERVAL_COVERAGE, INTERVAL_OUTPUTS, OUTPUTS
from climbgrade_runtime.serve import create_app
from climbgrade_runtime.sidecar import sidecar_path

from conftest import Pipeline, run_script
from test_parity import route_dicts

with warnings.catch_warnings():  # starlette asks for httpx2, which is not released everywhere yet
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TOL = 1e-5
# A plain answer's keys in order (a route with an "id" label); a model with an interval adds low, high.
PLAIN_KEYS = ["index", "id", "board", "layout_id", "angle", "difficulty", "font", "v_grade", "warnings"]
INTERVAL_KEYS = PLAIN_KEYS[:6] + ["low", "high"] + PLAIN_KEYS[6:]


@pytest.fixture(scope="module")
def interval_model(fake_pipeline: Pipeline) -> Path:
    return fake_pipeline.model


@pytest.fixture(scope="module")
def predictor(interval_model: Path) -> GradePredictor:
    return GradePredictor.load(interval_model)


@pytest.fixture(scope="module")
def plain(value_pipeline: Pipeline) -> GradePredictor:
    return GradePredictor.load(value_pipeline.model)


@pytest.fixture(scope="module")
def routes(fake_pipeline: Pipeline) -> list[dict]:
    return route_dicts(fake_pipeline.databases, 40)


def assert_interval(answer: dict | Prediction) -> None:
    """low < difficulty < high, a finite interval no wider than the grade scale."""
    d = answer if isinstance(answer, dict) else answer.to_dict()
    assert d["low"] < d["difficulty"] < d["high"] and d["high"] - d["low"] < 20, d


# --- the Python API ------------------------------------------------------------------------------


def test_predict_and_predict_many_carry_the_interval_around_the_difficulty(predictor, routes):
    assert predictor.has_interval
    many = predictor.predict_many(routes, batch_size=16)
    assert len(many) == len(routes) and all(isinstance(p, Prediction) for p in many)
    for route, p in zip(routes, many):
        assert_interval(p)
        one = predictor.predict(route)
        assert (one.difficulty, one.low, one.high) == pytest.approx((p.difficulty, p.low, p.high), abs=TOL)
        assert list(one.to_dict()) == INTERVAL_KEYS  # low and high right after the difficulty


def test_a_model_without_an_interval_answers_exactly_as_before(plain, routes, fake_pipeline):
    assert not plain.has_interval and evaluate(plain, fake_pipeline.databases).interval is None
    for p in plain.predict_many(routes[:10]) + [plain.predict(routes[0])]:
        assert isinstance(p, Prediction) and p.low is None and p.high is None
        assert list(p.to_dict()) == PLAIN_KEYS
    sweep = plain.sweep(routes[0])
    assert all(set(a.to_dict()) == {"angle", "difficulty", "font", "v_grade"} for a in sweep.angles)
    assert "low" not in plain.explain(routes[0]).prediction.to_dict()


def test_sweep_and_explain_carry_the_interval(predictor, routes):
    route = routes[0]
    sweep = predictor.sweep(route)
    assert len(sweep.angles) > 1
    for a in sweep.to_dict()["angles"]:
        assert list(a) == ["angle", "difficulty", "low", "high", "font", "v_grade"]
        assert_interval(a)
    own = next(a for a in sweep.angles if a.angle == route["angle"])
    assert (own.low, own.high) == (sweep.prediction.low, sweep.prediction.high)
    explanation = predictor.explain(route)
    assert_interval(explanation.prediction)
    whole = predictor.predict(route)
    assert explanation.prediction.low == pytest.approx(whole.low, abs=TOL)


def test_a_mirror_with_an_interval_writes_it_after_its_difficulty():
    # The fake boards have no mirrored holes, so the mirror's JSON is checked on its own.
    mirror = Mirror(20.0, "6c", "V5", "p1r12", ((1, "start"),), (), 19.0, 21.5)
    expected = {"difficulty": 20.0, "low": 19.0, "high": 21.5, "font": "6c", "v_grade": "V5", "frames": "p1r12"}
    assert mirror.to_dict() == expected
    assert "low" not in Mirror(20.0, "6c", "V5", "p1r12", ((1, "start"),)).to_dict()


# --- a pair that disagrees about the interval ----------------------------------------------------


def mismatch(model: Path, graph: tuple, sidecar: tuple) -> str:
    names = [tuple(n for n, _ in o) for o in (graph, sidecar)]
    return (
        f"model {model} and its sidecar do not match (outputs: model {names[0]}, sidecar {names[1]}): "
        "re-export both with cg-export"
    )


@pytest.mark.parametrize("graph_has_interval", [True, False], ids=["graph with, sidecar without", "the other way"])
def test_a_sidecar_that_disagrees_with_the_graph_on_the_interval_is_refused(
    graph_has_interval, interval_model, value_pipeline, tmp_path
):
    source = interval_model if graph_has_interval else value_pipeline.model
    graph, listed = (INTERVAL_OUTPUTS, OUTPUTS) if graph_has_interval else (OUTPUTS, INTERVAL_OUTPUTS)
    model = tmp_path / "m.onnx"
    shutil.copy(source, model)
    sidecar = json.loads(sidecar_path(source).read_text())  # the exported sidecar, its outputs edited
    sidecar["model"]["outputs"] = [{"name": n, "dtype": d} for n, d in listed]
    sidecar_path(model).write_text(json.dumps(sidecar))
    with pytest.raises(ModelError) as caught:
        GradePredictor.load(model).warm_up()
    assert str(caught.value) == mismatch(model, graph, listed)
    (tmp_path / "r.json").write_text("{}")
    result = run_script("cg-infer", str(tmp_path / "r.json"), "--model", str(model), check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"error: {mismatch(model, graph, listed)}"]


# --- cg-infer and the HTTP API -------------------------------------------------------------------


def test_cg_infer_json_and_table_show_the_interval_only_for_a_model_with_one(
    interval_model, value_pipeline, routes, tmp_path
):
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(routes[:5]))
    answers = json.loads(run_script("cg-infer", str(path), "--model", str(interval_model), "--format", "json").stdout)
    assert [list(a) for a in answers] == [INTERVAL_KEYS] * 5
    for a in answers:
        assert_interval(a)
    table = run_script("cg-infer", str(path), "--model", str(interval_model)).stdout.splitlines()
    assert table[0].split() == ["#", "route", "board", "layout", "angle", "difficulty", "range", "font", "V", "notes"]
    for a, row in zip(answers, table[1:]):
        assert row.split()[5:8] == [f"{a['difficulty']:.1f}", f"{a['low']:.1f}-{a['high']:.1f}", a["font"]]
    plain = run_script("cg-infer", str(path), "--model", str(value_pipeline.model), "--format", "json").stdout
    assert [list(a) for a in json.loads(plain)] == [PLAIN_KEYS] * 5
    plain_table = run_script("cg-infer", str(path), "--model", str(value_pipeline.model)).stdout.splitlines()
    assert plain_table[0].split() == ["#", "route", "board", "layout", "angle", "difficulty", "font", "V", "notes"]


def test_cg_infer_insight_rows_show_each_angles_interval(interval_model, routes, tmp_path):
    path = tmp_path / "route.json"
    path.write_text(json.dumps(routes[0]))
    answer = json.loads(
        run_script("cg-infer", str(path), "--model", str(interval_model), "--format", "json", "--angles", "all").stdout
    )
    table = run_script("cg-infer", str(path), "--model", str(interval_model), "--angles", "all").stdout
    rows = [r for r in table.splitlines() if "· angle" in r]
    assert len(rows) == len(answer["angles"]) > 1
    for a, row in zip(answer["angles"], rows):
        assert_interval(a)
        assert row.split()[2:5] == [str(a["angle"]), f"{a['difficulty']:.1f}", f"{a['low']:.1f}-{a['high']:.1f}"]


def test_the_http_api_answers_the_interval(predictor, routes):
    with TestClient(create_app(predictor), raise_server_exceptions=False) as client:
        one = client.post("/v1/grade", json=routes[0]).json()
        many = client.post("/v1/grade", json=routes[:3]).json()
        explained = client.post("/v1/explain", json=routes[0]).json()
    assert list(one) == INTERVAL_KEYS and one == predictor.predict(routes[0]).to_dict()
    for answer in (one, *many, explained):
        assert_interval(answer)
    for a in explained["angles"]:
        assert_interval(a)


# --- metrics and cg-eval -------------------------------------------------------------------------


def test_interval_metrics_hand_computed():
    targets = np.array([10.0, 12.0, 15.0, 20.0])
    low = np.array([9.0, 12.5, 14.0, 20.0])  # inside, below it, at its top, at its bottom
    high = np.array([11.0, 13.0, 15.0, 21.0])
    assert interval_metrics(targets, low, high) == {"count": 4, "coverage": 0.75, "mean_width": pytest.approx(1.125)}
    by_board = interval_metrics_by_board(["a", "a", "b", "b"], targets, low, high)
    assert by_board["all"]["coverage"] == 0.75
    assert (by_board["a"]["coverage"], by_board["a"]["mean_width"], by_board["a"]["count"]) == (0.5, 1.25, 2)
    assert (by_board["b"]["coverage"], by_board["b"]["mean_width"], by_board["b"]["count"]) == (1.0, 1.0, 2)
    empty = interval_metrics(np.array([]), np.array([]), np.array([]))
    assert empty["count"] == 0 and np.isnan(empty["coverage"]) and np.isnan(empty["mean_width"])
    with pytest.raises(ValueError, match="equal length"):
        interval_metrics(targets, low[:3], high)


def holds(row: GradedRow) -> bool:
    """Whether the row's interval holds its community grade."""
    low, high = row.prediction.low, row.prediction.high
    assert low is not None and high is not None
    return low <= row.example.difficulty <= high


def test_evaluate_scores_the_interval_overall_per_board_and_on_settled_rows(predictor, fake_pipeline):
    graded: list[GradedRow] = []
    result = evaluate(predictor, fake_pipeline.databases, sinks=[graded.append])
    interval = result.interval
    assert interval is not None and interval["nominal_coverage"] == INTERVAL_COVERAGE
    settled = [r for r in graded if r.example.ascents >= TRUSTED_ASCENTS]
    assert 0 < len(settled) < len(graded)
    for key, rows in (("all_rows", graded), ("trusted_rows", settled)):
        for board in ("all", "kilter", "tension"):
            chosen = [r for r in rows if board in ("all", r.example.board)]
            inside = sum(holds(r) for r in chosen)
            m = interval[key][board]
            assert m["count"] == len(chosen) and m["coverage"] == pytest.approx(inside / len(chosen))
            widths = [r.prediction.high - r.prediction.low for r in chosen if r.prediction.high and r.prediction.low]
            assert m["mean_width"] == pytest.approx(sum(widths) / len(widths), rel=1e-6)
    # calibrated on the validation climbs to hold 80% of their grades: all rows are near it
    assert interval["all_rows"]["all"]["coverage"] == pytest.approx(INTERVAL_COVERAGE, abs=0.15)


def test_cg_eval_prints_and_writes_the_interval(interval_model, fake_pipeline, tmp_path):
    dbs = [arg for db in fake_pipeline.databases for arg in ("--db", db)]
    predictions = tmp_path / "p.csv"
    as_json = run_script(
        "cg-eval", "--model", str(interval_model), *dbs, "--format", "json", "--predictions", str(predictions)
    )
    interval = json.loads(as_json.stdout)["interval"]
    table = run_script("cg-eval", "--model", str(interval_model), *dbs).stdout
    assert f"interval (made to hold {INTERVAL_COVERAGE:.0%} of community grades)" in table
    for board, m in interval["all_rows"].items():
        trusted = interval["trusted_rows"][board]
        cells = [board, f"{m['count']:,}", f"{100 * m['coverage']:.1f}%", f"{m['mean_width']:.2f}"]
        cells += [f"{trusted['count']:,}", f"{100 * trusted['coverage']:.1f}%", f"{trusted['mean_width']:.2f}"]
        assert re.search(r"^\s*" + r"\s+".join(map(re.escape, cells)) + r"$", table, re.MULTILINE), (cells, table)
    with predictions.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == prediction_columns(True) != PREDICTION_COLUMNS
        rows = list(reader)
    assert len(rows) == interval["all_rows"]["all"]["count"]
    for row in rows:
        predicted, low, high = (float(row[k]) for k in ("predicted_difficulty", "predicted_low", "predicted_high"))
        assert low < predicted < high
    inside = sum(
        float(r["predicted_low"]) <= float(r["community_difficulty"]) <= float(r["predicted_high"]) for r in rows
    )
    assert inside / len(rows) == pytest.approx(interval["all_rows"]["all"]["coverage"], abs=2 / len(rows))


def test_cg_eval_of_a_model_without_an_interval_shows_none(value_pipeline, fake_pipeline):
    dbs = [arg for db in fake_pipeline.databases for arg in ("--db", db)]
    plain = run_script("cg-eval", "--model", str(value_pipeline.model), *dbs, "--format", "json")
    assert "interval" not in json.loads(plain.stdout)
    assert "interval" not in run_script("cg-eval", "--model", str(value_pipeline.model), *dbs).stdout
