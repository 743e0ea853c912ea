"""Formatting predictions for people (a table) and programs (JSON in the shape the input came in)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .inputs import Shape
from .predictor import Prediction, RouteFailure


def format_json(results: Sequence[Prediction | RouteFailure], shape: Shape) -> str:
    """A single object for a single route, a list for a list, one object per line for JSON Lines."""
    dicts = [r.to_dict() for r in results]
    if shape == "object" and len(dicts) == 1:
        return json.dumps(dicts[0], indent=2)
    if shape == "lines":
        return "\n".join(json.dumps(d) for d in dicts)
    return json.dumps(dicts, indent=2)


def format_table(results: Sequence[Prediction | RouteFailure]) -> str:
    header = ("#", "route", "board", "layout", "angle", "difficulty", "font", "V", "notes")
    rows = [header]
    for r in results:
        label = str(r.labels.get("name", r.labels.get("id", r.labels.get("uuid", ""))))
        if isinstance(r, RouteFailure):
            rows.append((str(r.index), label, "", "", "", "", "", "", f"ERROR: {r.error}"))
        else:
            rows.append((
                str(r.index), label, r.board, str(r.layout_id), str(r.angle),
                f"{r.difficulty:.1f}", r.font, r.v_grade, "; ".join(r.warnings),
            ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + ("  " + row[-1] if row[-1] else "")
        for row in rows
    ).rstrip()


def problem_lines(results: Sequence[Prediction | RouteFailure]) -> list[str]:
    """One stderr line per failed route and per warning, each naming the route."""
    lines = []
    for r in results:
        if isinstance(r, RouteFailure):
            lines.append(f"error: route {r.index}: {r.error}")
        else:
            lines.extend(f"warning: route {r.index}: {w}" for w in r.warnings)
    return lines
