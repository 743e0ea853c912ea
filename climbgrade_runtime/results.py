"""What grading a route gives: a Prediction, or a RouteFailure saying why it could not be graded.

Plain data with no model behind it, so the modules that format, explain or score results import it
without importing the predictor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prediction:
    """A graded route: Aurora difficulty, its nearest Font and V grade, and any warnings.

    `low`/`high`: the model's calibrated interval (model_io.INTERVAL_COVERAGE of community grades fall
    in it); None for a model that outputs none, whose answers then read as they always have.
    """

    index: int
    difficulty: float
    font: str
    v_grade: str
    board: str
    layout_id: int
    angle: int
    warnings: tuple[str, ...] = ()
    labels: dict[str, Any] = field(default_factory=dict)
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            **self.labels,
            "board": self.board,
            "layout_id": self.layout_id,
            "angle": self.angle,
            "difficulty": self.difficulty,
            **interval_dict(self.low, self.high),
            "font": self.font,
            "v_grade": self.v_grade,
            "warnings": list(self.warnings),
        }


def interval_dict(low: float | None, high: float | None) -> dict[str, float]:
    """`low` and `high` for an answer's JSON, or nothing when the model gave no interval (older models)."""
    return {} if low is None or high is None else {"low": low, "high": high}


@dataclass(frozen=True)
class RouteFailure:
    """A route of a batch that could not be graded, and why."""

    index: int
    error: str
    labels: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, **self.labels, "error": self.error}
