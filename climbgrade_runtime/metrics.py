"""The metrics every report uses (training, export sidecar, evaluation): eight for accuracy, two for the interval."""

from __future__ import annotations

from collections.abc import Callable

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
    return _by_board(boards, lambda rows: regression_metrics(true[rows], pred[rows], grades))


def interval_metrics(targets: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, float]:
    """How well a model's interval holds the community grades: `coverage`, the share of targets with
    low <= target <= high (an 80% interval should hold about 0.8), and `mean_width` (high - low).

    Both are NaN for no rows, as regression_metrics' are.
    """
    true, lo, hi = (np.asarray(a, dtype=np.float64) for a in (targets, low, high))
    if not true.shape == lo.shape == hi.shape or true.ndim != 1:
        raise ValueError(f"expected three 1-D arrays of equal length, got {true.shape}, {lo.shape} and {hi.shape}")
    if true.size == 0:
        return {"count": 0, "coverage": float("nan"), "mean_width": float("nan")}
    return {
        "count": int(true.size),
        "coverage": float(np.mean((lo <= true) & (true <= hi))),
        "mean_width": float(np.mean(hi - lo)),
    }


def interval_metrics_by_board(
    boards: list[str], targets: np.ndarray, low: np.ndarray, high: np.ndarray
) -> dict[str, dict[str, float]]:
    """interval_metrics overall (key 'all') and for each board name present."""
    true, lo, hi = (np.asarray(a, dtype=np.float64) for a in (targets, low, high))
    return _by_board(boards, lambda rows: interval_metrics(true[rows], lo[rows], hi[rows]))


TRUSTED_ASCENTS = 5  # rows graded by at least this many climbers: their grade is settled, so reported apart


def interval_report(
    boards: list[str], targets: np.ndarray, low: np.ndarray, high: np.ndarray, ascents: np.ndarray
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """interval_metrics_by_board over every row, and over the rows with >= TRUSTED_ASCENTS ascents."""
    true, lo, hi = (np.asarray(a, dtype=np.float64) for a in (targets, low, high))
    sure = np.asarray(ascents) >= TRUSTED_ASCENTS
    kept = [board for board, keep in zip(boards, sure) if keep]
    return (
        interval_metrics_by_board(boards, true, lo, hi),
        interval_metrics_by_board(kept, true[sure], lo[sure], hi[sure]),
    )


def _by_board(boards: list[str], score: Callable[[np.ndarray], dict[str, float]]) -> dict[str, dict[str, float]]:
    """`score(rows)` over every row (key 'all'), then over each board's rows (`rows`: a boolean mask)."""
    board_arr = np.asarray(boards)
    out = {"all": score(np.ones(len(board_arr), dtype=bool))}
    for board in sorted(set(boards)):
        out[board] = score(board_arr == board)
    return out
