"""The gradient-boosting baseline of bench/accuracy: LightGBM on hand-made route features.

Benchmark-only (`pip install -e '.[bench]'`): neither the runtime nor training imports it.
Features per (climb, angle) row: board/layout, angle, the runtime's route features (hold and role
counts, x/y statistics of all holds and of hand holds, start and finish heights, move distances
between hand holds taken bottom to top, nearest-neighbour distances) and shape features (the move
sequence, start span, how sparse the hand holds are, support below them; climbgrade_runtime.route_features),
plus a one-hot indicator per (layout, placement). It reads every feature the shipped network reads, so
the comparison is of learners, not of inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightgbm
import numpy as np
from scipy import sparse

from climbgrade_runtime.graded import Example
from climbgrade_runtime.route_features import RouteGeometry, all_route_features

PARAMS = {
    "objective": "regression_l1",
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_threads": 2,
    "verbose": -1,
    "seed": 0,
}


def dense_features(example: Example) -> list[float]:
    """The hand-made geometry features of one row: its angle and the runtime's route and shape features."""
    route = example.route
    return [float(example.angle)] + all_route_features(RouteGeometry.of(route.layout, route.holds)).tolist()


class Featurizer:
    """Dense features + board one-hot + one column per (board, layout, placement) seen in training."""

    def __init__(self, train: Sequence[Example]) -> None:
        self.boards = sorted({(e.board, e.layout_id) for e in train})
        self.columns = {
            key: i
            for i, key in enumerate(sorted({(e.board, e.layout_id, pid) for e in train for pid, _ in e.route.holds}))
        }

    def transform(self, examples: Sequence[Example]) -> sparse.csr_matrix:
        dense = np.array(
            [dense_features(e) + [float((e.board, e.layout_id) == b) for b in self.boards] for e in examples]
        )
        rows, cols = [], []
        for row, e in enumerate(examples):
            for pid, _ in e.route.holds:
                col = self.columns.get((e.board, e.layout_id, pid))
                if col is not None:
                    rows.append(row)
                    cols.append(col)
        holds = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(examples), len(self.columns)))
        return sparse.hstack([sparse.csr_matrix(dense), holds], format="csr")


def fit_predict(
    train: Sequence[Example], val: Sequence[Example], test: Sequence[Example], refit: bool = False
) -> tuple[np.ndarray, int]:
    """Fit on train, early-stop on val (MAE), predict test; returns predictions and the rounds kept.

    With `refit`, fit once more on train + val for the early-stopped rounds scaled by the growth of
    the data (more rows carry more rounds), as a transformer trained with --refit is."""
    target = lambda rows: np.array([e.difficulty for e in rows])  # noqa: E731
    featurizer = Featurizer(train)
    train_set = lightgbm.Dataset(featurizer.transform(train), target(train))
    val_set = lightgbm.Dataset(featurizer.transform(val), target(val), reference=train_set)
    booster = lightgbm.train(
        PARAMS,
        train_set,
        num_boost_round=5000,
        valid_sets=[val_set],
        callbacks=[lightgbm.early_stopping(100, verbose=False)],
    )
    if not refit:
        predicted = booster.predict(featurizer.transform(test), num_iteration=booster.best_iteration)
        assert isinstance(predicted, np.ndarray)  # Booster.predict is sparse only for pred_contrib, never asked here
        return predicted, booster.best_iteration
    both = [*train, *val]
    rounds = round(booster.best_iteration * len(both) / len(train))
    featurizer = Featurizer(both)
    booster = lightgbm.train(PARAMS, lightgbm.Dataset(featurizer.transform(both), target(both)), num_boost_round=rounds)
    predicted = booster.predict(featurizer.transform(test))
    assert isinstance(predicted, np.ndarray)
    return predicted, rounds
