"""`cg-infer` (grade routes from JSON or JSON Lines) and `cg-eval` (score a model on boardlib databases).

Options only; the work is in the library."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import click

from .board_db import ClimbFilter, databases_from_env
from .errors import ClimbgradeError
from .evaluation import (
    OutlierFinder,
    PredictionWriter,
    Progress,
    check_predictions_path,
    evaluate,
    outlier_table,
    write_pictures,
)
from .inputs import read_routes
from .insight import ANGLE_SPEC_FORMS, AngleSpec, InsightRequest, parse_angle_spec
from .options import build, click_option, given_values
from .predictor import DEFAULT_BATCH_SIZE, GradePredictor
from .report import Result, ResultWriter, problem_lines, write_svgs
from .results import RouteFailure
from .split import SPLITS

EXIT_BAD_INPUT = 2
# What --db takes, in every command's help (cg-train, cg-eval, cg-serve).
DB_HELP = "a boardlib database or a Boardsesh snapshot (told by its tables)"
# The geometry of Boardsesh snapshots, for every command with --db.
CATALOG_HELP = "Boardsesh catalogue (every board's holes and placements): what a --db snapshot is read with."
CATALOG_OPTION = click.option(
    "--catalog", type=click.Path(dir_okay=False), default=None, metavar="PATH", help=CATALOG_HELP
)
# The model every command grades with (cg-infer, cg-eval, cg-serve).
MODEL_OPTION = click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=True),
    default=None,
    help="Model .onnx (its .onnx.json sidecar beside it). Default: the model shipped with climbgrade.",
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", metavar="ROUTES")
@MODEL_OPTION
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--threads", type=click.IntRange(min=1), default=1, show_default=True, help="onnxruntime intra-op threads."
)
@click.option(
    "--provider", "providers", multiple=True, help="onnxruntime execution provider (repeatable). Default: CPU."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option(
    "--angles",
    "angle_spec",
    callback=lambda _ctx, _param, value: _angle_spec(value),
    metavar="SPEC",
    help=f"Also grade each route at these angles of its board: {ANGLE_SPEC_FORMS}.",
)
@click.option(
    "--explain", is_flag=True, help="Also show what each hold does: the grade change without it (crux marked)."
)
@click.option("--mirror", is_flag=True, help="Also grade each route's left-right mirror (layouts with mirrored holes).")
@click.option(
    "--svg",
    "svg_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write a picture (SVG) of each graded route into this folder.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what the runtime does.")
def main(
    source: str,
    model_path: str | None,
    output_format: str,
    threads: int,
    providers: tuple[str, ...],
    batch_size: int,
    angle_spec: AngleSpec | None,
    explain: bool,
    mirror: bool,
    svg_dir: str | None,
    verbose: bool,
) -> None:
    """Predict the grade of the routes in ROUTES (a .json or .jsonl file, or - for stdin: the same shapes).

    A route is {"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p1145r12p1200r13..."}
    or the same with "holds": [{"placement_id": 1145, "role": "start"}, ...].
    Exit code 2 when any route could not be graded (the others are still answered).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    request = InsightRequest(angle_spec, explain, mirror)
    pictures = None if svg_dir is None else Path(svg_dir)
    try:
        routes = read_routes(source, sys.stdin.buffer)
        predictor = GradePredictor.load(model_path, intra_op_threads=threads, providers=providers or None)
        predictor.warm_up()  # a bad model is reported before any output, even if no route is valid
        if pictures is not None:
            _make_folder(pictures)
    except ClimbgradeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    writer = ResultWriter(output_format, routes.shape, sys.stdout, interval=predictor.has_interval)
    failed = False
    stream: Iterator[Sequence[Result]]
    if request.empty and pictures is None:
        stream = predictor.predict_stream(routes.records, batch_size=batch_size)
    else:
        stream = predictor.insight_stream(routes.records, request, batch_size=batch_size)
    try:
        for results in stream:
            writer.write(results)
            for line in problem_lines(results):
                click.echo(line, err=True)
            failed = failed or any(isinstance(r, RouteFailure) for r in results)
            if pictures is not None:
                try:
                    write_svgs(results, pictures)
                except OSError as exc:
                    click.echo(f"error: cannot write pictures to {pictures}: {exc.strerror}", err=True)
                    pictures, failed = None, True
    except ClimbgradeError as exc:  # a model that refuses what its sidecar accepts: the pair does not match
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    writer.close()
    if failed:
        sys.exit(EXIT_BAD_INPUT)


def _angle_spec(value: str | None) -> AngleSpec | None:
    """--angles as an AngleSpec: a malformed spec is a usage error (exit 2) before any route is read."""
    if value is None:
        return None
    try:
        return parse_angle_spec(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClimbgradeError(f"cannot make the picture folder {folder}: {exc.strerror}") from exc


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@MODEL_OPTION
@click.option(
    "--db",
    "databases",
    multiple=True,
    metavar="[BOARD=]PATH",
    help=f"{DB_HELP[0].upper()}{DB_HELP[1:]} (repeatable). Default: every .db in $CLIMBGRADE_DATA.",
)
@CATALOG_OPTION
@click_option(ClimbFilter, "min_ascents")
@click.option(
    "--split",
    type=click.Choice(SPLITS),
    default=None,
    help="Only the climbs of this split of the model's own training run (test: what it never trained or selected on).",
)
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--predictions",
    "predictions_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write every graded climb x angle row (community and predicted grades, residual) to .csv/.jsonl.",
)
@click.option(
    "--outliers",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Show the N climbs the community grades furthest above the model (likely soft touches) and below it "
    "(likely sandbags).",
)
@click.option(
    "--svg",
    "svg_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="With --outliers: write a picture of each outlier (SVG) into this folder.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=2, show_default=True, help="onnxruntime intra-op threads."
)
@click.option("-v", "--verbose", is_flag=True, help="Log what the runtime does.")
def eval_command(
    model_path: str | None,
    databases: tuple[str, ...],
    catalog: str | None,
    min_ascents: int | None,
    split: str | None,
    output_format: str,
    predictions_path: str | None,
    outliers: int | None,
    svg_dir: str | None,
    threads: int,
    verbose: bool,
) -> None:
    """Score a model on every usable route of its databases: the eight metrics, overall and per board.

    With --outliers N, also the N climbs graded furthest from the model each way: community grade above the
    prediction (likely soft touches) and below it (likely sandbags). A progress bar shows on stderr when it is a
    terminal.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s")
    try:
        if predictions_path is not None:
            check_predictions_path(predictions_path)
        if svg_dir is not None and outliers is None:
            raise ClimbgradeError("--svg draws the outliers: give --outliers N too")
        predictor = GradePredictor.load(model_path, intra_op_threads=threads)
        finder = OutlierFinder(outliers or 0)
        writer = None if predictions_path is None else PredictionWriter(predictions_path, predictor.has_interval)
        with writer or nullcontext():
            result = evaluate(
                predictor,
                databases or databases_from_env(),
                catalog=catalog,
                climbs=build(ClimbFilter, given_values(ClimbFilter, {"min_ascents": min_ascents})),
                split=split,
                progress=_progress_bar if sys.stderr.isatty() else None,
                sinks=[finder.add] + ([] if writer is None else [writer.write]),
            )
        above, below = finder.found()
        pictures = write_pictures(above, svg_dir, "above") + write_pictures(below, svg_dir, "below") if svg_dir else []
    except (ClimbgradeError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if output_format == "json":
        extra = (
            {}
            if outliers is None
            else {"outliers": {"above": [r.to_dict() for r in above], "below": [r.to_dict() for r in below]}}
        )
        click.echo(json.dumps(result.to_dict() | extra, indent=1))
    else:
        click.echo(result.table())
        if outliers is not None:
            click.echo(
                f"\ngraded above the model (community grade higher than predicted: likely soft touches)\n"
                f"{outlier_table(above)}"
            )
            click.echo(
                f"\ngraded below the model (community grade lower than predicted: likely sandbags)\n"
                f"{outlier_table(below)}"
            )
    if writer is not None:
        click.echo(f"note: wrote {writer.rows} graded rows to {predictions_path}", err=True)
    if pictures:
        click.echo(f"note: wrote {len(pictures)} outlier pictures to {svg_dir}", err=True)
    for reason, count in result.not_graded.items():
        click.echo(f"not graded: {count} row(s) where {reason}", err=True)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)


def _progress_bar(rows: int) -> AbstractContextManager[Progress]:
    """cg-eval's progress on stderr (shown only when stderr is a terminal)."""
    return click.progressbar(length=rows, label="grading", file=sys.stderr)
