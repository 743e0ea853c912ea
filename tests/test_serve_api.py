"""cg-serve's HTTP API through the ASGI test client on the shipped model, and the real cg-serve process.

Every endpoint and every error status; answers equal to GradePredictor's and to cg-infer's for the
same route; the model worker (a predictor held at a gate, put in with app.dependency_overrides):
concurrent requests batched, 503 with Retry-After past the queue or the deadline; the climb search on the synthetic database (with the model trained on it) and on the
real data when present; a real `cg-serve` on a free loopback port stopped by SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from climbgrade_runtime import GradePredictor
from climbgrade_runtime.board_db import GRADED_STATS_SQL, USABLE_CLIMB_SQL
from climbgrade_runtime.insight import ONLY_HOLD_WARNING
from climbgrade_runtime.serve import create_app
from climbgrade_runtime.serve.app import PAGE_CSP, get_predictor
from climbgrade_runtime.serve.climbs import MAX_LIMIT, ClimbSearch
from climbgrade_runtime.serve.site import KIOSK_CONFIG, export_site
from climbgrade_runtime.svg import picture_title

from conftest import BIN, REAL_DATA, Pipeline, run_script

with warnings.catch_warnings():  # starlette asks for httpx2, which is not released everywhere yet
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "routes.json"
ROUTES: list[dict[str, Any]] = json.loads(EXAMPLES.read_text())
KILTER_ROUTE = next(r for r in ROUTES if r["board"] == "kilter" and "frames" in r)
TENSION_ROUTE = next(r for r in ROUTES if r["board"] == "tension")  # TB2 Spray: a layout with mirrors
BAD_ROUTE = {**KILTER_ROUTE, "angle": 41}
START_S = 60  # cg-serve loads and warms up the model before it listens; the CI machine is slow


@pytest.fixture(scope="module")
def predictor() -> GradePredictor:
    return GradePredictor.load()


@pytest.fixture(scope="module")
def client(predictor: GradePredictor) -> Iterator[TestClient]:
    with TestClient(create_app(predictor), raise_server_exceptions=False) as test_client:
        yield test_client


def cg_infer_json(route: Any, *flags: str, tmp_path: Path) -> Any:
    path = tmp_path / "route.json"
    path.write_text(json.dumps(route))
    return json.loads(run_script("cg-infer", str(path), "--format", "json", *flags, check=False).stdout)


# --- the page, health, layouts ------------------------------------------------------------------


def test_page_and_its_files_are_served_with_a_strict_csp(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text.lower()
    for path in ("/static/app.js", "/static/grader.js", "/static/style.css", "/sw.js", "/static/ort/ort.wasm.min.mjs"):
        response = client.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "text/javascript" if path.endswith("js") else "text/css"
        )
        assert response.headers["content-security-policy"] == PAGE_CSP
        assert response.headers["x-content-type-options"] == "nosniff"
    assert page.headers["content-security-policy"] == PAGE_CSP
    assert "'unsafe-inline'" not in PAGE_CSP and "'unsafe-eval'" not in PAGE_CSP and "style-src 'self'" in PAGE_CSP
    assert "script-src 'self' 'wasm-unsafe-eval';" in PAGE_CSP  # onnxruntime-web's WebAssembly, and nothing else


def test_healthz_names_the_model_and_its_hash(client, predictor):
    answer = client.get("/healthz").json()
    assert answer["status"] == "ok" and answer["model"] == predictor.model_path.name
    assert answer["sha256"] == predictor.sidecar.model_sha256 and answer["uptime_s"] >= 0


class GatedPredictor:
    """The predictor, its predict_many held at a gate until `open` is set; `batches` counts each call's routes."""

    def __init__(self, predictor: GradePredictor) -> None:
        self.predictor = predictor
        self.open = threading.Event()
        self.batches: list[int] = []

    def predict_many(self, routes: list[Any], **options: Any) -> list[Any]:
        self.batches.append(len(routes))
        self.open.wait(timeout=60)
        return self.predictor.predict_many(routes, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.predictor, name)


def gated_app(predictor: GradePredictor, **options: Any) -> tuple[FastAPI, GatedPredictor]:
    app = create_app(predictor, **options)
    gated = GatedPredictor(predictor)
    app.dependency_overrides[get_predictor] = lambda: gated
    return app, gated


@contextlib.asynccontextmanager
async def kiosk_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An async client of `app` with its lifespan running (its model worker started), for concurrent requests."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kiosk") as http,
    ):
        yield http


async def until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting")


def test_while_the_model_is_saturated_the_page_answers_and_past_the_queue_a_503_with_retry_after(predictor):
    """The model held busy and its queue full: the page, its files and the rest answer; one more grade is a 503."""
    app, gated = gated_app(predictor, max_queue=4, timeout_s=30)

    async def scenario() -> tuple[dict[str, int], httpx.Response, set[int]]:
        async with kiosk_client(app) as http:
            running = asyncio.create_task(http.post("/v1/grade", json=KILTER_ROUTE))
            await until(lambda: gated.batches)  # the worker holds the first request at the gate
            queued = [asyncio.create_task(http.post("/v1/grade", json=[KILTER_ROUTE])) for _ in range(4)]
            await asyncio.sleep(0.2)
            try:
                refused = await asyncio.wait_for(http.post("/v1/grade", json=KILTER_ROUTE), timeout=5)
                answers = {}
                for path in ("/healthz", "/v1/layouts", "/", "/static/app.js", "/static/style.css", "/nothing"):
                    answers[path] = (await asyncio.wait_for(http.get(path), timeout=5)).status_code
            finally:
                gated.open.set()
            statuses = {r.status_code for r in await asyncio.gather(running, *queued)}
        return answers, refused, statuses

    answers, refused, statuses = asyncio.run(scenario())
    assert answers == {
        "/healthz": 200, "/v1/layouts": 200, "/": 200, "/static/app.js": 200, "/static/style.css": 200, "/nothing": 404
    }  # fmt: skip
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json() == {"error": "the model's queue is full (4 requests): try again shortly"}
    assert statuses == {200}
    assert gated.batches == [1, 4]  # the four queued behind the first: graded in one batch


def test_a_request_still_waiting_at_its_deadline_is_a_503_and_the_server_recovers(predictor):
    app, gated = gated_app(predictor, timeout_s=0.3)
    with TestClient(app) as client:
        for path in ("/v1/grade", "/v1/explain", "/v1/picture"):
            response = client.post(path, json=KILTER_ROUTE)
            if path == "/v1/grade":  # the gated one: the model is busy past the deadline
                assert response.status_code == 503 and response.headers["retry-after"] == "1"
                assert response.json() == {"error": "no answer within 0.3 s: the model is busy, try again shortly"}
                gated.open.set()
            else:  # waiting behind the gated grade: answered once it is through
                assert response.status_code == 200, response.text
        assert client.post("/v1/grade", json=KILTER_ROUTE).json() == predictor.predict(KILTER_ROUTE).to_dict()


def test_concurrent_grade_requests_are_batched_and_each_gets_its_own_answers(predictor):
    """Requests gathered into one predict_many: each gets its routes' answers, numbered from 0, bad ones in their slots."""
    app, gated = gated_app(predictor)
    bodies: list[Any] = [KILTER_ROUTE, [TENSION_ROUTE, BAD_ROUTE], ROUTES, BAD_ROUTE, [], ["not a route", *ROUTES]]

    async def scenario() -> list[httpx.Response]:
        async with kiosk_client(app) as http:
            first = asyncio.create_task(http.post("/v1/grade", json=ROUTES[0]))
            await until(lambda: gated.batches)
            rest = [asyncio.create_task(http.post("/v1/grade", json=body)) for body in bodies]
            await asyncio.sleep(0.2)
            gated.open.set()
            return await asyncio.gather(first, *rest)

    first, *answers = asyncio.run(scenario())
    assert first.json() == predictor.predict(ROUTES[0]).to_dict()
    for body, response in zip(bodies, answers):
        if isinstance(body, list):
            assert response.json() == [r.to_dict() for r in predictor.predict_many(body)]
        elif body is BAD_ROUTE:
            assert response.status_code == 422 and "angle 41" in response.json()["error"]
        else:
            assert response.json() == predictor.predict(body).to_dict()
    routes = sum(len(b) if isinstance(b, list) else 1 for b in bodies)
    assert gated.batches == [1, routes]


def test_layouts_give_every_hole_angle_and_role_of_the_model(client, predictor):
    answer = client.get("/v1/layouts").json()
    assert answer["search"] is False and answer["model"]["sha256"] == predictor.sidecar.model_sha256
    by_key = {(la["board"], la["layout_id"]): la for la in answer["layouts"]}
    assert set(by_key) == set(predictor.tokenizer.layouts)
    for key, layout in predictor.tokenizer.layouts.items():
        got = by_key[key]
        assert got["name"] == layout.name and got["angles"] == list(layout.angles)
        assert {p["id"]: (p["x"], p["y"]) for p in got["placements"]} == layout.placements
        assert got["roles"] == layout.role_ids and got["has_mirrors"] == bool(layout.mirrors)
    assert by_key["kilter", 1]["roles"] == {"start": 12, "middle": 13, "finish": 14, "foot": 15}
    assert by_key["tension", 11]["has_mirrors"] and not by_key["kilter", 1]["has_mirrors"]


def test_openapi_describes_every_body_answer_and_error_and_the_docs_page_works_offline(client):
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    assert {"/v1/grade", "/v1/explain", "/v1/picture", "/v1/layouts", "/v1/climbs", "/healthz"} <= set(paths)
    for path in ("/v1/grade", "/v1/explain", "/v1/picture"):
        operation = paths[path]["post"]
        assert operation["requestBody"]["required"] is True
        assert {"200", "400", "413", "422", "503"} <= set(operation["responses"])
        assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert set(paths["/v1/climbs"]["get"]["responses"]) == {"200", "404", "422"}
    schemas = document["components"]["schemas"]
    assert {"RouteFrames", "RouteHolds", "Hold", "Answer", "RouteFailure", "Explained", "ErrorAnswer"} <= set(schemas)
    assert "HTTPValidationError" not in schemas  # every error is {"error": ...}
    docs = client.get("/docs")
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert docs.status_code == 200 and len(assets) >= 2 and all(a.startswith("/") for a in assets), assets
    assert all(client.get(asset).status_code == 200 for asset in assets)


# --- grading: the same answers as GradePredictor and cg-infer -----------------------------------


def test_grade_one_route_answers_as_cg_infer_does(client, tmp_path):
    for i, route in enumerate(ROUTES):
        response = client.post("/v1/grade", json=route)
        assert response.status_code == 200
        (tmp_path / f"{i}.json").write_text(json.dumps(route))
        assert response.json() == json.loads(
            run_script("cg-infer", str(tmp_path / f"{i}.json"), "--format", "json").stdout
        )


def test_grade_a_list_answers_each_route_and_a_bad_one_in_its_slot(client, predictor):
    routes = [*ROUTES, BAD_ROUTE, "not a route"]
    response = client.post("/v1/grade", json=routes)
    assert response.status_code == 200
    assert response.json() == [r.to_dict() for r in predictor.predict_many(routes)]
    answers = response.json()
    assert [a["index"] for a in answers] == list(range(len(routes)))
    assert "error" in answers[-2] and "error" in answers[-1] and "difficulty" in answers[0]
    assert client.post("/v1/grade", json=[]).json() == []


def test_an_invalid_route_is_422_with_cg_infers_message(client, tmp_path):
    for route in (BAD_ROUTE, {**KILTER_ROUTE, "frames": "p1r2"}, {"board": "kilter"}, 1):
        response = client.post("/v1/grade", json=route)
        assert response.status_code == 422
        assert response.json() == {"error": cg_infer_json(route, tmp_path=tmp_path)["error"]}
        assert "\n" not in response.text


def test_explain_is_cg_infers_answer_with_angles_all_explain_mirror(client, predictor, tmp_path):
    for route in (KILTER_ROUTE, TENSION_ROUTE):
        answer = client.post("/v1/explain", json=route).json()
        assert answer == cg_infer_json(route, "--angles", "all", "--explain", "--mirror", tmp_path=tmp_path)
        graded = {k: v for k, v in predictor.predict(route).to_dict().items() if k != "warnings"}
        assert {k: answer[k] for k in graded} == graded
        assert answer["angles"] == predictor.sweep(route).to_dict()["angles"]
        explanation = predictor.explain(route).to_dict()
        assert (answer["holds"], answer["crux"]) == (explanation["holds"], explanation["crux"])
        mirror = predictor.mirror(route)
        assert answer["mirror"] == (None if mirror is None else mirror.to_dict())
    assert client.post("/v1/explain", json=TENSION_ROUTE).json()["mirror"] is not None


def test_explain_of_a_one_hold_route_is_cg_infers_answer_its_hold_without_an_effect(client, predictor, tmp_path):
    route = {**KILTER_ROUTE, "frames": KILTER_ROUTE["frames"][:8]}
    response = client.post("/v1/explain", json=route)
    assert response.status_code == 200
    answer = response.json()
    assert answer == cg_infer_json(route, "--angles", "all", "--explain", "--mirror", tmp_path=tmp_path)
    assert answer["difficulty"] == predictor.predict(route).difficulty
    assert answer["angles"] == predictor.sweep(route).to_dict()["angles"]
    [hold] = predictor.explain(route).holds
    assert answer["holds"] == [{"placement_id": hold.placement_id, "role": hold.role, "effect": None}]
    assert answer["crux"] is None and ONLY_HOLD_WARNING in answer["warnings"]


def test_explain_of_an_invalid_route_is_422_with_cg_infers_message(client, tmp_path):
    response = client.post("/v1/explain", json=BAD_ROUTE)
    assert response.status_code == 422
    assert response.json() == {"error": cg_infer_json(BAD_ROUTE, tmp_path=tmp_path)["error"]}


# --- pictures -----------------------------------------------------------------------------------


def test_picture_of_a_route_shows_its_grade_effects_and_every_hole_as_a_target(client, predictor):
    response = client.post("/v1/picture", json=KILTER_ROUTE)
    assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
    svg = response.text
    assert f"<title>{picture_title(predictor.predict(KILTER_ROUTE))}</title>" in svg
    layout = predictor.tokenizer.layouts["kilter", 1]
    for pid in layout.placements:
        assert f'data-placement-id="{pid}"' in svg
    effects = predictor.explain(KILTER_ROUTE).holds
    assert all(f"{h.effect:+.1f}</text>" in svg for h in effects)  # each hold's signed effect label


def test_picture_of_the_bare_board_and_of_one_hold(client, predictor):
    layout = predictor.tokenizer.layouts["tension", 11]
    bare: dict[str, Any]
    for bare in ({"holds": []}, {"frames": ""}):
        response = client.post("/v1/picture", json={"board": "tension", "layout_id": 11, "angle": 40, **bare})
        assert response.status_code == 200
        assert f"<title>{layout.name} at 40°</title>" in response.text
        assert response.text.count("data-placement-id") == len(layout.placements)
    one = {**KILTER_ROUTE, "frames": KILTER_ROUTE["frames"][:8]}
    response = client.post("/v1/picture", json=one)
    assert response.status_code == 200
    assert f"<title>{picture_title(predictor.predict(one))}</title>" in response.text
    assert response.text.count("data-role=") == 1 and response.text.count("</text>") == 1  # a ring, no effect label


def test_the_site_cg_serve_serves_is_the_one_export_site_writes(client, predictor, tmp_path):
    """One site, one code path: every file --export-site writes is served at its path, byte for byte (climb
    search aside: kiosk.json says whether it is on, so the service worker's version differs with it too)."""
    written = export_site(predictor.model_path, tmp_path / "site")
    assert {"index.html", "sw.js", "static/grader.js", "static/ort/ort-wasm-simd-threaded.wasm"} <= set(written)
    for name in written:
        response = client.get("/" if name == "index.html" else f"/{name}")
        assert response.status_code == 200, name
        if name not in ("sw.js", KIOSK_CONFIG):
            assert response.content == (tmp_path / "site" / name).read_bytes(), name
    assert client.get("/static/ort/ort-wasm-simd-threaded.wasm").headers["content-type"] == "application/wasm"
    assert client.get(f"/static/model/{predictor.model_path.name}").content == predictor.model_path.read_bytes()
    assert client.get(f"/{KIOSK_CONFIG}").json()["search"] is False  # this app has no --db
    for outside in ("/static/../pyproject.toml", "/static/%2e%2e/pyproject.toml", "/static/ort", "/static/sw.js"):
        assert client.get(outside).status_code == 404, outside


def test_picture_of_an_invalid_route_or_board_is_422(client, tmp_path):
    response = client.post("/v1/picture", json=BAD_ROUTE)
    assert response.status_code == 422
    assert response.json() == {"error": cg_infer_json(BAD_ROUTE, tmp_path=tmp_path)["error"]}
    response = client.post("/v1/picture", json={"board": "kilter", "layout_id": 99, "angle": 40, "holds": []})
    assert response.status_code == 422 and "layout 99" in response.json()["error"]
    response = client.post("/v1/picture", json={"board": "kilter", "layout_id": 1, "angle": 41, "holds": []})
    assert response.status_code == 422 and "angle 41" in response.json()["error"]


# --- errors -------------------------------------------------------------------------------------


MALFORMED_BODIES = (b"{bad", b"\xff\xfe", b"NaN", b'{"angle": 1e999}', b'[{"name": -Infinity}]', b"[" * 100_000)


def test_malformed_json_is_400_on_every_route_endpoint(client):
    for path in ("/v1/grade", "/v1/explain", "/v1/picture"):
        for body in (b"", *MALFORMED_BODIES):
            response = client.post(path, content=body)
            assert response.status_code == 400, (path, body[:20])
            assert response.json()["error"].startswith("request body is not valid JSON: ")


def test_malformed_json_is_refused_in_cg_infers_words(client):
    """One decoder: the API's 400 says what cg-infer says of the same bytes on stdin, the source aside."""
    for body in MALFORMED_BODIES:
        command = [str(BIN / "cg-infer"), "-", "--format", "json"]
        result = subprocess.run(command, input=body, capture_output=True, timeout=600, check=False)
        [line] = [line for line in result.stderr.decode().splitlines() if line.startswith("error: ")]
        said = line.removeprefix("error: ").removeprefix("route 0: ")  # a one-line input is read as JSON Lines
        source = "line 1" if said.startswith("line 1 ") else "stdin"
        assert result.returncode == 2
        for answer in result.stdout.splitlines():  # whatever cg-infer wrote is JSON: no bare NaN or Infinity
            assert "error" in json.loads(answer, parse_constant=lambda name: pytest.fail(f"cg-infer wrote {name}"))
        expected = said.replace(source, "request body", 1)
        assert client.post("/v1/grade", content=body).json() == {"error": expected}, body[:20]


def test_bodies_over_the_limit_are_413_by_length_and_by_bytes_read(predictor):
    with TestClient(create_app(predictor, max_body_bytes=200)) as small:
        body = json.dumps(KILTER_ROUTE).encode()
        assert small.post("/v1/grade", content=body).status_code == 200
        response = small.post("/v1/grade", content=body + b" " * 200)
        assert response.status_code == 413 and "limit of 200 bytes" in response.json()["error"]
        chunked = small.post("/v1/grade", content=iter([body, b" " * 150, b" " * 150]))  # no Content-Length
        assert chunked.status_code == 413 and "limit of 200 bytes" in chunked.json()["error"]
    assert TestClient(create_app(predictor)).post("/v1/grade", content=b" " * 1_000_001).status_code == 413


def test_more_routes_than_the_limit_is_413(client):
    response = client.post("/v1/grade", json=[KILTER_ROUTE] * 1001)
    assert response.status_code == 413
    assert response.json() == {"error": "the request holds 1001 routes; the limit is 1000 per request"}


def test_unknown_paths_and_methods_are_json_errors(client):
    response = client.get("/v1/nothing")
    assert response.status_code == 404 and response.json() == {"error": "no such page: /v1/nothing"}
    assert client.get("/static/nothing.js").status_code == 404
    response = client.get("/v1/grade")
    assert response.status_code == 405 and "POST" in response.json()["error"]


def test_an_unexpected_exception_is_500_json_and_the_server_stays_up(predictor):
    class Broken(GatedPredictor):
        def predict_many(self, routes: list[Any], **options: Any) -> list[Any]:
            raise RuntimeError("a bug deep in the model")

    app = create_app(predictor)
    app.dependency_overrides[get_predictor] = lambda: Broken(predictor)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/grade", json=KILTER_ROUTE)
        assert response.status_code == 500
        assert response.json() == {"error": "internal error (RuntimeError); the server is still up"}
        assert "Traceback" not in response.text and "deep in the model" not in response.text
        app.dependency_overrides.clear()
        assert client.post("/v1/grade", json=KILTER_ROUTE).status_code == 200


def test_no_cors_by_default_and_only_the_given_origin_with_cors(client, predictor):
    origin = {"Origin": "https://gym.example"}
    assert "access-control-allow-origin" not in client.get("/healthz", headers=origin).headers
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/v1/grade", headers=preflight).headers
    with TestClient(create_app(predictor, cors_origin="https://gym.example")) as cors:
        assert cors.get("/healthz", headers=origin).headers["access-control-allow-origin"] == "https://gym.example"
        assert cors.options("/v1/grade", headers=preflight).status_code == 200
        other = cors.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_climb_search_is_404_without_databases(client):
    response = client.get("/v1/climbs", params={"q": "a"})
    assert response.status_code == 404 and "--db" in response.json()["error"]


# --- the --db climb search ----------------------------------------------------------------------


def usable_climbs(db: str, layouts: list[int]) -> dict[str, tuple[str, str]]:
    """uuid -> (name, frames) of the climbs the search may answer: the board_db rules, read here directly."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute(
        f"SELECT c.uuid, COALESCE(c.name, ''), c.frames FROM climbs c WHERE {USABLE_CLIMB_SQL} AND EXISTS "
        f"(SELECT 1 FROM climb_stats s WHERE s.climb_uuid = c.uuid AND {GRADED_STATS_SQL}) "
        f"AND c.layout_id IN ({','.join(map(str, layouts))})"
    ).fetchall()
    con.close()
    return {u: (n, f) for u, n, f in rows}


@pytest.fixture(scope="module")
def fake_search(fake_pipeline: Pipeline, fake_dbs: tuple[str, str]) -> Iterator[tuple[TestClient, GradePredictor]]:
    predictor = GradePredictor.load(fake_pipeline.model)
    with TestClient(create_app(predictor, databases=fake_dbs)) as test_client:
        yield test_client, predictor


def test_search_finds_climbs_by_name_with_their_community_grades(fake_search, fake_dbs):
    client, predictor = fake_search
    assert client.get("/v1/layouts").json()["search"] is True
    found = client.get("/v1/climbs", params={"q": "CLIMB 12", "limit": 100}).json()["climbs"]
    names = {c["name"] for c in found}
    assert all("climb 12" in n for n in names) and {"climb 12", "climb 120"} <= names
    con = sqlite3.connect(fake_dbs[0])
    kilter = [c for c in found if c["board"] == "kilter"]
    assert kilter
    for climb in kilter:
        rows = con.execute(
            "SELECT angle, display_difficulty, ascensionist_count FROM climb_stats WHERE climb_uuid = ? ORDER BY angle",
            (climb["uuid"],),
        ).fetchall()
        assert [(a["angle"], a["difficulty"], a["ascents"]) for a in climb["angles"]] == rows
        grade = predictor.grades.grade(rows[0][1])
        assert (climb["angles"][0]["font"], climb["angles"][0]["v_grade"]) == (grade.font, grade.v)
        assert client.post("/v1/grade", json={**climb, "angle": rows[0][0]}).status_code == 200
    con.close()
    ascents = [sum(a["ascents"] for a in c["angles"]) for c in found]
    assert ascents == sorted(ascents, reverse=True)


def test_search_by_uuid_prefix_board_and_limit(fake_search, fake_dbs):
    client, _ = fake_search
    uuid = sorted(u for u in usable_climbs(fake_dbs[1], [11]) if not u.startswith("DEFECT"))[0]
    found = client.get("/v1/climbs", params={"q": uuid[:20].lower()}).json()["climbs"]
    assert uuid in [c["uuid"] for c in found] and all(c["uuid"].startswith(uuid[:20]) for c in found)
    tension = client.get("/v1/climbs", params={"q": "climb", "board": "tension", "limit": 7}).json()["climbs"]
    assert len(tension) == 7 and {c["board"] for c in tension} == {"tension"}
    assert client.get("/v1/climbs", params={"q": "climb", "layout_id": 99}).json() == {"climbs": []}
    assert client.get("/v1/climbs", params={"q": "%"}).json() == {"climbs": []}  # LIKE wildcards are text
    assert client.get("/v1/climbs", params={"q": "_"}).json() == {"climbs": []}
    for bad in ({"q": ""}, {}, {"q": "a", "limit": 0}, {"q": "a", "limit": 101}, {"q": "a", "layout_id": "x"}):
        response = client.get("/v1/climbs", params=bad)
        assert response.status_code == 422 and set(response.json()) == {"error"}


def test_search_leaves_out_what_cg_train_leaves_out(fake_search):
    """Drafts, unlisted, multi-frame and ungraded climbs, and climbs whose holds the model cannot take."""
    client, _ = fake_search
    assert client.get("/v1/climbs", params={"q": "DEFECT"}).json() == {"climbs": []}  # uuid prefix of each defect
    for name in ("DRAFT", "UNLISTED", "MULTIFRAME", "BADFRAMES", "OFFBOARD", "TWICE", "BADROLE", "no stats"):
        assert client.get("/v1/climbs", params={"q": name}).json() == {"climbs": []}


def test_search_fills_its_limit_past_many_more_climbed_climbs_the_model_cannot_take(fake_pipeline, fake_dbs, tmp_path):
    db = tmp_path / "kilter.db"
    shutil.copyfile(fake_dbs[0], db)  # the synthetic database, with 30 ungradable climbs most climbed of all
    con = sqlite3.connect(db)
    layout_id, frames = con.execute("SELECT layout_id, frames FROM climbs WHERE uuid = 'DEFECTOFFBOARD'").fetchone()
    for n in range(30):
        con.execute(
            "INSERT INTO climbs (uuid, layout_id, name, frames_count, frames, is_draft, is_listed, angle) "
            "VALUES (?, ?, ?, 1, ?, 0, 1, 40)",
            (f"OFFBOARD{n:02d}", layout_id, f"climb off the board {n}", frames),
        )
        con.execute(
            "INSERT INTO climb_stats (climb_uuid, angle, display_difficulty, ascensionist_count, quality_average) "
            "VALUES (?, 40, 20.0, 100000, 3.0)",
            (f"OFFBOARD{n:02d}",),
        )
    con.commit()
    con.close()
    predictor = GradePredictor.load(fake_pipeline.model)
    search = ClimbSearch([str(db)], predictor.tokenizer, predictor.grades)
    try:
        everything = search.search("climb", limit=MAX_LIMIT)
        five = search.search("climb", limit=5)
    finally:
        search.close()
    assert len(everything) == MAX_LIMIT and not any(c.uuid.startswith("OFFBOARD") for c in everything)
    assert five == everything[:5]


def test_the_app_closes_its_databases_when_it_shuts_down(predictor, fake_dbs):
    app = create_app(predictor, databases=fake_dbs)
    search = app.state.search
    with TestClient(app) as client:
        assert client.get("/v1/climbs", params={"q": "climb"}).status_code == 200
        assert search.search("climb")
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        search.search("climb")


def open_files(pid: int) -> set[str]:
    """What the process's file descriptors point at (Linux /proc)."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed since it was listed
            found.add(os.readlink(fd))
    return found


@pytest.mark.slow
def test_cg_serve_with_workers_leaves_no_database_open_in_its_parent(fake_dbs):
    server, url = start_server("--workers", "2", "--db", fake_dbs[0])
    try:
        assert httpx.get(url + "healthz", timeout=60).json()["status"] == "ok"
        assert str(Path(fake_dbs[0]).resolve()) not in open_files(server.pid)
    finally:
        code, stderr = stop(server)
    assert code == 0, stderr


@pytest.mark.real_data
def test_search_on_the_real_data_by_uuid_prefix_and_name(predictor):
    assert REAL_DATA is not None
    kilter, tension = str(REAL_DATA / "kilter.db"), str(REAL_DATA / "tension.db")
    with TestClient(create_app(predictor, databases=(kilter, tension))) as client:
        usable = usable_climbs(kilter, [lid for b, lid in predictor.tokenizer.layouts if b == "kilter"])
        uuid = sorted(usable)[len(usable) // 2]
        found = client.get("/v1/climbs", params={"q": uuid[:10]}).json()["climbs"]
        assert [c["uuid"] for c in found] == [uuid]
        climb = found[0]
        assert climb["name"] == "" and climb["frames"] == usable[uuid][1] and climb["angles"]
        route = {**climb, "angle": climb["angles"][0]["angle"]}
        assert client.post("/v1/grade", json=route).status_code == 200
        name = max((n for n, _ in usable_climbs(tension, [11]).values()), key=len)
        named = client.get("/v1/climbs", params={"q": name.upper(), "board": "tension", "limit": 100}).json()
        named = named["climbs"]
        assert name in [c["name"] for c in named]


# --- the real cg-serve process ------------------------------------------------------------------


def start_server(*args: str) -> tuple[subprocess.Popen[str], str]:
    """cg-serve on a free loopback port; returns the process and its URL (the line it prints)."""
    server = subprocess.Popen(
        [str(BIN / "cg-serve"), "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    line = server.stdout.readline()  # blocks until cg-serve listens (or exits)
    if not line.startswith("climbgrade kiosk on http://"):
        server.kill()
        raise AssertionError(f"cg-serve printed {line!r}; stderr: {server.communicate(timeout=START_S)[1][-2000:]}")
    return server, line.split(" on ", 1)[1].strip()


def stop(server: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    server.send_signal(sig)
    try:
        _, stderr = server.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        raise
    return server.returncode, stderr


def test_cg_serve_answers_on_loopback_and_sigterm_stops_it_cleanly():
    server, url = start_server()
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        health = httpx.get(url + "healthz", timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        graded = httpx.post(url + "v1/grade", json=KILTER_ROUTE, timeout=30)
        assert graded.json() == GradePredictor.load().predict(KILTER_ROUTE).to_dict()
    finally:
        code, stderr = stop(server)
    assert code == 0, stderr
    assert "Traceback" not in stderr and "warning" not in stderr


@pytest.mark.slow
def test_cg_serve_with_two_workers_answers_and_stops_on_sigterm():
    server, url = start_server("--workers", "2")
    try:
        for _ in range(4):
            assert httpx.get(url + "healthz", timeout=60).json()["status"] == "ok"
    finally:
        code, stderr = stop(server)
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_cg_serve_warns_when_reachable_from_the_network_and_sigint_stops_it():
    server, _ = start_server("--host", "0.0.0.0")
    code, stderr = stop(server, signal.SIGINT)
    assert code == 0, stderr
    assert "warning: --host 0.0.0.0: the kiosk is reachable on the network" in stderr
    assert "Traceback" not in stderr


def test_cg_serve_refuses_a_bad_model_database_or_port_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = {
            ("--model", str(tmp_path / "missing.onnx")): "does not exist",
            ("--db", str(tmp_path / "missing.db")): "does not exist",
            ("--db", str(EXAMPLES)): "not a readable SQLite database",
            ("--port", port): f"cannot listen on 127.0.0.1:{port}",
        }
        for args, message in cases.items():
            result = subprocess.run([str(BIN / "cg-serve"), *args], capture_output=True, text=True, timeout=START_S)
            assert result.returncode == 2, (args, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, result.stderr)


def test_cg_serve_without_the_serve_extra_says_so_in_one_line():
    for blocked in ("fastapi", "uvicorn"):
        script = (
            f"import sys; sys.modules[{blocked!r}] = None; sys.argv = ['cg-serve']\n"
            "from climbgrade_runtime.serve.cli import main\nmain()"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert result.stderr == "error: cg-serve needs the serve extra: pip install 'climbgrade[serve]'\n"


def test_the_runtime_and_the_serve_package_do_not_import_the_web_stack():
    script = (
        "import sys, climbgrade_runtime, climbgrade_runtime.serve, climbgrade_runtime.serve.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'fastapi', 'starlette', 'uvicorn'}))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
