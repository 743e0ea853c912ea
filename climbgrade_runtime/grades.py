"""The Aurora grade table: difficulty (10 = 4a/V0 ... 33 = 8c+/V16) to Font and V grade names."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DatabaseError, ModelError

_V_NUMBER = re.compile(r"V(\d+)")


@dataclass(frozen=True)
class Grade:
    """One row of Aurora's `difficulty_grades` that a board lists."""

    difficulty: int
    font: str
    v: str

    @property
    def name(self) -> str:
        """Aurora's boulder_name, e.g. '6b+/V4'."""
        return f"{self.font}/{self.v}"

    @property
    def v_number(self) -> int:
        match = _V_NUMBER.fullmatch(self.v)
        if match is None:
            raise ModelError(f"grade table entry {self.difficulty} has V grade {self.v!r}, expected 'V<number>'")
        return int(match.group(1))


@dataclass(frozen=True)
class GradeTable:
    """Listed grades in difficulty order; predictions round to the nearest listed difficulty."""

    grades: tuple[Grade, ...]
    _v_numbers: np.ndarray = field(init=False, repr=False, compare=False)  # V number per grade, for batches

    def __post_init__(self) -> None:
        if not self.grades:
            raise ModelError("the grade table is empty: the database's difficulty_grades table lists no grades")
        difficulties = [g.difficulty for g in self.grades]
        if difficulties != list(range(difficulties[0], difficulties[0] + len(difficulties))):
            raise ModelError("the grade table must list consecutive difficulties")
        # Lookup arrays so grading a batch is vectorised rather than a Python loop per route.
        object.__setattr__(self, "_v_numbers", np.array([g.v_number for g in self.grades], dtype=np.int64))

    @classmethod
    def from_rows(cls, rows: list[tuple[int, str, int]]) -> GradeTable:
        """Build from `difficulty_grades` rows (difficulty, boulder_name like '6b+/V4', is_listed)."""
        grades = []
        for difficulty, boulder_name, is_listed in sorted(rows):
            if not is_listed:
                continue
            font, sep, v = str(boulder_name).partition("/")
            if not sep:
                raise DatabaseError(
                    f"difficulty_grades row {difficulty}: boulder_name {boulder_name!r} is not 'FONT/V'"
                )
            grades.append(Grade(int(difficulty), font, v))
        return cls(tuple(grades))

    @property
    def lowest(self) -> int:
        return self.grades[0].difficulty

    @property
    def highest(self) -> int:
        return self.grades[-1].difficulty

    def _index(self, difficulty: np.ndarray) -> np.ndarray:
        rounded = np.floor(np.asarray(difficulty, dtype=np.float64) + 0.5).astype(np.int64)
        return np.clip(rounded, self.lowest, self.highest) - self.lowest

    def grade(self, difficulty: float) -> Grade:
        """The listed grade nearest to `difficulty` (clamped to the table's range).

        Plain Python rather than _index: this runs once per prediction on the hot path.
        """
        rounded = math.floor(float(difficulty) + 0.5)
        return self.grades[min(max(rounded, self.lowest), self.highest) - self.lowest]

    def v_numbers(self, difficulty: np.ndarray) -> np.ndarray:
        """V grade numbers (V0 -> 0) of an array of difficulties."""
        return self._v_numbers[self._index(difficulty)]

    def to_dict(self) -> list[dict[str, Any]]:
        return [{"difficulty": g.difficulty, "font": g.font, "v": g.v} for g in self.grades]

    @classmethod
    def from_dict(cls, data: list[dict[str, Any]]) -> GradeTable:
        return cls(tuple(Grade(int(g["difficulty"]), str(g["font"]), str(g["v"])) for g in data))
