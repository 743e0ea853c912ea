"""The eight accuracy metrics every report uses (training, export sidecar, evaluation)."""

from __future__ import annotations

import numpy as np

from .grades import GradeTable

METRIC_NAMES = (
    "mae",
    "rmse",
    "r2",
    "within_1_difficulty",
    "within_2_difficulty",
    "exact_grouped_v",
    "within_1_vgrade",
    "within_2_vgrades",
)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, grades: GradeTable) -> dict[str, float]:
    """Metrics on the Aurora difficulty scale and on grouped V grades; fractions in [0, 1]."""
    true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(f"expected two 1-D arrays of equal length, got {true.shape} and {pred.shape}")
    if true.size == 0:
        return {name: float("nan") for name in METRIC_NAMES} | {"count": 0}
    err = np.abs(pred - true)
    total = float(np.sum((true - true.mean()) ** 2))
    v_diff = np.abs(grades.v_numbers(pred) - grades.v_numbers(true))
    return {
        "count": int(true.size),
        "mae": float(err.mean()),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": float(1.0 - np.sum(err**2) / total) if total > 0 else float("nan"),
        "within_1_difficulty": float(np.mean(err <= 1.0)),
        "within_2_difficulty": float(np.mean(err <= 2.0)),
        "exact_grouped_v": float(np.mean(v_diff == 0)),
        "within_1_vgrade": float(np.mean(v_diff <= 1)),
        "within_2_vgrades": float(np.mean(v_diff <= 2)),
    }


def metrics_by_board(
    boards: list[str], y_true: np.ndarray, y_pred: np.ndarray, grades: GradeTable
) -> dict[str, dict[str, float]]:
    """Metrics overall (key 'all') and for each board name present."""
    true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    board_arr = np.asarray(boards)
    out = {"all": regression_metrics(true, pred, grades)}
    for board in sorted(set(boards)):
        mask = board_arr == board
        out[board] = regression_metrics(true[mask], pred[mask], grades)
    return out
