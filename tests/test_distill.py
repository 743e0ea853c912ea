"""Distillation (cg-train --teacher), the calibrated interval, and the export-friendly encoder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from climbgrade_runtime import GradePredictor, Prediction, model_io
from climbgrade_runtime.routes import parse_route
from climbgrade_train.calibration import fit_interval_scale
from climbgrade_train.checkpoints import load_checkpoint
from climbgrade_train.config import TrainConfig
from climbgrade_train.dataset import encode_rows
from climbgrade_train.distill import LABELS_FILE, extra_rows
from climbgrade_train.encoder import Encoder
from climbgrade_train.features import RouteEncoder
from climbgrade_train.grader import Grader
from climbgrade_train.model import GradeModel, ModelConfig, quantiles
from climbgrade_train.objective import distilled_targets
from climbgrade_train.run_folder import prepare_run, read_tokenizer

from conftest import SHIPPED_FEATURES, TINY_MODEL, run_script
from test_parity import route_dicts, torch_reference, usable

TOLERANCE = 1e-4


@dataclass(frozen=True)
class Distilled:
    databases: tuple[str, ...]
    teacher: Path
    student: Path
    model: Path


def _db_args(databases: tuple[str, ...]) -> list[str]:
    return [arg for db in databases for arg in ("--db", db)]


@pytest.fixture(scope="module")
def distilled(fake_dbs, tmp_path_factory) -> Distilled:
    """A 2-network bins teacher, a student distilled from it on every angle and mirror, calibrated, exported."""
    tmp = tmp_path_factory.mktemp("distill")
    common = [*_db_args(fake_dbs), "--batch-size", "128", *TINY_MODEL, *SHIPPED_FEATURES, "--head", "bins"]
    run_script("cg-train", *common, "--out", str(tmp / "teacher"), "--epochs", "2", "--members", "2")
    student = [*common, "--epochs", "2", "--teacher", str(tmp / "teacher"), "--teacher-angles", "--teacher-mirrors"]
    run_script("cg-train", *student, "--calibrate", "--out", str(tmp / "student"))
    out = run_script("cg-export", str(tmp / "student"), "--opset", "17", "--out", str(tmp / "exports"), "--name", "s")
    return Distilled(fake_dbs, tmp / "teacher", tmp / "student", Path(out.stdout.strip().splitlines()[-1]))


def test_teacher_labels_every_training_climb_at_every_angle_and_mirrored_and_nothing_else(distilled):
    config = TrainConfig.from_dict(json.loads((distilled.student / "run.json").read_text())["config"])
    run = prepare_run(config, distilled.student, resume=True)
    train = run.sets["train"]
    extra = extra_rows(train, run.tokenizer, angles=True, mirrors=True)
    held_out = {e.uuid for name in ("val", "test") for e in run.sets[name].examples}
    assert held_out and not held_out & {e.uuid for e in extra.examples}
    seen = {(e.uuid, e.angle) for e in train.examples}
    for example in {e.uuid: e for e in train.examples}.values():
        at = {(e.angle, e.route.holds) for e in extra.examples if e.uuid == example.uuid}
        angles = {a for a, holds in at if holds == example.route.holds}
        assert angles == {a for a in example.route.layout.angles if (example.uuid, a) not in seen}
        mirrored = example.route.mirrored()
        if mirrored is not None and mirrored.holds != example.route.holds:
            assert {a for a, holds in at if holds == mirrored.holds} == set(example.route.layout.angles)
    assert any(e.route.mirrored() is not None for e in train.examples), "the fake TB2 layout has mirrors"
    assert np.isnan(extra.targets).all()
    # each extra row is that route at that angle, encoded as the graph encodes it on its own
    encoder = RouteEncoder(run.tokenizer)
    for i in range(0, len(extra), max(1, len(extra) // 50)):
        example, row = extra.examples[i], extra.rows[i]
        assert row == run.tokenizer.ids(example.route) and row.angle == example.angle
        (fresh,) = encode_rows(encoder, [row])
        assert np.array_equal(fresh.ids, extra.encoded[i].ids) and np.array_equal(fresh.coords, extra.encoded[i].coords)
        assert fresh.ids[2] == run.tokenizer.angle_ids[example.angle]
        assert np.all(fresh.coords[:, run.tokenizer.features.index("angle")] == np.float32(example.angle / 90))
    labels = np.load(distilled.student / LABELS_FILE)["distributions"]
    assert labels.shape == (len(train) + len(extra), load_checkpoint(distilled.teacher / "best.pt").config.bins)
    assert np.allclose(labels.sum(axis=1), 1.0, atol=1e-5)


def test_distilled_targets_mix_teacher_and_grade_and_take_the_teacher_alone_where_no_grade():
    config = TrainConfig().replace(head="bins", teacher="t", teacher_weight=0.25)
    centres = torch.arange(10.0, 14.0)
    teacher = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    targets = distilled_targets(config, torch.tensor([12.0, float("nan")]), teacher, centres)
    assert torch.allclose(targets[0], 0.25 * teacher[0] + 0.75 * torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert torch.equal(targets[1], teacher[1])


def test_student_exports_an_interval_that_matches_pytorch_at_every_batch_size(distilled):
    predictor = GradePredictor.load(distilled.model)
    model = load_checkpoint(distilled.student / "best.pt")
    assert model.has_interval and predictor.sidecar.training["model_config"]["interval_scale"] > 0
    routes = usable(predictor, route_dicts(distilled.databases, 400))
    rows = [predictor.tokenizer.ids(predictor.tokenizer.resolve(parse_route(r))) for r in routes]
    assert len({len(row.placements) for row in rows}) > 5, "the routes must cover many hold counts"
    outputs = torch_reference(Grader(model, read_tokenizer(distilled.student)).eval(), rows, chunk=64)
    assert not outputs[model_io.PROBLEMS].any()
    reference = np.stack([outputs[name] for name in (model_io.DIFFICULTY, model_io.LOW, model_io.HIGH)], axis=1)
    for size in (1, 7, 128):
        results = predictor.predict_many(routes, batch_size=size)
        assert all(isinstance(r, Prediction) for r in results)
        found = np.array([[r.difficulty, r.low, r.high] for r in results if isinstance(r, Prediction)])
        assert np.max(np.abs(found - reference)) <= TOLERANCE
        assert np.all(found[:, 1] <= found[:, 0]) and np.all(found[:, 0] <= found[:, 2])
        assert np.all(found[:, 2] > found[:, 1])


def test_calibration_holds_80_percent_of_validation_grades(distilled):
    metrics = json.loads((distilled.student / "metrics.json").read_text())
    assert metrics["calibration"]["interval_scale"] > 0
    val = metrics["val_interval"]["rows"]["all"]
    assert val["count"] == metrics["val"]["all"]["count"]
    assert abs(val["coverage"] - 0.8) <= 0.03 and val["mean_width"] > 0
    test = metrics["test_interval"]
    assert set(test["rows"]) == set(metrics["test"]) and "rows_with_5_ascents" in test
    assert 0 < test["rows"]["all"]["coverage"] <= 1


def test_fit_interval_scale_reaches_the_coverage_asked():
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(12, 28, 5000)
    targets = difficulty + rng.normal(0, 2, 5000)
    low, high = difficulty - 1.0, difficulty + 1.0  # a unit interval: the scale must widen it to ~1.28 sigma
    scale = fit_interval_scale(difficulty, low, high, targets)
    assert scale == pytest.approx(2 * 1.2816, rel=0.05)
    inside = (difficulty - scale <= targets) & (targets <= difficulty + scale)
    assert inside.mean() == pytest.approx(0.8, abs=0.002)


def test_quantile_of_bins_matches_a_piecewise_uniform_distribution():
    rng = np.random.default_rng(1)
    probs = torch.from_numpy(rng.dirichlet(np.ones(12), size=20)).float()
    found_all = quantiles(probs, (0.1, 0.5, 0.9), bin_low=10.0).numpy()
    for column, q in enumerate((0.1, 0.5, 0.9)):
        for row, value in zip(probs.numpy(), found_all[:, column]):
            # bin i covers [9.5 + i, 10.5 + i] evenly: the cdf at `value` must be q
            i = int(np.floor(value - 9.5))
            cdf = row[:i].sum() + row[i] * (value - 9.5 - i)
            assert cdf == pytest.approx(q, abs=1e-5)


def test_bad_distillation_options_are_refused_in_one_line(distilled, tmp_path):
    common = [*_db_args(distilled.databases), *TINY_MODEL, *SHIPPED_FEATURES, "--head", "bins"]
    cases = [
        (["--teacher", str(distilled.teacher), "--seed", "1"], "may have trained on this run's validation or test"),
        (["--teacher", str(distilled.student / "nowhere")], "is not a finished cg-train run"),
        (["--teacher-angles"], "give --teacher RUN"),
        (["--calibrate", "--refit"], "--calibrate chooses the shrink and interval on validation"),
        (["--teacher", str(distilled.teacher), "--features", "x,y,is_hold"], "other --features"),
    ]
    for extra, message in cases:
        result = run_script("cg-train", *common, "--out", str(tmp_path / "r"), *extra, check=False)
        last = result.stderr.strip().splitlines()[-1]  # after the data reader's counts of skipped rows
        assert result.returncode == 2 and last.startswith("error: ") and message in last, (extra, result.stderr)
        assert "Traceback" not in result.stderr
    value = tmp_path / "value"
    run_script("cg-train", *common[:-2], "--out", str(value), "--epochs", "1")  # a value-head run
    result = run_script("cg-train", *common, "--out", str(tmp_path / "r"), "--teacher", str(value), check=False)
    assert result.returncode == 2 and "distillation needs --head bins" in result.stderr


def test_encoder_computes_what_torch_transformer_encoder_computes():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, 0.1, activation="gelu", batch_first=True, norm_first=True)
    reference = nn.TransformerEncoder(layer, 3, norm=nn.LayerNorm(32), enable_nested_tensor=False).eval()
    ours = Encoder(32, 4, 64, 0.1, 3).eval()
    ours.load_state_dict(reference.state_dict())  # the same parameter names: old checkpoints load
    x = torch.randn(5, 11, 32)
    padding = torch.zeros(5, 11, dtype=torch.bool)
    padding[1:, 7:] = True
    padding[3, 2:] = True
    with torch.no_grad():
        expected, found = reference(x, src_key_padding_mask=padding), ours(x, padding)
    assert torch.allclose(expected[~padding], found[~padding], atol=1e-5)


def test_exported_graph_has_no_sequence_first_transposes(distilled):
    graph = onnx.load(str(distilled.model)).graph
    transposes = [n for n in graph.node if n.op_type == "Transpose"]
    perms = [list(next(a.ints for a in n.attribute if a.name == "perm")) for n in transposes]
    # no transpose moves a tensor's second axis ahead of its first, as nn.TransformerEncoderLayer's
    # sequence-first [1, 0, 2] does: the head split and merge keep the batch ahead of everything after it
    assert perms and all(p.index(0) < p.index(1) for p in perms), perms
    assert [o.name for o in graph.output] == ["difficulty", "low", "high", "problems"]


def test_a_model_without_interval_keeps_one_output():
    config = ModelConfig(vocab_size=20, max_len=8, head="bins", bins=5, bin_low=10.0)
    model = GradeModel(config).eval()
    ids = torch.randint(3, 20, (2, 6))
    outputs = model.outputs(ids, torch.zeros(2, 6, 3), torch.zeros(2, 6, dtype=torch.bool))
    assert len(outputs) == 1 and not model.has_interval
