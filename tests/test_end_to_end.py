"""Through the console scripts: cg-train -> cg-export --opset 17 -> cg-infer equals PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from climbgrade_runtime import model_io
from climbgrade_runtime.metrics import METRIC_NAMES
from climbgrade_runtime.model_io import INPUTS
from climbgrade_runtime.routes import parse_route
from climbgrade_runtime.session import create_session
from climbgrade_runtime.sidecar import Sidecar
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
    assert header.split() == ["#", "route", "board", "layout", "angle", "difficulty", "range", "font", "V", "notes"]
    assert row.split()[:9] == [
        "0",
        route["id"],
        route["board"],
        str(route["layout_id"]),
        str(route["angle"]),
        f"{as_json['difficulty']:.1f}",
        f"{as_json['low']:.1f}-{as_json['high']:.1f}",
        as_json["font"],
        as_json["v_grade"],
    ]


def test_the_exported_pair_alone_is_everything_an_app_needs(pipeline, tmp_path):
    """The two files cg-export wrote, copied anywhere, grade with cg-infer; a plain onnxruntime session
    (no climbgrade code) sees the contract's inputs with symbolic batch and hold axes and opset 17;
    the sidecar's metrics and data summary are the run's."""
    import onnxruntime

    moved = tmp_path / "elsewhere" / "model.onnx"
    moved.parent.mkdir()
    moved.write_bytes(pipeline.model.read_bytes())
    Path(f"{moved}.json").write_bytes(Path(f"{pipeline.model}.json").read_bytes())
    route = route_dicts(pipeline.databases, 1)[0]
    (tmp_path / "one.json").write_text(json.dumps(route))
    here = json.loads(
        run_script("cg-infer", str(tmp_path / "one.json"), "--model", str(moved), "--format", "json").stdout
    )
    there = run_script("cg-infer", str(tmp_path / "one.json"), "--model", str(pipeline.model), "--format", "json")
    assert here == json.loads(there.stdout)
    session = onnxruntime.InferenceSession(str(moved), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [(n, f"tensor({t})") for n, t in INPUTS]
    assert all(isinstance(d, str) for i in session.get_inputs() for d in i.shape)  # any batch, any hold count
    assert session.get_modelmeta().custom_metadata_map[model_io.META_OPSET] == "17"
    sidecar = pipeline.sidecar
    metrics = json.loads((pipeline.run_dir / "metrics.json").read_text())
    assert sidecar["metrics"]["test"] == metrics["test"] and set(metrics["test"]["all"]) >= set(METRIC_NAMES)
    assert sidecar["data"]["rows"] == json.loads((pipeline.run_dir / "run.json").read_text())["data"]["rows"] > 0


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
