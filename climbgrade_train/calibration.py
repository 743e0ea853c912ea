"""Choosing ModelConfig.shrink on validation predictions.

An ensemble of networks that fit their training grades closely spreads its predictions wider than
the grades it predicts: on validation, regressing the grade on the prediction gives a slope below 1
(0.89 for the bins-head ensemble). Pulling every prediction toward the training mean by the factor
that minimises validation MAE corrects that. It is chosen on a run that held validation out, then
given to the refit (--shrink), like the number of epochs; or, with --calibrate, built into the
run's own best.pt together with the interval's width (fit_interval_scale).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from climbgrade_runtime.model_io import INTERVAL_COVERAGE

from .model import ModelConfig

MIN_BOARD_ROWS = 100  # validation rows a board needs for an interval scale of its own
SHRINK_GRID = np.round(np.arange(0.80, 1.0001, 0.01), 2)  # the --shrink values tried


@dataclass(frozen=True)
class ShrinkFit:
    """The validation-best --shrink, and validation MAE with the model's own shrink and with that one."""

    shrink: float
    mae_before: float
    mae_after: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shrunk(predicted: np.ndarray, shrink: float, config: ModelConfig) -> np.ndarray:
    """What a model with `config` would predict with --shrink `shrink` instead of its own."""
    centre = config.target_mean
    raw = centre + (np.asarray(predicted, dtype=np.float64) - centre) / config.shrink
    return centre + shrink * (raw - centre)


def fit_shrink(predicted: np.ndarray, targets: np.ndarray, config: ModelConfig) -> ShrinkFit:
    """The --shrink in SHRINK_GRID that minimises the MAE of `predicted` (made by a model with `config`,
    which may already shrink: the factor returned replaces its own, it is not applied on top)."""
    targets = np.asarray(targets, dtype=np.float64)
    maes = [float(np.abs(shrunk(predicted, s, config) - targets).mean()) for s in SHRINK_GRID]
    best = int(np.argmin(maes))
    return ShrinkFit(
        shrink=float(SHRINK_GRID[best]), mae_before=float(np.abs(predicted - targets).mean()), mae_after=maes[best]
    )


def fit_interval_scale(difficulty: np.ndarray, low: np.ndarray, high: np.ndarray, targets: np.ndarray) -> float:
    """The ModelConfig.interval_scale whose interval holds INTERVAL_COVERAGE of `targets`, given the
    outputs of the same model with interval_scale 1: each row needs the scale that just reaches its
    grade, and the scale chosen is that need's INTERVAL_COVERAGE quantile."""
    difficulty, targets = np.asarray(difficulty, np.float64), np.asarray(targets, np.float64)
    below = np.maximum(difficulty - np.asarray(low, np.float64), 1e-6)
    above = np.maximum(np.asarray(high, np.float64) - difficulty, 1e-6)
    need = np.where(targets < difficulty, (difficulty - targets) / below, (targets - difficulty) / above)
    return float(np.quantile(need, INTERVAL_COVERAGE))


def fit_board_interval_scales(
    difficulty: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    targets: np.ndarray,
    boards: list[str],
    board_tokens: dict[str, list[int]],
) -> tuple[float, tuple[tuple[int, float], ...]]:
    """(the scale fitted on every row, (board token id, scale) for each board with at least
    MIN_BOARD_ROWS rows): a board whose grades a model predicts more surely gets a narrower interval."""
    overall = fit_interval_scale(difficulty, low, high, targets)
    names = np.asarray(boards)
    own: list[tuple[int, float]] = []
    for board, tokens in sorted(board_tokens.items()):
        rows = names == board
        if rows.sum() >= MIN_BOARD_ROWS:
            scale = fit_interval_scale(difficulty[rows], low[rows], high[rows], targets[rows])
            own += [(token, scale) for token in tokens]
    return overall, tuple(own)
