"""Fuzz cg-serve's route endpoints with hypothesis: whatever a client sends, never a 500, and the server stays up.

Each body goes to POST /v1/grade, /v1/explain and /v1/picture. The answer is 200 (graded), 400 (not
JSON), 413 (too big) or 422 (not a route this model takes), always with a one-line JSON error when not
200; afterwards /healthz still answers. With the model stuck (a predictor that never answers, put in
with app.dependency_overrides), every body is still answered at once: 400, 413 or 503 with Retry-After.

Generated bodies per run under the ci profile (each test's max_examples, every one sent to the three
endpoints; the dev profile sends a twentieth, conftest.examples):

    test_any_json_value                    200
    test_route_shaped_objects              200
    test_random_bytes                      200
    test_any_body_while_the_model_is_stuck 100
    total                                  700 bodies, 2,100 requests
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from climbgrade_runtime import GradePredictor
from climbgrade_runtime.serve import create_app
from climbgrade_runtime.serve.app import get_predictor

from conftest import examples

with warnings.catch_warnings():  # starlette asks for httpx2, which is not released everywhere yet
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ENDPOINTS = ("/v1/grade", "/v1/explain", "/v1/picture")
ALLOWED = {200, 400, 413, 422}
FUZZ = settings(
    max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
MAX_BODY = 20_000  # a small limit, so that 413 is reachable by generated bodies

PREDICTOR = GradePredictor.load()
KILTER = PREDICTOR.tokenizer.layouts["kilter", 1]
TENSION = PREDICTOR.tokenizer.layouts["tension", 11]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(PREDICTOR, max_body_bytes=MAX_BODY, max_routes=20)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def check(client: TestClient, body: bytes) -> None:
    for path in ENDPOINTS:
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code in ALLOWED, (path, body[:200], response.status_code, response.text[:300])
        event(f"{path} {response.status_code}")  # --hypothesis-show-statistics: how often each answer came
        if response.status_code != 200:
            error = response.json()["error"]
            assert isinstance(error, str) and "\n" not in error and len(error) < 400
    assert client.get("/healthz").json()["status"] == "ok"


NASTY: st.SearchStrategy[Any] = st.sampled_from(
    [None, True, 0, -1, 1.5, 40.0, 10**30, -(2**63), 10**4000, "", "1", "\u0000", "\ud800", [], {}, [[]], "p1r2"]
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text() | NASTY,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6),
    max_leaves=30,
)


@st.composite
def route_shaped(draw: st.DrawFn) -> Any:
    """A valid route of the model's boards (holds or frames, role names or ids), then often one part of it
    made wrong (a field, a hold), sometimes a list of it: about half of these are graded."""
    layout = draw(st.sampled_from([KILTER, TENSION]))
    pids = draw(st.lists(st.sampled_from(sorted(layout.placements)), min_size=1, max_size=12, unique=True))
    role_ids = st.sampled_from(sorted(layout.roles))
    route: dict[str, Any] = {"board": layout.board, "layout_id": layout.layout_id}
    route["angle"] = draw(st.sampled_from(layout.angles))
    if draw(st.booleans()):
        route["frames"] = "".join(f"p{pid}r{draw(role_ids)}" for pid in pids)
    else:
        roles = role_ids | st.sampled_from(layout.role_names)
        route["holds"] = [{"placement_id": pid, "role": draw(roles)} for pid in pids]
        if draw(st.booleans()):  # one hold made wrong
            hold = draw(st.sampled_from(route["holds"]))
            hold[draw(st.sampled_from(["placement_id", "role", "x"]))] = draw(NASTY | st.integers())
    wrong = draw(st.sampled_from([None, None, "board", "layout_id", "angle", "frames", "holds", "id", "name"]))
    if wrong is not None:
        route[wrong] = draw(NASTY | JSON_VALUES)
    return draw(st.just(route) | st.lists(st.just(route), max_size=25))


@FUZZ
@given(JSON_VALUES)
def test_any_json_value(client, value):
    check(client, json.dumps(value).encode())


@FUZZ
@given(route_shaped())
def test_route_shaped_objects(client, route):
    check(client, json.dumps(route).encode())


@FUZZ
@given(st.binary(max_size=MAX_BODY + 2000) | st.text(max_size=200).map(str.encode))
def test_random_bytes(client, body):
    check(client, body)


class StuckPredictor:
    """A predictor whose every model call waits until the test ends: the model saturated for good."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def predict_many(self, routes: Any, **options: Any) -> Any:
        self.release.wait(timeout=600)
        return PREDICTOR.predict_many(routes, **options)

    def insight_stream(self, routes: Any, request: Any) -> Any:
        self.release.wait(timeout=600)
        return PREDICTOR.insight_stream(routes, request)

    def __getattr__(self, name: str) -> Any:
        return getattr(PREDICTOR, name)


@pytest.fixture(scope="module")
def stuck_client() -> Iterator[TestClient]:
    app = create_app(PREDICTOR, max_body_bytes=MAX_BODY, max_routes=20, max_queue=4, timeout_s=0.01)
    stuck = StuckPredictor()
    app.dependency_overrides[get_predictor] = lambda: stuck
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
        stuck.release.set()  # so that the app's worker can stop


@settings(FUZZ, max_examples=examples(100))
@given(JSON_VALUES.map(lambda value: json.dumps(value).encode()) | st.binary(max_size=MAX_BODY + 2000))
def test_any_body_while_the_model_is_stuck(stuck_client, body):
    for path in ENDPOINTS:
        response = stuck_client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code in {400, 413, 503}, (path, body[:200], response.status_code, response.text[:300])
        event(f"{path} {response.status_code}")
        assert "\n" not in response.json()["error"]
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
    assert stuck_client.get("/healthz").json()["status"] == "ok"
