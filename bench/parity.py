"""Parity of an exported model with its PyTorch checkpoint on every usable route of the databases.

    python bench/parity.py --run runs/climbgrade --model exports/climbgrade.onnx \
        --db ../shared/data/kilter.db --db ../shared/data/tension.db

Prints, per batch size, the max and mean |onnxruntime (through GradePredictor) - PyTorch eval|.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from climbgrade_runtime import GradePredictor, Prediction, Route
from climbgrade_runtime.boardlib_db import ClimbFilter
from climbgrade_runtime.graded import load_examples
from climbgrade_runtime.model_io import pad_batch
from climbgrade_train.checkpoints import load_checkpoint
from climbgrade_train.dataset import length_batches
from climbgrade_train.predict import torch_predict


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--db", "databases", multiple=True, required=True)
@click.option("--batch-size", "batch_sizes", type=int, multiple=True, default=(1, 7, 128), show_default=True)
def main(run_dir: str, model_path: str, databases: tuple[str, ...], batch_sizes: tuple[int, ...]) -> None:
    predictor = GradePredictor.load(model_path, intra_op_threads=2)
    model = load_checkpoint(Path(run_dir) / "best.pt")
    resolved = [e.route for e in load_examples(databases, ClimbFilter()).examples]
    routes = [Route(r.layout.board, r.layout.layout_id, r.angle, r.holds) for r in resolved]
    encoded = [predictor.tokenizer.encode_resolved(r) for r in resolved]
    lengths = np.array([len(e.ids) for e in encoded])
    reference = np.empty(len(encoded), dtype=np.float32)
    for idx in length_batches(lengths, 256):
        reference[idx] = torch_predict(model, pad_batch([encoded[i] for i in idx]))
    click.echo(f"{len(encoded)} routes, sequence lengths {lengths.min()}-{lengths.max()}")
    click.echo("batch  max|diff|   mean|diff|  seconds")
    for size in batch_sizes:
        started = time.perf_counter()
        graded = predictor.predict_many(routes, batch_size=size)
        ours = np.array([p.difficulty for p in graded if isinstance(p, Prediction)])
        seconds = time.perf_counter() - started
        assert len(ours) == len(routes), "the model refused routes it was loaded from its own databases"
        diff = np.abs(ours - reference)
        click.echo(f"{size:>5}  {diff.max():.2e}   {diff.mean():.2e}    {seconds:.1f} (parse + tokenize + run)")


if __name__ == "__main__":
    main()
