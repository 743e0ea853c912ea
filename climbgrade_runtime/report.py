"""Writing predictions as they are made: a table for people, JSON in the input's shape for programs,
and (cg-infer --svg) a picture per route.

Results arrive in chunks (cg-infer streams JSON Lines), so nothing here needs every result at once.
A RouteInsight (cg-infer --angles/--explain/--mirror) prints as its route's row followed by one
indented row per angle, per hold and for the mirror. A model with an interval adds a `range` column
(its low-high difficulty); an older model's table is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .files import atomic_write_text
from .inputs import Shape
from .insight import RouteInsight
from .results import Prediction, RouteFailure
from .svg import picture_title, render_route_svg, svg_file_name

Result = Prediction | RouteFailure | RouteInsight
# Fixed widths, so rows printed chunk by chunk line up; a longer value just widens its own row.
_COLUMNS = (
    ("#", 5),
    ("route", 16),
    ("board", 8),
    ("layout", 6),
    ("angle", 5),
    ("difficulty", 10),
    ("range", 9),  # only for a model with an interval
    ("font", 4),
    ("V", 4),
)


class ResultWriter:
    """Write results to `stream` as they come (flushed per chunk); call `close` once at the end.

    `interval`: the model gives one (GradePredictor.has_interval), so the table has a `range` column.
    """

    def __init__(self, output_format: str, shape: Shape, stream: TextIO, interval: bool = False) -> None:
        self.output_format = output_format
        self.shape = shape
        self.stream = stream
        self.count = 0
        self._single: Result | None = None
        self._columns = tuple(i for i, (name, _) in enumerate(_COLUMNS) if interval or name != "range")

    def write(self, results: Sequence[Result]) -> None:
        out = []
        for result in results:
            if self.output_format == "table":
                if self.count == 0:
                    out.append(self._row([name for name, _ in _COLUMNS] + ["notes"]))
                out.append(self._row(_cells(result)))
                if isinstance(result, RouteInsight):
                    out.extend(self._row(cells) for cells in _insight_rows(result))
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

    def _row(self, cells: list[str]) -> str:
        """One table line: the columns this table has (cells come for every column in _COLUMNS), then notes."""
        fixed = "  ".join(cells[i].ljust(_COLUMNS[i][1]) for i in self._columns)
        return (fixed + "  " + cells[-1]).rstrip() + "\n"

    def close(self) -> None:
        if self.output_format == "json" and self.shape == "object" and self._single is not None:
            self.stream.write(json.dumps(self._single.to_dict(), indent=2) + "\n")
        elif self.output_format == "json" and self.shape == "list":
            self.stream.write("[]\n" if self.count == 0 else "\n]\n")
        self.stream.flush()


def route_label(result: Result) -> str:
    """The name (else id, else uuid) the user gave the route; "" if none."""
    return str(result.labels.get("name", result.labels.get("id", result.labels.get("uuid", ""))))


def _cells(result: Result) -> list[str]:
    if isinstance(result, RouteFailure):
        return [str(result.index), route_label(result), "", "", "", "", "", "", "", f"ERROR: {result.error}"]
    # A RouteInsight's hold warnings go on its hold rows (_insight_rows), not here.
    p, notes = (result.prediction, result.mirror_notes) if isinstance(result, RouteInsight) else (result, ())
    return [
        str(p.index),
        route_label(p),
        p.board,
        str(p.layout_id),
        str(p.angle),
        f"{p.difficulty:.1f}",
        _interval_text(p.low, p.high),
        p.font,
        p.v_grade,
        "; ".join(p.warnings + notes),
    ]


def _interval_text(low: float | None, high: float | None) -> str:
    """The `range` cell, `21.3-24.8`; "" without an interval."""
    return "" if low is None or high is None else f"{low:.1f}-{high:.1f}"


def _insight_rows(insight: RouteInsight) -> list[list[str]]:
    """Under the route's row: `· angle` rows, `· hold p<id>` rows (role, signed effect, crux), a `· mirror` row."""
    rows = []
    own = insight.prediction.angle
    for a in insight.sweep.angles if insight.sweep is not None else ():
        note = "the route's angle" if a.angle == own else ""
        span = _interval_text(a.low, a.high)
        rows.append(["", "· angle", "", "", str(a.angle), f"{a.difficulty:.1f}", span, a.font, a.v_grade, note])
    if insight.explanation is not None:
        crux = insight.explanation.crux
        for h in insight.explanation.holds:
            note = "; ".join((["crux"] if h.placement_id == crux else []) + [f"without it: {w}" for w in h.warnings])
            effect = "-" if h.effect is None else f"{h.effect:+.1f}"  # a one-hold route's hold: no effect
            rows.append(["", f"· hold p{h.placement_id}", h.role, "", "", effect, "", "", "", note])
    if insight.mirror is not None:
        m = insight.mirror
        mirrored = ["", "· mirror", "", "", str(own), f"{m.difficulty:.1f}", _interval_text(m.low, m.high)]
        rows.append(mirrored + [m.font, m.v_grade, m.frames])
    elif insight.mirror_asked:
        rows.append(["", "· mirror", "", "", "", "", "", "", "", "none"])
    return rows


def write_svgs(results: Sequence[Result], folder: Path) -> list[Path]:
    """One picture per graded route (RouteInsight), `<index>[-<name slug>].svg` in `folder`, written atomically.

    The title is the route's name, grade and angle; with --explain the rings show each hold's effect.
    """
    paths = []
    for r in results:
        if not isinstance(r, RouteInsight):
            continue
        p, label = r.prediction, route_label(r)
        title = picture_title(p, label or f"route {p.index}")
        effects = None if r.explanation is None else r.explanation.effects
        path = folder / svg_file_name(str(p.index), label)
        atomic_write_text(path, render_route_svg(r.route.layout, r.route.holds, title, effects))
        paths.append(path)
    return paths


def problem_lines(results: Sequence[Result]) -> list[str]:
    """One stderr line per failed route and per warning, each naming the route."""
    lines = []
    for r in results:
        if isinstance(r, RouteFailure):
            lines.append(f"error: route {r.index}: {r.error}")
        else:
            lines.extend(f"warning: route {r.index}: {w}" for w in r.warnings)
    return lines
