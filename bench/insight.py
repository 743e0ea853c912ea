"""Are the route-insight answers faithful to real climbs? Two checks against community grades.

    python bench/insight.py                      # the shipped model; real data from $CLIMBGRADE_DATA or ../shared/data

1. What each hold does (GradePredictor.explain): pairs of climbs of one layout, graded at a common
   angle, whose hold sets differ by exactly one hold (the larger one's other holds are the smaller
   one's, in the same roles). The model's change from leaving that hold out of the larger climb (its
   explain effect) against the community's (difficulty of the smaller - of the larger): how often the
   signs agree and the MAE of the size, overall and for pairs with >= 5 ascents on both sides. The
   MAE of "no change" is the reference. A figure to report, not a target: the pairs are few and noisy.
   The pairs come from every row, so a pair with a training climb is in-sample: the model was fitted
   to that climb's grade. Each pair's split (the model's SplitRule) is counted, and the figures are
   given again for the held-out pairs, neither of whose climbs trained the model (val or test).
2. The angle sweep (GradePredictor.sweep): on the model's test climbs graded at several angles, the
   share of angle pairs whose predicted order matches the community's (pairs the community grades
   equal are left out), beside "steeper is harder" as the reference.

Runtime only: no torch.
"""

from __future__ import annotations

import itertools
import os
import shlex
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from climbgrade_runtime import GradePredictor, Route
from climbgrade_runtime.board_db import ClimbFilter
from climbgrade_runtime.graded import Example, load_examples
from climbgrade_runtime.split import SplitRule

ROOT = Path(__file__).resolve().parents[1]
TRUSTED_ASCENTS = 5


@dataclass(frozen=True)
class Pair:
    """Two climbs at one angle: `larger` is `smaller` plus the hold `extra`."""

    larger: Example
    smaller: Example
    extra: int  # placement id


def one_hold_pairs(examples: Sequence[Example]) -> list[Pair]:
    """Every (climb, climb, angle) whose hold sets differ by exactly one hold, roles equal on the rest."""
    by_holds: dict[tuple, list[Example]] = defaultdict(list)
    for e in examples:
        by_holds[(e.board, e.layout_id, e.angle, frozenset(e.route.holds))].append(e)
    pairs: list[Pair] = []
    for (board, layout_id, angle, holds), larger in by_holds.items():
        for hold in holds:
            for smaller in by_holds.get((board, layout_id, angle, holds - {hold}), ()):
                pairs.extend(Pair(big, smaller, hold[0]) for big in larger)
    return sorted(pairs, key=lambda p: (p.larger.uuid, p.smaller.uuid, p.larger.angle))


def route_of(e: Example) -> Route:
    return Route(e.board, e.layout_id, e.angle, e.route.holds)


def pair_split(rule: SplitRule, pair: Pair) -> str:
    """The splits of a pair's two climbs, larger/smaller (e.g. "train/test")."""
    return f"{rule.assign(pair.larger.uuid)}/{rule.assign(pair.smaller.uuid)}"


def explain_rows(predictor: GradePredictor, pairs: Sequence[Pair]) -> list[tuple[str, str, str]]:
    rule = SplitRule.from_dict(predictor.sidecar.data.get("split"))
    predicted, community, trusted, held_out = [], [], [], []
    for pair in pairs:
        predicted.append(predictor.explain(route_of(pair.larger)).effects[pair.extra])
        community.append(pair.smaller.difficulty - pair.larger.difficulty)
        trusted.append(min(pair.larger.ascents, pair.smaller.ascents) >= TRUSTED_ASCENTS)
        held_out.append("train" not in pair_split(rule, pair).split("/"))
    pred, comm, keep, unseen = np.array(predicted), np.array(community), np.array(trusted), np.array(held_out)
    splits = Counter(pair_split(rule, pair) for pair in pairs)
    rows = [
        (
            "explain, pairs by split (larger/smaller)",
            f"{len(pairs)} pairs",
            ", ".join(f"{name} {n}" for name, n in sorted(splits.items(), key=lambda kv: (-kv[1], kv[0]))),
        )
    ]
    for label, mask in (
        ("all pairs, in-sample for training climbs", np.ones(len(pairs), bool)),
        (f"all pairs, >= {TRUSTED_ASCENTS} ascents both", keep),
        ("held out (val/test both)", unseen),
        (f"held out, >= {TRUSTED_ASCENTS} ascents both", unseen & keep),
    ):
        p, c = pred[mask], comm[mask]
        if not len(p):
            rows.append((f"explain, {label}", "0 pairs", ""))
            continue
        signs = np.mean(np.sign(p) == np.sign(c))
        rows.append(
            (
                f"explain, {label}: pairs / sign agrees",
                f"{len(p)} / {100 * signs:.1f}%",
                f"MAE {np.mean(np.abs(p - c)):.2f} (no-change MAE {np.mean(np.abs(c)):.2f})",
            )
        )
    return rows


def sweep_rows(predictor: GradePredictor, examples: Sequence[Example]) -> list[tuple[str, str, str]]:
    rule = SplitRule.from_dict(predictor.sidecar.data.get("split"))
    climbs: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        if rule.assign(e.uuid) == "test":
            climbs[e.uuid].append(e)
    agree = steeper = pairs = ties = 0
    multi = [rows for rows in climbs.values() if len(rows) > 1]
    for rows in multi:
        sweep = predictor.sweep(route_of(rows[0]), angles=[e.angle for e in rows])
        predicted = {a.angle: a.difficulty for a in sweep.angles}
        for low, high in itertools.combinations(sorted(rows, key=lambda e: e.angle), 2):
            community = np.sign(high.difficulty - low.difficulty)
            if community == 0:
                ties += 1
                continue
            pairs += 1
            agree += np.sign(predicted[high.angle] - predicted[low.angle]) == community
            steeper += community > 0
    return [
        (
            f"sweep, {len(multi)} test climbs at >= 2 angles: angle pairs / order agrees",
            f"{pairs} / {100 * agree / max(pairs, 1):.1f}%",
            f"steeper-is-harder {100 * steeper / max(pairs, 1):.1f}%; {ties} tied pairs left out",
        )
    ]


@click.command()
@click.option(
    "--data",
    "data_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=lambda: os.environ.get("CLIMBGRADE_DATA", str(ROOT.parent / "shared" / "data")),
)
@click.option(
    "--model",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Model .onnx. Default: the shipped model.",
)
def main(data_dir: Path, model: Path | None) -> None:
    predictor = GradePredictor.load(model)
    examples = load_examples([str(p) for p in sorted(data_dir.glob("*.db"))], ClimbFilter()).examples
    pairs = one_hold_pairs(examples)
    rows = explain_rows(predictor, pairs) + sweep_rows(predictor, examples)
    click.echo(f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    click.echo(f"model {predictor.model_path.name}, {len(examples):,} climb x angle rows from {data_dir}")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        click.echo(f"{name.ljust(width)}  {value:<16}  {note}")


if __name__ == "__main__":
    main()
