"""Writing predictions as they are made: a table for people, JSON in the input's shape for programs.

Results arrive in chunks (cg-infer streams JSON Lines), so nothing here needs every result at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from .inputs import Shape
from .predictor import Prediction, RouteFailure

Result = Prediction | RouteFailure
# Fixed widths, so rows printed chunk by chunk line up; a longer value just widens its own row.
_COLUMNS = (("#", 5), ("route", 16), ("board", 8), ("layout", 6), ("angle", 5), ("difficulty", 10), ("font", 4), ("V", 4))


class ResultWriter:
    """Write results to `stream` as they come (flushed per chunk); call `close` once at the end."""

    def __init__(self, output_format: str, shape: Shape, stream: TextIO) -> None:
        self.output_format = output_format
        self.shape = shape
        self.stream = stream
        self.count = 0
        self._single: Result | None = None

    def write(self, results: Sequence[Result]) -> None:
        out = []
        for result in results:
            if self.output_format == "table":
                if self.count == 0:
                    out.append(_table_row([name for name, _ in _COLUMNS] + ["notes"]) + "\n")
                out.append(_table_row(_cells(result)) + "\n")
            elif self.shape == "lines":
                out.append(json.dumps(result.to_dict()) + "\n")
            elif self.shape == "object":
                self._single = result
            else:
                item = json.dumps(result.to_dict(), indent=2).replace("\n", "\n  ")
                out.append(("[\n  " if self.count == 0 else ",\n  ") + item)
            self.count += 1
        self.stream.write("".join(out))
        self.stream.flush()

    def close(self) -> None:
        if self.output_format == "json" and self.shape == "object" and self._single is not None:
            self.stream.write(json.dumps(self._single.to_dict(), indent=2) + "\n")
        elif self.output_format == "json" and self.shape == "list":
            self.stream.write("[]\n" if self.count == 0 else "\n]\n")
        self.stream.flush()


def _cells(result: Result) -> list[str]:
    label = str(result.labels.get("name", result.labels.get("id", result.labels.get("uuid", ""))))
    if isinstance(result, RouteFailure):
        return [str(result.index), label, "", "", "", "", "", "", f"ERROR: {result.error}"]
    return [
        str(result.index), label, result.board, str(result.layout_id), str(result.angle),
        f"{result.difficulty:.1f}", result.font, result.v_grade, "; ".join(result.warnings),
    ]


def _table_row(cells: list[str]) -> str:
    fixed = "  ".join(cell.ljust(width) for cell, (_, width) in zip(cells, _COLUMNS))
    return (fixed + "  " + cells[-1]).rstrip()


def problem_lines(results: Sequence[Result]) -> list[str]:
    """One stderr line per failed route and per warning, each naming the route."""
    lines = []
    for r in results:
        if isinstance(r, RouteFailure):
            lines.append(f"error: route {r.index}: {r.error}")
        else:
            lines.extend(f"warning: route {r.index}: {w}" for w in r.warnings)
    return lines
