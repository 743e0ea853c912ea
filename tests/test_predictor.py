"""The embedding API: GradePredictor used from Python, shared between threads."""

from __future__ import annotations

import os
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
    """A 2-intra-op-thread session shared by 4 threads; bit-for-bit is only promised at 1 intra-op
    thread (next test), so this one allows float noise."""
    routes = route_dicts(fake_pipeline.databases, 200)
    expected = [predictor.predict(r).difficulty for r in routes]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda r: predictor.predict(r).difficulty, routes * 4))
    assert got == pytest.approx(expected * 4, abs=1e-5)


def test_eight_threads_of_a_thousand_predictions_match_one_thread(fake_pipeline):
    predictor = GradePredictor.load(fake_pipeline.model)  # one intra-op thread: results are bit-for-bit stable
    routes = route_dicts(fake_pipeline.databases, 1000)
    expected = [predictor.predict(r).difficulty for r in routes]

    def worker(offset: int) -> list[float]:
        order = routes[offset:] + routes[:offset]  # each thread walks the routes from its own start
        got = [predictor.predict(r).difficulty for r in order]
        return got[-offset:] + got[:-offset] if offset else got

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(worker, range(0, 800, 100)))
    assert all(r == expected for r in results)


@pytest.mark.slow
def test_soak_memory_stays_flat(fake_pipeline):
    """100,000 predictions in one process: resident memory does not grow (a leak would)."""
    predictor = GradePredictor.load(fake_pipeline.model)
    routes = route_dicts(fake_pipeline.databases, 500)
    for r in routes * 4:
        predictor.predict(r)
    before = rss_mb()
    for i in range(100_000):
        predictor.predict(routes[i % len(routes)])
    assert rss_mb() - before < 5, f"RSS grew from {before:.1f} MB to {rss_mb():.1f} MB"


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_predict_stream_numbers_routes_across_chunks(predictor, fake_pipeline):
    routes = route_dicts(fake_pipeline.databases, 25)
    routes[11] = {"board": "moon"}
    chunks = list(predictor.predict_stream(iter(routes), chunk_size=4, batch_size=3))
    assert [len(c) for c in chunks] == [4] * 6 + [1]
    flat = [r for chunk in chunks for r in chunk]
    assert [r.index for r in flat] == list(range(25))
    assert isinstance(flat[11], RouteFailure) and all(isinstance(r, Prediction) for i, r in enumerate(flat) if i != 11)
    whole = predictor.predict_many(routes)
    for a, b in zip(flat, whole):  # other batch sizes pad differently: equal up to float rounding
        assert type(a) is type(b) and (isinstance(a, RouteFailure) or abs(a.difficulty - b.difficulty) < 1e-5)
