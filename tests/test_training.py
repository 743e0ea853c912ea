"""cg-train and cg-export behaviour: resumable runs, safe run folders, refusal on parity failure."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import re
import subprocess
from pathlib import Path

import onnx
import onnx.numpy_helper
import pytest
import torch

from climbgrade_runtime import GradePredictor, Prediction
from climbgrade_train.export import ExportValidationError, export_run

from conftest import TINY_MODEL, run_script
from test_parity import route_dicts

EPOCH_ARGS = ["--batch-size", "128", *TINY_MODEL, "--patience", "10"]


def db_args(dbs):
    return [arg for db in dbs for arg in ("--db", db)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "levers",
    [[], ["--ema-decay", "0.9"], ["--members", "3", "--workers", "2", "--ema-decay", "0.9"]],
    ids=["plain", "ema", "workers"],
)
def test_interrupted_run_resumes_to_the_same_model(fake_dbs, tmp_path, levers):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    first = run_script("cg-train", *db_args(fake_dbs), "--out", str(straight), "--epochs", "2", *EPOCH_ARGS, *levers)
    assert ("2 group(s) [[0, 1], [2]]" in first.stderr) == ("--workers" in levers)
    run_script("cg-train", *db_args(fake_dbs), "--out", str(resumed), "--epochs", "1", *EPOCH_ARGS, *levers)
    out = run_script("cg-train", "--out", str(resumed), "--resume", "--epochs", "2")
    assert "resuming" in out.stderr and "epoch 2/2" in out.stderr
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(resumed / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert len(a["groups"]) == (2 if "--workers" in levers else 1)
    for group_a, group_b in zip(a["groups"], b["groups"]):
        if levers:
            assert all(torch.equal(group_a["ema"][k], group_b["ema"][k]) for k in group_a["ema"])
        moments = zip(group_a["optimizer"]["state"].values(), group_b["optimizer"]["state"].values())
        assert all(torch.equal(x["exp_avg"], y["exp_avg"]) for x, y in moments)
    with open(resumed / "history.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]


@pytest.mark.slow
def test_refit_trains_on_train_and_val_and_keeps_the_last_epoch(fake_dbs, fake_pipeline, tmp_path):
    run = tmp_path / "refit"
    out = run_script("cg-train", *db_args(fake_dbs), "--out", str(run), "--epochs", "2", *EPOCH_ARGS, "--refit")
    held_out = json.loads((fake_pipeline.run_dir / "split.json").read_text())
    split = json.loads((run / "split.json").read_text())
    assert split["test"] == held_out["test"] and split["val"] == held_out["val"]  # the same split, val trained on

    def rows(log: str) -> list[int]:
        found = re.search(r"train (\d+), val (\d+), test (\d+) rows", log)
        assert found is not None, log
        return [int(n) for n in found.groups()]

    plain = run_script("cg-train", *db_args(fake_dbs), "--out", str(tmp_path / "plain"), "--epochs", "1", *EPOCH_ARGS)
    (train, val, test), (refit_train, refit_val, refit_test) = rows(plain.stderr), rows(out.stderr)
    assert (refit_train, refit_val, refit_test) == (
        train + val,
        val,
        test,
    ) and "nothing is selected on val" in out.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"best_epoch", "epochs_run", "trained_on", "test"} and metrics["best_epoch"] == 2
    with open(run / "history.csv") as handle:
        assert [(r["epoch"], "val_mae" in r) for r in csv.DictReader(handle)] == [("1", False), ("2", False)]
    best, last = (torch.load(run / name, weights_only=True)["model"] for name in ("best.pt", "last.pt"))
    assert all(torch.equal(best[k], last[k]) for k in last)
    export_run(run, tmp_path / "exports")
    assert json.loads((tmp_path / "exports" / "refit.onnx.json").read_text())["training"]["config"]["refit"] is True


@pytest.mark.slow
def test_train_fraction_trains_on_a_nested_seeded_share_of_the_training_climbs(fake_dbs, fake_pipeline, tmp_path):
    from climbgrade_train.run_folder import training_subset

    run_script(
        "cg-train",
        *db_args(fake_dbs),
        "--out",
        str(tmp_path / "half"),
        "--epochs",
        "1",
        *EPOCH_ARGS,
        "--train-fraction",
        "0.5",
    )
    full = json.loads((fake_pipeline.run_dir / "split.json").read_text())
    half = json.loads((tmp_path / "half" / "split.json").read_text())
    assert half["val"] == full["val"] and half["test"] == full["test"]  # only the training climbs shrink
    assert set(half["train"]) < set(full["train"]) and 0.3 < len(half["train"]) / len(full["train"]) < 0.7
    quarter = training_subset(full["train"], 0.25, seed=0)
    assert set(quarter) < set(half["train"]) and training_subset(full["train"], 1.0, seed=0) == full["train"]
    assert training_subset(full["train"], 0.5, seed=1) != half["train"]  # seeded


def test_run_outputs(fake_pipeline):
    run = fake_pipeline.run_dir
    for name in (
        "best.pt",
        "last.pt",
        "run.json",
        "tokenizer.json",
        "grades.json",
        "split.json",
        "history.csv",
        "test_predictions.csv",
        "metrics.json",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) == {"all", "kilter", "tension"}
    split = json.loads((run / "split.json").read_text())
    with open(run / "test_predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["uuid"] for r in rows} == set(split["test"])
    assert len(rows) == metrics["test"]["all"]["count"]


@pytest.mark.slow
def test_existing_run_is_never_overwritten(fake_pipeline, fake_dbs):
    before = (fake_pipeline.run_dir / "last.pt").read_bytes()
    result = run_script("cg-train", *db_args(fake_dbs), "--out", str(fake_pipeline.run_dir), check=False)
    assert result.returncode == 2 and "pass --resume" in result.stderr and "Traceback" not in result.stderr
    assert (fake_pipeline.run_dir / "last.pt").read_bytes() == before


@pytest.mark.slow
def test_cg_train_without_database(tmp_path, monkeypatch):
    monkeypatch.delenv("CLIMBGRADE_DATA", raising=False)
    result = run_script("cg-train", "--out", str(tmp_path / "r"), check=False)
    assert result.returncode == 2 and "no database given" in result.stderr


@pytest.mark.slow
def test_export_refuses_when_onnxruntime_disagrees(fake_pipeline, tmp_path):
    with pytest.raises(ExportValidationError) as caught:
        export_run(fake_pipeline.run_dir, tmp_path, tolerance=-1.0)  # every batch "mismatches"
    assert len(caught.value.mismatches) >= 3  # batches of 1, 7 and up to 128 validation routes, every one listed
    assert (
        "size 1," in str(caught.value) and "size 7," in str(caught.value) and "Nothing was written" in str(caught.value)
    )
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cg_export_rejects_a_folder_that_is_not_a_run(tmp_path):
    result = run_script("cg-export", str(tmp_path), "--out", str(tmp_path / "x"), check=False)
    assert result.returncode == 2 and "not a finished cg-train run" in result.stderr


@pytest.mark.slow
def test_resume_keeps_the_runs_options(fake_pipeline):
    result = run_script("cg-train", "--out", str(fake_pipeline.run_dir), "--resume", "--lr", "0.1", check=False)
    assert result.returncode == 2 and "drop --lr" in result.stderr
    result = run_script("cg-train", "--out", str(fake_pipeline.run_dir.parent / "nothing"), "--resume", check=False)
    assert result.returncode == 2 and "holds no run to resume" in result.stderr


def export_int8(run_dir: Path, out: Path, max_drop: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """cg-export the run as out/q.onnx and its int8 twin, allowed to lose `max_drop` points of within-1-V."""
    args = [str(run_dir), "--out", str(out), "--name", "q", "--quantize", "int8", "--int8-max-drop", max_drop]
    return run_script("cg-export", *args, check=check)


def tensor_bytes(path: Path, dtype: int) -> int:
    """Bytes of the graph's stored tensors (initializers and constants) of one ONNX dtype."""
    graph = onnx.load(str(path)).graph
    tensors = list(graph.initializer) + [
        a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    ]
    return sum(onnx.numpy_helper.to_array(t).nbytes for t in tensors if t.data_type == dtype)


@pytest.mark.slow
def test_int8_export_writes_a_second_pair_the_runtime_runs(fake_pipeline, tmp_path):
    export_int8(fake_pipeline.run_dir, tmp_path, max_drop="100")
    fp32, int8 = GradePredictor.load(tmp_path / "q.onnx"), GradePredictor.load(tmp_path / "q.int8.onnx")
    report = int8.sidecar.training["quantization"]
    assert report["fp32_sha256"] == fp32.sidecar.model_sha256
    assert report["size_bytes"] == (tmp_path / "q.int8.onnx").stat().st_size < report["fp32_size_bytes"]
    # the network's weights are stored as int8 and take less room than their float32 originals (the encoder's
    # lookup tables and the token embedding are not quantised: a tiny model's file is mostly those)
    fp32_float = tensor_bytes(tmp_path / "q.onnx", onnx.TensorProto.FLOAT)
    int8_float, int8_int8 = (
        tensor_bytes(tmp_path / "q.int8.onnx", t) for t in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT8)
    )
    assert int8_int8 > 0 and int8_float + int8_int8 < 0.8 * fp32_float
    assert set(int8.sidecar.metrics["test"]) == {"all", "kilter", "tension"}
    routes = route_dicts(fake_pipeline.databases, 100)
    a = [r.difficulty for r in fp32.predict_many(routes) if isinstance(r, Prediction)]
    b = [r.difficulty for r in int8.predict_many(routes) if isinstance(r, Prediction)]
    assert len(a) == len(b) == len(routes)
    assert max(abs(x - y) for x, y in zip(a, b)) < 1.0 and a != b


@pytest.mark.slow
def test_int8_export_refuses_a_model_that_loses_accuracy(fake_pipeline, tmp_path):
    result = export_int8(fake_pipeline.run_dir, tmp_path, max_drop="-5", check=False)
    assert result.returncode == 2 and "the int8 one was not" in result.stderr
    assert (tmp_path / "q.onnx").is_file() and not (tmp_path / "q.int8.onnx").exists()


@pytest.mark.slow
def test_ema_run_keeps_and_exports_the_averaged_weights(fake_dbs, tmp_path):
    """best.pt holds the moving average (what was validated), not the last optimiser step."""
    run = tmp_path / "run"
    run_script("cg-train", *db_args(fake_dbs), "--out", str(run), "--epochs", "1", *EPOCH_ARGS, "--ema-decay", "0.9")
    last = torch.load(run / "last.pt", weights_only=True)
    best = torch.load(run / "best.pt", weights_only=True)  # one epoch: the best is the last
    averaged = {k.removeprefix("module."): v for k, v in last["groups"][0]["ema"].items() if k.startswith("module.")}
    assert set(averaged) == set(best["model"])
    assert all(torch.equal(best["model"][k], averaged[k]) for k in averaged)
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in averaged)


@pytest.mark.slow
def test_bins_head_trains_and_exports(fake_dbs, tmp_path):
    """A bins-head run exports through the same parity check, and predicts inside its bins."""
    run = tmp_path / "bins"
    run_script(
        "cg-train",
        *db_args(fake_dbs),
        "--out",
        str(run),
        "--epochs",
        "1",
        *EPOCH_ARGS,
        "--head",
        "bins",
        "--members",
        "2",
        "--shrink",
        "0.9",
    )
    config = json.loads((run / "run.json").read_text())["model_config"]
    assert config["head"] == "bins" and config["bins"] >= 2 and config["shrink"] == 0.9
    metrics = json.loads((run / "metrics.json").read_text())
    fit = metrics["val_best_shrink"]  # fitted on the model's own validation predictions, shrink 0.9 included
    assert 0.8 <= fit["shrink"] <= 1.0 and fit["mae_before"] == pytest.approx(metrics["val"]["all"]["mae"], abs=1e-6)
    predictor = GradePredictor.load(export_run(run, tmp_path / "exports"))
    test = json.loads((run / "split.json").read_text())["test"]
    low, high = config["bin_low"], config["bin_low"] + config["bins"] - 1
    with open(run / "test_predictions.csv") as handle:
        predicted = {(row["uuid"], int(row["angle"])): float(row["predicted"]) for row in csv.DictReader(handle)}
    assert len(predicted) >= len(test) and all(low <= p <= high for p in predicted.values())
    assert len(set(predicted.values())) > 1
    routes = [r for r in route_dicts(fake_dbs, 10_000) if (r["id"], r["angle"]) in predicted]
    # the ONNX graph against PyTorch's test rows (a route it failed would leave the lists of unequal length)
    exported = [p.difficulty for p in predictor.predict_many(routes) if isinstance(p, Prediction)]
    assert len(routes) > 20 and exported == pytest.approx([predicted[(r["id"], r["angle"])] for r in routes], abs=1e-4)


def test_two_hot_targets_keep_their_mean():
    from climbgrade_train.objective import two_hot

    centres = torch.arange(5.0) + 10
    targets = torch.tensor([10.0, 10.3, 12.5, 13.9, 14.0])
    probs = two_hot(targets, centres)
    assert torch.allclose(probs.sum(dim=1), torch.ones(5)) and torch.allclose(probs @ centres, targets)
    assert (probs > 0).sum(dim=1).tolist() == [1, 2, 2, 2, 1]
    assert torch.equal(two_hot(torch.tensor([8.0, 16.0]), centres) @ centres, torch.tensor([10.0, 14.0]))  # clamped


def test_gaussian_bin_targets_spread_around_the_grade():
    from climbgrade_train.objective import bin_targets, two_hot

    centres = torch.arange(24.0) + 10
    targets = torch.tensor([15.0, 21.3, 26.5])
    assert torch.equal(bin_targets(targets, centres, 0.0), two_hot(targets, centres))
    narrow, wide = bin_targets(targets, centres, 0.5), bin_targets(targets, centres, 1.0)
    for probs, tolerance in ((narrow, 0.05), (wide, 1e-3)):  # a narrow Gaussian's mean leans to the nearest bin
        assert torch.allclose(probs.sum(dim=1), torch.ones(3))
        assert torch.allclose(probs @ centres, targets, atol=tolerance)  # far from the ends: about the grade
    assert narrow.argmax(dim=1).tolist() == [5, 11, 16]  # 15, 21 and 26 (26.5 ties with 27; first wins)
    assert bool((wide[0, 5] < narrow[0, 5]) & (wide[0, 8] > narrow[0, 8]))  # wider: less on the grade, more 3 away


def test_shrink_pulls_predictions_toward_the_training_mean():
    import numpy as np

    from climbgrade_train.calibration import fit_shrink, shrunk
    from climbgrade_train.model import GradeModel, ModelConfig

    config = ModelConfig(vocab_size=12, max_len=6, target_mean=20.0, target_std=3.0, members=2)
    torch.manual_seed(0)
    plain = GradeModel(config).eval()
    pulled = GradeModel(dataclasses.replace(config, shrink=0.5)).eval()
    pulled.load_state_dict(plain.state_dict())
    ids = torch.tensor([[0, 1, 5, 7, 3, 4], [0, 2, 6, 8, 9, 0]])
    coords, padding = torch.randn(2, 6, 3), torch.tensor([[False] * 6, [False] * 5 + [True]])
    with torch.no_grad():
        raw, out = plain(ids, coords, padding), pulled(ids, coords, padding)
    assert torch.allclose(out, 20.0 + 0.5 * (raw - 20.0))
    assert torch.allclose(
        out, torch.from_numpy(shrunk(raw.numpy(), 0.5, config)).float()
    )  # the graph and the fit agree

    rng = np.random.default_rng(0)  # an ensemble that spreads 10% wider than the grades: the best shrink is ~0.91
    truth = 20.0 + 3.0 * rng.standard_normal(4000)
    predicted = 20.0 + 1.1 * (truth - 20.0) + 0.3 * rng.standard_normal(4000)
    fit = fit_shrink(predicted, truth, config)
    assert 0.88 <= fit.shrink <= 0.93 and fit.mae_after < fit.mae_before
    already = dataclasses.replace(config, shrink=0.8)  # a model that already shrinks: the same --shrink is found
    assert fit_shrink(shrunk(predicted, 0.8, config), truth, already).shrink == fit.shrink
    assert np.allclose(shrunk(shrunk(predicted, 0.8, config), 1.0, already), predicted)


def test_learning_rate_schedule_and_ascent_weights():
    import numpy as np

    from climbgrade_train.config import TrainConfig
    from climbgrade_train.objective import ascent_weights, learning_rate

    cosine = TrainConfig(databases=("x",), lr=1e-3, epochs=10, schedule="cosine", warmup_epochs=1)
    steps = [learning_rate(cosine, step, 100) for step in range(1000)]
    assert steps[0] == pytest.approx(1e-5) and steps[99] == pytest.approx(1e-3)  # linear warm-up over epoch 1
    assert all(a >= b for a, b in itertools.pairwise(steps[100:])) and steps[-1] < 1e-6  # then decays to ~0
    constant = TrainConfig(databases=("x",), lr=1e-3, epochs=10)
    assert {learning_rate(constant, step, 100) for step in range(1000)} == {1e-3}
    weights = ascent_weights(np.array([0, 1, 5, 20, 500]), floor=0.5)
    assert weights[0] == 0.5 and weights[-2] == weights[-1] == 1.0 and np.all(np.diff(weights) >= 0)
    assert np.all(ascent_weights(np.array([0, 3]), floor=1.0) == 1.0)


def test_recorded_command_trains_the_same_configuration(monkeypatch):
    """The command line in the sidecar, run through cg-train's option parsing, builds the same TrainConfig."""
    from climbgrade_train import cli
    from climbgrade_train.config import TrainConfig
    from climbgrade_train.features import ROUTE_FEATURES

    config = TrainConfig().replace(
        databases=("a.db", "b.db"),
        epochs=12,
        schedule="cosine",
        warmup_epochs=1.0,
        members=3,
        layouts=(1, 8),
        features=("x", "y", "is_hold", "angle") + ROUTE_FEATURES,
        n_heads=2,
        member_holds=("token", "placement"),
        workers=2,
        refit=True,
        head="bins",
        bin_sigma=0.75,
        shrink=0.94,
        val_fraction=0.2,
    )
    words = config.command("runs/x").split()
    assert words[:5] == ["cg-train", "--db", "a.db", "--db", "b.db"] and "--members" in words and "--lr" not in words
    assert "--features" in words and words[words.index("--features") + 1] == "x,y,is_hold,angle,route@1"  # compact
    trained = []
    monkeypatch.setattr(cli, "train_run", lambda config, out: trained.append((config, out)))
    cli.train_command.main(words[1:], standalone_mode=False)
    assert trained == [(config, Path("runs/x"))]


@pytest.mark.slow
def test_amp_trains_under_bfloat16_autocast_and_exports(fake_dbs, tmp_path):
    """--amp: the same run's first-epoch loss is near float32's but not equal to it (the steps ran in
    bfloat16), its options record it, and it exports through the float32 parity check."""
    losses = {}
    for name, extra in (("plain", []), ("amp", ["--amp"])):
        run = tmp_path / name
        run_script("cg-train", *db_args(fake_dbs), "--out", str(run), "--epochs", "1", *EPOCH_ARGS, *extra)
        with (run / "history.csv").open(newline="") as handle:
            losses[name] = float(next(csv.DictReader(handle))["train_loss"])
    assert json.loads((tmp_path / "amp" / "run.json").read_text())["config"]["amp"] is True
    assert losses["amp"] != losses["plain"] and losses["amp"] == pytest.approx(losses["plain"], rel=0.1)
    GradePredictor.load(export_run(tmp_path / "amp", tmp_path / "exports")).predict(
        {"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p1073r12p1080r14"}
    )
