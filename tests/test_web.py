"""The kiosk as a static site (`cg-serve --export-site`) in Chromium, and grader.js, the JavaScript grader in it.

The exported site is served by Python's plain static server (`python -m http.server`): no climbgrade code
runs beside it. grader.js must answer routes exactly as cg-infer does (numbers within 1e-3, every other
field and every error message equal), and the site must keep grading after the browser goes offline and
reloads, without one request leaving its host.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from browser import free_port

from climbgrade_runtime import GradePredictor
from climbgrade_runtime.board_db import ClimbFilter
from climbgrade_runtime.graded import load_examples
from climbgrade_runtime.insight import frames_of
from climbgrade_runtime.model_io import PROBLEM_BITS
from climbgrade_runtime.serve.app import PAGE_CSP
from climbgrade_runtime.serve.site import KIOSK_CONFIG

from conftest import REAL_DATA, ROOT, Pipeline, run_script

EXAMPLES = ROOT / "examples" / "routes.json"
WIDE = {"width": 1000, "height": 800}
GRADE = re.compile(r"^\d+\.\d · \S+ · V\d+$")
ROUTES = 200
INSIGHT_ARGS = ("--angles", "all", "--explain", "--mirror")
# Routes cg-infer refuses, one of each problem a route can have: the grader must refuse them in the same words.
BAD_ROUTES: list[Any] = [
    {"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p1495r12p99r14"},
    {"board": "kilter", "layout_id": 1, "angle": 41, "frames": "p1495r12"},
    {"board": "kilterx", "layout_id": 1, "angle": 40, "frames": "p1495r12"},
    {"board": "kilter", "layout_id": 7, "angle": 40, "frames": "p1495r12"},
    {"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p1495r12p1495r13"},
    {"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p1495r99"},
    {"board": "kilter", "layout_id": 1, "angle": 40, "holds": [{"placement_id": 1495, "role": "bogus"}]},
    {"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p1x"},
    {"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p0r12"},
    {"board": "kilter", "layout_id": 1, "angle": 40, "holds": []},
    {"board": "kilter", "layout_id": 1, "angle": 40.5, "frames": "p1495r12"},
    {"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p1495r12", "holds": []},
    {"board": "kilter", "layout_id": 1, "angle": 40, "holds": [{"placement_id": 1495, "role": "start", "x": 1}]},
    {"layout_id": 1, "angle": 40, "frames": "p1495r12"},
    "a string, not a route",
    None,
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site") / "kiosk"
    run_script("cg-serve", "--export-site", str(folder))
    return folder


@contextmanager
def static_server(folder: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m http.server` serving `folder` on a free loopback port: its URL once it answers. Its log
    (a line per request) is `folder`'s sibling `<name>.log`."""
    port = free_port()
    with folder.with_name(f"{folder.name}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"python -m http.server did not answer on {url}")
                time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=15)


@contextmanager
def opened(browser: Any, url: str) -> Iterator[tuple[Any, list[str], list[str]]]:
    """The site's page in a fresh browser context, once the model is loaded; with every request the
    context made and every console error or page error (a CSP violation is one)."""
    context = browser.new_context(viewport=WIDE)
    requests: list[str] = []
    problems: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
    try:
        page.goto(url)
        page.wait_for_selector("body[data-state=idle]")
        yield page, requests, problems
    finally:
        context.close()


def parity_routes() -> list[Any]:
    """The examples, ROUTES real routes spread over both databases (half as hold lists, in reverse order)
    or, without the data, ROUTES random routes on the shipped layouts; then the bad routes."""
    routes: list[Any] = json.loads(EXAMPLES.read_text())
    if REAL_DATA is not None:
        examples = load_examples([str(REAL_DATA / "kilter.db"), str(REAL_DATA / "tension.db")], ClimbFilter()).examples
        picked = [examples[i * len(examples) // ROUTES] for i in range(ROUTES)]
        for i, e in enumerate(picked):
            route: dict[str, Any] = {"board": e.board, "layout_id": e.layout_id, "angle": e.angle, "uuid": e.uuid}
            if i % 2:
                route["holds"] = [{"placement_id": pid, "role": role} for pid, role in reversed(e.route.holds)]
            else:
                route["frames"] = frames_of(e.route)
            routes.append(route)
    else:
        rng = random.Random(23)
        layouts = list(GradePredictor.load().tokenizer.layouts.values())
        for _ in range(ROUTES):
            layout = rng.choice(layouts)
            placements = rng.sample(sorted(layout.placements), rng.randint(1, 14))
            holds = [{"placement_id": pid, "role": rng.choice(layout.role_names)} for pid in placements]
            routes.append(
                {
                    "board": layout.board,
                    "layout_id": layout.layout_id,
                    "angle": rng.choice(layout.angles),
                    "holds": holds,
                }
            )
    return routes + BAD_ROUTES


def cg_infer(routes: list[Any], tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(routes))
    answered = run_script("cg-infer", str(path), "--format", "json", *args, check=False)
    assert answered.returncode in (0, 2), answered.stderr[-2000:]
    return list(json.loads(answered.stdout))


def assert_same(got: Any, want: Any, where: str = "answer") -> None:
    """Equal, numbers within 1e-3 (onnxruntime-web's wasm against onnxruntime's CPU provider)."""
    if isinstance(want, float) and not isinstance(got, bool) and isinstance(got, (int, float)):
        assert abs(got - want) <= 1e-3, (where, got, want)
    elif isinstance(want, dict) and isinstance(got, dict):
        assert list(got) == list(want), (where, list(got), list(want))
        for key in want:
            assert_same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list) and isinstance(got, list):
        assert len(got) == len(want), (where, got, want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, (where, got, want)


GRADER_RUN = """async ({routes, model}) => {
  const {loadGrader, PROBLEM_BITS} = await import(new URL("static/grader.js", location.href).href);
  const grader = await loadGrader({model: new URL(`static/model/${model}`, location.href).href});
  const insight = [];
  for (const route of routes) insight.push(await grader.insight(route, {angles: "all", explain: true, mirror: true}));
  return {
    bits: PROBLEM_BITS,
    grade: await grader.grade(routes),
    insight,
    one: await grader.grade(routes[0]),
    sweep: await grader.sweep(routes[0], [20, 40]),
    explain: await grader.explain(routes[0]),
    mirror: await grader.mirror(routes[2]),
  };
}"""


def grader_answers(browser: Any, site: Path, routes: list[Any], model: str = "climbgrade.onnx") -> dict[str, Any]:
    """GRADER_RUN's answers from the site's page in Chromium (which must report no problem)."""
    with static_server(site) as (url, _), opened(browser, url) as (page, _, problems):
        got = page.evaluate(GRADER_RUN, {"routes": routes, "model": model})
    assert problems == []
    return dict(got)


def test_grader_js_answers_every_route_as_cg_infer_does(browser: Any, site: Path, tmp_path: Path) -> None:
    """grade (a list and one route), and one route's sweep, explain and mirror: cg-infer's answers."""
    routes = parity_routes()
    got = grader_answers(browser, site, routes)
    assert got["bits"] == PROBLEM_BITS
    graded = cg_infer(routes, tmp_path)
    assert sum("error" in a for a in graded) == len(BAD_ROUTES)
    assert_same(got["grade"], graded, "grade")
    assert_same(got["one"], graded[0], "one")
    insight = cg_infer(routes, tmp_path, *INSIGHT_ARGS)
    assert_same([{**a, "index": i} for i, a in enumerate(got["insight"])], insight, "insight")
    first = routes[:1]
    assert_same(got["sweep"], cg_infer(first, tmp_path, "--angles", "20,40")[0], "sweep")
    assert_same(got["explain"], cg_infer(first, tmp_path, "--explain")[0], "explain")
    assert_same(got["mirror"], cg_infer(routes[2:3], tmp_path, "--mirror")[0], "mirror")
    assert got["mirror"]["mirror"] is not None  # examples/routes.json's third route is on TB2, which has mirrors


def test_grader_js_grades_as_cg_infer_with_a_model_trained_here_without_an_interval(
    browser: Any, value_pipeline: Pipeline, tmp_path: Path
) -> None:
    """Not tied to the shipped model: a tiny value-head model of the synthetic boards (no low/high)."""
    site = tmp_path / "site"
    run_script("cg-serve", "--export-site", str(site), "--model", str(value_pipeline.model))
    predictor = GradePredictor.load(value_pipeline.model)
    assert not predictor.has_interval
    rng = random.Random(5)
    layouts = list(predictor.tokenizer.layouts.values())
    routes = []
    for _ in range(60):
        layout = rng.choice(layouts)
        placements = rng.sample(sorted(layout.placements), rng.randint(1, 10))
        holds = [{"placement_id": pid, "role": rng.choice(sorted(layout.roles))} for pid in placements]
        routes.append(
            {"board": layout.board, "layout_id": layout.layout_id, "angle": rng.choice(layout.angles), "holds": holds}
        )
    got = grader_answers(browser, site, routes, value_pipeline.model.name)
    model = ("--model", str(value_pipeline.model))
    assert_same(got["grade"], cg_infer(routes, tmp_path, *model))
    insight = cg_infer(routes, tmp_path, *model, *INSIGHT_ARGS)
    assert_same([{**a, "index": i} for i, a in enumerate(got["insight"])], insight, "insight")
    assert all("low" not in a for a in got["grade"])


def test_the_site_grades_offline_after_a_reload_asking_nothing_of_any_other_host(browser: Any, site: Path) -> None:
    route = json.loads(EXAMPLES.read_text())[0]
    answer = json.loads(run_script("cg-infer", str(EXAMPLES), "--format", "json").stdout)[0]
    shown = f"{answer['difficulty']:.1f} · {answer['font']} · {answer['v_grade']}"

    def paste(page: Any) -> None:
        page.select_option("#angle", str(route["angle"]))
        page.fill("#paste", route["frames"])
        page.click("#load")
        page.wait_for_selector("body[data-state=idle]")

    with static_server(site) as (url, server), opened(browser, url) as (page, requests, problems):
        assert page.locator("#search-off").is_visible() and page.locator("#search-box").is_hidden()
        paste(page)
        assert page.inner_text("#grade") == shown
        assert page.evaluate("navigator.serviceWorker.ready.then(() => true)")  # the whole site is cached
        server.terminate()
        server.wait(timeout=15)
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=5)
        log = site.with_name(f"{site.name}.log").read_text()
        assert log.count("GET /static/ort/ort-wasm-simd-threaded.wasm ") == 1  # the first visit fetched each file once
        assert log.count("GET /static/model/climbgrade.onnx ") == 1
        page.context.set_offline(True)
        page.reload()
        page.wait_for_selector("body[data-state=idle]")
        assert page.evaluate("navigator.serviceWorker.controller !== null")
        paste(page)
        assert page.inner_text("#grade") == shown and page.locator("#error").is_hidden()
        pid = int(re.findall(r"p(\d+)r", route["frames"])[0])
        page.locator(f'#board .hits [data-placement-id="{pid}"]').click()  # a tap, graded offline
        page.wait_for_selector("body[data-state=idle]")
        assert GRADE.match(page.inner_text("#grade")) and page.inner_text("#grade") != shown
        assert problems == []
    assert requests and all(r.startswith(url) for r in requests), [r for r in requests if not r.startswith(url)]


def test_the_sites_csp_is_cg_serves_strict_one(site: Path) -> None:
    """index.html carries cg-serve's header policy for static hosts (all of it a <meta> can carry)."""
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', (site / "index.html").read_text())
    assert meta is not None
    assert meta[1] == PAGE_CSP.replace("; frame-ancestors 'none'", "")
    assert "'unsafe-eval'" not in meta[1] and "'unsafe-inline'" not in meta[1]


def test_the_service_worker_caches_every_file_of_the_site(site: Path) -> None:
    """Every file but the worker itself (the browser keeps that), and the page as the site's root."""
    worker = (site / "sw.js").read_text()
    cached = json.loads(re.search(r"const SITE = (\{.*\});", worker)[1])["files"]  # type: ignore[index]
    files = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert sorted(cached) == sorted(["./", *(f for f in files if f not in ("index.html", "sw.js"))])
    config = json.loads((site / KIOSK_CONFIG).read_text())
    assert config == {"model": "model/climbgrade.onnx", "search": False}


def test_export_site_takes_the_model_asked_for_and_refuses_a_folder_of_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "kiosk"
    run_script("cg-serve", "--export-site", str(folder), "--model", str(ROOT / "exports" / "climbgrade.int8.onnx"))
    assert json.loads((folder / KIOSK_CONFIG).read_text())["model"] == "model/climbgrade.int8.onnx"
    model = folder / "static" / "model" / "climbgrade.int8.onnx"
    assert model.read_bytes() == (ROOT / "exports" / "climbgrade.int8.onnx").read_bytes()
    again = run_script("cg-serve", "--export-site", str(folder))  # over an earlier export: fine
    assert "python -m http.server" in again.stdout
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"\xff\xd8")
    refused = run_script("cg-serve", "--export-site", str(other), check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "not empty" in refused.stderr
    assert [p.name for p in other.iterdir()] == ["holiday.jpg"]
    in_the_way = tmp_path / "file"
    in_the_way.write_text("x")
    refused = run_script("cg-serve", "--export-site", str(in_the_way), check=False)
    assert refused.returncode == 2 and "a file is in the way" in refused.stderr and in_the_way.read_text() == "x"


def test_docs_web_example_prints_what_the_page_shows(browser: Any, site: Path, tmp_path: Path) -> None:
    """docs/web.md's example, as a module beside the site's files, prints its text block line for line."""
    doc = (ROOT / "docs" / "web.md").read_text()
    example = re.search(r"```js\n(.*?)```\n\nprints[^\n]*\n\n```text\n(.*?)```", doc, re.S)
    assert example is not None, "docs/web.md lost its example or the text block of what it prints"
    folder = tmp_path / "site"
    shutil.copytree(site, folder)
    (folder / "example.mjs").write_text(example[1])
    (folder / "example.html").write_text(
        '<!doctype html><link rel="icon" href="data:,"><script type="module" src="example.mjs"></script>\n'
    )
    expected = example[2].splitlines()
    with static_server(folder) as (url, _), opened(browser, url) as (page, _, problems):
        printed: list[str] = []
        page.on("console", lambda msg: printed.append(msg.text) if msg.type == "log" else None)
        page.goto(url + "example.html")
        deadline = time.monotonic() + 30
        while len(printed) < len(expected) and not problems and time.monotonic() < deadline:
            page.wait_for_timeout(100)
    assert problems == []
    assert printed == expected
