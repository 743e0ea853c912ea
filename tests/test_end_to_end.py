"""Through the console scripts: cg-train -> cg-export --opset 17 -> cg-infer equals PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx

from climbgrade_runtime import model_io
from climbgrade_runtime.metrics import METRIC_NAMES
from climbgrade_runtime.model_io import INPUTS
from climbgrade_runtime.routes import parse_route
from climbgrade_runtime.session import create_session
from climbgrade_runtime.sidecar import Sidecar, file_sha256
from climbgrade_runtime.tokenizer import RouteIds

from conftest import run_script
from test_parity import pipeline_grader, route_dicts, torch_outputs


def test_cg_infer_equals_pytorch(pipeline, tmp_path):
    routes = route_dicts(pipeline.databases, 40)
    route_file = tmp_path / "routes.json"
    route_file.write_text(json.dumps(routes))
    out = run_script("cg-infer", str(route_file), "--model", str(pipeline.model), "--format", "json", check=False)
    answers = json.loads(out.stdout)
    good = [a for a in answers if "error" not in a]
    assert len(good) >= 35 and out.returncode == (2 if len(good) < len(answers) else 0)
    sidecar = Sidecar.load(f"{pipeline.model}.json")
    grader = pipeline_grader(pipeline)
    for answer in good:
        route = routes[answer["index"]]
        assert answer["id"] == route["id"]
        ids = sidecar.tokenizer.ids(sidecar.tokenizer.resolve(parse_route(route)))
        reference = float(torch_outputs(grader, model_io.route_feeds([ids]))[model_io.DIFFICULTY][0])
        assert abs(answer["difficulty"] - reference) <= 1e-4
        grade = sidecar.grades.grade(reference)
        assert (answer["font"], answer["v_grade"]) == (grade.font, grade.v)


def test_table_output_for_one_route(fake_pipeline, tmp_path):
    route = route_dicts(fake_pipeline.databases, 1)[0]
    (tmp_path / "one.json").write_text(json.dumps(route))
    out = run_script("cg-infer", str(tmp_path / "one.json"), "--model", str(fake_pipeline.model))
    as_json = json.loads(
        run_script(
            "cg-infer", str(tmp_path / "one.json"), "--model", str(fake_pipeline.model), "--format", "json"
        ).stdout
    )
    header, row = out.stdout.splitlines()
    assert header.split() == ["#", "route", "board", "layout", "angle", "difficulty", "font", "V", "notes"]
    assert row.split()[:8] == [
        "0",
        route["id"],
        route["board"],
        str(route["layout_id"]),
        str(route["angle"]),
        f"{as_json['difficulty']:.1f}",
        as_json["font"],
        as_json["v_grade"],
    ]


def test_export_files(pipeline):
    proto = onnx.load(str(pipeline.model))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    for tensor in proto.graph.input:
        assert all(d.dim_param for d in tensor.type.tensor_type.shape.dim), tensor.name  # batch and hold axes
    assert [i.name for i in proto.graph.input] == [n for n, _ in INPUTS]
    assert not list(pipeline.model.parent.glob("*.data")), "weights must be inside the .onnx file"
    sidecar = pipeline.sidecar
    assert sidecar["format_version"] == model_io.MODEL_FORMAT == 2
    assert sidecar["model"]["sha256"] == file_sha256(pipeline.model)
    assert sidecar["model"]["opset"] == 17
    assert [(i["name"], i["dtype"]) for i in sidecar["model"]["inputs"]] == list(INPUTS)
    outputs = [o["name"] for o in sidecar["model"]["outputs"]]
    assert outputs == [o.name for o in proto.graph.output] and outputs[-1] == model_io.PROBLEMS
    # the model's `layout` input is a position in the top-level layouts; the tokenizer no longer holds them
    layouts = sidecar["layouts"]
    assert {lay["board"] for lay in layouts} == {"kilter", "tension"} and all(lay["placements"] for lay in layouts)
    if pipeline.source == "fake":
        assert [(lay["board"], lay["layout_id"]) for lay in layouts] == [("kilter", 1), ("tension", 11)]
    assert "layouts" not in sidecar["tokenizer"] and sidecar["tokenizer"]["vocab"][:3] == ["<PAD>", "<UNK>", "<CLS>"]
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    assert meta[model_io.META_FORMAT] == "2" and meta[model_io.META_OPSET] == "17"
    assert meta[model_io.META_LAYOUTS] == str(len(layouts))
    assert meta[model_io.META_VOCAB_SIZE] == str(len(sidecar["tokenizer"]["vocab"]))
    assert meta[model_io.META_MAX_LEN] == str(sidecar["tokenizer"]["max_len"])
    assert meta[model_io.META_FEATURES] == str(len(sidecar["tokenizer"]["features"]))
    assert set(sidecar["metrics"]["test"]["all"]) >= set(METRIC_NAMES)
    assert sidecar["data"]["rows"] > 0 and sidecar["data"]["split"]["seed"] == 0
    assert set(sidecar["versions"]) >= {"torch", "onnx", "onnxruntime"}


def test_every_hold_count_runs(fake_pipeline):
    """1..max_holds holds and several batch sizes all run (nothing baked in at the export example's shape),
    holds in any order; ids no layout has come back flagged in `problems`, never as a crash."""
    sidecar = Sidecar.load(f"{fake_pipeline.model}.json")
    tokenizer = sidecar.tokenizer
    session = create_session(fake_pipeline.model)
    names = [n for n, _ in sidecar.outputs]
    rng = np.random.default_rng(0)
    for key, layout in tokenizer.layouts.items():
        placements, role_ids = sorted(layout.placements), sorted(layout.roles)
        for holds in range(1, tokenizer.max_holds + 1):
            for batch in (1, 3):
                rows = [
                    RouteIds(
                        tokenizer.layout_index[key],
                        int(rng.choice(layout.angles)),
                        tuple(int(p) for p in rng.choice(placements, holds, replace=False)),
                        tuple(int(r) for r in rng.choice(role_ids, holds)),
                    )
                    for _ in range(batch)
                ]
                found = dict(zip(names, session.run(names, model_io.route_feeds(rows))))
                assert found[model_io.DIFFICULTY].shape == (batch,) and np.all(np.isfinite(found[model_io.DIFFICULTY]))
                assert found[model_io.PROBLEMS].tolist() == [0] * batch
    garbage = {
        model_io.LAYOUT: rng.integers(-5, 5, 6),
        model_io.ANGLE: rng.integers(-100, 100, 6),
        model_io.PLACEMENT_ID: rng.integers(-(2**40), 2**40, (6, 4)),
        model_io.ROLE_ID: rng.integers(-(2**40), 2**40, (6, 4)),
    }
    found = dict(zip(names, session.run(names, garbage)))
    assert found[model_io.DIFFICULTY].shape == (6,) and np.all(found[model_io.PROBLEMS] > 0)
