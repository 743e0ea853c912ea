"""Accuracy on one seeded climb-grouped test split: baselines, the shipped model, and ablations.

    python bench/accuracy.py --db ../shared/data/kilter.db --db ../shared/data/tension.db

Rows (every one trained on the same train split, selected on the same val split, scored on the
same test climbs, which none of them trained or selected on):
- per-(board, angle) mean of the training rows;
- the reference transformer, exactly the end-to-end design (`cg-train` with REFERENCE's options);
- LightGBM on hand-made features plus one-hot holds (bench/gbm.py; `pip install -e '.[bench]'`);
  when the shipped model (or its teacher) was trained with --refit (train + val, epochs fixed beforehand), LightGBM
  also gets a refit row: its early-stopped rounds, fitted again on train + val;
- the shipped model, scored through the torch-free runtime from `exports/` (cg-eval's code), with its
  interval's coverage when it has one; and, when it was distilled and its teacher's run folder is
  here, that teacher (PyTorch);
- with --distillation, the shipped student's recipe with one lever changed at a time (DISTILLATION:
  what the teacher labels, the student's size);
- with --ablations, one network (reference + cosine schedule) with one lever changed at a time;
  --ablation TEXT runs only the ablation rows whose name contains TEXT (repeatable). SHRUNK_ROWS
  score a finished ablation run with the --shrink chosen on its own validation climbs.
Transformer runs go to --runs/<row>; a finished run with the same options is reused, not retrained.
Prints one table (all rows, rows with >= 5 ascents, per board) and writes it as JSON with --json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from climbgrade_runtime.board_db import ClimbFilter
from climbgrade_runtime.graded import Example, load_examples
from climbgrade_runtime.grades import GradeTable
from climbgrade_runtime.metrics import TRUSTED_ASCENTS, interval_report, metrics_by_board
from climbgrade_runtime.model_io import INTERVAL_COVERAGE
from climbgrade_runtime.predictor import GradePredictor
from climbgrade_runtime.results import Prediction
from climbgrade_runtime.routes import Route
from climbgrade_runtime.split import uuid_digest
from climbgrade_runtime.tokenizer import BASE_FEATURES, PLACEMENT, PLACEMENT_ROLE, Tokenizer
from climbgrade_train.calibration import fit_shrink, shrunk
from climbgrade_train.checkpoints import load_checkpoint
from climbgrade_train.config import TrainConfig
from climbgrade_train.dataset import EncodedSet
from climbgrade_train.features import ALL_ROUTE_FEATURES, FEATURES, MOVE_FEATURES, ROUTE_FEATURES, SHAPE_FEATURES
from climbgrade_train.predict import torch_predict
from climbgrade_train.run_folder import prepare_run, read_config
from climbgrade_train.train import resume_run, train_run

MIN_ASCENTS = TRUSTED_ASCENTS
REFERENCE: dict[str, Any] = {  # the end-to-end issue's design, spelt out so new defaults never change it
    "hold_tokens": PLACEMENT_ROLE,
    "features": BASE_FEATURES,
    "loss": "mse",
    "schedule": "constant",
    "warmup_epochs": 0.0,
    "ascent_weight_floor": 1.0,
    "mirror_prob": 0.0,
    "epochs": 30,
    "patience": 5,
    "batch_size": 64,
    "lr": 3e-4,
    "weight_decay": 1e-2,
    "unk_prob": 0.01,
    "d_model": 128,
    "n_heads": 4,
    "n_layers": 4,
    "d_ff": 256,
    "dropout": 0.1,
    "readout": "cls",
    "head": "value",
    "bin_sigma": 0.0,
    "shrink": 1.0,
    "members": 1,
    "member_holds": (),
    "coord_encoding": "linear",
    "ema_decay": 0.0,
    "workers": 1,
    "refit": False,
    "train_fraction": 1.0,
    # the shipped options these rows do not use (the reference predates them)
    "calibrate": False,
    "interval_scale": 0.0,
    "teacher": "",
    "teacher_angles": False,
    "teacher_mirrors": False,
}
ROLE_ANGLE_DISTANCE = tuple(f for f in FEATURES if f not in MOVE_FEATURES + ALL_ROUTE_FEATURES)
PLACEMENT_RAD = {"hold_tokens": PLACEMENT, "features": ROLE_ANGLE_DISTANCE}
# The base of the ablation rows: the reference network with a cosine schedule, 12 epochs. Each row
# changes one lever (or one named group) of it, so rows stay comparable when the shipped recipe moves.
ONE_NETWORK: dict[str, Any] = REFERENCE | {"epochs": 12, "patience": 30, "schedule": "cosine", "warmup_epochs": 1.0}
ROUTE = ROLE_ANGLE_DISTANCE + ROUTE_FEATURES
MOVE_ROUTE = ROLE_ANGLE_DISTANCE + MOVE_FEATURES + ROUTE_FEATURES
SHIPPED_MEMBER = {"lr": 1e-3, "features": MOVE_ROUTE, "epochs": 8, "dropout": 0.2}  # the previous release's members
SHAPE_MEMBER = SHIPPED_MEMBER | {"features": MOVE_ROUTE + SHAPE_FEATURES}  # the last two releases' members (value head)
ENSEMBLE = {"members": 8, "member_holds": ("token", "placement"), "workers": 2}
ABLATIONS: dict[str, dict[str, Any]] = {
    "one network, cosine + warm-up (ablation base)": {},
    "base + Huber loss": {"loss": "huber"},
    "base + placement tokens and role/angle/distance features": PLACEMENT_RAD,
    "base + Fourier x/y": {"coord_encoding": "fourier"},
    "base + weight average (EMA 0.998)": {"ema_decay": 0.998},
    "base + dropout 0.2, UNK 0.1": {"dropout": 0.2, "unk_prob": 0.1},
    "base + no dropout": {"dropout": 0.0},
    "base + L1 loss": {"loss": "l1"},
    "base + sum readout": {"readout": "cls+sum"},
    "base + learning rate 1e-3": {"lr": 1e-3},
    "base + placement tokens, role/angle/distance features, EMA, 8 epochs": PLACEMENT_RAD
    | {"ema_decay": 0.998, "epochs": 8},
    "base + role/angle/distance features, 2 networks": {"features": ROLE_ANGLE_DISTANCE, "members": 2},
    "base + role/angle/distance features, 2 networks, token + placement": {
        "features": ROLE_ANGLE_DISTANCE,
        "members": 2,
        "member_holds": ("token", "placement"),
    },
    "base + role/angle/distance features, lr 1e-3, 4 networks (previous shipped recipe, unmixed)": {
        "features": ROLE_ANGLE_DISTANCE,
        "lr": 1e-3,
        "members": 4,
    },
    # Route geometry on <CLS> (climbgrade_train.features): one network each, lr 1e-3.
    "base + lr 1e-3, role/angle/distance features": {"lr": 1e-3, "features": ROLE_ANGLE_DISTANCE},
    "base + lr 1e-3, role/angle/distance + route features": {"lr": 1e-3, "features": ROUTE},
    "route features, 8 epochs, placement tokens": {
        "lr": 1e-3,
        "features": ROUTE,
        "epochs": 8,
        "hold_tokens": PLACEMENT,
    },
    "route features, 8 epochs, dropout 0.2": {"lr": 1e-3, "features": ROUTE, "epochs": 8, "dropout": 0.2},
    "route + move features, 8 epochs": {"lr": 1e-3, "features": MOVE_ROUTE, "epochs": 8},
    "route + move features, 8 epochs, dropout 0.2 (the shipped member recipe)": SHIPPED_MEMBER,
    "shipped member recipe + ascent weights (floor 0.5)": SHIPPED_MEMBER | {"ascent_weight_floor": 0.5},
    "shipped member recipe + mirrors (TB2; p 0.5)": SHIPPED_MEMBER | {"mirror_prob": 0.5},
    "shipped member recipe + Huber loss": SHIPPED_MEMBER | {"loss": "huber"},
    "shipped member recipe + shape features": SHAPE_MEMBER,
    "shipped member recipe + shape features + features into the head": SHAPE_MEMBER | {"readout": "cls+features"},
    "shape member recipe + dropout 0.3": SHAPE_MEMBER | {"dropout": 0.3},
    "shape member recipe + lr 7e-4": SHAPE_MEMBER | {"lr": 7e-4},
    "shape member recipe + weight decay 0.05": SHAPE_MEMBER | {"weight_decay": 0.05},
    "shape member recipe + 6 layers": SHAPE_MEMBER | {"n_layers": 6},
    # Ensembles without --refit: trained on train only and selected on val, like the LightGBM row.
    "previous release's recipe (value head), train split only: 8 networks in 2 workers": SHAPE_MEMBER | ENSEMBLE,
    "previous release's recipe (value head), train split only: 8 networks in 2 workers, 4 epochs": SHAPE_MEMBER
    | ENSEMBLE
    | {
        "epochs": 4,
    },
    "shipped recipe (bins head), train split only: 8 networks in 2 workers": SHAPE_MEMBER | ENSEMBLE | {"head": "bins"},
    "shape member recipe + width 192 (ff 384)": SHAPE_MEMBER | {"d_model": 192, "d_ff": 384},
    "shape member recipe + bins head (cross-entropy, mean read out)": SHAPE_MEMBER | {"head": "bins"},
    "shape member recipe + bins head, Gaussian targets (sigma 0.5)": SHAPE_MEMBER | {"head": "bins", "bin_sigma": 0.5},
    "shape member recipe + bins head, Gaussian targets (sigma 1)": SHAPE_MEMBER | {"head": "bins", "bin_sigma": 1.0},
    # placement tokens, role/angle/distance features, Huber, ascent weights, mirrors, sum readout,
    # 10% UNK, dropout 0.15, 14 epochs
    "base + new levers bundle": PLACEMENT_RAD
    | {
        "epochs": 14,
        "loss": "huber",
        "ascent_weight_floor": 0.5,
        "mirror_prob": 0.5,
        "readout": "cls+sum",
        "unk_prob": 0.1,
        "dropout": 0.15,
    },
}

# Distillation (cg-train --teacher): the shipped student's own recipe with one lever changed. These
# rows start from the shipped options, not ONE_NETWORK, and need the teacher run the sidecar names.
ON_TRAINING_ROWS = {"teacher_angles": False, "teacher_mirrors": False}
DISTILLATION: dict[str, dict[str, Any]] = {
    "student recipe, community grades only (no teacher)": ON_TRAINING_ROWS | {"teacher": ""},
    "student recipe, teacher on the training rows only": ON_TRAINING_ROWS,
    "student recipe, teacher on the training rows + mirrors": {"teacher_angles": False},
    "student recipe, teacher on the training rows + every angle": {"teacher_mirrors": False},
    "student recipe, teacher on the training rows + every angle + mirrors (shipped)": {},
    "student recipe at d128, 4 layers, 6 epochs (the teacher's member size)": {"n_layers": 4, "epochs": 6},
    # the student's size, on the cheapest teacher rows (the training rows only)
    "student size d96, 3 layers (teacher on the training rows only)": ON_TRAINING_ROWS
    | {"d_model": 96, "d_ff": 192, "n_layers": 3},
    "student size d96, 4 layers (teacher on the training rows only)": ON_TRAINING_ROWS | {"d_model": 96, "d_ff": 192},
    "student size d128, 3 layers (teacher on the training rows only)": ON_TRAINING_ROWS | {"n_layers": 3},
    "student size d160, 3 layers (teacher on the training rows only)": ON_TRAINING_ROWS
    | {"d_model": 160, "d_ff": 320, "n_layers": 3},
    "student size d160, 4 layers (teacher on the training rows only)": ON_TRAINING_ROWS | {"d_model": 160, "d_ff": 320},
}


# Rows that score a finished ablation row's run with the --shrink chosen on its own validation climbs
# (climbgrade_train.calibration); the run is trained first if it is not there.
SHRUNK_ROWS = {
    "shipped recipe (bins head), train split only, + shrink chosen on its validation climbs": "shipped recipe (bins head), train split only: 8 networks in 2 workers",
}


def slug(name: str) -> str:
    """Run-folder name of a row: its words, lower case (distinct names give distinct folders)."""
    words = [w for w in ("".join(c for c in word if c.isalnum()) for word in name.split()) if w]
    return "_".join(words).lower()


def score(examples: list[Example], predicted: np.ndarray, grades: GradeTable) -> dict[str, dict[str, float]]:
    """Metrics per board and overall, on all rows and on rows with >= MIN_ASCENTS ascents."""
    truth = np.array([e.difficulty for e in examples])
    boards = [e.board for e in examples]
    out = {f"{k} all rows": v for k, v in metrics_by_board(boards, truth, predicted, grades).items()}
    keep = np.array([e.ascents >= MIN_ASCENTS for e in examples])
    trusted = metrics_by_board([b for b, k in zip(boards, keep) if k], truth[keep], predicted[keep], grades)
    return out | {f"{k} >={MIN_ASCENTS} ascents": v for k, v in trusted.items()}


def board_angle_mean(train: list[Example], test: list[Example]) -> np.ndarray:
    sums: dict[tuple[str, int], list[float]] = defaultdict(list)
    for e in train:
        sums[(e.board, e.angle)].append(e.difficulty)
    overall = float(np.mean([e.difficulty for e in train]))
    means = {key: float(np.mean(v)) for key, v in sums.items()}
    return np.array([means.get((e.board, e.angle), overall) for e in test])


def transformer_predictions(config: TrainConfig, run_dir: Path, test: list[Example]) -> np.ndarray:
    """Train (or reuse) a run and return its best checkpoint's test predictions in `test`'s order."""
    return transformer_outputs(config, run_dir, test)[0]


def transformer_outputs(config: TrainConfig, run_dir: Path, test: list[Example]) -> list[np.ndarray]:
    """transformer_predictions, and the interval's low and high when the run's model has one."""
    if (run_dir / "metrics.json").is_file():
        saved = TrainConfig.from_dict(json.loads((run_dir / "run.json").read_text())["config"])
        if dataclasses.replace(saved, databases=config.databases, device=config.device) != config:
            raise click.ClickException(f"{run_dir} holds a run with other options: delete it to retrain")
    elif (run_dir / "last.pt").is_file():
        resume_run(run_dir)
    else:
        train_run(config, run_dir)
    frame = pd.read_csv(run_dir / "test_predictions.csv").set_index(["uuid", "angle"])
    keys = [(e.uuid, e.angle) for e in test]
    return [frame.loc[keys, column].to_numpy() for column in ("predicted", "low", "high") if column in frame]


def interval_score(examples: list[Example], low: np.ndarray, high: np.ndarray) -> dict[str, dict[str, float]]:
    """Interval coverage and mean width per board, on all rows and on rows with >= MIN_ASCENTS ascents."""
    truth = np.array([e.difficulty for e in examples])
    ascents = np.array([e.ascents for e in examples])
    every, trusted = interval_report([e.board for e in examples], truth, low, high, ascents)
    out = {f"{k} all rows": v for k, v in every.items()}
    return out | {f"{k} >={MIN_ASCENTS} ascents": v for k, v in trusted.items()}


def teacher_predictions(teacher: Path, test: list[Example], tokenizer: Tokenizer) -> np.ndarray:
    """The distillation teacher's test predictions (PyTorch, from its run folder), in `test`'s order."""
    model = load_checkpoint(teacher / "best.pt")
    data = EncodedSet.build(test, tokenizer)
    return data.predict_with(lambda batch: torch_predict(model, batch))


def shrunk_test_predictions(config: TrainConfig, run_dir: Path, test: list[Example]) -> np.ndarray:
    """A run's test predictions with the --shrink that is best on its validation climbs."""
    predicted = transformer_predictions(config, run_dir, test)
    run = prepare_run(config, run_dir, resume=True)
    model = load_checkpoint(run_dir / "best.pt")
    val = run.sets["val"]
    fit = fit_shrink(val.predict_with(lambda batch: torch_predict(model, batch)), val.targets, model.config)
    click.echo(
        f"{run_dir.name}: validation-best --shrink {fit.shrink:.2f} (val MAE {fit.mae_before:.4f} -> "
        f"{fit.mae_after:.4f})",
        err=True,
    )
    return shrunk(predicted, fit.shrink, model.config)


def split_parts(
    databases: tuple[str, ...], model_path: Path
) -> tuple[GradePredictor, TrainConfig, dict[str, list[Example]]]:
    """The shipped model, its training options (on `databases`) and the rows of each split it was trained with."""
    predictor = GradePredictor.load(model_path, intra_op_threads=2)
    shipped = TrainConfig.from_dict(predictor.sidecar.training["config"] | {"databases": databases})
    rule = shipped.split
    parts: dict[str, list[Example]] = defaultdict(list)
    for e in load_examples(databases, ClimbFilter()).examples:
        parts[rule.assign(e.uuid)].append(e)
    click.echo(
        f"split: {rule.to_dict()['rule']} (seed {rule.seed}); train {len(parts['train'])}, "
        f"val {len(parts['val'])}, test {len(parts['test'])} rows",
        err=True,
    )
    return predictor, shipped, parts


def print_intervals(intervals: dict[str, dict[str, dict[str, float]]]) -> None:
    """Coverage of the 80% interval (and its mean width) for the rows whose model has one."""
    width = max(len(name) for name in intervals) + 2
    click.echo(f"\ninterval coverage / mean width (target {100 * INTERVAL_COVERAGE:.0f}%)")
    subsets = list(next(iter(intervals.values())))
    click.echo(f"{'model':<{width}} " + " ".join(f"{s:>24}" for s in subsets))
    for name, metrics in intervals.items():
        cells = [f"{100 * metrics[s]['coverage']:5.1f}% / {metrics[s]['mean_width']:4.2f}" for s in subsets]
        click.echo(f"{name:<{width}} " + " ".join(f"{c:>24}" for c in cells))


def print_table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    subsets = list(next(iter(results.values())))
    width = max(len(name) for name in results) + 2
    for subset in subsets:
        rows = next(iter(results.values()))[subset]["count"]
        click.echo(f"\n{subset} ({rows:,} rows)")
        click.echo(f"{'model':<{width}} {'MAE':>6} {'RMSE':>6} {'R2':>6} {'<=1 V':>7} {'<=2 V':>7} {'exact V':>8}")
        for name, metrics in results.items():
            m = metrics[subset]
            click.echo(
                f"{name:<{width}} {m['mae']:6.3f} {m['rmse']:6.3f} {m['r2']:6.3f} {100 * m['within_1_vgrade']:6.1f}% "
                f"{100 * m['within_2_vgrades']:6.1f}% {100 * m['exact_grouped_v']:7.1f}%"
            )


@click.command()
@click.option("--db", "databases", multiple=True, required=True, metavar="PATH")
@click.option(
    "--runs",
    "runs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench"),
    show_default=True,
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("exports/climbgrade.onnx"),
    show_default=True,
    help="The shipped model, scored through the runtime.",
)
@click.option("--ablations", is_flag=True, help="Also train one network with one lever changed at a time (ABLATIONS).")
@click.option(
    "--ablation",
    "only",
    multiple=True,
    metavar="TEXT",
    help="Only the ablation rows whose name contains TEXT (repeatable; implies --ablations).",
)
@click.option(
    "--distillation",
    is_flag=True,
    help="Also train the student recipe with one lever changed at a time (DISTILLATION; --ablation TEXT filters).",
)
@click.option("--skip", multiple=True, type=click.Choice(["reference", "lightgbm"]), help="Leave out a baseline row.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(
    databases: tuple[str, ...],
    runs_dir: Path,
    model_path: Path,
    ablations: bool,
    only: tuple[str, ...],
    distillation: bool,
    skip: tuple[str, ...],
    json_path: Path | None,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    predictor, shipped, parts = split_parts(databases, model_path)
    test, grades = parts["test"], predictor.grades

    results: dict[str, dict[str, dict[str, float]]] = {}
    results["per-(board, angle) mean"] = score(test, board_angle_mean(parts["train"], test), grades)
    if "reference" not in skip:
        config = shipped.replace(**REFERENCE)
        results["reference transformer"] = score(
            test, transformer_predictions(config, runs_dir / "reference", test), grades
        )
    if "lightgbm" not in skip:
        from gbm import fit_predict  # bench-only dependency, imported only when its row runs

        predicted, rounds = fit_predict(parts["train"], parts["val"], test)
        click.echo(f"lightgbm: {rounds} rounds (early-stopped on val MAE)", err=True)
        results["LightGBM + one-hot holds"] = score(test, predicted, grades)
        teacher = Path(shipped.teacher) / "run.json" if shipped.teacher else None
        teacher_refit = teacher is not None and teacher.is_file() and read_config(teacher.parent).refit
        if (
            shipped.refit or teacher_refit
        ):  # the shipped model (or its teacher) trained on train + val: so does this row
            predicted, rounds = fit_predict(parts["train"], parts["val"], test, refit=True)
            click.echo(f"lightgbm refit on train + val: {rounds} rounds", err=True)
            results["LightGBM + one-hot holds, refit on train + val"] = score(test, predicted, grades)
    recorded = predictor.sidecar.data["split"].get("test_climbs_sha256")
    if recorded != uuid_digest(e.uuid for e in test):
        raise click.ClickException(
            f"{model_path} was tested on other climbs than this split's: pass the databases it was trained on"
        )
    graded = predictor.predict_many([Route(e.board, e.layout_id, e.angle, e.route.holds) for e in test])
    shipped_graded = [p for p in graded if isinstance(p, Prediction)]
    assert len(shipped_graded) == len(test), "the model refused routes of its own test split"
    shipped_name = f"shipped ({model_path.name})"
    results[shipped_name] = score(test, np.array([p.difficulty for p in shipped_graded]), grades)
    intervals: dict[str, dict[str, dict[str, float]]] = {}
    if predictor.has_interval:
        bounds = [np.array([getattr(p, side) for p in shipped_graded]) for side in ("low", "high")]
        intervals[shipped_name] = interval_score(test, *bounds)
    if shipped.teacher and Path(shipped.teacher, "best.pt").is_file():
        name = f"its teacher ({shipped.teacher}, PyTorch)"
        results[name] = score(test, teacher_predictions(Path(shipped.teacher), test, predictor.tokenizer), grades)
    if ablations or only or distillation:
        picked = [n for n in [*ABLATIONS, *SHRUNK_ROWS, *DISTILLATION] if not only or any(t in n for t in only)]
        if not picked:
            raise click.ClickException(f"no ablation row's name contains {' or '.join(map(repr, only))}")
        for name in picked:
            if name in ABLATIONS and (ablations or only):
                config = shipped.replace(**ONE_NETWORK | ABLATIONS[name])
                results[name] = score(test, transformer_predictions(config, runs_dir / slug(name), test), grades)
            elif name in SHRUNK_ROWS and (ablations or only):
                base = SHRUNK_ROWS[name]
                config = shipped.replace(**ONE_NETWORK | ABLATIONS[base])
                results[name] = score(test, shrunk_test_predictions(config, runs_dir / slug(base), test), grades)
            elif name in DISTILLATION and (distillation or only):
                config = shipped.replace(**DISTILLATION[name])
                outputs = transformer_outputs(config, runs_dir / slug(name), test)
                results[name] = score(test, outputs[0], grades)
                if len(outputs) == 3:
                    intervals[name] = interval_score(test, outputs[1], outputs[2])
    print_table(results)
    if intervals:
        print_intervals(intervals)
    if json_path is not None:
        json_path.write_text(json.dumps(results | {"intervals": intervals}, indent=1) + "\n")


if __name__ == "__main__":
    main()
