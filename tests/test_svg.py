"""render_route_svg on the shipped model's board geometry: a standalone, valid picture of the route."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from climbgrade_runtime import GradePredictor
from climbgrade_runtime.routes import parse_route
from climbgrade_runtime.svg import HIT_RADIUS, OTHER_ROLE_COLOUR, ROLE_COLOURS, render_route_svg
from climbgrade_runtime.tokenizer import ResolvedRoute

SVG = "{http://www.w3.org/2000/svg}"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "routes.json"


@pytest.fixture(scope="module")
def predictor() -> GradePredictor:
    return GradePredictor.load()


def resolved_examples(predictor: GradePredictor) -> list[ResolvedRoute]:
    return [predictor.tokenizer.resolve(parse_route(r)) for r in json.loads(EXAMPLES.read_text())]


def rings(root: ET.Element) -> list[ET.Element]:
    return [c for c in root.iter(f"{SVG}circle") if "data-placement-id" in c.attrib]


def dots(root: ET.Element) -> list[ET.Element]:
    return [c for c in root.iter(f"{SVG}circle") if "data-placement-id" not in c.attrib]


def test_every_route_hold_is_a_ring_in_its_role_colour(predictor):
    routes = resolved_examples(predictor)
    assert {r.layout.board for r in routes} == {"kilter", "tension"}
    for route in routes:
        root = ET.fromstring(render_route_svg(route.layout, route.holds, "a route"))
        assert root.tag == f"{SVG}svg"
        got = [(int(c.attrib["data-placement-id"]), c.attrib["data-role"], c.attrib["stroke"]) for c in rings(root)]
        assert got == [(pid, role, ROLE_COLOURS[role]) for pid, role in route.holds]
        assert len(dots(root)) == len(route.layout.placements)


def test_higher_holds_are_drawn_higher(predictor):
    route = resolved_examples(predictor)[0]
    root = ET.fromstring(render_route_svg(route.layout, route.holds, "t"))
    screen_y = [float(c.attrib["cy"]) for c in rings(root)]
    board_y = [route.layout.placements[pid][1] for pid, _ in route.holds]
    assert board_y[0] < board_y[-1] and screen_y[0] > screen_y[-1]  # canonical order: bottom to top
    view = [float(v) for v in root.attrib["viewBox"].split()]
    for c in root.iter(f"{SVG}circle"):
        assert 0 < float(c.attrib["cx"]) < view[2] and 0 < float(c.attrib["cy"]) < view[3]


def test_effects_set_the_ring_weights_and_labels(predictor):
    route = resolved_examples(predictor)[0]
    (weak, _), (strong, _) = route.holds[0], route.holds[1]
    plain = {
        c.attrib["data-placement-id"]: float(c.attrib["stroke-width"])
        for c in rings(ET.fromstring(render_route_svg(route.layout, route.holds, "t")))
    }
    root = ET.fromstring(render_route_svg(route.layout, route.holds, "t", effects={weak: 0.0, strong: -2.0}))
    weighted = {c.attrib["data-placement-id"]: float(c.attrib["stroke-width"]) for c in rings(root)}
    assert len(set(plain.values())) == 1
    assert weighted[str(weak)] == plain[str(weak)]
    assert weighted[str(strong)] > plain[str(strong)]
    assert [t.text for t in root.iter(f"{SVG}text")][1:] == ["+0.0", "-2.0"]


def test_other_roles_are_grey_and_unknown_placements_refused(predictor):
    layout = predictor.tokenizer.layouts[("kilter", 1)]
    pid = min(layout.placements)
    root = ET.fromstring(render_route_svg(layout, [(pid, "purple")], "t"))
    assert [c.attrib["stroke"] for c in rings(root)] == [OTHER_ROLE_COLOUR]
    with pytest.raises(ValueError, match="placement -5 is not on kilter layout 1"):
        render_route_svg(layout, [(-5, "start")], "t")


def test_hostile_title_is_escaped_and_nothing_is_external(predictor):
    route = resolved_examples(predictor)[2]
    text = render_route_svg(route.layout, route.holds, '<script>alert("x")</script> & co')
    assert "<script>" not in text and "&lt;script&gt;" in text and "&amp; co" in text
    root = ET.fromstring(text)
    assert root.findtext(f"{SVG}title") == '<script>alert("x")</script> & co'
    assert [e.tag for e in root.iter() if e.tag.split("}")[-1] in ("script", "image", "a", "style", "use")] == []
    assert "href" not in text and "url(" not in text


def test_interactive_adds_a_finger_sized_target_on_top_of_every_hole(predictor):
    route = resolved_examples(predictor)[0]
    plain = render_route_svg(route.layout, route.holds, "t", effects={route.holds[0][0]: 1.0})
    text = render_route_svg(route.layout, route.holds, "t", effects={route.holds[0][0]: 1.0}, interactive=True)
    root = ET.fromstring(text)
    hits = root.findall(f"{SVG}g[@class='hits']")
    assert len(hits) == 1 and list(root)[-1] is hits[0]  # drawn last: above the rings and labels, so taps reach it
    assert hits[0].attrib["fill"] == "transparent" and hits[0].attrib["pointer-events"] == "all"
    targets = list(hits[0])
    assert sorted(int(c.attrib["data-placement-id"]) for c in targets) == sorted(route.layout.placements)
    assert HIT_RADIUS >= 12 and {float(c.attrib["r"]) for c in targets} == {HIT_RADIUS}
    # Each target sits on its hole's dot, and the route's rings are unchanged.
    dot_at = {(c.attrib["cx"], c.attrib["cy"]) for c in dots(ET.fromstring(plain))}
    assert {(c.attrib["cx"], c.attrib["cy"]) for c in targets} == dot_at
    assert text.split('<g class="hits"')[0] + "</svg>\n" == plain


def test_interactive_targets_of_neighbouring_holes_barely_overlap(predictor):
    for layout in predictor.tokenizer.layouts.values():
        root = ET.fromstring(render_route_svg(layout, [], "t", interactive=True))
        centres = [(float(c.attrib["cx"]), float(c.attrib["cy"])) for c in rings(root)]
        closest = min(math.dist(a, b) for i, a in enumerate(centres) for b in centres[i + 1 :])
        assert 2 * HIT_RADIUS - closest < 0.1 * (2 * HIT_RADIUS), (layout.key, closest)  # under a tenth of a target
