"""`cg-eval`'s library: score an exported model on every usable route of boardlib databases.

This is how a gym checks a model on its own board's data, and how the README's figures are
reproduced: with `split="test"` only the climbs the model's sidecar says it was tested on count.
A model with an interval is also scored on it: how often the community grade falls inside, how wide it is.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .boardlib_db import ClimbFilter
from .errors import ClimbgradeError, ModelError
from .files import atomic_open, atomic_write_text
from .graded import Example, load_examples, skip_reason
from .metrics import METRIC_NAMES, TRUSTED_ASCENTS, interval_report, metrics_by_board
from .model_io import INTERVAL_COVERAGE
from .predictor import DEFAULT_BATCH_SIZE, GradePredictor
from .results import Prediction, RouteFailure
from .routes import Route
from .split import SPLITS, SplitRule, uuid_digest
from .svg import picture_title, render_route_svg, svg_file_name
from .tokenizer import UNSEEN_HOLDS

_HEADERS = ("board", "rows", "MAE", "RMSE", "R2", "<=1 diff", "<=2 diff", "exact V", "<=1 V", "<=2 V")
# Columns of `cg-eval --predictions`, in order (GradedRow.to_dict's keys).
PREDICTION_COLUMNS = (
    "uuid",
    "name",
    "board",
    "layout_id",
    "angle",
    "ascents",
    "community_difficulty",
    "predicted_difficulty",
    "residual",
    "community_font",
    "community_v_grade",
    "predicted_font",
    "predicted_v_grade",
)
# Added after predicted_difficulty when the model has an interval.
INTERVAL_COLUMNS = ("predicted_low", "predicted_high")
PREDICTION_FORMATS = (".csv", ".jsonl")
_INTERVAL_HEADERS = ("board", "rows", "coverage", "width", f">={TRUSTED_ASCENTS} asc", "coverage", "width")


def prediction_columns(interval: bool) -> tuple[str, ...]:
    """The columns of `cg-eval --predictions`: PREDICTION_COLUMNS, with INTERVAL_COLUMNS for a model with one."""
    if not interval:
        return PREDICTION_COLUMNS
    at = PREDICTION_COLUMNS.index("predicted_difficulty") + 1
    return PREDICTION_COLUMNS[:at] + INTERVAL_COLUMNS + PREDICTION_COLUMNS[at:]


class Progress(Protocol):
    """What evaluate reports progress to (click's progress bar is one)."""

    def update(self, n_steps: int) -> None: ...


@dataclass(frozen=True)
class GradedRow:
    """One (climb, angle) row the model graded: the community's grade beside the model's."""

    example: Example
    prediction: Prediction
    community_font: str
    community_v_grade: str

    @property
    def residual(self) -> float:
        """Predicted minus community difficulty: negative where the community grades it harder."""
        return self.prediction.difficulty - self.example.difficulty

    def to_dict(self) -> dict[str, Any]:
        e, p = self.example, self.prediction
        interval = {} if p.low is None or p.high is None else dict(zip(INTERVAL_COLUMNS, (p.low, p.high)))
        return {
            "uuid": e.uuid,
            "name": e.name,
            "board": e.board,
            "layout_id": e.layout_id,
            "angle": e.angle,
            "ascents": e.ascents,
            "community_difficulty": round(e.difficulty, 4),
            "predicted_difficulty": round(p.difficulty, 4),
            **{k: round(v, 4) for k, v in interval.items()},
            "residual": round(self.residual, 4),
            "community_font": self.community_font,
            "community_v_grade": self.community_v_grade,
            "predicted_font": p.font,
            "predicted_v_grade": p.v_grade,
        }


@dataclass(frozen=True)
class Evaluation:
    """Metrics overall ('all') and per board, with what was left out and why.

    `interval`, for a model with one: its nominal coverage, and interval_metrics per board on all rows
    ("all_rows") and on rows with >= TRUSTED_ASCENTS ascents ("trusted_rows").
    """

    model: str
    split: str  # "all", or one of SPLITS
    min_ascents: int
    metrics: dict[str, dict[str, float]]
    not_graded: dict[str, int] = field(default_factory=dict)  # reason -> rows the model could not grade
    notes: tuple[str, ...] = ()
    rows: tuple[GradedRow, ...] = field(default=(), repr=False, compare=False)  # in database order
    interval: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "split": self.split,
            "min_ascents": self.min_ascents,
            "metrics": self.metrics,
            **({} if self.interval is None else {"interval": self.interval}),
            "not_graded": self.not_graded,
            "notes": list(self.notes),
        }

    def table(self) -> str:
        lines = [
            f"model {self.model}  split {self.split}  min ascents {self.min_ascents}",
            "  ".join(f"{h:>8}" for h in _HEADERS),
        ]
        for board, m in self.metrics.items():
            cells = [board, f"{m['count']:,}", f"{m['mae']:.3f}", f"{m['rmse']:.3f}", f"{m['r2']:.3f}"]
            cells += [f"{100 * m[name]:.1f}%" for name in METRIC_NAMES[3:]]
            lines.append("  ".join(f"{c:>8}" for c in cells))
        if self.interval is not None:
            nominal = self.interval["nominal_coverage"]
            lines.append(f"\ninterval (made to hold {nominal:.0%} of community grades): rows inside it, mean width")
            lines.append("  ".join(f"{h:>8}" for h in _INTERVAL_HEADERS))
            trusted = self.interval["trusted_rows"]
            for board, m in self.interval["all_rows"].items():
                cells = [board, *_interval_cells(m), *_interval_cells(trusted.get(board))]
                lines.append("  ".join(f"{c:>8}" for c in cells))
        return "\n".join(lines)


def _interval_cells(m: dict[str, float] | None) -> list[str]:
    """rows, coverage, mean width of one board's interval_metrics; dashes where it has no rows."""
    if m is None or m["count"] == 0:
        return ["0", "-", "-"]
    return [f"{m['count']:,}", f"{100 * m['coverage']:.1f}%", f"{m['mean_width']:.2f}"]


def evaluate(
    predictor: GradePredictor,
    databases: Sequence[str],
    *,
    min_ascents: int = 0,
    split: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], AbstractContextManager[Progress]] | None = None,
) -> Evaluation:
    """Grade every usable (climb, angle) row of `databases` (only `split`'s climbs, if given) and score it.

    All rows are graded in one predict_many, so they are sorted by length across the whole run and
    each batch pads little. `progress(total_rows)` (e.g. click.progressbar's length) is entered once
    the rows are read and updated as each batch is graded, so a long run is not silent.
    """
    data = load_examples(databases, ClimbFilter(min_ascents=min_ascents))
    examples = data.examples
    notes: list[str] = []
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}")
        rule = SplitRule.from_dict(predictor.sidecar.data.get("split"))
        examples = [e for e in examples if rule.assign(e.uuid) == split]
        if split == "test":
            notes.append(_test_split_note(predictor.sidecar.data["split"], {e.uuid for e in examples}))
    routes = [Route(e.board, e.layout_id, e.angle, e.route.holds) for e in examples]
    with progress(len(routes)) if progress is not None else nullcontext() as bar:
        results = predictor.predict_many(routes, batch_size=batch_size, progress=None if bar is None else bar.update)
    graded = [(e, r) for e, r in zip(examples, results) if isinstance(r, Prediction)]
    not_graded = Counter(skip_reason(r.error) for r in results if isinstance(r, RouteFailure))
    if not graded:
        raise ModelError(
            f"this model could grade none of the {len(examples)} rows selected: "
            + (", ".join(f"{n} where {why}" for why, n in not_graded.items()) or "the selection is empty")
        )
    unseen = sum(any(UNSEEN_HOLDS in w for w in r.warnings) for _, r in graded)
    if unseen:
        notes.append(f"{unseen} of {len(graded)} rows have holds the model never saw in training")
    metrics = metrics_by_board(
        [e.board for e, _ in graded],
        np.array([e.difficulty for e, _ in graded]),
        np.array([r.difficulty for _, r in graded]),
        predictor.grades,
    )
    community = [predictor.grades.grade(e.difficulty) for e, _ in graded]
    rows = tuple(GradedRow(e, r, g.font, g.v) for (e, r), g in zip(graded, community))
    interval = _interval(graded) if predictor.has_interval else None
    return Evaluation(
        str(predictor.model_path), split or "all", min_ascents, metrics, dict(not_graded), tuple(notes), rows, interval
    )


def _interval(graded: Sequence[tuple[Example, Prediction]]) -> dict[str, Any]:
    """The interval's coverage and width per board, on all rows and on the rows with settled grades."""
    all_rows, trusted_rows = interval_report(
        [e.board for e, _ in graded],
        np.array([e.difficulty for e, _ in graded]),
        np.array([p.low for _, p in graded], dtype=np.float64),
        np.array([p.high for _, p in graded], dtype=np.float64),
        np.array([e.ascents for e, _ in graded]),
    )
    return {
        "nominal_coverage": INTERVAL_COVERAGE,
        "all_rows": all_rows,
        "trusted_min_ascents": TRUSTED_ASCENTS,
        "trusted_rows": trusted_rows,
    }


def check_predictions_path(path: str | Path) -> None:
    """Refuse a --predictions file that could not be written, before the minutes of grading, not after.

    Its format must show in its suffix and its folder must exist and be writable.
    """
    if Path(path).suffix.lower() not in PREDICTION_FORMATS:
        raise ClimbgradeError(f"--predictions {path}: name a {' or '.join(PREDICTION_FORMATS)} file")
    folder = Path(path).parent
    if not folder.exists():
        raise ClimbgradeError(f"--predictions {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise ClimbgradeError(f"--predictions {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ClimbgradeError(f"--predictions {path}: the folder {folder} is not writable")


def write_predictions(rows: Sequence[GradedRow], path: str | Path) -> None:
    """Every graded row as CSV or JSON Lines (by `path`'s suffix), prediction_columns in order; atomic."""
    check_predictions_path(path)
    columns = prediction_columns(bool(rows) and rows[0].prediction.low is not None)
    try:
        with atomic_open(path) as handle:
            if Path(path).suffix.lower() == ".csv":
                writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
                writer.writeheader()
                writer.writerows(row.to_dict() for row in rows)
            else:
                handle.writelines(json.dumps(row.to_dict()) + "\n" for row in rows)
    except OSError as exc:
        raise ClimbgradeError(f"cannot write {path}: {exc.strerror or exc}") from exc


def find_outliers(rows: Sequence[GradedRow], count: int) -> tuple[list[GradedRow], list[GradedRow]]:
    """The `count` climbs the community grades furthest above the model, and the `count` furthest below.

    Above (community grade higher than predicted: over-graded): likely soft touches; below (community
    grade lower than predicted: the model finds it harder than its grade): likely sandbags. A climb
    graded at several angles counts once per list, by its row furthest that way, so `count` distinct
    climbs are listed. Each list is furthest first; a row graded exactly as predicted is in neither.
    """
    ordered = sorted(rows, key=lambda r: (r.residual, r.example.uuid, r.example.angle))
    above = _first_per_climb((r for r in ordered if r.residual < 0), count)
    below = _first_per_climb((r for r in reversed(ordered) if r.residual > 0), count)
    return above, below


def _first_per_climb(rows: Iterable[GradedRow], count: int) -> list[GradedRow]:
    """The first row of each climb, up to `count` climbs (rows come furthest first)."""
    seen: set[str] = set()
    firsts: list[GradedRow] = []
    for row in rows:
        if len(firsts) == count:
            break
        if row.example.uuid not in seen:
            seen.add(row.example.uuid)
            firsts.append(row)
    return firsts


def outlier_table(rows: Sequence[GradedRow]) -> str:
    """Outliers for people: name, uuid, angle, ascents, community vs predicted grade, residual."""
    lines = [f"{'name':<28}  {'uuid':<32}  {'board':<8}  angle  ascents  community        predicted        residual"]
    for r in rows:
        e, p = r.example, r.prediction
        community = f"{e.difficulty:5.1f} {r.community_font}/{r.community_v_grade}"
        predicted = f"{p.difficulty:5.1f} {p.font}/{p.v_grade}"
        lines.append(
            f"{e.name[:28]:<28}  {e.uuid:<32}  {e.board:<8}  {e.angle:>5}  {e.ascents:>7}  "
            f"{community:<15}  {predicted:<15}  {r.residual:+8.2f}"
        )
    return "\n".join(lines)


def write_pictures(rows: Sequence[GradedRow], folder: str | Path, stem: str) -> list[Path]:
    """One SVG per row in `folder`, `<stem>-<rank>-<name>.svg`, titled with both grades; their paths."""
    paths = []
    for rank, row in enumerate(rows, start=1):
        e, p = row.example, row.prediction
        label = f"{e.name or e.uuid} ({row.residual:+.1f} on community {row.community_font}/{row.community_v_grade})"
        title = picture_title(p, label)
        path = Path(folder) / svg_file_name(f"{stem}-{rank}", e.name or e.uuid)
        try:
            atomic_write_text(path, render_route_svg(e.route.layout, e.route.holds, title))
        except OSError as exc:
            raise ClimbgradeError(f"cannot write {path}: {exc.strerror or exc}") from exc
        paths.append(path)
    return paths


def _test_split_note(recorded: dict[str, Any], found: set[str]) -> str:
    """Say whether these databases hold exactly the climbs the model was tested on."""
    expected = recorded.get("test_climbs")
    if recorded.get("test_climbs_sha256") == uuid_digest(found):
        return f"test climbs: the same {len(found)} climbs the model was tested on"
    return (
        f"test climbs: {len(found)} found here, {expected} in the model's test split (other databases or "
        "filters): these figures are not the sidecar's"
    )
