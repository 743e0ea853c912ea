"""The kiosk page in a real browser: Debian's Chromium, driven by Playwright, against a real cg-serve.

A cg-serve subprocess (the venv's console script, the shipped model, a free loopback port; with the
real kilter.db for search when ../shared/data is present) serves the page; each test opens it and
taps, selects, pastes and reads as a climber would. The page grades on the device (grader.js on
onnxruntime-web): after the page's files and the model, the only requests it may make are climb
searches, and every test fails if it makes any other. The page's strict CSP holds throughout: a test
fails on any console error or uncaught page error (a CSP violation is one).

Outside CI the tests skip, saying why, when Playwright or Chromium is missing; with CI set they fail
instead, so CI cannot pass without running them. A failing test, or a page that fails to open, leaves
a screenshot in tests/artifacts/ (its path is printed with the failure). CLIMBGRADE_SCREENSHOT=PATH also
saves the README's picture of the page with a graded route.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import free_port, unavailable

from climbgrade_runtime import GradePredictor
from climbgrade_runtime.routes import parse_route
from climbgrade_runtime.svg import ROLE_COLOURS

from conftest import BIN, PHASE_REPORTS, REAL_DATA, ROOT, run_script

ARTIFACTS = ROOT / "tests" / "artifacts"
EXAMPLES = ROOT / "examples" / "routes.json"
WIDE = {"width": 1000, "height": 800}  # a laptop or a landscape kiosk; the README picture's size
PHONE = {"width": 390, "height": 844}
GRADE = re.compile(r"^\d+\.\d · \S+ · V\d+$")  # "22.1 · 7a · V6"
HOLD = re.compile(r"p(\d+)r(\d+)")
START_TIMEOUT_S = 60


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def post(url: str, body: Any) -> Any:
    """POST JSON; the answer's JSON, an error answer's too."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as refused:
        return json.load(refused)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A real cg-serve on a free loopback port; its base URL once /healthz answers."""
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed: cg-serve needs the serve extra (pip install -e '.[serve]')")
    script = BIN / "cg-serve"
    if not script.is_file():
        pytest.fail(f"{script} is missing: install the package (pip install -e '.[test]')")
    port = free_port()
    db = ["--db", f"kilter={REAL_DATA / 'kilter.db'}"] if REAL_DATA is not None else []
    log = ARTIFACTS / "cg-serve.log"
    ARTIFACTS.mkdir(exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen([str(script), "--port", str(port), *db], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"cg-serve exited {process.returncode} before answering:\n{log.read_text()[-3000:]}")
            try:
                if get_json(url + "healthz")["status"] == "ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"cg-serve did not answer /healthz within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def layouts(server: str) -> dict[str, dict[str, Any]]:
    """GET /v1/layouts by "board/layout_id"."""
    return {f"{lay['board']}/{lay['layout_id']}": lay for lay in get_json(server + "v1/layouts")["layouts"]}


class Kiosk:
    """The page open in one browser tab, with the problems it reported."""

    def __init__(self, page: Any, url: str) -> None:
        self.page = page
        self.url = url
        self.problems: list[str] = []
        self.requests: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: self.problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None,
        )

    def open(self) -> None:
        self.page.goto(self.url)
        self.settle()

    def settle(self) -> None:
        """Wait until no request of the page is in flight (the page keeps <body data-state> up to date)."""
        self.page.wait_for_selector("body[data-state=idle]", timeout=15_000)

    def asked_beyond_the_site(self) -> list[str]:
        """The requests the page made that are neither its own files nor a climb search (none is allowed)."""
        site = self.url + "static/"
        own = (self.url, self.url + "sw.js")
        return [
            u
            for u in self.requests
            if u not in own and not u.startswith(site) and not u.startswith(self.url + "v1/climbs?")
        ]

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text().strip()

    def frames(self) -> str:
        return self.page.input_value("#frames")

    def tap(self, pid: int, times: int = 1) -> None:
        for _ in range(times):
            self.page.locator(f'#board .hits [data-placement-id="{pid}"]').click()
        self.settle()

    def choose_layout(self, key: str) -> None:
        self.page.select_option("#layout", key)
        self.page.wait_for_selector("#board .hits [data-placement-id]")
        self.settle()

    def choose_angle(self, angle: int) -> None:
        self.page.select_option("#angle", str(angle))
        self.settle()

    def load(self, frames: str) -> None:
        self.page.fill("#paste", frames)
        self.page.click("#load")
        self.settle()

    def screenshot(self, name: str) -> str:
        """Save the page to tests/artifacts/<name>.png; says where, with the problems the page reported."""
        shot = ARTIFACTS / f"{name}.png"
        try:
            self.page.screenshot(path=str(shot), full_page=True)
        except Exception as exc:  # a page that cannot be drawn must not hide the failure being reported
            return f"no screenshot of the page ({type(exc).__name__}: {exc})\nthe page's problems: {self.problems}"
        return f"screenshot of the page at the failure: {shot}\nthe page's problems: {self.problems}"

    def sweep_points(self) -> list[tuple[int, bool]]:
        """(angle, chosen?) of each point of the sweep chart."""
        points = self.page.locator("#sweep circle.pt")
        return [
            (int(points.nth(i).get_attribute("data-angle")), "chosen" in points.nth(i).get_attribute("class"))
            for i in range(points.count())
        ]


def open_kiosk(browser: Any, server: str, request: pytest.FixtureRequest, **context: Any) -> Iterator[Kiosk]:
    """The page in a new browser context (`context`: Playwright's new_context options), closed afterwards.

    A screenshot is kept when opening the page fails, when the test fails, and when the page reported a
    console or page error (which then fails the test at teardown even though its assertions passed).
    """
    browser_context = browser.new_context(**context)
    kiosk = Kiosk(browser_context.new_page(), server)
    kiosk.page.set_default_timeout(15_000)
    name = request.node.name
    try:
        try:
            kiosk.open()
        except Exception:
            print(kiosk.screenshot(name))  # shown with the setup error
            raise
        yield kiosk
        call = request.node.stash.get(PHASE_REPORTS, {}).get("call")
        if call is not None and call.failed:
            call.sections.append(("kiosk screenshot", kiosk.screenshot(name)))  # shown with the failure
        elif kiosk.problems:
            print(kiosk.screenshot(name))
            pytest.fail(f"the page reported problems: {kiosk.problems}")
        elif beyond := kiosk.asked_beyond_the_site():
            pytest.fail(f"the page asked the server for more than its files and climb search: {beyond}")
    finally:
        browser_context.close()


@pytest.fixture()
def kiosk(browser: Any, server: str, request: pytest.FixtureRequest) -> Iterator[Kiosk]:
    """The page on a laptop-sized screen."""
    yield from open_kiosk(browser, server, request, viewport=WIDE)


@pytest.fixture()
def phone(browser: Any, server: str, request: pytest.FixtureRequest) -> Iterator[Kiosk]:
    """The page on a phone: narrow, touch, high density."""
    yield from open_kiosk(
        browser, server, request, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
    )


def example_route(index: int) -> dict[str, Any]:
    return json.loads(EXAMPLES.read_text())[index]


def grade_text(answer: dict[str, Any]) -> str:
    """What #grade shows for a grade answer."""
    return f"{answer['difficulty']:.1f} · {answer['font']} · {answer['v_grade']}"


def holds_of(frames: str) -> set[tuple[int, int]]:
    return {(int(p), int(r)) for p, r in HOLD.findall(frames)}


def four_holds(layout: dict[str, Any]) -> list[int]:
    """Four placements up the middle of the layout, bottom to top: a plausible route to tap."""
    places = layout["placements"]
    xs = sorted(p["x"] for p in places)
    ys = sorted(p["y"] for p in places)
    middle_x = xs[len(xs) // 2]
    chosen = []
    for share in (0.15, 0.4, 0.65, 0.9):
        y = ys[int(share * (len(ys) - 1))]
        chosen.append(min(places, key=lambda p: (abs(p["y"] - y), abs(p["x"] - middle_x)))["id"])
    assert len(set(chosen)) == 4
    return chosen


def test_tapping_four_holds_shows_a_grade_and_a_new_angle_changes_it(kiosk, layouts):
    kiosk.choose_layout("kilter/1")
    layout = layouts["kilter/1"]
    roles = layout["roles"]
    start, hand, hand2, finish = four_holds(layout)
    assert kiosk.text("#grade") == "Tap holds to build a route"
    kiosk.tap(start)  # none -> start
    kiosk.tap(hand, times=2)  # -> start -> hand
    kiosk.tap(hand2, times=2)
    kiosk.tap(finish, times=3)  # -> start -> hand -> finish
    assert kiosk.frames() == (
        f"p{start}r{roles['start']}p{hand}r{roles['middle']}p{hand2}r{roles['middle']}p{finish}r{roles['finish']}"
    )
    first = kiosk.text("#grade")
    assert GRADE.match(first), first
    # The page's picture rings the four holds in their roles, in the colours cg-infer --svg draws them in.
    rings = kiosk.page.locator("#board .route [data-placement-id]")
    assert sorted((int(r.get_attribute("data-placement-id")), r.get_attribute("data-role"))
                  for r in rings.all()) == sorted([(start, "start"), (hand, "middle"), (hand2, "middle"),
                                                    (finish, "finish")])  # fmt: skip
    colours = kiosk.page.eval_on_selector_all(
        "#board .route circle", "els => els.map(e => [e.getAttribute('data-role'), getComputedStyle(e).stroke])"
    )
    assert all(stroke == rgb(ROLE_COLOURS[role]) for role, stroke in colours), colours
    angle = int(kiosk.page.input_value("#angle"))
    assert kiosk.sweep_points() == [(a, a == angle) for a in layout["angles"]]

    other = 20 if angle != 20 else 45
    kiosk.choose_angle(other)
    changed = kiosk.text("#grade")
    assert GRADE.match(changed) and changed != first
    assert kiosk.sweep_points() == [(a, a == other) for a in layout["angles"]]
    # The grade shown is the sweep's point for that angle (one prediction, two views).
    chosen = kiosk.page.locator("#sweep circle.pt.chosen title").text_content()
    assert chosen == f"{other}°: {changed}"


def test_a_pasted_route_gets_the_grade_cg_infer_gives(kiosk, server):
    route = example_route(0)
    answer = json.loads(run_script("cg-infer", str(EXAMPLES), "--format", "json").stdout)[0]
    kiosk.choose_layout(f"{route['board']}/{route['layout_id']}")
    kiosk.choose_angle(route["angle"])
    kiosk.load(route["frames"])
    assert kiosk.text("#grade") == grade_text(answer)
    # Under the grade, the model's interval when it has one ("likely 21.3–24.8"); nothing when it has none.
    shows = f"likely {answer['low']:.1f}–{answer['high']:.1f}" if "low" in answer else None
    assert (kiosk.text("#range") if kiosk.page.locator("#range").is_visible() else None) == shows
    assert holds_of(kiosk.frames()) == holds_of(route["frames"])
    assert kiosk.page.locator("#board .route [data-placement-id]").count() == len(holds_of(route["frames"]))
    assert kiosk.page.locator("#error").is_hidden()
    if picture := os.environ.get("CLIMBGRADE_SCREENSHOT"):
        kiosk.page.screenshot(path=picture)
        print(f"the README picture of the page: {picture}")

    # A bad string shows cg-infer's one-line error and leaves the route as it was.
    shown, frames = kiosk.text("#grade"), kiosk.frames()
    kiosk.load("p1x")
    bad = {**route, "frames": "p1x"}
    refused = run_script("cg-infer", "-", "--format", "json", stdin=json.dumps(bad), check=False)
    assert kiosk.text("#error") == json.loads(refused.stdout)["error"]
    assert (kiosk.text("#grade"), kiosk.frames()) == (shown, frames)


def test_a_pasted_one_hold_route_loads_as_cg_serve_reads_it(kiosk, server, layouts):
    """The page takes a pasted route's holds from its own explain answer, one hold or many, as /v1/explain
    reads them; a bad role id is cg-serve's error and changes nothing."""
    kiosk.choose_layout("kilter/1")
    start = four_holds(layouts["kilter/1"])[0]
    one = f"p{start}r{layouts['kilter/1']['roles']['start']}"
    kiosk.load(one)
    answer = post(server + "v1/explain", {"board": "kilter", "layout_id": 1, "angle": 40, "frames": one})
    assert kiosk.text("#grade") == grade_text(answer) and kiosk.frames() == one
    rings = kiosk.page.locator("#board .route [data-placement-id]")
    assert rings.count() == 1 and rings.get_attribute("data-role") == "start"
    assert kiosk.page.locator("#board .effects text").count() == 0  # a lone hold has no effect label
    kiosk.load(f"p{start}r99")
    refused = post(server + "v1/explain", {"board": "kilter", "layout_id": 1, "angle": 40, "frames": f"p{start}r99"})
    assert kiosk.text("#error") == refused["error"] and kiosk.frames() == one


def test_undo_and_clear_walk_the_route_back(kiosk, layouts):
    kiosk.choose_layout("kilter/1")
    start, hand, _, _ = four_holds(layouts["kilter/1"])
    assert kiosk.page.locator("#undo").is_disabled() and kiosk.page.locator("#clear").is_disabled()
    kiosk.tap(start)
    kiosk.tap(hand)
    two = kiosk.frames()
    grade = kiosk.text("#grade")
    assert GRADE.match(grade)  # a route of two starts still grades
    kiosk.page.click("#clear")
    kiosk.settle()
    assert kiosk.frames() == "" and kiosk.text("#grade") == "Tap holds to build a route"
    assert kiosk.page.locator("#board .route [data-placement-id]").count() == 0
    assert kiosk.page.locator("#sweep circle").count() == 0
    kiosk.page.click("#undo")  # the clear undone
    kiosk.settle()
    assert (kiosk.frames(), kiosk.text("#grade")) == (two, grade)
    kiosk.page.click("#undo")  # the second tap undone: one hold, still graded
    kiosk.settle()
    assert kiosk.frames() == f"p{start}r{layouts['kilter/1']['roles']['start']}"
    assert GRADE.match(kiosk.text("#grade"))
    assert "route has no finish hold" in kiosk.text("#warnings")  # the route's own warnings are shown
    kiosk.page.click("#undo")
    kiosk.settle()
    assert kiosk.frames() == "" and kiosk.page.locator("#undo").is_disabled()


def test_copy_puts_the_routes_frames_on_the_clipboard(browser, server, request, layouts):
    context = {"viewport": WIDE, "permissions": ["clipboard-read", "clipboard-write"]}
    for kiosk in open_kiosk(browser, server, request, **context):
        start, hand, _, _ = four_holds(layouts["kilter/1"])
        assert kiosk.page.locator("#copy").is_disabled()
        kiosk.tap(start)
        kiosk.tap(hand, times=2)
        kiosk.page.click("#copy")
        assert kiosk.page.evaluate("navigator.clipboard.readText()") == kiosk.frames() != ""
        assert kiosk.text("#copy") == "Copied"


def test_mirror_loads_the_mirrored_route_on_tb2(kiosk, server, layouts):
    route = example_route(2)
    assert (route["board"], route["layout_id"]) == ("tension", 11) and layouts["tension/11"]["has_mirrors"]
    assert kiosk.page.locator("#mirror").is_hidden()  # Kilter Original has no mirrored holes
    kiosk.choose_layout("tension/11")
    kiosk.choose_angle(route["angle"])
    assert kiosk.page.locator("#mirror").is_disabled()  # no route yet
    kiosk.load(route["frames"])
    before = kiosk.frames()
    mirror = post(server + "v1/explain", {**route, "frames": before})["mirror"]
    assert mirror is not None
    kiosk.page.click("#mirror")
    kiosk.settle()
    after = kiosk.frames()
    assert after != before and holds_of(after) == holds_of(mirror["frames"])
    assert kiosk.text("#grade") == grade_text(mirror)


def test_taps_faster_than_the_model_end_on_the_last_routes_grade(kiosk, server, layouts):
    """Taps that come before the grade of the one before it is shown (each answer is computed while the next
    tap lands) end with the last route's grade: no earlier answer is left on screen."""
    kiosk.choose_layout("kilter/1")
    a, b, c, d = four_holds(layouts["kilter/1"])
    for pid in (a, b, c, c, d, d, d):  # c ends a hand hold, d a finish hold
        kiosk.page.locator(f'#board .hits [data-placement-id="{pid}"]').click()
    kiosk.settle()
    roles = layouts["kilter/1"]["roles"]
    frames = f"p{a}r{roles['start']}p{b}r{roles['start']}p{c}r{roles['middle']}p{d}r{roles['finish']}"
    assert kiosk.frames() == frames
    answer = post(server + "v1/explain", {"board": "kilter", "layout_id": 1, "angle": 40, "frames": frames})
    assert kiosk.text("#grade") == grade_text(answer)
    title = kiosk.page.locator("#board svg > text").first.text_content()
    assert title == f"{answer['font']}/{answer['v_grade']} · {answer['difficulty']:.1f} at 40°"
    labels = kiosk.page.locator("#board .effects text").all_text_contents()
    assert sorted(labels) == sorted(f"{h['effect']:+.1f}" for h in answer["holds"])


@pytest.mark.real_data
def test_search_loads_a_climb_with_its_community_grade(kiosk, server):
    assert kiosk.page.locator("#search").is_visible()
    climbs = get_json(server + "v1/climbs?q=a&board=kilter&layout_id=1&limit=5")["climbs"]
    climb = next(c for c in climbs if c["angles"])
    kiosk.page.fill("#search", climb["uuid"][:12])
    kiosk.page.locator("#results button").first.click()
    kiosk.settle()
    first = climb["angles"][0]
    assert int(kiosk.page.input_value("#angle")) == first["angle"]
    assert {p for p, _ in holds_of(kiosk.frames())} == {p for p, _ in holds_of(climb["frames"])}
    community = kiosk.text("#community")
    assert f"{first['font']} · {first['v_grade']}" in community and f"{first['ascents']} ascents" in community
    assert GRADE.match(kiosk.text("#grade"))
    kiosk.tap(next(iter(holds_of(kiosk.frames())))[0])  # an edited climb is no longer the community's
    assert kiosk.page.locator("#community").is_hidden()


@pytest.mark.real_data
def test_undo_of_a_loaded_climb_restores_the_route_and_angle_before_it(kiosk, server, layouts):
    layout = layouts["kilter/1"]
    climbs = get_json(server + "v1/climbs?q=a&board=kilter&layout_id=1&limit=5")["climbs"]
    climb = next(c for c in climbs if c["angles"])
    angle = next(a for a in layout["angles"] if a != climb["angles"][0]["angle"])
    kiosk.choose_angle(angle)
    start, hand, _, _ = four_holds(layout)
    kiosk.tap(start)
    kiosk.tap(hand)
    before = (kiosk.frames(), kiosk.text("#grade"), kiosk.sweep_points())
    kiosk.page.fill("#search", climb["uuid"][:12])
    kiosk.page.locator("#results button").first.click()
    kiosk.settle()
    assert int(kiosk.page.input_value("#angle")) == climb["angles"][0]["angle"]  # the climb moved the angle
    kiosk.page.click("#undo")
    kiosk.settle()
    assert int(kiosk.page.input_value("#angle")) == angle
    assert (kiosk.frames(), kiosk.text("#grade"), kiosk.sweep_points()) == before
    assert kiosk.page.locator("#community").is_hidden()


def test_the_page_fits_a_phone(phone):
    route = example_route(0)
    phone.choose_angle(route["angle"])
    phone.load(route["frames"])
    assert GRADE.match(phone.text("#grade"))
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for selector in ("#grade", "#board svg"):
        box = phone.page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (selector, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], (selector, box)  # no scrolling at all
    # A tap (touch, not a mouse click) on a hole still cycles its role.
    before = phone.frames()
    pid = next(iter(holds_of(before)))[0]
    phone.page.locator(f'#board .hits [data-placement-id="{pid}"]').tap()
    phone.settle()
    assert phone.frames() != before and holds_of(phone.frames()) - holds_of(before) <= {(pid, r) for r in range(100)}
    buttons = phone.page.locator("button:visible")
    assert all(buttons.nth(i).bounding_box()["height"] >= 44 for i in range(buttons.count()))


def test_cg_infer_svg_renders_offline_in_chromium(browser: Any, tmp_path: Path) -> None:
    """`cg-infer --explain --svg` pictures render in a real browser with no network: every route hold a
    ring of its role's colour, every hole of the layout drawn, and not one request beyond the file."""
    run_script("cg-infer", "--explain", "--svg", str(tmp_path), str(EXAMPLES))
    routes = json.loads(EXAMPLES.read_text())
    pictures = sorted(tmp_path.glob("*.svg"))
    assert len(pictures) == len(routes)
    tokenizer = GradePredictor.load().tokenizer  # the shipped model's geometry, which cg-infer drew from
    page = browser.new_page(viewport=WIDE)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        for picture in pictures:
            route = tokenizer.resolve(parse_route(routes[int(picture.stem.split("-")[0])]))  # <index>[-name].svg
            page.goto(picture.as_uri())
            holes = page.eval_on_selector_all("g.holes circle", "els => els.map(e => e.getBBox().width)")
            assert len(holes) == len(route.layout.placements) and all(width > 0 for width in holes)  # all drawn
            rings = page.eval_on_selector_all(
                "g.route circle",
                "els => els.map(e => [Number(e.getAttribute('data-placement-id')), e.getAttribute('data-role'), "
                "getComputedStyle(e).stroke, e.getBBox().width])",
            )
            assert sorted((pid, role) for pid, role, _, _ in rings) == sorted(route.holds)
            for pid, role, stroke, width in rings:
                assert stroke == rgb(ROLE_COLOURS[role]) and width > 0, (picture.name, pid, role, stroke, width)
            assert page.title().endswith("°")
        assert requests == [p.as_uri() for p in pictures]
    finally:
        page.close()


def rgb(colour: str) -> str:
    """`#rrggbb` as the browser's computed style spells it."""
    return "rgb({}, {}, {})".format(*(int(colour[i : i + 2], 16) for i in (1, 3, 5)))
