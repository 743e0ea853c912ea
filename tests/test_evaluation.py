"""cg-eval: a model scored through the runtime on boardlib databases reproduces training's test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from climbgrade_runtime.metrics import METRIC_NAMES

from conftest import TINY_MODEL, run_script


def db_args(dbs):
    return [arg for db in dbs for arg in ("--db", db)]


def test_cg_eval_split_test_reproduces_the_runs_test_metrics(pipeline):
    out = run_script(
        "cg-eval", "--model", str(pipeline.model), *db_args(pipeline.databases), "--split", "test", "--format", "json"
    )
    result = json.loads(out.stdout)
    expected = json.loads((pipeline.run_dir / "metrics.json").read_text())["test"]
    assert set(result["metrics"]) == set(expected) == {"all", "kilter", "tension"}
    for board, metrics in expected.items():
        assert result["metrics"][board]["count"] == metrics["count"]
        for name in METRIC_NAMES:
            assert result["metrics"][board][name] == pytest.approx(metrics[name], abs=1e-4), (board, name)
    assert "the same" in out.stderr and "climbs the model was tested on" in out.stderr
    assert pipeline.sidecar["data"]["split"]["test_rows"] == expected["all"]["count"]


def test_cg_eval_filters_and_prints_a_table(fake_pipeline):
    everything = json.loads(
        run_script(
            "cg-eval", "--model", str(fake_pipeline.model), *db_args(fake_pipeline.databases), "--format", "json"
        ).stdout
    )
    trusted = json.loads(
        run_script(
            "cg-eval",
            "--model",
            str(fake_pipeline.model),
            *db_args(fake_pipeline.databases),
            "--min-ascents",
            "5",
            "--format",
            "json",
        ).stdout
    )
    assert 0 < trusted["metrics"]["all"]["count"] < everything["metrics"]["all"]["count"]
    assert everything["split"] == "all" and trusted["min_ascents"] == 5
    table = run_script("cg-eval", "--model", str(fake_pipeline.model), "--db", fake_pipeline.databases[0]).stdout
    lines = table.splitlines()
    assert "MAE" in lines[1] and lines[2].split()[0] == "all" and lines[3].split()[0] == "kilter"


def test_cg_eval_errors_are_one_line(fake_pipeline, tmp_path, monkeypatch):
    monkeypatch.delenv("CLIMBGRADE_DATA", raising=False)
    for args, message in (
        (["--db", str(tmp_path / "missing.db")], "does not exist"),
        ([], "no database given"),
        (["--db", fake_pipeline.databases[0], "--model", str(tmp_path / "none.onnx")], "does not exist"),
    ):
        result = run_script("cg-eval", "--model", str(fake_pipeline.model), *args, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def export_and_evaluate(run, dbs, tmp_path) -> dict:
    """cg-export the run (its parity check must pass) and check cg-eval reproduces its test MAE; the sidecar."""
    model = run_script("cg-export", str(run), "--out", str(tmp_path / "exports")).stdout.strip().splitlines()[-1]
    sidecar = json.loads(Path(f"{model}.json").read_text())
    assert sidecar["training"]["export_parity_max_abs_diff"] < 1e-4
    result = json.loads(
        run_script("cg-eval", "--model", model, *db_args(dbs), "--split", "test", "--format", "json").stdout
    )
    expected = json.loads((run / "metrics.json").read_text())["test"]["all"]
    assert result["metrics"]["all"]["mae"] == pytest.approx(expected["mae"], abs=1e-4)
    return sidecar


@pytest.mark.slow
def test_ensemble_with_every_lever_exports_and_evaluates(fake_dbs, tmp_path):
    """Two members, placement tokens, every feature (move and route geometry too), Huber, cosine, ascent weights, mirrors, Fourier
    coordinates, weight averaging: one ONNX graph that cg-export checked against PyTorch, and cg-eval
    scores like training did."""
    run = tmp_path / "run"
    run_script(
        "cg-train",
        *db_args(fake_dbs),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "128",
        *TINY_MODEL,
        "--members",
        "2",
        "--hold-tokens",
        "placement",
        "--readout",
        "cls+sum",
        "--loss",
        "huber",
        "--schedule",
        "cosine",
        "--warmup-epochs",
        "0.5",
        "--ascent-weight-floor",
        "0.3",
        "--mirror-prob",
        "0.5",
        "--coord-encoding",
        "fourier",
        "--ema-decay",
        "0.9",
        "--features",
        "x,y,is_hold,role_start,role_middle,role_finish,role_foot,angle,nearest,nearest2,move_dx,move_dy,route",
    )
    sidecar = export_and_evaluate(run, fake_dbs, tmp_path)
    assert sidecar["training"]["model_config"]["members"] == 2


@pytest.mark.slow
def test_mixed_ensemble_exports_and_evaluates(fake_dbs, tmp_path):
    """Members that embed tokens and members that embed placements (roles merged) in one ONNX graph."""
    run = tmp_path / "run"
    run_script(
        "cg-train",
        *db_args(fake_dbs),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--batch-size",
        "128",
        *TINY_MODEL,
        "--members",
        "3",
        "--member-holds",
        "token,placement",
        "--features",
        "x,y,is_hold,role_start,role_middle,role_finish,role_foot,route",
    )
    checkpoint = torch.load(run / "best.pt", weights_only=True)
    assert tuple(checkpoint["model_config"]["member_holds"]) == ("token", "placement")
    groups = checkpoint["model"]["members.1.token_groups"]
    assert "members.0.token_groups" not in checkpoint["model"] and "members.2.token_groups" not in checkpoint["model"]
    assert checkpoint["model"]["members.1.token_embedding.weight"].shape[0] == int(groups.max()) + 1
    assert int(groups.max()) + 1 < len(groups)  # roles merged: fewer embedding rows than tokens
    export_and_evaluate(run, fake_dbs, tmp_path)


@pytest.mark.slow
def test_placement_members_need_role_tokens(fake_dbs, tmp_path):
    result = run_script(
        "cg-train",
        *db_args(fake_dbs),
        "--out",
        str(tmp_path / "run"),
        "--hold-tokens",
        "placement",
        "--members",
        "2",
        "--member-holds",
        "token,placement",
        check=False,
    )
    assert result.returncode == 2 and "already embeds placements" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
