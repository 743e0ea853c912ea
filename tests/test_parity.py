"""The exported graph (Aurora ids in) through the torch-free runtime must match PyTorch's Grader on the
same feeds: on real routes at every batch size, and on every layout's edge cases at several hold counts."""

from __future__ import annotations

import itertools
import json
import random
import sqlite3

import numpy as np
import pytest
import torch

from climbgrade_runtime import GradePredictor, Prediction, model_io
from climbgrade_runtime.routes import parse_route
from climbgrade_runtime.session import create_session
from climbgrade_runtime.tokenizer import RouteIds
from climbgrade_train.checkpoints import load_checkpoint
from climbgrade_train.export import edge_cases
from climbgrade_train.grader import Grader
from climbgrade_train.run_folder import read_tokenizer

from conftest import Pipeline

TOLERANCE = 1e-4
BATCH_SIZES = (1, 7, 128)


def pipeline_grader(pipeline: Pipeline) -> Grader:
    """The run's network behind its RouteEncoder, in PyTorch: what cg-export traced."""
    return Grader(load_checkpoint(pipeline.run_dir / "best.pt"), read_tokenizer(pipeline.run_dir)).eval()


def torch_outputs(grader: Grader, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The Grader's outputs on model_io feeds, by output name."""
    with torch.no_grad():
        found = grader(*(torch.from_numpy(feeds[name]) for name, _ in model_io.INPUTS))
    return {name: value.numpy() for (name, _), value in zip(grader.output_names, found)}


def torch_reference(grader: Grader, rows: list[RouteIds], chunk: int = 50) -> dict[str, np.ndarray]:
    """torch_outputs for many rows, in chunks of `chunk` (its own padding, not the runtime's)."""
    parts = [torch_outputs(grader, model_io.route_feeds(rows[i : i + chunk])) for i in range(0, len(rows), chunk)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


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


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_runtime_matches_pytorch(pipeline, batch_size):
    predictor = GradePredictor.load(pipeline.model)
    grader = pipeline_grader(pipeline)
    routes = usable(predictor, route_dicts(pipeline.databases, 700))
    assert len(routes) >= 500

    results = predictor.predict_many(routes, batch_size=batch_size)
    ours = np.array([r.difficulty for r in results if isinstance(r, Prediction)])
    assert len(ours) == len(routes)
    rows = [predictor.tokenizer.ids(predictor.tokenizer.resolve(parse_route(r))) for r in routes]
    reference = torch_reference(grader, rows)

    assert len({len(row.placements) for row in rows}) > 5, "the routes must cover many hold counts"
    assert [r.index for r in results] == list(range(len(routes)))
    assert not reference[model_io.PROBLEMS].any()
    assert np.max(np.abs(ours - reference[model_io.DIFFICULTY])) <= TOLERANCE


def edge_batches(cases: list[RouteIds], batch_size: int) -> list[list[RouteIds]]:
    """Per hold count of the cases, `batch_size` rows cycling through the cases no longer than it
    (so each batch is padded to that count); with batch size 1, each case alone."""
    if batch_size == 1:
        return [[case] for case in cases]
    widths = sorted({len(case.placements) for case in cases})
    return [
        list(itertools.islice(itertools.cycle([c for c in cases if len(c.placements) <= w]), batch_size))
        for w in widths
    ]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_edge_cases_match_pytorch(pipeline, batch_size):
    """One hold, two, feet only, no start or finish, the longest route listed top to bottom: every layout's,
    mixed in one batch, at several padded hold counts, graded alike by onnxruntime and PyTorch."""
    grader, tokenizer = pipeline_grader(pipeline), read_tokenizer(pipeline.run_dir)
    session = create_session(pipeline.model)
    names = [name for name, _ in grader.output_names]
    cases = [case for layout in edge_cases(tokenizer).values() for case in layout]
    assert len(tokenizer.layouts) >= 2 and {case.layout for case in cases} == set(range(len(tokenizer.layouts)))
    batches = edge_batches(cases, batch_size)
    widths = {max(len(row.placements) for row in batch) for batch in batches}
    assert len(widths) >= 4 and max(widths) == tokenizer.max_holds
    for batch in batches:
        feeds = model_io.route_feeds(batch)
        found = dict(zip(names, session.run(names, feeds)))
        expected = torch_outputs(grader, feeds)
        assert len(found[model_io.DIFFICULTY]) == len(batch)
        assert np.array_equal(found[model_io.PROBLEMS], expected[model_io.PROBLEMS])
        assert not found[model_io.PROBLEMS].any(), "edge cases are valid routes"
        for name in names:
            assert np.all(np.isfinite(found[name]))
            assert np.max(np.abs(found[name] - expected[name])) <= TOLERANCE, (name, feeds[model_io.PLACEMENT_ID].shape)


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
