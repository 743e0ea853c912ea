"""The embedding API: GradePredictor used from Python, shared between threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from climbgrade_runtime import GradePredictor, Prediction, Route, RouteError, RouteFailure
from test_parity import route_dicts


@pytest.fixture(scope="module")
def predictor(fake_pipeline) -> GradePredictor:
    return GradePredictor.load(fake_pipeline.model, intra_op_threads=2)


def test_predict_and_predict_many_agree(predictor, fake_pipeline):
    routes = route_dicts(fake_pipeline.databases, 50)
    many = predictor.predict_many(routes, batch_size=16)
    assert all(isinstance(r, Prediction) for r in many)
    for route, result in zip(routes, many):
        assert predictor.predict(route).difficulty == pytest.approx(result.difficulty, abs=1e-5)


def test_route_objects_and_failures(predictor):
    layout = predictor.tokenizer.layouts[("tension", 11)]
    pids = sorted(layout.placements)
    route = Route("tension", 11, 40, ((pids[0], "start"), (pids[30], "finish")))
    assert predictor.predict(route).board == "tension"
    with pytest.raises(RouteError, match="angle 41"):
        predictor.predict(Route("tension", 11, 41, route.holds))
    results = predictor.predict_many([route, {"board": "tension"}, route])
    assert [type(r) for r in results] == [Prediction, RouteFailure, Prediction]
    assert results[1].error == "route is missing 'layout_id'"


def test_shared_between_threads(predictor, fake_pipeline):
    routes = route_dicts(fake_pipeline.databases, 200)
    expected = [predictor.predict(r).difficulty for r in routes]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda r: predictor.predict(r).difficulty, routes * 4))
    assert got == expected * 4
