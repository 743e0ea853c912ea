"""The gradient-boosting baseline of bench/accuracy: LightGBM on hand-made route features.

Benchmark-only (`pip install -e '.[bench]'`): neither the runtime nor training imports it.
Features per (climb, angle) row: board/layout, angle, the runtime's route features (hold and role
counts, x/y statistics of all holds and of hand holds, start and finish heights, move distances
between hand holds taken bottom to top, nearest-neighbour distances) and shape features (the move
sequence, start span, how sparse the hand holds are, support below them): `RouteEncoder.route_features`
(climbgrade_train.features), the graph's own computation, batched over the rows; plus a one-hot indicator
per (layout, placement). It reads every feature the shipped network reads, so
the comparison is of learners, not of inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightgbm
import numpy as np
import torch
from scipy import sparse

from climbgrade_runtime.graded import Example
from climbgrade_runtime.model_io import route_feeds
from climbgrade_runtime.tokenizer import PREFIX_TOKENS, Tokenizer
from climbgrade_train.features import ALL_ROUTE_FEATURES, RouteEncoder

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


FEATURE_BATCH = 1024  # rows per RouteEncoder call


@torch.inference_mode()
def dense_features(examples: Sequence[Example]) -> np.ndarray:
    """[rows, 1 + len(ALL_ROUTE_FEATURES)] float64: each row's angle and its route and shape features, as the
    model's RouteEncoder computes them (for a tokenizer of the rows' own layouts: the vocabulary plays no part)."""
    if not examples:
        return np.zeros((0, 1 + len(ALL_ROUTE_FEATURES)), dtype=np.float64)
    layouts = {e.route.layout.key: e.route.layout for e in examples}.values()
    longest = max(len(e.route.holds) for e in examples)
    tokenizer = Tokenizer.build(layouts, (), max_len=PREFIX_TOKENS + longest)
    encoder = RouteEncoder(tokenizer)
    rows = [tokenizer.ids(e.route) for e in examples]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].placements))
    out: np.ndarray | None = None
    for start in range(0, len(order), FEATURE_BATCH):
        chunk = order[start : start + FEATURE_BATCH]
        feeds = route_feeds([rows[i] for i in chunk])
        found = encoder.route_features(*(torch.from_numpy(v) for v in feeds.values())).numpy()
        if out is None:
            out = np.empty((len(rows), found.shape[1]), dtype=np.float64)
        out[chunk] = found
    assert out is not None
    return np.column_stack([np.array([e.angle for e in examples], dtype=np.float64), out])


class Featurizer:
    """Dense features + board one-hot + one column per (board, layout, placement) seen in training."""

    def __init__(self, train: Sequence[Example]) -> None:
        self.boards = sorted({(e.board, e.layout_id) for e in train})
        self.columns = {
            key: i
            for i, key in enumerate(sorted({(e.board, e.layout_id, pid) for e in train for pid, _ in e.route.holds}))
        }

    def transform(self, examples: Sequence[Example]) -> sparse.csr_matrix:
        boards = np.array([[float((e.board, e.layout_id) == b) for b in self.boards] for e in examples])
        dense = np.column_stack([dense_features(examples), boards.reshape(len(examples), len(self.boards))])
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
