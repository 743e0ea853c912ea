"""Parity of an exported model with its PyTorch checkpoint on every usable route of the databases.

    python bench/parity.py --run runs/climbgrade --model exports/climbgrade.onnx \
        --db ../shared/data/kilter.db --db ../shared/data/tension.db
    python bench/parity.py ... --limit 2000    # a subset spread over every row: a quick figure

The reference is PyTorch eval of the exported module itself (climbgrade_train.grader.Grader: the run's
best.pt behind a RouteEncoder of its tokenizer.json; Aurora ids in), in length-sorted batches of 256.
Prints, per batch size, the max and mean |onnxruntime - PyTorch| of difficulty (and of low and high when
the model has an interval), through GradePredictor.predict_many and through a bare onnxruntime session
on the model_io feeds of the same routes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import numpy as np
import torch

from climbgrade_runtime import GradePredictor, Prediction, Route
from climbgrade_runtime.board_db import ClimbFilter
from climbgrade_runtime.errors import RouteError
from climbgrade_runtime.graded import load_examples
from climbgrade_runtime.model_io import PROBLEMS, route_feeds
from climbgrade_runtime.session import create_session
from climbgrade_runtime.tokenizer import RouteIds
from climbgrade_train.checkpoints import load_checkpoint
from climbgrade_train.grader import Grader
from climbgrade_train.run_folder import read_tokenizer

REFERENCE_BATCH = 256


def length_batches(rows: Sequence[RouteIds], size: int) -> list[list[int]]:
    """Indices of `rows` sorted by hold count (stable, as predict_many sorts), `size` at a time."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].placements))
    return [order[i : i + size] for i in range(0, len(order), size)]


def collect(
    rows: Sequence[RouteIds], size: int, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """`run` on the model_io feeds of length-sorted batches of `size`, each output put back in `rows`' order."""
    out: dict[str, np.ndarray] = {}
    for idx in length_batches(rows, size):
        for name, values in run(route_feeds([rows[i] for i in idx])).items():
            out.setdefault(name, np.empty(len(rows), dtype=values.dtype))[idx] = values
    return out


def diff_cells(found: dict[str, np.ndarray], reference: dict[str, np.ndarray], names: Sequence[str]) -> str:
    cells = []
    for name in names:
        diff = np.abs(found[name].astype(np.float64) - reference[name])
        cells.append(f"{name} {diff.max():.2e} / {diff.mean():.2e}")
    return "; ".join(cells)


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--db", "databases", multiple=True, required=True)
@click.option("--batch-size", "batch_sizes", type=int, multiple=True, default=(1, 7, 128), show_default=True)
@click.option("--limit", type=int, default=None, help="At most this many routes, evenly spread over every row.")
def main(
    run_dir: Path, model_path: str, databases: tuple[str, ...], batch_sizes: tuple[int, ...], limit: int | None
) -> None:
    torch.set_num_threads(2)
    predictor = GradePredictor.load(model_path, intra_op_threads=2)
    tokenizer = read_tokenizer(run_dir)
    if tokenizer.to_dict() != predictor.tokenizer.to_dict():
        raise click.ClickException(f"{run_dir}/tokenizer.json is not the tokenizer of {model_path}'s sidecar")
    grader = Grader(load_checkpoint(run_dir / "best.pt"), tokenizer).eval()
    names = [n for n, _ in grader.output_names if n != PROBLEMS]

    examples = load_examples(databases, ClimbFilter()).examples
    if limit is not None and limit < len(examples):
        examples = [examples[i * len(examples) // limit] for i in range(limit)]
    routes: list[Route] = []
    rows: list[RouteIds] = []
    refused = 0
    for e in examples:
        route = Route(e.board, e.layout_id, e.angle, e.route.holds)
        try:
            rows.append(tokenizer.ids(tokenizer.resolve(route)))
        except RouteError:  # e.g. more holds than the model takes
            refused += 1
            continue
        routes.append(route)

    def torch_run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outputs = grader(*(torch.from_numpy(v) for v in feeds.values()))
        return {n: t.numpy() for (n, _), t in zip(grader.output_names, outputs)}

    started = time.perf_counter()
    reference = {
        k: v.astype(np.float64) if k != PROBLEMS else v for k, v in collect(rows, REFERENCE_BATCH, torch_run).items()
    }
    torch_seconds = time.perf_counter() - started
    if reference[PROBLEMS].any():
        raise click.ClickException(f"PyTorch flags problems for {int((reference[PROBLEMS] != 0).sum())} usable routes")
    holds = np.array([len(r.placements) for r in rows])
    click.echo(
        f"{len(rows):,} routes ({refused} the model refuses), {holds.min()}-{holds.max()} holds; PyTorch reference "
        f"(Grader, batch {REFERENCE_BATCH}) in {torch_seconds:.1f} s"
    )
    session = create_session(model_path, intra_op_threads=2)
    output_names = [o.name for o in session.get_outputs()]
    click.echo("max / mean |onnxruntime - PyTorch|")
    for size in batch_sizes:
        started = time.perf_counter()
        graded = predictor.predict_many(routes, batch_size=size)
        seconds = time.perf_counter() - started
        ours = [p for p in graded if isinstance(p, Prediction)]
        assert len(ours) == len(routes), "GradePredictor refused routes its own tokenizer resolved"
        found = {name: np.array([getattr(p, name) for p in ours], dtype=np.float64) for name in names}
        click.echo(f"batch {size:>4}, GradePredictor: {diff_cells(found, reference, names)}  ({seconds:.1f} s)")

        started = time.perf_counter()
        bare = collect(rows, size, lambda feeds: dict(zip(output_names, session.run(output_names, feeds))))
        seconds = time.perf_counter() - started
        problems = "" if np.array_equal(bare[PROBLEMS], reference[PROBLEMS]) else "; PROBLEMS DIFFER"
        click.echo(
            f"batch {size:>4}, bare session:   {diff_cells(bare, reference, names)}{problems}  ({seconds:.1f} s)"
        )


if __name__ == "__main__":
    main()
