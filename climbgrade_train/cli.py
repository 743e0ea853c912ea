"""`cg-train` and `cg-export`: option parsing only; the work is in train.py and export.py."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from climbgrade_runtime.board_db import databases_from_env
from climbgrade_runtime.cli import CATALOG_OPTION, DB_HELP
from climbgrade_runtime.errors import ClimbgradeError
from climbgrade_runtime.tokenizer import HOLD_TOKEN_SCHEMES

from .config import LOSSES, READOUTS, SCHEDULES, TrainConfig
from .export import DEFAULT_INT8_MAX_DROP, DEFAULT_OPSET, DEFAULT_TOLERANCE, export_run
from .features import ALL_ROUTE_FEATURES, FEATURE_GROUPS, FEATURES, expand_features
from .model import COORD_ENCODINGS, HEADS
from .train import resume_run, train_run

EXIT_ERROR = 2
DEFAULT_EPOCHS = TrainConfig.epochs
RESUMABLE = {"out", "resume", "epochs", "databases", "catalog", "verbose"}


def _setup_logging(verbose: bool) -> None:
    """Our progress at INFO; other libraries (the exporter's optimiser is chatty) only at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for package in ("climbgrade_train", "climbgrade_runtime"):
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)


def _fail(exc: ClimbgradeError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_ERROR)


def _words(text: str) -> tuple[str, ...]:
    """A comma-separated option as a tuple."""
    return tuple(word.strip() for word in text.split(",") if word.strip())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    "databases",
    multiple=True,
    metavar="[BOARD=]PATH",
    help=f"{DB_HELP[0].upper()}{DB_HELP[1:]} (repeatable). Default: every .db in $CLIMBGRADE_DATA.",
)
@CATALOG_OPTION
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder, e.g. runs/NAME."
)
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Maximum epochs (default 30; with --resume, the run's own).",
)
@click.option(
    "--min-ascents",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Only climb x angle rows with at least this many ascents.",
)
@click.option(
    "--layout", "layouts", type=int, multiple=True, help="Aurora layout id to keep (repeatable). Default: all."
)
@click.option("--min-angle", type=int, default=None)
@click.option("--max-angle", type=int, default=None)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the split, initialisation and batch order."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--weight-decay", type=float, default=1e-2, show_default=True)
@click.option(
    "--patience", type=click.IntRange(min=1), default=5, show_default=True, help="Early-stopping patience (epochs)."
)
@click.option("--d-model", type=click.IntRange(min=8), default=128, show_default=True)
@click.option("--heads", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--ff", type=click.IntRange(min=8), default=256, show_default=True)
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True)
@click.option(
    "--unk-prob",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.01,
    show_default=True,
    help="Share of training holds replaced by <UNK> so unseen holds are graded sensibly.",
)
@click.option(
    "--hold-tokens",
    type=click.Choice(HOLD_TOKEN_SCHEMES),
    default=TrainConfig.hold_tokens,
    show_default=True,
    help="One token per (placement, role), or per placement with the role as a feature.",
)
@click.option(
    "--features",
    default=",".join(TrainConfig.features),
    show_default=True,
    help="Comma-separated per-token features, starting x,y,is_hold; from: "
    f"{','.join(f for f in FEATURES if f not in ALL_ROUTE_FEATURES)}, {','.join(FEATURE_GROUPS)} "
    "(route geometry on <CLS>: route = counts, x/y statistics, moves; shape = move sequence, spans, support; "
    "or single route_* features).",
)
@click.option("--loss", type=click.Choice(LOSSES), default=TrainConfig.loss, show_default=True)
@click.option(
    "--huber-delta",
    type=click.FloatRange(min=0, min_open=True),
    default=TrainConfig.huber_delta,
    show_default=True,
    help="Huber loss threshold in difficulty units.",
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default=TrainConfig.schedule,
    show_default=True,
    help="Learning rate after warm-up: constant, or cosine decay to 0 at --epochs.",
)
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=TrainConfig.warmup_epochs, show_default=True)
@click.option(
    "--ascent-weight-floor",
    type=click.FloatRange(0, 1, min_open=True),
    default=TrainConfig.ascent_weight_floor,
    show_default=True,
    help="Weight of a row with no recorded ascents (rises to 1 at 20 ascents); 1 = unweighted.",
)
@click.option(
    "--mirror-prob",
    type=click.FloatRange(0, 1),
    default=TrainConfig.mirror_prob,
    show_default=True,
    help="Chance a training route is replaced by its left-right mirror (boards with mirrored holes).",
)
@click.option(
    "--readout",
    type=click.Choice(READOUTS),
    default=TrainConfig.readout,
    show_default=True,
    help="cls: MLP on the <CLS> token; cls+sum: plus a per-token score summed over the route; "
    "cls+features: the MLP also reads the <CLS> token's input features (route geometry).",
)
@click.option(
    "--head",
    type=click.Choice(HEADS),
    default=TrainConfig.head,
    show_default=True,
    help="value: regress one number (--loss); bins: a distribution over difficulty bins one unit apart, "
    "trained with cross-entropy, predicting its mean.",
)
@click.option(
    "--bin-sigma",
    type=float,
    default=TrainConfig.bin_sigma,
    show_default=True,
    help="Bins head's target: 0 splits each grade between its two nearest bins; > 0 spreads it as a "
    "Gaussian this wide (difficulty units), so near misses cost less.",
)
@click.option(
    "--shrink",
    type=float,
    default=TrainConfig.shrink,
    show_default=True,
    help="Pull predictions toward the training mean by this factor (the graph outputs mean + S x (p - mean)). "
    "Below 1 corrects an ensemble that spreads its predictions wider than the grades; a run without "
    "--refit logs (and writes to metrics.json) the value best on its validation climbs.",
)
@click.option(
    "--calibrate",
    is_flag=True,
    help="After training, choose --shrink and the width of the 80% interval on the validation climbs and "
    "build both into best.pt (the exported graph then also outputs low and high). Not with --refit.",
)
@click.option(
    "--interval-scale",
    type=click.FloatRange(min=0),
    default=TrainConfig.interval_scale,
    show_default=True,
    help="Width of the interval for a --refit run (what --calibrate chose on a validation run); 0 = none.",
)
@click.option(
    "--teacher",
    metavar="RUN",
    default=TrainConfig.teacher,
    help="Distil: learn this finished bins-head run's distributions (an ensemble; same split and filters). "
    "The student reads routes with the teacher's tokenizer.",
)
@click.option(
    "--teacher-weight",
    type=click.FloatRange(0, 1),
    default=TrainConfig.teacher_weight,
    show_default=True,
    help="Share of the teacher's distribution in a graded row's target; the rest is the community grade.",
)
@click.option(
    "--teacher-angles",
    is_flag=True,
    help="The teacher also labels every training climb at each other angle its board offers.",
)
@click.option(
    "--teacher-mirrors",
    is_flag=True,
    help="The teacher also labels every training climb mirrored (layouts with mirrored holes).",
)
@click.option(
    "--coord-encoding",
    type=click.Choice(COORD_ENCODINGS),
    default=TrainConfig.coord_encoding,
    show_default=True,
    help="linear: per-token features as they are; fourier: plus sin/cos of x and y at 6 frequencies.",
)
@click.option(
    "--amp",
    is_flag=True,
    help="Mixed precision: training steps under bfloat16 autocast (for GPUs with bfloat16; weights stay float32).",
)
@click.option(
    "--ema-decay",
    type=click.FloatRange(0, 1, max_open=True),
    default=TrainConfig.ema_decay,
    show_default=True,
    help="Keep an exponential moving average of the weights with this decay per step (0 = off).",
)
@click.option(
    "--members",
    type=click.IntRange(min=1),
    default=TrainConfig.members,
    show_default=True,
    help="Ensemble size: networks trained together and averaged (exported as one graph).",
)
@click.option(
    "--member-holds",
    default="",
    show_default=True,
    help="Comma-separated, cycled over members: token (embed the tokenizer's token) or placement "
    "(one embedding per placement, roles merged).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=TrainConfig.workers,
    show_default=True,
    help="Processes the ensemble's members are split over, one CPU thread each share (2 on a 2-core machine: "
    "about 1.5x faster than 1). Results depend on it: it is part of the run's options.",
)
@click.option(
    "--refit",
    is_flag=True,
    help="Train on the training and validation climbs for exactly --epochs and keep the last epoch "
    "(choose --epochs from a run without it); the test climbs stay held out.",
)
@click.option(
    "--train-fraction",
    type=float,
    default=TrainConfig.train_fraction,
    show_default=True,
    help="Train on this seeded share of the training climbs (grouped by climb; validation and test unchanged): "
    "how accuracy grows with data (bench/learning_curve.py).",
)
@click.option("--device", default="auto", show_default=True, help="auto (GPU when present), cpu, cuda, cuda:1 ...")
@click.option("-v", "--verbose", is_flag=True)
def train_command(
    databases: tuple[str, ...],
    catalog: str | None,
    out: Path,
    resume: bool,
    epochs: int | None,
    verbose: bool,
    features: str,
    member_holds: str,
    heads: int,
    layers: int,
    ff: int,
    **options: Any,
) -> None:
    """Train a grade model on boardlib databases or Boardsesh snapshots into a run folder."""
    _setup_logging(verbose)
    ctx = click.get_current_context()
    if resume:
        fixed = [
            f"--{name.replace('_', '-')}"
            for name in ctx.params
            if name not in RESUMABLE and ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        ]
        if fixed:
            _fail(
                ClimbgradeError(
                    f"--resume continues the run with its saved options; drop {', '.join(fixed)} "
                    "(only --epochs, --db and --catalog may change)"
                )
            )
    try:
        if resume:
            resume_run(out, epochs, databases, catalog)
            return
        config = TrainConfig(
            databases=databases or databases_from_env(),
            catalog=catalog,
            epochs=epochs or DEFAULT_EPOCHS,
            n_heads=heads,
            n_layers=layers,
            d_ff=ff,
            features=expand_features(_words(features)),
            member_holds=_words(member_holds),
            **options,
        )
        train_run(config, out)
    except ClimbgradeError as exc:
        _fail(exc)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("exports"), show_default=True)
@click.option("--name", default=None, help="File name stem. Default: the run folder's name.")
@click.option("--opset", type=click.IntRange(min=17), default=DEFAULT_OPSET, show_default=True)
@click.option(
    "--db",
    "databases",
    multiple=True,
    metavar="[BOARD=]PATH",
    help="Where the run's databases are now, if they moved (validation data for the parity check).",
)
@CATALOG_OPTION
@click.option(
    "--tolerance",
    type=float,
    default=DEFAULT_TOLERANCE,
    show_default=True,
    help="Largest |onnxruntime - PyTorch| accepted on validation routes.",
)
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    default=None,
    help="Also write NAME.int8.onnx (dynamic int8 quantisation) with its own sidecar.",
)
@click.option(
    "--int8-max-drop",
    type=float,
    default=DEFAULT_INT8_MAX_DROP,
    show_default=True,
    help="Refuse the int8 model if it loses more points of within-1-V-grade on the test split.",
)
@click.option("-v", "--verbose", is_flag=True)
def export_command(
    run_dir: Path,
    out: Path,
    name: str | None,
    opset: int,
    databases: tuple[str, ...],
    catalog: str | None,
    tolerance: float,
    quantize: str | None,
    int8_max_drop: float,
    verbose: bool,
) -> None:
    """Export RUN_DIR's best model to ONNX with its sidecar, after checking it against PyTorch."""
    _setup_logging(verbose)
    try:
        path = export_run(
            run_dir,
            out,
            opset=opset,
            name=name,
            databases=databases,
            catalog=catalog,
            tolerance=tolerance,
            quantize_int8=quantize == "int8",
            int8_max_drop=int8_max_drop,
        )
    except ClimbgradeError as exc:
        _fail(exc)
    click.echo(str(path))
