"""ONNX through the torch-free runtime must match PyTorch eval on real routes, at every batch size."""

from __future__ import annotations

import json
import random
import sqlite3

import numpy as np
import pytest
import torch

from climbgrade_runtime import GradePredictor, Prediction
from climbgrade_runtime.model_io import pad_batch
from climbgrade_runtime.routes import parse_route
from climbgrade_train.checkpoints import load_checkpoint
from climbgrade_train.predict import torch_predict

TOLERANCE = 1e-4


def route_dicts(databases: tuple[str, ...], limit: int) -> list[dict]:
    """Routes as a user would send them, read straight from the databases with sqlite3."""
    out = []
    for path in databases:
        con = sqlite3.connect(path)
        board = (
            "tension" if "Tension" in con.execute("SELECT group_concat(name) FROM products").fetchone()[0] else "kilter"
        )
        rows = con.execute(
            "SELECT c.uuid, c.layout_id, s.angle, c.frames FROM climbs c JOIN climb_stats s ON s.climb_uuid = c.uuid "
            "WHERE c.frames_count = 1 AND c.is_listed = 1 AND c.is_draft = 0 AND c.uuid NOT LIKE 'DEFECT%' "
            "ORDER BY c.uuid, s.angle"
        ).fetchall()
        out += [{"board": board, "layout_id": lay, "angle": a, "frames": fr, "id": u} for u, lay, a, fr in rows]
    random.Random(0).shuffle(out)
    return out[:limit]


def usable(predictor: GradePredictor, routes: list[dict]) -> list[dict]:
    """Drop the few real climbs the model refuses (e.g. a placement listed twice), as training did."""
    return [r for r in routes if isinstance(predictor.predict_many([r])[0], Prediction)]


@pytest.mark.parametrize("batch_size", [1, 7, 128])
def test_runtime_matches_pytorch(pipeline, batch_size):
    predictor = GradePredictor.load(pipeline.model)
    model = load_checkpoint(pipeline.run_dir / "best.pt")
    routes = usable(predictor, route_dicts(pipeline.databases, 700))
    assert len(routes) >= 500

    results = predictor.predict_many(routes, batch_size=batch_size)
    ours = np.array([r.difficulty for r in results if isinstance(r, Prediction)])
    assert len(ours) == len(routes)
    encoded = [predictor.tokenizer.encode(parse_route(r)) for r in routes]
    reference = np.concatenate(
        [torch_predict(model, pad_batch(encoded[i : i + 50])) for i in range(0, len(encoded), 50)]
    )

    lengths = {len(e.ids) for e in encoded}
    assert len(lengths) > 5, "the routes must cover many sequence lengths"
    assert [r.index for r in results] == list(range(len(routes)))
    assert np.max(np.abs(ours - reference)) <= TOLERANCE


def test_sidecar_records_export_parity(pipeline):
    training = pipeline.sidecar["training"]
    assert 0 <= training["export_parity_max_abs_diff"] <= TOLERANCE


def test_order_invariance(pipeline):
    predictor = GradePredictor.load(pipeline.model)
    rng = random.Random(3)
    for route in usable(predictor, route_dicts(pipeline.databases, 60)):
        frames = parse_route(route).holds
        shuffled = list(frames)
        rng.shuffle(shuffled)
        as_holds = dict(route, holds=[{"placement_id": p, "role": r} for p, r in shuffled])
        del as_holds["frames"]
        assert predictor.predict(as_holds).difficulty == predictor.predict(route).difficulty


def test_checkpoint_loads_with_weights_only(pipeline):
    for name in ("best.pt", "last.pt"):
        checkpoint = torch.load(pipeline.run_dir / name, weights_only=True)
        assert checkpoint["model_config"]["vocab_size"] == len(
            json.loads((pipeline.run_dir / "tokenizer.json").read_text())["vocab"]
        )
