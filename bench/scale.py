"""Scale benchmark: cg-train's reading and training and cg-eval at 1x, 4x and 8x ../shared/data.

    .venv/bin/python bench/scale.py                                  # 1x, 4x, 8x (about 6 minutes on 2 cores)
    .venv/bin/python bench/scale.py --factors 1,2 --epoch-rows 1024  # quicker

A full 2026 catalogue is 6-20x what ../shared/data holds. Each size here is ../shared/data's two
databases with every climb repeated under new uuids (bench/replicate.py): the real layouts, holds and
mix of ascent counts, built in a temporary folder and deleted after. Per size, each part in a process of
its own, so that each peak RSS is that part's alone:

  read + encode  what cg-train does before its first epoch (prepare_run: read, split, tokenizer, encode
                 every split): seconds and peak RSS.
  epoch          rows/s of training one network of the recipe's size (4 layers, d 128, bins head, the
                 shipped features) on CPU over a seeded sample of --epoch-rows training rows: a full
                 epoch is the training rows over this (every row costs the same, whatever the size).
  cg-eval        the shipped model grading every row into a --predictions file: rows/s and peak RSS.

Everything is measured in this one run and ends in one table, with each figure's ratio to the first
size's: linear growth is a time ratio near the size ratio, and cg-eval's RSS ratio near 1.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from replicate import replicate

from climbgrade_train.config import TrainConfig
from climbgrade_train.dataset import EncodedSet
from climbgrade_train.features import expand_features
from climbgrade_train.model import GradeModel
from climbgrade_train.run_folder import prepare_run
from climbgrade_train.train import _train_epoch, new_model_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = Path(os.environ.get("CLIMBGRADE_DATA", ROOT.parent / "shared" / "data"))
SHIPPED_FEATURES = (
    "x,y,is_hold,role_start,role_middle,role_finish,role_foot,angle,nearest,nearest2,move_dx,move_dy,route,shape"
)
# The teacher members' recipe (docs/training.md), one network of it.
RECIPE = dict(lr=0.001, dropout=0.2, head="bins", features=expand_features(SHIPPED_FEATURES.split(",")))


def read_and_epoch(databases: list[str], epoch_rows: int) -> dict[str, Any]:
    """In this process: cg-train's reading (time, peak RSS), then a training epoch over a sample (rows/s)."""
    torch.set_num_threads(2)
    config = TrainConfig().replace(databases=tuple(databases), **RECIPE)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        run = prepare_run(config, Path(out), resume=False)
    read_s = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    train = run.sets["train"]
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(train), size=min(epoch_rows, len(train)), replace=False))
    sample = EncodedSet.build([train.examples[i] for i in chosen], run.tokenizer)
    model = GradeModel(new_model_config(config, run, run.tokenizer.placement_groups()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    started = time.perf_counter()
    _train_epoch(model, optimizer, sample, config, torch.device("cpu"), 1, None, rng)
    epoch_s = time.perf_counter() - started
    return {
        "rows": sum(len(s) for s in run.sets.values()),
        "train_rows": len(train),
        "read_s": read_s,
        "read_peak_mb": peak_mb,
        "epoch_rows_per_s": len(sample) / epoch_s,
    }


def cg_eval(databases: list[str], folder: Path) -> dict[str, float]:
    """The shipped model on every row, with --predictions: rows/s and peak RSS (GNU time) of the command."""
    report, predictions = folder / "eval.time", folder / "predictions.csv"
    command = [str(BIN / "cg-eval"), *(w for db in databases for w in ("--db", db)), "--predictions", str(predictions)]
    started = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(report), *command], check=True, capture_output=True)
    seconds = time.perf_counter() - started
    with predictions.open() as handle:
        rows = sum(1 for _ in handle) - 1
    predictions.unlink()
    return {
        "eval_rows": rows,
        "eval_rows_per_s": rows / seconds,
        "eval_peak_mb": int(report.read_text().split()[-1]) / 1024,
    }


def measure(factor: int, epoch_rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"scale{factor}x-") as tmp:
        folder = Path(tmp)
        databases = [str(replicate(DATA / name, folder / name, factor)) for name in ("kilter.db", "tension.db")]
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--epoch-rows", str(epoch_rows), *databases],
            check=True,
            capture_output=True,
            text=True,
        )
        found = json.loads(child.stdout.strip().splitlines()[-1])
        return {"factor": factor, **found, **cg_eval(databases, folder)}


def table(results: list[dict[str, Any]]) -> str:
    """One row per size, each figure beside its ratio to the first size's."""
    first = results[0]
    head = (
        "| size | rows | train rows | read+encode s | (ratio) | ms/row | read peak MB | epoch rows/s | "
        "cg-eval rows/s | cg-eval peak MB | (ratio) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        lines.append(
            f"| {r['factor']}x | {r['rows']:,} | {r['train_rows']:,} | {r['read_s']:.1f} | "
            f"{r['read_s'] / first['read_s']:.2f} | {1000 * r['read_s'] / r['rows']:.3f} | {r['read_peak_mb']:.0f} | "
            f"{r['epoch_rows_per_s']:,.0f} | {r['eval_rows_per_s']:,.0f} | {r['eval_peak_mb']:.0f} | "
            f"{r['eval_peak_mb'] / first['eval_peak_mb']:.2f} |"
        )
    return "\n".join(lines)


@click.command()
@click.option("--factors", default="1,4,8", show_default=True, help="Sizes, as multiples of ../shared/data.")
@click.option("--epoch-rows", type=click.IntRange(min=64), default=4096, show_default=True)
@click.option("--child", is_flag=True, hidden=True, help="Measure read + epoch on DATABASES in this process.")
@click.argument("databases", nargs=-1)
def main(factors: str, epoch_rows: int, child: bool, databases: tuple[str, ...]) -> None:
    if child:
        click.echo(json.dumps(read_and_epoch(list(databases), epoch_rows)))
        return
    if not (DATA / "kilter.db").is_file():
        raise click.ClickException(f"no kilter.db in {DATA}: set CLIMBGRADE_DATA to ../shared/data")
    results = []
    for factor in (int(f) for f in factors.split(",")):
        results.append(measure(factor, epoch_rows))
        click.echo(f"{factor}x: {json.dumps(results[-1])}", err=True)
    click.echo(table(results))


if __name__ == "__main__":
    main()
