"""Route insight on the shipped model: angle sweep, what each hold does, the mirror, and pictures,
through the Python API and through `cg-infer`."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from climbgrade_runtime import GradePredictor, RouteError, parse_angle_spec
from climbgrade_runtime.board_db import open_database
from climbgrade_runtime.geometry import LayoutGeometry
from climbgrade_runtime.insight import ONLY_HOLD_WARNING
from climbgrade_runtime.predictor import Estimate
from climbgrade_runtime.routes import parse_route
from climbgrade_runtime.svg import RING_WIDTH

from conftest import REAL_DATA, ROOT, run_script
from test_parity import route_dicts, usable

EXAMPLES = ROOT / "examples" / "routes.json"
ROUTES = json.loads(EXAMPLES.read_text())
KILTER = next(r for r in ROUTES if r["board"] == "kilter" and "frames" in r)
TB2 = next(r for r in ROUTES if r["board"] == "tension")
TOL = 1e-5
# A plain cg-infer JSON answer of the shipped model (with a "name" label; the model has an interval);
# the route-insight flags add their keys to it.
ANSWER_KEYS = {
    "index",
    "name",
    "board",
    "layout_id",
    "angle",
    "difficulty",
    "low",
    "high",
    "font",
    "v_grade",
    "warnings",
}


@pytest.fixture(scope="module")
def predictor() -> GradePredictor:
    return GradePredictor.load()


@pytest.fixture
def runs(predictor, monkeypatch) -> list[int]:
    """The size of each onnxruntime run the predictor makes while a test runs."""
    sizes: list[int] = []
    run = predictor._run

    def counted(routes):
        sizes.append(len(routes))
        return run(routes)

    monkeypatch.setattr(predictor, "_run", counted)
    return sizes


def holds_of(predictor: GradePredictor, route: dict) -> tuple[tuple[int, str], ...]:
    """The route's holds as the tokenizer resolves them: canonical order, role names."""
    return predictor.tokenizer.resolve(parse_route(route)).holds


def with_holds(route: dict, holds) -> dict:
    base = {k: v for k, v in route.items() if k not in ("frames", "holds", "name")}
    return base | {"holds": [{"placement_id": pid, "role": role} for pid, role in holds]}


# --- sweep -------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=[r["name"] for r in ROUTES])
def test_sweep_equals_predict_at_each_angle_in_one_run(predictor, runs, route):
    sweep = predictor.sweep(route)
    layout = predictor.tokenizer.layouts[(route["board"], route["layout_id"])]
    assert runs == [len(layout.angles)]  # the route's own angle is one of them: no extra row
    assert [a.angle for a in sweep.angles] == list(layout.angles)
    for grade in sweep.angles:
        expected = predictor.predict(dict(route, angle=grade.angle))
        assert grade.difficulty == pytest.approx(expected.difficulty, abs=TOL)
        assert (grade.font, grade.v_grade) == (expected.font, expected.v_grade)
    assert sweep.prediction.difficulty == pytest.approx(predictor.predict(route).difficulty, abs=TOL)
    assert sweep.prediction.labels == {"name": route["name"]}


def test_sweep_of_given_angles_adds_the_routes_own_angle_to_the_run(predictor, runs):
    sweep = predictor.sweep(KILTER, angles=[50, 20, 50])
    assert [a.angle for a in sweep.angles] == [50, 20]
    assert runs == [3]  # 40 (the route's own, for .prediction), 50, 20
    assert sweep.prediction.angle == KILTER["angle"]
    assert sweep.to_dict() == {"angles": [a.to_dict() for a in sweep.angles]}
    assert set(sweep.to_dict()["angles"][0]) == {"angle", "difficulty", "low", "high", "font", "v_grade"}


def test_sweep_angle_not_on_the_board_is_todays_error(predictor):
    with pytest.raises(RouteError) as sweep_error:
        predictor.sweep(KILTER, angles=[40, 42])
    with pytest.raises(RouteError) as predict_error:
        predictor.predict(dict(KILTER, angle=42))
    assert str(sweep_error.value) == str(predict_error.value)
    assert str(sweep_error.value).startswith("angle 42 is not an angle of kilter layout 1 (angles: 0, 5,")


def test_angle_specs(predictor):
    kilter = predictor.tokenizer.layouts[("kilter", 1)]
    tension = predictor.tokenizer.layouts[("tension", 11)]
    assert parse_angle_spec("all").angles(tension) == tension.angles
    assert parse_angle_spec(" 20 - 35 ").angles(kilter) == (20, 25, 30, 35)
    assert parse_angle_spec("42-48").angles(kilter) == (45,)
    assert parse_angle_spec("45,40,45").angles(kilter) == (40, 45)
    assert parse_angle_spec("70").angles(kilter) == (70,)
    with pytest.raises(RouteError, match=r"^angle 70 is not an angle of tension layout 11 \(angles: 0, .*65\)$"):
        parse_angle_spec("40,70").angles(tension)
    with pytest.raises(RouteError, match=r"^angle range 41-44 holds no angle of kilter layout 1 \(angles: 0, .*70\)$"):
        parse_angle_spec("41-44").angles(kilter)
    for bad in ("", "some", "20-", "-5", "20-50-60", "4x", "40,,45", "1234"):
        with pytest.raises(ValueError, match="is not an angle spec"):
            parse_angle_spec(bad)
    with pytest.raises(ValueError, match="runs backwards: write 20-50"):
        parse_angle_spec("50-20")


# --- explain -----------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=[r["name"] for r in ROUTES])
def test_explain_effects_equal_leave_one_out_predictions(predictor, runs, route):
    explanation = predictor.explain(route)
    holds = holds_of(predictor, route)
    assert runs == [len(holds) + 1]
    assert [(h.placement_id, h.role) for h in explanation.holds] == list(holds)
    full = predictor.predict(route).difficulty
    assert explanation.prediction.difficulty == pytest.approx(full, abs=TOL)
    for i, effect in enumerate(explanation.holds):
        without = predictor.predict(with_holds(route, holds[:i] + holds[i + 1 :]))
        assert effect.effect == pytest.approx(without.difficulty - full, abs=TOL)
        assert effect.warnings == tuple(w for w in without.warnings if w not in predictor.predict(route).warnings)
    best = max(explanation.holds, key=lambda h: h.effect)
    assert best.effect > 0 and explanation.crux == best.placement_id


def test_explain_scores_an_only_start_hold_with_the_usual_warning(predictor):
    route = next(r for r in ROUTES if r["name"] == "right arete")  # one start hold (1206), one finish (1392)
    explanation = predictor.explain(route)
    by_id = {h.placement_id: h for h in explanation.holds}
    assert by_id[1206].warnings == ("route has no start hold",)
    assert by_id[1392].warnings == ("route has no finish hold",)
    assert by_id[1273].warnings == ()
    assert explanation.warnings == ("without p1206: route has no start hold", "without p1392: route has no finish hold")


def test_explain_crux_is_none_when_no_hold_makes_the_route_easier(predictor, monkeypatch):
    n = len(holds_of(predictor, KILTER))
    # Whole route 10, every leave-one-out easier (9, 8, ...): no hold's removal raises the grade.
    monkeypatch.setattr(predictor, "_run", lambda routes: [Estimate(10.0 - i) for i in range(len(routes))])
    explanation = predictor.explain(KILTER)
    assert [h.effect for h in explanation.holds] == [-float(i) for i in range(1, n + 1)]
    assert explanation.crux is None and explanation.to_dict()["crux"] is None


def test_explain_of_a_one_hold_route_grades_it_and_lists_its_hold_without_an_effect(predictor, runs):
    pid, role = holds_of(predictor, KILTER)[0]
    route = with_holds(KILTER, [(pid, role)])
    explanation = predictor.explain(route)
    assert runs == [1]  # nothing to leave out: the route alone
    assert explanation.prediction.difficulty == pytest.approx(predictor.predict(route).difficulty, abs=TOL)
    assert [(h.placement_id, h.role, h.effect) for h in explanation.holds] == [(pid, role, None)]
    assert explanation.crux is None and explanation.effects == {}
    assert explanation.warnings == (ONLY_HOLD_WARNING,)
    assert explanation.to_dict() == {"holds": [{"placement_id": pid, "role": role, "effect": None}], "crux": None}


def test_explanation_effects_map_each_hold_to_its_effect(predictor):
    explanation = predictor.explain(KILTER)
    assert explanation.effects == {h.placement_id: h.effect for h in explanation.holds}
    assert len(explanation.effects) == len(holds_of(predictor, KILTER)) >= 2


def test_sweep_reangles_the_routes_ids_as_if_it_were_set_at_each_angle(predictor):
    """The sweep resolves a route once and re-angles its ids: the same ids and warnings as the route at each angle."""
    routes = ROUTES + (
        route_dicts((str(REAL_DATA / "kilter.db"), str(REAL_DATA / "tension.db")), 150) if REAL_DATA else []
    )
    tokenizer = predictor.tokenizer
    checked = 0
    for route in usable(predictor, routes):
        resolved = tokenizer.resolve(parse_route(route))
        own = tokenizer.ids(resolved)
        for angle in resolved.layout.angles:
            direct = tokenizer.resolve(parse_route(dict(route, angle=angle)))
            moved = tokenizer.ids(resolved, angle)
            assert moved == tokenizer.ids(direct) and moved == own._replace(angle=angle)
            assert resolved.warnings + tokenizer.unseen_warning(resolved) == direct.warnings + tokenizer.unseen_warning(
                direct
            )
            checked += 1
    assert checked >= len(ROUTES) * 14


# --- mirror ------------------------------------------------------------------------------------


def test_mirror_of_a_tb2_route_equals_predict_of_its_frames_and_is_an_involution(predictor, runs):
    mirror = predictor.mirror(TB2)
    assert runs == [1]
    assert mirror is not None
    layout = predictor.tokenizer.layouts[("tension", 11)]
    original = holds_of(predictor, TB2)
    assert mirror.holds == tuple(
        sorted(
            ((layout.mirrors[p], r) for p, r in original),
            key=lambda h: (layout.placements[h[0]][1], layout.placements[h[0]][0], h[0]),
        )
    )
    mirrored_route = dict(TB2, frames=mirror.frames)
    assert holds_of(predictor, mirrored_route) == mirror.holds
    assert mirror.difficulty == pytest.approx(predictor.predict(mirrored_route).difficulty, abs=TOL)
    back = predictor.mirror(mirrored_route)
    assert set(back.holds) == set(original)
    assert back.difficulty == pytest.approx(predictor.predict(TB2).difficulty, abs=TOL)
    assert set(mirror.to_dict()) == {"difficulty", "low", "high", "font", "v_grade", "frames"}
    # Spelled in the route's own role ids (TB2's r5-r8), not another product's ids for the same roles.
    assert set(re.findall(r"r(\d+)", mirror.frames)) <= set(re.findall(r"r(\d+)", TB2["frames"]))
    assert back.frames == TB2["frames"] or set(re.findall(r"p\d+r\d+", back.frames)) == set(
        re.findall(r"p\d+r\d+", TB2["frames"])
    )


def test_frames_spell_roles_in_each_boards_own_ids(predictor):
    """A route given by role names gets frames in its board's own role ids: TB2 r5-r8, Kilter Homewall r42-r45."""
    named = with_holds(TB2, holds_of(predictor, TB2))
    mirror = predictor.mirror(named)
    assert mirror is not None
    assert set(re.findall(r"r(\d+)", mirror.frames)) <= {"5", "6", "7", "8"}
    homewall = predictor.tokenizer.layouts[("kilter", 8)]
    assert homewall.role_ids == {"start": 42, "middle": 43, "finish": 44, "foot": 45}
    assert predictor.tokenizer.layouts[("kilter", 1)].role_ids == {"start": 12, "middle": 13, "finish": 14, "foot": 15}


def test_a_sidecar_without_own_roles_still_loads(predictor):
    """Sidecars written before own_roles was recorded read as before: the lowest id of each role name."""
    layout = predictor.tokenizer.layouts[("tension", 11)]
    data = layout.to_dict()
    assert data["own_roles"] == {"start": 5, "middle": 6, "finish": 7, "foot": 8}
    assert LayoutGeometry.from_dict(data) == layout
    del data["own_roles"]
    older = LayoutGeometry.from_dict(data)
    assert older.role_ids == {"start": 1, "middle": 2, "finish": 3, "foot": 4} and older.roles == layout.roles


@pytest.mark.real_data
def test_own_roles_are_read_from_the_products_placement_roles(predictor):
    assert REAL_DATA is not None
    for db, layout_ids in (("kilter.db", {1, 8}), ("tension.db", {11})):
        for layout in open_database(str(REAL_DATA / db)).read_layouts(layout_ids).values():
            assert layout.own_roles == predictor.tokenizer.layouts[layout.key].own_roles


def test_no_mirror_on_kilter_or_for_a_hold_without_one(predictor):
    assert predictor.mirror(KILTER) is None
    layout = predictor.tokenizer.layouts[("tension", 11)]
    lonely = min(set(layout.placements) - set(layout.mirrors))
    holds = holds_of(predictor, TB2)
    assert predictor.mirror(with_holds(TB2, holds + ((lonely, "foot"),))) is None


# --- cg-infer ----------------------------------------------------------------------------------


def infer(*args: str, stdin: str | None = None):
    return run_script("cg-infer", *args, stdin=stdin, check=False)


@pytest.fixture(scope="module")
def all_extras_json():
    result = infer(str(EXAMPLES), "--angles", "all", "--explain", "--mirror", "--format", "json")
    return result, json.loads(result.stdout)


def test_cg_infer_json_has_every_extra_in_the_contract_shape(predictor, all_extras_json):
    result, answers = all_extras_json
    assert result.returncode == 0, result.stderr
    assert len(answers) == len(ROUTES)
    for route, answer in zip(ROUTES, answers):
        assert set(answer) == ANSWER_KEYS | {"angles", "holds", "crux", "mirror"}
        sweep = predictor.sweep(route)
        assert len(answer["angles"]) == len(sweep.angles)
        for got, want in zip(answer["angles"], sweep.angles):
            assert got == pytest.approx(want.to_dict(), abs=TOL)
        explanation = predictor.explain(route)
        assert [(h["placement_id"], h["role"]) for h in answer["holds"]] == [
            (h.placement_id, h.role) for h in explanation.holds
        ]
        assert [h["effect"] for h in answer["holds"]] == pytest.approx([h.effect for h in explanation.holds], abs=TOL)
        assert answer["crux"] == explanation.crux
        for warning in explanation.warnings:
            assert warning in answer["warnings"]
            assert f"warning: route {answer['index']}: {warning}" in result.stderr


def test_cg_infer_mirror_is_graded_on_tb2_and_a_warning_on_kilter(predictor, all_extras_json):
    result, answers = all_extras_json
    for answer in answers:
        if answer["board"] == "tension":
            mirror = predictor.mirror(TB2)
            assert answer["mirror"] == pytest.approx(mirror.to_dict(), abs=TOL)
            assert not any("mirror" in w for w in answer["warnings"])
        else:
            assert answer["mirror"] is None
            warning = "no mirror graded: kilter layout 1 has no mirrored holes"
            assert warning in answer["warnings"]
            assert f"warning: route {answer['index']}: {warning}" in result.stderr
    assert "error" not in result.stderr


def test_cg_infer_table_rows(predictor):
    result = infer(str(EXAMPLES), "--angles", "all", "--explain", "--mirror")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["#", "route", "board", "layout", "angle", "difficulty", "range", "font", "V", "notes"]
    expected_rows = 1 + sum(1 + len(predictor.sweep(r).angles) + len(holds_of(predictor, r)) + 1 for r in ROUTES)
    assert len(lines) == expected_rows
    hold_rows = [line for line in lines if "· hold p" in line]
    assert all(re.search(r"· hold p\d+\s+\w+\s+[+-]\d+\.\d\b", line) for line in hold_rows), hold_rows
    assert sum(line.rstrip().endswith("crux") or " crux;" in line for line in hold_rows) == len(ROUTES)
    crux = predictor.explain(TB2).crux
    assert any(f"· hold p{crux} " in line and "crux" in line for line in hold_rows)
    mirror_rows = [line for line in lines if "· mirror" in line]
    assert len(mirror_rows) == len(ROUTES)
    tb2_mirror = predictor.mirror(TB2)
    assert any(f"{tb2_mirror.difficulty:.1f}" in line and tb2_mirror.frames in line for line in mirror_rows)
    angle_rows = [line for line in lines if "· angle" in line]
    assert sum("the route's angle" in line for line in angle_rows) == len(ROUTES)


def test_cg_infer_plain_run_is_unchanged():
    result = infer(str(EXAMPLES), "--format", "json")
    assert result.returncode == 0
    for answer in json.loads(result.stdout):
        assert set(answer) == ANSWER_KEYS


def test_cg_infer_angle_not_on_one_board_fails_that_route_only():
    result = infer(str(EXAMPLES), "--angles", "70", "--format", "json")
    assert result.returncode == 2
    answers = json.loads(result.stdout)
    tb2_index = ROUTES.index(TB2)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: route {tb2_index}: angle 70 is not an angle of tension layout 11 "
        "(angles: 0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65)"
    ]
    for i, answer in enumerate(answers):
        if i == tb2_index:
            assert set(answer) == {"index", "name", "error"}
        else:
            assert [a["angle"] for a in answer["angles"]] == [70] and "difficulty" in answer


def test_cg_infer_range_with_no_board_angle_is_a_per_route_error():
    result = infer(str(EXAMPLES), "--angles", "41-44")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(ROUTES)
    assert all("angle range 41-44 holds no angle of" in line and "(angles: 0, 5," in line for line in errors)


@pytest.mark.parametrize("spec", ["4x", "50-20", "", "all,40"])
def test_cg_infer_malformed_angle_spec_is_a_usage_error(spec):
    result = infer(str(EXAMPLES), "--angles", spec)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: Invalid value for '--angles': ")


def test_cg_infer_streams_json_lines_with_a_bad_line():
    lines = [json.dumps(KILTER), "{not json", json.dumps(TB2), json.dumps(dict(KILTER, frames="p1495r12"))]
    result = infer("-", "--explain", "--mirror", "--format", "json", stdin="\n".join(lines) + "\n")
    assert result.returncode == 2
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["index"] for a in answers] == [0, 1, 2, 3]
    assert "holds" in answers[0] and answers[0]["mirror"] is None
    assert answers[1]["error"].startswith("line 2 is not valid JSON: ")
    assert answers[2]["mirror"]["frames"] and len(answers[2]["holds"]) == len(TB2["frames"].split("p")) - 1
    assert answers[3]["holds"] == [{"placement_id": 1495, "role": "start", "effect": None}]  # one hold: answered
    assert answers[3]["crux"] is None and ONLY_HOLD_WARNING in answers[3]["warnings"]


def test_cg_infer_explains_a_one_hold_route(predictor, tmp_path):
    """A gradable one-hold route is answered (exit 0): its grade, its hold with no effect ("-"), a warning."""
    route = dict(KILTER, frames="p1495r12")
    result = infer("-", "--explain", "--svg", str(tmp_path), stdin=json.dumps(route))
    assert result.returncode == 0, result.stderr
    prediction = predictor.predict(route)
    rows = result.stdout.splitlines()
    assert f"{prediction.difficulty:.1f}" in rows[1] and rows[2].split() == ["·", "hold", "p1495", "start", "-"]
    assert f"warning: route 0: {ONLY_HOLD_WARNING}" in result.stderr.splitlines()
    [picture] = tmp_path.iterdir()
    svg = ET.parse(picture).getroot()
    rings = svg.findall(".//{http://www.w3.org/2000/svg}circle[@data-placement-id]")
    assert [(r.attrib["data-placement-id"], r.attrib["data-role"]) for r in rings] == [("1495", "start")]
    assert float(rings[0].attrib["stroke-width"]) == RING_WIDTH  # drawn with no effect weight...
    assert len(svg.findall(".//{http://www.w3.org/2000/svg}text")) == 1  # ...and no effect label: the title only


def test_cg_infer_svg_writes_one_picture_per_graded_route(tmp_path, predictor):
    escaping = dict(TB2, name="../../escape me")
    routes = ROUTES + [dict(KILTER, board="moon"), escaping]
    (tmp_path / "routes.json").write_text(json.dumps(routes))
    out = tmp_path / "pictures"
    result = infer(str(tmp_path / "routes.json"), "--svg", str(out), "--explain")
    assert result.returncode == 2  # the moon route failed; the others are pictured
    names = sorted(p.name for p in out.iterdir())
    assert names == ["0-middle-ladder.svg", "1-right-arete.svg", "2-spray-zigzag.svg", "4-escape-me.svg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pictures", "routes.json"]
    for name, route in zip(names, ROUTES + [escaping]):
        svg = ET.parse(out / name).getroot()
        rings = svg.findall(".//{http://www.w3.org/2000/svg}circle[@data-placement-id]")
        holds = holds_of(predictor, route)
        assert sorted((int(r.attrib["data-placement-id"]), r.attrib["data-role"]) for r in rings) == sorted(holds)
        title = svg.find("{http://www.w3.org/2000/svg}title")
        assert title is not None
        prediction = predictor.predict(route)
        assert title.text == (
            f"{route['name']} · {prediction.font}/{prediction.v_grade} · "
            f"{prediction.difficulty:.1f} at {route['angle']}°"
        )
        widths = {float(r.attrib["stroke-width"]) for r in rings}
        assert len(widths) > 1  # --explain: ring weights follow the holds' effects


def test_cg_infer_svg_into_a_file_is_a_clean_error(tmp_path):
    (tmp_path / "file").write_text("")
    result = infer(str(EXAMPLES), "--svg", str(tmp_path / "file" / "pictures"))
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: cannot make the picture folder {tmp_path}/file/pictures: Not a directory"
    ]


@pytest.mark.real_data
def test_on_real_climbs_sweep_explain_and_mirror_agree_with_predict(predictor):
    """Real climbs (when ../shared/data is present): every extra equals plain predictions of the same routes."""
    assert REAL_DATA is not None
    routes = usable(predictor, route_dicts((str(REAL_DATA / "kilter.db"), str(REAL_DATA / "tension.db")), 40))[:12]
    assert {r["board"] for r in routes} == {"kilter", "tension"}
    for route in routes:
        sweep = predictor.sweep(route, angles=[20, 50])
        for grade in sweep.angles:
            at_angle = predictor.predict(dict(route, angle=grade.angle))
            assert grade.difficulty == pytest.approx(at_angle.difficulty, abs=TOL)
        explanation = predictor.explain(route)
        holds = holds_of(predictor, route)
        full = predictor.predict(route).difficulty
        for i in (0, len(holds) - 1):
            without = predictor.predict(with_holds(route, holds[:i] + holds[i + 1 :])).difficulty
            assert explanation.holds[i].effect == pytest.approx(without - full, abs=TOL)
        mirror = predictor.mirror(route)
        if route["board"] == "kilter":
            assert mirror is None
        elif mirror is not None:
            assert mirror.difficulty == pytest.approx(
                predictor.predict(dict(route, frames=mirror.frames)).difficulty, abs=TOL
            )
