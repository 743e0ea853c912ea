"""Through the console scripts: cg-train -> cg-export --opset 17 -> cg-infer equals PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx

from climbgrade_runtime.metrics import METRIC_NAMES
from climbgrade_runtime.model_io import INPUTS, pad_batch
from climbgrade_runtime.routes import parse_route
from climbgrade_runtime.session import create_session
from climbgrade_runtime.sidecar import Sidecar, file_sha256
from climbgrade_train.checkpoints import load_checkpoint
from climbgrade_train.predict import torch_predict

from conftest import run_script
from test_parity import route_dicts


def test_cg_infer_equals_pytorch(pipeline, tmp_path):
    routes = route_dicts(pipeline.databases, 40)
    route_file = tmp_path / "routes.json"
    route_file.write_text(json.dumps(routes))
    out = run_script("cg-infer", str(route_file), "--model", str(pipeline.model), "--format", "json", check=False)
    answers = json.loads(out.stdout)
    good = [a for a in answers if "error" not in a]
    assert len(good) >= 35 and out.returncode == (2 if len(good) < len(answers) else 0)
    sidecar = Sidecar.load(f"{pipeline.model}.json")
    model = load_checkpoint(pipeline.run_dir / "best.pt")
    for answer in good:
        route = routes[answer["index"]]
        assert answer["id"] == route["id"]
        reference = torch_predict(model, pad_batch([sidecar.tokenizer.encode(parse_route(route))]))[0]
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
        assert all(d.dim_param for d in tensor.type.tensor_type.shape.dim[:2]), tensor.name
    assert not list(pipeline.model.parent.glob("*.data")), "weights must be inside the .onnx file"
    sidecar = pipeline.sidecar
    assert sidecar["model"]["sha256"] == file_sha256(pipeline.model)
    assert sidecar["model"]["opset"] == 17
    assert [i["name"] for i in sidecar["model"]["inputs"]] == [n for n, _ in INPUTS]
    assert len(sidecar["tokenizer"]["token_features"]) == len(sidecar["tokenizer"]["vocab"])
    assert set(sidecar["metrics"]["test"]["all"]) >= set(METRIC_NAMES)
    assert sidecar["data"]["rows"] > 0 and sidecar["data"]["split"]["seed"] == 0
    assert set(sidecar["versions"]) >= {"torch", "onnx", "onnxruntime"}


def test_every_sequence_length_runs(fake_pipeline):
    """Lengths 1..max_len and several batch sizes all run (nothing baked in at the example's length)."""
    sidecar = Sidecar.load(f"{fake_pipeline.model}.json")
    session = create_session(fake_pipeline.model)
    rng = np.random.default_rng(0)
    vocab = len(sidecar.tokenizer.vocab)
    for length in range(1, sidecar.tokenizer.max_len + 1):
        for batch in (1, 3):
            feeds = {
                "token_ids": rng.integers(0, vocab, (batch, length)),
                "coords": rng.uniform(-1, 1, (batch, length, sidecar.tokenizer.n_features)).astype(np.float32),
                "attention_mask": np.ones((batch, length), dtype=np.int64),
            }
            (out,) = session.run(None, feeds)
            assert out.shape == (batch,) and np.all(np.isfinite(out))
