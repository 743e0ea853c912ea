"""A model and its sidecar are a pair: any mismatch or damage is refused with a clear message."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from climbgrade_runtime import GradePredictor, ModelError, Prediction, Route, model_io
from climbgrade_runtime.routes import parse_route
from climbgrade_runtime.sidecar import Sidecar, file_sha256, sidecar_path
from climbgrade_runtime.tokenizer import RouteIds

from conftest import ROOT, run_script


@pytest.fixture
def pair(fake_pipeline, tmp_path) -> Path:
    model = tmp_path / "m.onnx"
    shutil.copy(fake_pipeline.model, model)
    shutil.copy(f"{fake_pipeline.model}.json", f"{model}.json")
    return model


def edit_sidecar(model: Path, change) -> None:
    path = Path(f"{model}.json")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def add_token(data):
    data["tokenizer"]["vocab"].append("<EXTRA>")


def drop_layout(data):
    """The sidecar loses its last layout: the graph's `layout` tables hold one more."""
    data["layouts"].pop()


def drop_feature(data):
    """The sidecar names one feature fewer than the graph computes."""
    data["tokenizer"]["features"].pop()


def set_metadata(model: Path, key: str, value: str) -> None:
    """Rewrite one of the graph's metadata_props (the sidecar follows the new sha256)."""
    proto = onnx.load(str(model))
    [prop] = [p for p in proto.metadata_props if p.key == key]
    prop.value = value
    onnx.save(proto, str(model))
    edit_sidecar(model, lambda d: d["model"].update(sha256=file_sha256(model)))


def truncate_keeping_hash(model: Path) -> None:
    model.write_bytes(model.read_bytes()[:5000])
    edit_sidecar(model, lambda d: d["model"].update(sha256=file_sha256(model)))


# Each refusal in full (a regular expression; {model} is the model's path): which file, what is wrong, the fix.
MISMATCH = r"model {model} and its sidecar do not match \({what}\): re-export both with cg-export"
CASES = {
    "hash": (
        lambda m: edit_sidecar(m, lambda d: d["model"].update(sha256="0" * 64)),
        r"model {model} does not match its sidecar {model}\.json \(sha256 differs\): "
        r"use the pair cg-export wrote together, or re-export",
    ),
    "vocab size": (
        lambda m: edit_sidecar(m, add_token),
        MISMATCH.replace("{what}", r"vocab_size: model \d+, sidecar \d+"),
    ),
    "layouts": (
        lambda m: edit_sidecar(m, drop_layout),
        MISMATCH.replace("{what}", r"layouts: model (\d+), sidecar (?!\1)\d+"),
    ),
    "features": (
        lambda m: edit_sidecar(m, drop_feature),
        MISMATCH.replace("{what}", r"features: model (\d+), sidecar (?!\1)\d+"),
    ),
    "graph format": (
        lambda m: set_metadata(m, model_io.META_FORMAT, "1"),
        MISMATCH.replace("{what}", r"model_format: model 1, sidecar 2"),
    ),
    "max_len": (
        lambda m: edit_sidecar(m, lambda d: d["tokenizer"].update(max_len=d["tokenizer"]["max_len"] + 1)),
        MISMATCH.replace("{what}", r"max_len: model \d+, sidecar \d+"),
    ),
    "opset": (
        lambda m: edit_sidecar(m, lambda d: d["model"].update(opset=18)),
        MISMATCH.replace("{what}", "opset: model 17, sidecar 18"),
    ),
    "format version": (
        lambda m: edit_sidecar(m, lambda d: d.update(format_version=99)),
        r"sidecar {model}\.json has sidecar format version 99; this climbgrade reads version 2: "
        r"re-export the model with this version's cg-export, or install the climbgrade that wrote it",
    ),
    "format 1 sidecar": (
        lambda m: edit_sidecar(m, lambda d: d.update(format_version=1)),
        r"sidecar {model}\.json is model format 1 \(a graph that takes token ids and features, not Aurora ids\); "
        r"this climbgrade runs format 2: re-export the run with `cg-export RUN` \(or install climbgrade 0\.1 for this model\)",
    ),
    "not a sidecar": (
        lambda m: Path(f"{m}.json").write_text("[]"),
        r'sidecar {model}\.json is not a climbgrade sidecar \(no "format": "climbgrade-sidecar"\)',
    ),
    "sidecar missing": (
        lambda m: Path(f"{m}.json").unlink(),
        r"sidecar {model}\.json is missing: "
        r"a model and its sidecar are a pair; copy both, or re-export",
    ),
    "model missing": (
        lambda m: m.unlink(),
        r"model {model} does not exist: pass --model PATH to a \.onnx file written by cg-export",
    ),
    "truncated": (
        truncate_keeping_hash,
        r"cannot load model {model}: \[ONNXRuntimeError\] .*; re-export it with cg-export",
    ),
}


def expected(case: str, model: Path) -> str:
    return CASES[case][1].replace("{model}", re.escape(str(model)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_mismatched_or_damaged_pair_is_refused(pair, case):
    CASES[case][0](pair)
    with pytest.raises(ModelError) as caught:
        GradePredictor.load(pair).warm_up()
    assert re.fullmatch(expected(case, pair), str(caught.value)), str(caught.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_reports_a_bad_pair_in_one_line(pair, tmp_path, case):
    CASES[case][0](pair)
    (tmp_path / "r.json").write_text("{}")
    result = run_script("cg-infer", str(tmp_path / "r.json"), "--model", str(pair), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch("error: " + expected(case, pair), lines[0]), lines
    assert result.stdout == ""


def test_unknown_provider_is_refused(fake_pipeline):
    predictor = GradePredictor.load(fake_pipeline.model, providers=["NoSuchExecutionProvider"])
    with pytest.raises(ModelError, match=r"not installed; available: .*CPUExecutionProvider"):
        predictor.warm_up()


# --- the graph's own checks (model format 2: `problems`) ------------------------------------------

SHIPPED = sorted((ROOT / "exports").glob("climbgrade*.onnx"))
EXAMPLE_ROUTES = json.loads((ROOT / "examples" / "routes.json").read_text())


@pytest.fixture(scope="module", params=SHIPPED, ids=[p.name for p in SHIPPED])
def graph(request):
    """A shipped model as a plain onnxruntime client sees it: its path, tokenizer, a run of its outputs by name,
    and whether a row's answer is independent of the rest of its batch (not so for the int8 model: its
    dynamic quantization scales each activation by the whole batch's range)."""
    path = request.param
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    sidecar = Sidecar.load(sidecar_path(path))
    names = [o.name for o in session.get_outputs()]
    assert names == [n for n, _ in sidecar.outputs] == [n for n, _ in model_io.INTERVAL_OUTPUTS]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, feeds)))

    return path, sidecar.tokenizer, run, ".int8." not in path.name


def example_ids(tokenizer, board: str) -> RouteIds:
    route = next(r for r in EXAMPLE_ROUTES if r["board"] == board and len(r.get("frames", "")) > 20)
    return tokenizer.ids(tokenizer.resolve(parse_route(route)))


def bad_routes(tokenizer, good: RouteIds) -> dict[str, RouteIds]:
    """One route per problem bit, each the good route with one thing wrong."""
    layouts = list(tokenizer.layouts.values())
    layout = layouts[good.layout]
    everywhere = {p for other in layouts for p in other.placements}
    elsewhere = sorted(p for other in layouts for p in other.placements if p not in layout.placements)
    foreign_roles = sorted(r for other in layouts for r in other.roles if r not in layout.roles)
    assert elsewhere and foreign_roles, "the shipped layouts should have placements and roles of their own"
    many = tuple(sorted(layout.placements)[: tokenizer.max_holds + 1])
    return {
        "unknown_layout": good._replace(layout=len(layouts)),
        "placement": good._replace(placements=(max(everywhere) + 1, *good.placements[1:])),
        "placement of another layout": good._replace(placements=(elsewhere[0], *good.placements[1:])),
        "role": good._replace(roles=(max(foreign_roles) + 1, *good.roles[1:])),
        "role of another board": good._replace(roles=(foreign_roles[0], *good.roles[1:])),
        "angle": good._replace(angle=next(a for a in range(1, 90) if a not in layout.angles)),
        "repeated": good._replace(placements=(good.placements[1], *good.placements[1:])),
        "no_holds": good._replace(placements=(0,) * len(good.placements), roles=(0,) * len(good.roles)),
        "too_many_holds": good._replace(placements=many, roles=(layout.role_ids["middle"],) * len(many)),
    }


BITS = {
    "unknown_layout": model_io.PROBLEM_BITS["unknown_layout"],
    "placement": model_io.PROBLEM_BITS["placement"],
    "placement of another layout": model_io.PROBLEM_BITS["placement"],
    "role": model_io.PROBLEM_BITS["role"],
    "role of another board": model_io.PROBLEM_BITS["role"],
    "angle": model_io.PROBLEM_BITS["angle"],
    "repeated": model_io.PROBLEM_BITS["repeated"],
    "no_holds": model_io.PROBLEM_BITS["no_holds"],
    "too_many_holds": model_io.PROBLEM_BITS["too_many_holds"],
}


def test_problem_bits_are_distinct_and_described():
    bits = list(model_io.PROBLEM_BITS.values())
    assert all(b > 0 and b & (b - 1) == 0 for b in bits) and len(set(bits)) == len(bits)
    assert model_io.describe_problems(0) == "none"
    assert model_io.describe_problems(2 | 16) == "placement, repeated"
    assert model_io.describe_problems(sum(bits)).split(", ") == [n.replace("_", " ") for n in model_io.PROBLEM_BITS]


@pytest.mark.parametrize("case", sorted(BITS))
@pytest.mark.parametrize("board", ["kilter", "tension"])
def test_the_graph_flags_each_problem_and_grades_the_rest_of_its_batch(graph, case, board):
    """A plain onnxruntime client: a bad route sets its own bit; a good route beside it is graded as alone."""
    _, tokenizer, run, batch_free = graph
    good = example_ids(tokenizer, board)
    alone = run(model_io.route_feeds([good]))
    assert alone[model_io.PROBLEMS].tolist() == [0]
    bad = bad_routes(tokenizer, good)[case]
    for batch in ([good, bad], [bad, good]):
        out = run(model_io.route_feeds(batch))
        problems = out[model_io.PROBLEMS].tolist()
        flagged = problems[batch.index(bad)]
        if case == "unknown_layout":  # no placement is on a layout that is not there: those are flagged too
            assert flagged & BITS[case] and not flagged & ~(BITS[case] | model_io.PROBLEM_BITS["placement"])
        else:
            assert flagged == BITS[case], (case, model_io.describe_problems(flagged))
        row = batch.index(good)
        assert problems[row] == 0
        for name in (model_io.DIFFICULTY, model_io.LOW, model_io.HIGH):
            assert np.isfinite(out[name]).all()  # the graph never indexes out of range, whatever it is sent
            if batch_free:
                assert out[name][row] == pytest.approx(alone[name][0], abs=1e-5), name


def test_the_longest_route_the_sidecar_allows_has_no_problem(graph):
    _, tokenizer, run, _ = graph
    layout = tokenizer.layouts[("kilter", 1)]
    longest = tokenizer.ids(
        tokenizer.resolve(
            Route("kilter", 1, 40, tuple((pid, "middle") for pid in sorted(layout.placements)[: tokenizer.max_holds]))
        )
    )
    out = run(model_io.route_feeds([longest]))
    assert out[model_io.PROBLEMS].tolist() == [0] and np.isfinite(out[model_io.DIFFICULTY]).all()


def test_holds_in_any_order_and_padded_with_zeros_grade_the_same(graph):
    path, tokenizer, run, batch_free = graph
    good = example_ids(tokenizer, "kilter")
    alone = run(model_io.route_feeds([good]))
    assert (
        alone[model_io.DIFFICULTY][0]
        == GradePredictor.load(path)
        .predict(next(r for r in EXAMPLE_ROUTES if r["board"] == "kilter" and len(r.get("frames", "")) > 20))
        .difficulty
    )  # the host's answer is the graph's, bit for bit
    rng = np.random.default_rng(0)
    routes = []
    for _ in range(6):
        order = rng.permutation(len(good.placements))
        routes.append(
            good._replace(
                placements=tuple(good.placements[i] for i in order), roles=tuple(good.roles[i] for i in order)
            )
        )
    assert len({r.placements for r in routes}) > 1
    same_width = run(model_io.route_feeds(routes))
    assert same_width[model_io.PROBLEMS].tolist() == [0] * len(routes)
    assert (same_width[model_io.DIFFICULTY] == same_width[model_io.DIFFICULTY][0]).all()  # the order is the graph's
    if batch_free:
        assert same_width[model_io.DIFFICULTY][0] == alone[model_io.DIFFICULTY][0]
    for extra in (1, 5, 30):
        feeds = model_io.route_feeds(routes)
        zeros = np.zeros((len(routes), extra), dtype=np.int64)
        for name in (model_io.PLACEMENT_ID, model_io.ROLE_ID):
            feeds[name] = np.concatenate([zeros[:, : extra // 2], feeds[name], zeros[:, extra // 2 :]], axis=1)
        padded = run(feeds)
        assert padded[model_io.PROBLEMS].tolist() == [0] * len(routes)
        if batch_free:
            assert padded[model_io.DIFFICULTY] == pytest.approx(alone[model_io.DIFFICULTY][0], abs=1e-5)


def grow_sidecar(what: str):
    """A sidecar change the host accepts and the graph's tables do not know: its routes come back with problems."""

    def change(data):
        layout = next(d for d in data["layouts"] if (d["board"], d["layout_id"]) == ("kilter", 1))
        if what == "angle":
            layout["angles"] = sorted(layout["angles"] + [next(a for a in range(1, 90) if a not in layout["angles"])])
        else:
            placements = layout["placements"]
            placements[str(max(map(int, placements)) + 1)] = list(next(iter(placements.values())))

    return change


@pytest.mark.parametrize("what", ["angle", "placement"])
def test_a_sidecar_that_accepts_what_its_graph_refuses_is_a_mismatched_pair(pair, what):
    edit_sidecar(pair, grow_sidecar(what))
    predictor = GradePredictor.load(pair)
    predictor.warm_up()  # the pair's metadata agree: only a route shows the mismatch
    layout = predictor.tokenizer.layouts[("kilter", 1)]
    ordinary = [(pid, "middle") for pid in sorted(layout.placements)[:3]]
    known = next(a for a in layout.angles if f"<ANGLE_{a}>" in predictor.tokenizer.index)
    route = Route("kilter", 1, known, tuple(ordinary))
    assert isinstance(predictor.predict(route), Prediction)  # what both know still grades
    if what == "angle":
        new = next(a for a in layout.angles if f"<ANGLE_{a}>" not in predictor.tokenizer.index)
        odd = Route("kilter", 1, new, tuple(ordinary))
    else:
        odd = Route("kilter", 1, known, (*ordinary, (max(layout.placements), "middle")))
    message = f"model {pair} refuses routes its sidecar accepts ({what}): the pair does not match; re-export both with cg-export"
    with pytest.raises(ModelError) as caught:
        predictor.predict(odd)
    assert str(caught.value) == message
    with pytest.raises(ModelError):
        predictor.predict_many([route, odd])


def test_cg_infer_reports_a_pair_its_routes_show_mismatched_in_one_line(pair, tmp_path):
    edit_sidecar(pair, grow_sidecar("angle"))
    tokenizer = Sidecar.load(sidecar_path(pair)).tokenizer
    layout = tokenizer.layouts[("kilter", 1)]
    new = next(a for a in layout.angles if f"<ANGLE_{a}>" not in tokenizer.index)  # the angle only the sidecar has
    route = Route("kilter", 1, new, tuple((pid, "middle") for pid in sorted(layout.placements)[:3]))
    (tmp_path / "r.json").write_text(json.dumps(route_json(route)))
    result = run_script("cg-infer", str(tmp_path / "r.json"), "--model", str(pair), check=False)
    message = f"model {pair} refuses routes its sidecar accepts (angle): the pair does not match; re-export both with cg-export"
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines() == [f"error: {message}"]
    assert result.returncode == 2


def route_json(route: Route) -> dict:
    return {
        "board": route.board,
        "layout_id": route.layout_id,
        "angle": route.angle,
        "holds": [{"placement_id": pid, "role": role} for pid, role in route.holds],
    }
