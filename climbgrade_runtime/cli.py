"""`cg-infer` (grade routes from JSON or JSON Lines) and `cg-eval` (score a model on boardlib databases).

Options only; the work is in the library."""

from __future__ import annotations

import json
import logging
import sys

import click

from .boardlib_db import databases_from_env
from .errors import ClimbgradeError
from .evaluation import evaluate
from .inputs import read_routes
from .predictor import DEFAULT_BATCH_SIZE, GradePredictor, RouteFailure
from .report import ResultWriter, problem_lines
from .split import SPLITS

EXIT_BAD_INPUT = 2


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", metavar="ROUTES")
@click.option("--model", "model_path", type=click.Path(dir_okay=True), default=None,
              help="Model .onnx (its .onnx.json sidecar beside it). Default: the model shipped with climbgrade.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="onnxruntime intra-op threads.")
@click.option("--provider", "providers", multiple=True, help="onnxruntime execution provider (repeatable). Default: CPU.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="Log what the runtime does.")
def main(source: str, model_path: str | None, output_format: str, threads: int, providers: tuple[str, ...],
         batch_size: int, verbose: bool) -> None:
    """Predict the grade of the routes in ROUTES (a .json or .jsonl file, or - for stdin: the same shapes).

    A route is {"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p1145r12p1200r13..."}
    or the same with "holds": [{"placement_id": 1145, "role": "start"}, ...].
    Exit code 2 when any route could not be graded (the others are still answered).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        routes = read_routes(source, sys.stdin.buffer)
        predictor = GradePredictor.load(model_path, intra_op_threads=threads, providers=providers or None)
        predictor.warm_up()  # a bad model is reported before any output, even if no route is valid
    except ClimbgradeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    writer = ResultWriter(output_format, routes.shape, sys.stdout)
    failed = False
    for results in predictor.predict_stream(routes.records, batch_size=batch_size):
        writer.write(results)
        for line in problem_lines(results):
            click.echo(line, err=True)
        failed = failed or any(isinstance(r, RouteFailure) for r in results)
    writer.close()
    if failed:
        sys.exit(EXIT_BAD_INPUT)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_path", type=click.Path(dir_okay=True), default=None,
              help="Model .onnx (its .onnx.json sidecar beside it). Default: the model shipped with climbgrade.")
@click.option("--db", "databases", multiple=True, metavar="[BOARD=]PATH",
              help="boardlib database (repeatable). Default: every .db in $CLIMBGRADE_DATA.")
@click.option("--min-ascents", type=click.IntRange(min=0), default=0, show_default=True,
              help="Only climb x angle rows with at least this many ascents.")
@click.option("--split", type=click.Choice(SPLITS), default=None,
              help="Only the climbs of this split of the model's own training run (test: what it never trained or selected on).")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="onnxruntime intra-op threads.")
@click.option("-v", "--verbose", is_flag=True, help="Log what the runtime does.")
def eval_command(model_path: str | None, databases: tuple[str, ...], min_ascents: int, split: str | None,
                 output_format: str, threads: int, verbose: bool) -> None:
    """Score a model on every usable route of boardlib databases: the eight metrics, overall and per board."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s")
    try:
        predictor = GradePredictor.load(model_path, intra_op_threads=threads)
        result = evaluate(predictor, databases or databases_from_env(), min_ascents=min_ascents, split=split)
    except ClimbgradeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if output_format == "json":
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        click.echo(result.table())
    for reason, count in result.not_graded.items():
        click.echo(f"not graded: {count} row(s) where {reason}", err=True)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
