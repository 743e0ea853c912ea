"""`cg-eval`'s library: score an exported model on every usable route of board databases, in flat memory.

This is how a gym checks a model on its own board's data, and how the README's figures are
reproduced: with `split="test"` only the climbs the model's sidecar says it was tested on count.
A model with an interval is also scored on it: how often the community grade falls inside, how wide it is.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from .board_db import ClimbFilter
from .errors import ClimbgradeError, ModelError
from .files import atomic_open, atomic_write_text
from .graded import Example, ExampleReader, skip_reason
from .grades import GradeTable
from .metrics import METRIC_NAMES, TRUSTED_ASCENTS, interval_report, metrics_by_board
from .model_io import INTERVAL_COVERAGE
from .predictor import GradePredictor
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


# Rows read, graded and let go at a time: memory stays flat whatever the size of the databases, and a
# chunk is long enough that sorting it by length pads each onnxruntime batch about as little as a global sort.
EVAL_CHUNK_ROWS = 8192
# Routes per onnxruntime run: onnxruntime's buffers for the longest batch set cg-eval's peak memory. On 91k
# Kilter rows (2 threads, a shared machine) 64 took 245 MB at 3,990 rows/s, 128 326 MB at 4,570, 256 487 MB
# at 3,920 (16,384-row chunks; 8,192 saves about 30 MB more).
EVAL_BATCH_SIZE = 128
RowSink = Callable[[GradedRow], None]


def evaluate(
    predictor: GradePredictor,
    databases: Sequence[str],
    *,
    catalog: str | None = None,
    climbs: ClimbFilter | None = None,
    split: str | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
    progress: Callable[[int], AbstractContextManager[Progress]] | None = None,
    sinks: Sequence[RowSink] = (),
) -> Evaluation:
    """Grade every usable (climb, angle) row of `databases` (only `split`'s climbs, if given) and score it.

    The rows stream from the databases EVAL_CHUNK_ROWS at a time; each graded row goes to every sink
    (PredictionWriter.write, OutlierFinder.add) in database order and is then let go: only a few numbers
    a row are kept, for the metrics. `progress(rows)` (e.g. click.progressbar's length) is entered with
    the rows the databases hold for the filter and updated as they are graded or skipped.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}")
    climbs = climbs or ClimbFilter()
    reader = ExampleReader(databases, climbs, catalog)
    rule = None if split is None else SplitRule.from_dict(predictor.sidecar.data.get("split"))
    selected = (e for e in reader if rule is None or rule.assign(e.uuid) == split)
    tally = _Tally(predictor.has_interval)
    not_graded: Counter[str] = Counter()
    found: set[str] = set()  # the uuids of the split's climbs, for the test-split note
    with progress(reader.count()) if progress is not None else nullcontext() as bar:
        accounted = 0
        while chunk := list(itertools.islice(selected, EVAL_CHUNK_ROWS)):
            routes = [Route(e.board, e.layout_id, e.angle, e.route.holds) for e in chunk]
            results = predictor.predict_many(
                routes, batch_size=batch_size, progress=None if bar is None else bar.update
            )
            for example, result in zip(chunk, results):
                if split == "test":
                    found.add(example.uuid)
                if isinstance(result, RouteFailure):
                    not_graded[skip_reason(result.error)] += 1
                    continue
                community = predictor.grades.grade(example.difficulty)
                row = GradedRow(example, result, community.font, community.v)
                tally.add(row)
                for sink in sinks:
                    sink(row)
            if bar is not None:  # the rows the reader skipped, or left out of the split, on the way
                bar.update(reader.rows_read - accounted - len(chunk))
            accounted = reader.rows_read
        if bar is not None and reader.rows_read > accounted:
            bar.update(reader.rows_read - accounted)
    if not tally.count:
        raise ModelError(
            f"this model could grade none of the {sum(not_graded.values())} rows selected: "
            + (", ".join(f"{n} where {why}" for why, n in not_graded.items()) or "the selection is empty")
        )
    notes: list[str] = []
    if split == "test":
        notes.append(_test_split_note(predictor.sidecar.data["split"], found))
    if tally.unseen:
        notes.append(f"{tally.unseen} of {tally.count} rows have holds the model never saw in training")
    metrics, interval = tally.scores(predictor.grades)
    return Evaluation(
        str(predictor.model_path), split or "all", climbs.min_ascents, metrics, dict(not_graded), tuple(notes), interval
    )


class _Tally:
    """What the metrics need of each graded row, in flat arrays (a few bytes a row, never the rows)."""

    def __init__(self, interval: bool) -> None:
        self.interval = interval
        self.boards: list[str] = []  # the boards met, in order; `board` indexes it
        self.board, self.ascents = array("H"), array("q")
        self.true, self.pred, self.low, self.high = array("d"), array("d"), array("d"), array("d")
        self.unseen = 0

    @property
    def count(self) -> int:
        return len(self.true)

    def add(self, row: GradedRow) -> None:
        e, p = row.example, row.prediction
        if e.board not in self.boards:
            self.boards.append(e.board)
        self.board.append(self.boards.index(e.board))
        self.true.append(e.difficulty)
        self.pred.append(p.difficulty)
        self.ascents.append(e.ascents)
        if self.interval:
            self.low.append(np.nan if p.low is None else p.low)
            self.high.append(np.nan if p.high is None else p.high)
        self.unseen += any(UNSEEN_HOLDS in w for w in p.warnings)

    def scores(self, grades: GradeTable) -> tuple[dict[str, dict[str, float]], dict[str, Any] | None]:
        """The metrics per board and, for a model with an interval, its coverage and width per board."""
        boards = [self.boards[i] for i in self.board]
        true = np.frombuffer(self.true, dtype=np.float64)
        metrics = metrics_by_board(boards, true, np.frombuffer(self.pred, dtype=np.float64), grades)
        if not self.interval:
            return metrics, None
        all_rows, trusted_rows = interval_report(
            boards,
            true,
            np.frombuffer(self.low, dtype=np.float64),
            np.frombuffer(self.high, dtype=np.float64),
            np.frombuffer(self.ascents, dtype=np.int64),
        )
        interval = {
            "nominal_coverage": INTERVAL_COVERAGE,
            "all_rows": all_rows,
            "trusted_min_ascents": TRUSTED_ASCENTS,
            "trusted_rows": trusted_rows,
        }
        return metrics, interval


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


class PredictionWriter:
    """cg-eval --predictions: each graded row written as it comes (CSV or JSON Lines, by the suffix).

    prediction_columns in order; the file appears whole when the block ends (atomic_open), and not at
    all if the block raises. A failed write is a ClimbgradeError naming the file.
    """

    def __init__(self, path: str | Path, interval: bool) -> None:
        check_predictions_path(path)
        self.path = Path(path)
        self.columns = prediction_columns(interval)
        self.rows = 0
        self._file: AbstractContextManager[IO[Any]] | None = None
        self._write: Callable[[dict[str, Any]], object] = lambda _row: None

    def __enter__(self) -> PredictionWriter:
        with self._failures():
            self._file = atomic_open(self.path)
            handle = self._file.__enter__()
            if self.path.suffix.lower() == ".csv":
                writer = csv.DictWriter(handle, fieldnames=self.columns, lineterminator="\n")
                writer.writeheader()
                self._write = writer.writerow
            else:
                self._write = lambda row: handle.write(json.dumps(row) + "\n")
        return self

    def write(self, row: GradedRow) -> None:
        with self._failures():
            self._write(row.to_dict())
        self.rows += 1

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            with self._failures():
                self._file.__exit__(*exc)

    @contextmanager
    def _failures(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise ClimbgradeError(f"cannot write {self.path}: {exc.strerror or exc}") from exc


class OutlierFinder:
    """The `count` climbs the community grades furthest above the model, and the `count` furthest below.

    Above (community grade higher than predicted: over-graded): likely soft touches; below (community
    grade lower than predicted: the model finds it harder than its grade): likely sandbags. A climb
    graded at several angles counts once per list, by its row furthest that way, so `count` distinct
    climbs are listed. Rows are added as they are graded and only the leaders are kept (flat memory).
    """

    def __init__(self, count: int) -> None:
        self._above = _Furthest(count, larger=False)
        self._below = _Furthest(count, larger=True)

    def add(self, row: GradedRow) -> None:
        key = (row.residual, row.example.uuid, row.example.angle)
        if key[0] < 0:
            self._above.offer(key, row)
        elif key[0] > 0:
            self._below.offer(key, row)

    def found(self) -> tuple[list[GradedRow], list[GradedRow]]:
        """(above, below), each furthest first; a row graded exactly as predicted is in neither."""
        return self._above.rows(), self._below.rows()


Key = tuple[float, str, int]  # (residual, uuid, angle): rows in this order, ties broken the same way every run


class _Furthest:
    """The `count` climbs with the furthest keys one way (`larger` or smaller), one row each: its furthest."""

    def __init__(self, count: int, larger: bool) -> None:
        self.count, self.larger = count, larger
        self.kept: dict[str, tuple[Key, GradedRow]] = {}  # uuid -> its furthest key and row
        self._nearest: str | None = None  # the kept climb least far (None: work it out again)

    def _further(self, a: Key, b: Key) -> bool:
        return a > b if self.larger else a < b

    def offer(self, key: Key, row: GradedRow) -> None:
        uuid = key[1]
        if uuid in self.kept:
            if self._further(key, self.kept[uuid][0]):
                self.kept[uuid], self._nearest = (key, row), None
            return
        if len(self.kept) < self.count:
            self.kept[uuid], self._nearest = (key, row), None
            return
        if not self.kept:
            return
        if self._nearest is None:
            pick = min if self.larger else max
            self._nearest = pick(self.kept.values(), key=lambda kr: kr[0])[0][1]
        if self._further(key, self.kept[self._nearest][0]):
            del self.kept[self._nearest]
            self.kept[uuid], self._nearest = (key, row), None

    def rows(self) -> list[GradedRow]:
        return [row for _, row in sorted(self.kept.values(), key=lambda kr: kr[0], reverse=self.larger)]


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
