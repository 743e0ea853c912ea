"""`cg-train` and `cg-export`: option parsing only; the work is in train.py and export.py."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from climbgrade_runtime.board_db import databases_from_env
from climbgrade_runtime.cli import CATALOG_OPTION
from climbgrade_runtime.errors import ClimbgradeError
from climbgrade_runtime.options import build, click_options, declared, given_values, grouped_command

from .config import TrainConfig, TrainError, read_recipe
from .export import DEFAULT_INT8_MAX_DROP, DEFAULT_OPSET, DEFAULT_TOLERANCE, export_run
from .train import resume_run, train_run

EXIT_ERROR = 2


def _setup_logging(verbose: bool) -> None:
    """Our progress at INFO; other libraries (the exporter's optimiser is chatty) only at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for package in ("climbgrade_train", "climbgrade_runtime"):
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)


def _fail(exc: ClimbgradeError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_ERROR)


@click.command(cls=grouped_command(TrainConfig), context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder, e.g. runs/NAME."
)
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
@click.option(
    "--config",
    "recipe",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE.toml",
    help="A recipe: options as TOML, keys the flags below without -- (e.g. heads = 2); flags given here win.",
)
@click_options(TrainConfig)
@click.option("-v", "--verbose", is_flag=True)
def train_command(out: Path, resume: bool, recipe: Path | None, verbose: bool, **params: Any) -> None:
    """Train a grade model on boardlib databases or Boardsesh snapshots into a run folder."""
    _setup_logging(verbose)
    given = given_values(TrainConfig, params)
    try:
        if resume:
            fixed = [d.flag for d in declared(TrainConfig) if d.name in given and not d.option.resumable]
            if fixed or recipe is not None:
                raise TrainError(
                    f"--resume continues the run with its saved options; drop {', '.join(fixed or ['--config'])} "
                    f"(only {', '.join(d.flag for d in declared(TrainConfig) if d.option.resumable)} may change)"
                )
            resume_run(out, given.get("epochs"), given.get("databases", ()), given.get("catalog"))
            return
        values = (read_recipe(recipe) if recipe is not None else {}) | given
        if not values.get("databases"):
            values["databases"] = databases_from_env()
        train_run(build(TrainConfig, values), out)
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
