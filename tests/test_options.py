"""cg-train's options: declared once, read from the command line and recipe files, refused in one line,
recorded as commands that mean what they meant, and read back from old run folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from climbgrade_runtime.options import declared
from climbgrade_train import cli
from climbgrade_train.config import TrainConfig
from climbgrade_train.features import FEATURE_GROUPS, expand_features
from climbgrade_train.model import ModelConfig

from conftest import ROOT, run_script

RECIPES = ROOT / "examples" / "recipes"


def parsed(monkeypatch: pytest.MonkeyPatch, *args: str) -> TrainConfig:
    """The TrainConfig cg-train would train with these arguments (train_run replaced by a recorder)."""
    trained: list[TrainConfig] = []
    monkeypatch.setattr(cli, "train_run", lambda config, out: trained.append(config))
    result = CliRunner().invoke(cli.train_command, ["--out", "runs/x", *args])
    assert result.exit_code == 0, result.output
    return trained[0]


def refused(*args: str) -> str:
    """cg-train's stderr for arguments it must refuse before training: one line, exit 2."""
    result = CliRunner().invoke(cli.train_command, ["--out", "runs/never", "--db", "x.db", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_help_shows_every_option_with_its_declared_default():
    text = " ".join(CliRunner().invoke(cli.train_command, ["--help"]).output.split())
    options = list(declared(TrainConfig))
    assert len({d.flag for d in options}) == len({d.name for d in options}) == len(options)  # one flag, one field
    for d in declared(TrainConfig):
        assert d.flag in text
        if d.kind is not bool and d.default not in (None, (), ""):
            shown = ",".join(d.to_words(d.default)) if d.many else d.default
            assert f"{d.flag}" in text and f"[default: {shown}]" in text, d.flag


def test_defaults_come_from_the_declarations(monkeypatch):
    config = parsed(monkeypatch, "--db", "a.db")
    assert config == TrainConfig(databases=("a.db",))
    assert (config.epochs, config.model.d_model, config.model.n_heads, config.climbs.min_ascents) == (30, 128, 4, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--heads", "0"], "error: --heads must be at least 1, not 0"),
        (["--dropout", "1"], "error: --dropout must be at least 0 and below 1, not 1.0"),
        (["--readout", "mean"], "error: --readout must be one of cls, cls+sum, cls+features, not 'mean'"),
        (["--member-holds", "token,role"], "error: --member-holds must be one of token, placement, not 'role'"),
        (["--epochs", "0"], "error: --epochs must be at least 1, not 0"),
        (["--val-fraction", "0.5", "--test-fraction", "0.5"], "must sum below 1, not 1"),
        (["--min-ascents", "-1"], "error: --min-ascents must be at least 0, not -1"),
        (["--features", "x,y,is_hold,route@9"], "(unknown: route@9)"),
        (["--features", "x,y,hold_size"], "error: --features must start with x,y,is_hold"),
        (["--head", "bins", "--loss", "l1"], "drop --loss l1"),
        (["--bin-sigma", "1"], "error: --bin-sigma shapes the target of --head bins"),
        (["--shrink", "1.2"], "error: --shrink must be above 0 and at most 1, not 1.2"),
        (["--train-fraction", "0.5", "--refit"], "--train-fraction must be above 0 and at most 1 (and 1 with --refit)"),
        (["--calibrate"], "error: --calibrate chooses the shrink and interval on validation: it needs --head bins"),
    ],
)
def test_a_bad_option_is_refused_in_one_line_naming_it(args, message):
    assert message in refused(*args)


def test_a_recipe_file_gives_options_and_the_command_line_wins(monkeypatch, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        'db = ["a.db"]\nheads = 2\nd-model = 64\nmember-holds = ["token", "placement"]\n'
        'features = "x,y,is_hold,route"\nlayout = [1, 8]\nrefit = true\nlr = 1\n'
    )
    config = parsed(monkeypatch, "--config", str(recipe), "--heads", "8", "--db", "b.db")
    assert config == TrainConfig().replace(
        databases=("b.db",),
        n_heads=8,
        d_model=64,
        member_holds=("token", "placement"),
        features=expand_features(["x", "y", "is_hold", "route@1"]),
        layouts=(1, 8),
        refit=True,
        lr=1.0,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("head = 'bins'\nlayerz = 3\n", "no option 'layerz'"),
        ("heads = 'four'\n", "heads takes a whole number, not 'four'"),
        ("refit = 1\n", "refit takes true or false, not 1"),
        ("heads = [2, 4]\n", "heads takes one value, not a list"),
        ("heads = \n", "is not valid TOML"),
    ],
)
def test_a_bad_recipe_is_refused_in_one_line(tmp_path, text, message):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    line = refused("--config", str(recipe))
    assert line.startswith("error: ") and message in line and str(recipe) in line


def test_the_shipped_teacher_recipe_can_teach_the_shipped_recipe():
    """examples/recipes/teacher.toml splits, filters and reads routes as climbgrade.toml's student must
    (cg-train refuses a teacher that does not) and trains the bins ensemble the docs describe.
    (tests/test_readme.py checks climbgrade.toml builds what the shipped sidecar records.)"""
    student = _recipe_config(RECIPES / "climbgrade.toml", ["k.db", "t.db"])
    teacher = _recipe_config(RECIPES / "teacher.toml", ["k.db", "t.db"])
    assert (teacher.split, teacher.climbs, teacher.features, teacher.hold_tokens) == (
        student.split,
        student.climbs,
        student.features,
        student.hold_tokens,
    )
    assert student.teacher == "runs/teacher" and student.model.head == "bins" and student.calibrate
    assert teacher.model.head == "bins" and teacher.refit and teacher.model.members == 8


def _recipe_config(recipe: Path, databases: list[str]) -> TrainConfig:
    trained: list[TrainConfig] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "train_run", lambda config, out: trained.append(config))
        args = ["--out", "runs/x", "--config", str(recipe), *[w for db in databases for w in ("--db", db)]]
        result = CliRunner().invoke(cli.train_command, args)
    assert result.exit_code == 0, result.output
    return trained[0]


def test_feature_groups_keep_what_they_meant_when_released():
    """A group's features never change (a new feature is a new version), so a recorded command keeps
    its meaning; the unversioned name is the newest version."""
    released = {
        "route@1": "route_holds route_start route_middle route_finish route_foot route_all_x_min route_all_x_max "
        "route_all_x_mean route_all_x_std route_all_y_min route_all_y_max route_all_y_mean route_all_y_std "
        "route_hand_x_min route_hand_x_max route_hand_x_mean route_hand_x_std route_hand_y_min route_hand_y_max "
        "route_hand_y_mean route_hand_y_std route_start_y route_finish_y route_height_gain route_move_mean "
        "route_move_max route_move_sum route_nearest_mean route_nearest_max route_foot_hand",
        "shape@1": "route_move_first route_move_last route_move_second route_move_std route_move_dy_max "
        "route_move_dx_sum route_move_lateral route_turns route_big_moves route_huge_moves route_start_span "
        "route_hand_nearest_mean route_hand_nearest_max route_support route_support_min route_y_gap_max "
        "route_foot_top",
    }
    for group, names in released.items():
        assert FEATURE_GROUPS[group] == tuple(names.split())
    assert expand_features(["x", "route", "shape"]) == expand_features(["x", "route@1", "shape@1"])
    config = TrainConfig().replace(features=expand_features(["x", "y", "is_hold", "route", "shape"]))
    assert "--features x,y,is_hold,route@1,shape@1" in config.command("runs/x")


def test_options_nest_the_models_once():
    """The network's options live in ModelOptions; TrainConfig nests them and ModelConfig extends them."""
    config = TrainConfig().replace(d_model=64, members=2, head="bins")
    assert (config.model.d_model, config.model.members, config.model.head) == (64, 2, "bins")
    model = ModelConfig(vocab_size=10, max_len=8, d_model=64)
    assert model.d_model == 64 and ModelConfig.from_dict(model.to_dict()) == model


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """run.json's config as runs before nested options wrote it (every option at the top level)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        out |= value if isinstance(value, dict) else {key: value}
    return out


@pytest.mark.slow
def test_an_old_flat_run_folder_reads_back_and_resumes(fake_pipeline, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(fake_pipeline.run_dir, run)
    info = json.loads((run / "run.json").read_text())
    nested_config = info["config"]
    info["config"] = {k: v for k, v in _flat(nested_config).items() if k not in ("amp", "val_fraction", "grad_clip")}
    (run / "run.json").write_text(json.dumps(info))
    assert TrainConfig.from_dict(info["config"]) == TrainConfig.from_dict(nested_config)
    epochs = json.loads((run / "metrics.json").read_text())["epochs_run"]
    run_script("cg-train", "--out", str(run), "--resume", "--epochs", str(epochs + 1))
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == epochs + 1
