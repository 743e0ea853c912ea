"""How accuracy grows with training data: the same recipes on nested shares of the training climbs.

    python bench/learning_curve.py --db ../shared/data/kilter.db --db ../shared/data/tension.db

Why: the shipped model's accuracy aims (issue 3: MAE <= 1.40, within-1-V >= 82%) were not reached on
this data, a subset of the boards' climbs; this measures whether more climbs, rather than another
lever, is what they need. Every point trains on a seeded, climb-grouped share of the training climbs
(`cg-train --train-fraction`; a climb kept at one share is kept at every larger one), is selected
on the whole validation split and scored on the whole test split, as bench/accuracy's rows are:
- one network of the shipped member recipe (the "shape member recipe + bins head" row);
- the shipped recipe trained on train only (the 8-network ensemble row), without its shrink;
- LightGBM on the same features (bench/gbm.py), early-stopped on validation.
The full-share points reuse bench/accuracy's runs (same --runs folder). Then, for each learner, a
line through log(rows) and log(test MAE), and one through log(rows) and within-1-V, fitted over its
points, and the rows at which they reach the aims: an extrapolation, printed as one.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import click
import numpy as np

from climbgrade_train.run_folder import training_subset

from accuracy import ABLATIONS, ONE_NETWORK, score, slug, split_parts, transformer_predictions

AIM_MAE = 1.40
AIM_WITHIN_1_V = 0.82
NETWORK_ROW = "shape member recipe + bins head (cross-entropy, mean read out)"
ENSEMBLE_ROW = "shipped recipe (bins head), train split only: 8 networks in 2 workers"
GBM = "LightGBM (early-stopped on validation)"
LEARNERS = {
    "one network (shipped member recipe)": NETWORK_ROW,
    "8-network ensemble (shipped recipe, no shrink)": ENSEMBLE_ROW,
}


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
    help="The shipped model: its sidecar gives the split.",
)
@click.option(
    "--fractions", default="0.25,0.5,0.75,1", show_default=True, help="Shares of the training climbs, comma-separated."
)
@click.option(
    "--ensemble-fractions",
    default="0.25,0.5,0.75,1",
    show_default=True,
    help="Shares for the ensemble (about 3.3 min a tenth of the climbs on 2 cores); empty to leave it out.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(
    databases: tuple[str, ...],
    runs_dir: Path,
    model_path: Path,
    fractions: str,
    ensemble_fractions: str,
    json_path: Path | None,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    predictor, shipped, parts = split_parts(databases, model_path)
    grades = predictor.grades
    parse = lambda text: sorted(float(f) for f in text.split(",") if f.strip())  # noqa: E731
    network, ensemble = LEARNERS
    shares = {network: parse(fractions), ensemble: parse(ensemble_fractions), GBM: parse(fractions)}
    if any(not 0 < f <= 1 for fs in shares.values() for f in fs):
        raise click.ClickException("--fractions are shares of the training climbs: each above 0 and at most 1")
    train_climbs = sorted({e.uuid for e in parts["train"]})
    points: dict[str, list[dict[str, float]]] = {}
    for learner, fs in shares.items():
        points[learner] = []
        for fraction in fs:
            kept = set(training_subset(train_climbs, fraction, shipped.split.seed))
            rows = sum(e.uuid in kept for e in parts["train"])
            if learner in LEARNERS:
                row = LEARNERS[learner]
                config = shipped.replace(**ONE_NETWORK | ABLATIONS[row] | {"train_fraction": fraction})
                folder = runs_dir / (slug(row) if fraction == 1 else f"learning_curve/{slug(row)}_{fraction:g}")
                predicted = transformer_predictions(config, folder, parts["test"])
            else:
                from gbm import fit_predict  # bench-only dependency

                predicted, _ = fit_predict([e for e in parts["train"] if e.uuid in kept], parts["val"], parts["test"])
            metrics = score(parts["test"], predicted, grades)["all all rows"]
            points[learner].append(
                {
                    "fraction": fraction,
                    "climbs": len(kept),
                    "rows": rows,
                    "mae": metrics["mae"],
                    "within_1_vgrade": metrics["within_1_vgrade"],
                    "within_2_vgrades": metrics["within_2_vgrades"],
                }
            )
            click.echo(
                f"{learner}, {fraction:g} of the training climbs ({rows} rows): test MAE {metrics['mae']:.3f}", err=True
            )

    full_rows = len(parts["train"])
    click.echo(f"\ntest split: {len(parts['test'])} rows; training split: {full_rows} rows")
    click.echo(f"{'learner':<48} {'share':>6} {'rows':>7} {'MAE':>6} {'<=1 V':>7} {'<=2 V':>7}")
    for learner, pts in points.items():
        for p in pts:
            click.echo(
                f"{learner:<48} {p['fraction']:6.3g} {p['rows']:7d} {p['mae']:6.3f} {100 * p['within_1_vgrade']:6.1f}% "
                f"{100 * p['within_2_vgrades']:6.1f}%"
            )
    click.echo(
        f"\nextrapolation to MAE {AIM_MAE} and within-1-V {AIM_WITHIN_1_V:.0%} (lines against log(rows), through all "
        "of a learner's points and through those from half the climbs up; the curves bend, so the second is "
        "the less hopeful; not a measurement)"
    )
    for learner, pts in points.items():
        for label, chosen in (("all points", pts), ("from 1/2 up", [p for p in pts if p["fraction"] >= 0.5])):
            if len(chosen) < 2:
                continue
            doublings = np.log2([p["rows"] for p in chosen])
            slope, intercept = np.polyfit(doublings, np.log([p["mae"] for p in chosen]), 1)
            gain, base = np.polyfit(doublings, [p["within_1_vgrade"] for p in chosen], 1)
            mae_at = 2 ** ((math.log(AIM_MAE) - intercept) / slope) if slope < 0 else math.inf
            w1v_at = 2 ** ((AIM_WITHIN_1_V - base) / gain) if gain > 0 else math.inf
            click.echo(
                f"{learner}, {label}: MAE x {math.exp(slope):.3f} and within-1-V {100 * gain:+.2f} points per "
                f"doubling of rows; the aims at about {mae_at / full_rows:.1f}x and {w1v_at / full_rows:.1f}x "
                "this training split"
            )
    if json_path is not None:
        json_path.write_text(json.dumps(points, indent=1) + "\n")


if __name__ == "__main__":
    main()
