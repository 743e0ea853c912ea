"""GradePredictor: the Python API apps embed, and what `cg-infer` calls."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import model_io
from .errors import ModelError, RouteError
from .insight import (
    AngleGrade,
    Explanation,
    HoldEffect,
    InsightRequest,
    Mirror,
    RouteInsight,
    Sweep,
    frames_of,
    no_mirror_reason,
)
from .results import Prediction, RouteFailure
from .routes import Route, parse_route, route_labels, unknown_keys
from .session import create_session
from .sidecar import Sidecar, file_sha256, sidecar_path
from .tokenizer import ResolvedRoute, RouteIds, check_angle, resolved_from_holds

DEFAULT_MODEL_FILE = "climbgrade.onnx"
# Routes per onnxruntime run in predict_many: the best with 2 threads for format 1; for format 2,
# bench/runtime.py measured 64: 4,145, 128: 4,830, 256: 4,427 and 512: 4,639 routes/s (within its noise).
DEFAULT_BATCH_SIZE = 256
STREAM_CHUNK_ROUTES = 1024  # routes read, graded and handed back at a time by predict_stream


class Estimate(NamedTuple):
    """What the model says of one route: its difficulty and, from a model with an interval, the interval's ends."""

    difficulty: float
    low: float | None = None
    high: float | None = None


def default_model_path() -> Path:
    """The model shipped in `exports/`: installed as the package data `climbgrade_runtime.exports`.

    In a source checkout (an editable install, or Python started in the repository root, where the
    `climbgrade_runtime/` folder shadows the installed package) that package is not importable, and
    the model is `exports/` beside the package folder.
    """
    try:
        return Path(str(resources.files("climbgrade_runtime.exports").joinpath(DEFAULT_MODEL_FILE)))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "exports" / DEFAULT_MODEL_FILE


class GradePredictor:
    """A model/sidecar pair. Thread-safe: onnxruntime sessions allow concurrent `run` calls.

    `load` checks the pair (files, sidecar format, sha256) but opens no onnxruntime session:
    that happens on the first prediction, or on `warm_up()` for a kiosk that wants it at start-up.
    """

    def __init__(self, model_path: Path, sidecar: Sidecar, session_options: dict[str, Any]) -> None:
        self.model_path = model_path
        self.sidecar = sidecar
        self.tokenizer = sidecar.tokenizer
        self.grades = sidecar.grades
        self._session_options = session_options
        self._session_instance: Any = None
        self._session_lock = threading.Lock()

    @property
    def has_interval(self) -> bool:
        """Whether the model outputs a calibrated interval (Prediction.low/.high), as its sidecar says.

        Opening the session checks that the graph outputs what the sidecar lists.
        """
        return tuple(n for n, _ in self.sidecar.outputs) == tuple(n for n, _ in model_io.INTERVAL_OUTPUTS)

    @property
    def _session(self) -> Any:
        if self._session_instance is None:
            with self._session_lock:
                if self._session_instance is None:
                    session = create_session(self.model_path, **self._session_options)
                    _check_pair(self.model_path, self.sidecar, session)
                    self._session_instance = session
        return self._session_instance

    def warm_up(self) -> None:
        """Open the session now and run it once, so the first real route is as fast as the rest."""
        layout = next(iter(self.tokenizer.layouts.values()))
        hold = (next(iter(layout.placements)), layout.role_names[0])  # any role: some boards name them by colour
        route = Route(layout.board, layout.layout_id, layout.angles[0], (hold,))
        self._run([self.tokenizer.ids(self.tokenizer.resolve(route))])

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        providers: Sequence[str] | None = None,
    ) -> GradePredictor:
        """Load `path` (a .onnx file, or a folder holding climbgrade.onnx); default: the shipped model."""
        model_path = Path(path) if path is not None else default_model_path()
        if model_path.is_dir():
            model_path = model_path / DEFAULT_MODEL_FILE
        if not model_path.is_file():
            raise ModelError(
                f"model {model_path} does not exist: pass --model PATH to a .onnx file written by cg-export"
            )
        sidecar = Sidecar.load(sidecar_path(model_path))
        if file_sha256(model_path) != sidecar.model_sha256:
            raise ModelError(
                f"model {model_path} does not match its sidecar {sidecar_path(model_path)} (sha256 differs): "
                "use the pair cg-export wrote together, or re-export"
            )
        options = {"intra_op_threads": intra_op_threads, "inter_op_threads": inter_op_threads, "providers": providers}
        return cls(model_path, sidecar, options)

    def predict(self, route: Route | dict[str, Any]) -> Prediction:
        """Grade one route (a Route or its JSON object); raises RouteError if it cannot be graded."""
        parsed, labels, warnings = _parse(route)
        resolved = self.tokenizer.resolve(parsed)
        estimate = self._run([self.tokenizer.ids(resolved)])[0]
        return self._prediction(0, parsed, resolved, estimate, labels, warnings)

    def predict_many(
        self,
        routes: Iterable[Route | dict[str, Any] | RouteError],
        batch_size: int = DEFAULT_BATCH_SIZE,
        first_index: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> list[Prediction | RouteFailure]:
        """Grade many routes; each bad one becomes a RouteFailure and the rest are still answered.

        Routes are grouped by length and padded only to each batch's longest. A RouteError item
        (e.g. a line of input that was not JSON) passes straight through as a failure. Results are
        in input order, numbered from `first_index` (for callers that grade a stream in chunks).
        `progress(n)` hears of every n routes answered (the failures once parsed, then each batch once
        run), so a caller grading a whole database in one call can show how far it is.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        results: list[Prediction | RouteFailure | None] = []
        pending: list[tuple[int, Route, ResolvedRoute, RouteIds, dict[str, Any], tuple[str, ...]]] = []
        for index, item in enumerate(routes, start=first_index):
            try:
                if isinstance(item, RouteError):
                    raise item
                parsed, labels, warnings = _parse(item)
                resolved = self.tokenizer.resolve(parsed)
                pending.append((index, parsed, resolved, self.tokenizer.ids(resolved), labels, warnings))
                results.append(None)
            except RouteError as exc:
                results.append(RouteFailure(index, str(exc), route_labels(item)))
        if progress is not None and len(results) > len(pending):
            progress(len(results) - len(pending))
        pending.sort(key=lambda p: len(p[3].placements))
        for start in range(0, len(pending), batch_size):
            chunk = pending[start : start + batch_size]
            estimates = self._run([p[3] for p in chunk])
            for (index, parsed, resolved, _, labels, warnings), estimate in zip(chunk, estimates):
                results[index - first_index] = self._prediction(index, parsed, resolved, estimate, labels, warnings)
            if progress is not None:
                progress(len(chunk))
        return [r for r in results if r is not None]

    def predict_stream(
        self,
        routes: Iterable[Route | dict[str, Any] | RouteError],
        chunk_size: int = STREAM_CHUNK_ROUTES,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Iterator[list[Prediction | RouteFailure]]:
        """predict_many over a stream of any length, `chunk_size` routes at a time (memory stays flat).

        Yields each chunk's results as soon as they are made; indices count from the stream's start.
        """
        for first, chunk in _chunks(routes, chunk_size):
            yield self.predict_many(chunk, batch_size=batch_size, first_index=first)

    def sweep(self, route: Route | dict[str, Any], angles: Sequence[int] | None = None) -> Sweep:
        """The route at each angle of its layout (or at `angles`, each one of the layout's), in one onnxruntime run."""
        parsed, labels, warnings = _parse(route)
        resolved = self.tokenizer.resolve(parsed)
        return self._sweep(parsed, resolved, labels, warnings, resolved.layout.angles if angles is None else angles)

    def explain(self, route: Route | dict[str, Any]) -> Explanation:
        """What each hold does: the route graded whole and with each hold left out, in one run of n+1 routes.

        A start or finish hold whose removal leaves none is still scored (Explanation.warnings says so);
        a route's only hold cannot be left out, so a one-hold route's hold has no effect (and a warning).
        """
        parsed, labels, warnings = _parse(route)
        return self._explain(parsed, self.tokenizer.resolve(parsed), labels, warnings)

    def mirror(self, route: Route | dict[str, Any]) -> Mirror | None:
        """The route's left-right mirror, graded; None when its layout has no mirrors or a hold has none."""
        parsed, _, _ = _parse(route)
        return self._mirror(parsed, self.tokenizer.resolve(parsed))

    def insight_stream(
        self,
        routes: Iterable[Route | dict[str, Any] | RouteError],
        request: InsightRequest,
        chunk_size: int = STREAM_CHUNK_ROUTES,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Iterator[list[RouteInsight | RouteFailure]]:
        """predict_stream plus, per graded route, the extras `request` asks for (each extra one run per route).

        A route whose extras cannot be made (an --angles angle its board lacks) becomes a RouteFailure;
        a missing mirror, or a one-hold route's hold without an effect, is only a warning.
        """
        for first, chunk in _chunks(routes, chunk_size):
            results = self.predict_many(chunk, batch_size=batch_size, first_index=first)
            yield [self._insight(r, x, request) if isinstance(r, Prediction) else r for r, x in zip(results, chunk)]

    def _insight(
        self, prediction: Prediction, record: Route | dict[str, Any], request: InsightRequest
    ) -> RouteInsight | RouteFailure:
        parsed, labels, warnings = _parse(record)
        resolved = self.tokenizer.resolve(parsed)
        try:
            sweep = None
            if request.angles is not None:
                sweep = self._sweep(parsed, resolved, labels, warnings, request.angles.angles(resolved.layout))
            explanation = self._explain(parsed, resolved, labels, warnings) if request.explain else None
        except RouteError as exc:
            return RouteFailure(prediction.index, str(exc), prediction.labels)
        mirror = self._mirror(parsed, resolved) if request.mirror else None
        notes: tuple[str, ...] = ()
        if request.mirror and mirror is None:
            notes = (no_mirror_reason(resolved),)
        elif mirror is not None:
            notes = tuple(f"mirror: {w}" for w in mirror.warnings if w not in prediction.warnings)
        return RouteInsight(prediction, resolved, sweep, explanation, mirror, request.mirror, notes)

    def _sweep(
        self,
        parsed: Route,
        resolved: ResolvedRoute,
        labels: dict[str, Any],
        warnings: tuple[str, ...],
        angles: Sequence[int],
    ) -> Sweep:
        wanted = tuple(dict.fromkeys(angles))
        for angle in wanted:
            check_angle(resolved.layout, angle)
        batch = (resolved.angle, *(a for a in wanted if a != resolved.angle))  # the route's own angle first
        values = dict(zip(batch, self._run([self.tokenizer.ids(resolved, angle) for angle in batch])))
        prediction = self._prediction(0, parsed, resolved, values[resolved.angle], labels, warnings)
        return Sweep(prediction, tuple(self._angle_grade(a, values[a]) for a in wanted))

    def _angle_grade(self, angle: int, estimate: Estimate) -> AngleGrade:
        grade = self.grades.grade(estimate.difficulty)
        return AngleGrade(angle, estimate.difficulty, grade.font, grade.v, estimate.low, estimate.high)

    def _explain(
        self, parsed: Route, resolved: ResolvedRoute, labels: dict[str, Any], warnings: tuple[str, ...]
    ) -> Explanation:
        holds = resolved.holds
        if len(holds) < 2:  # its only hold cannot be left out (no holds is no route): graded whole, no effect
            estimate = self._run([self.tokenizer.ids(resolved)])[0]
            prediction = self._prediction(0, parsed, resolved, estimate, labels, warnings)
            return Explanation(prediction, tuple(HoldEffect(pid, role, None) for pid, role in holds), None)
        layout, angle = resolved.layout, resolved.angle
        without = [resolved_from_holds(layout, angle, holds[:i] + holds[i + 1 :]) for i in range(len(holds))]
        estimates = self._run([self.tokenizer.ids(r) for r in (resolved, *without)])
        values = [e.difficulty for e in estimates]
        prediction = self._prediction(0, parsed, resolved, estimates[0], labels, warnings)
        effects = tuple(
            HoldEffect(pid, role, value - values[0], tuple(w for w in route.warnings if w not in resolved.warnings))
            for (pid, role), value, route in zip(holds, values[1:], without)
        )
        positive = {h.placement_id: h.effect for h in effects if h.effect is not None and h.effect > 0}
        crux = max(positive, key=positive.__getitem__) if positive else None
        return Explanation(prediction, effects, crux)

    def _mirror(self, route: Route, resolved: ResolvedRoute) -> Mirror | None:
        mirrored = resolved.mirrored()
        if mirrored is None:
            return None
        e = self._run([self.tokenizer.ids(mirrored)])[0]
        grade = self.grades.grade(e.difficulty)
        frames = frames_of(mirrored, route)
        notes = self._notes(mirrored)
        return Mirror(e.difficulty, grade.font, grade.v, frames, mirrored.holds, notes, e.low, e.high)

    def _run(self, routes: Sequence[RouteIds]) -> list[Estimate]:
        """One onnxruntime run: per route, the model's outputs (those _check_pair accepted) as an Estimate.

        Every route here passed the sidecar's checks, so a `problems` bit means the graph's tables are
        not the sidecar's: a mismatched pair."""
        names = [name for name, _ in self.sidecar.outputs]
        outputs = dict(zip(names, self._session.run(names, model_io.route_feeds(routes))))
        problems = outputs.pop(model_io.PROBLEMS)
        if np.count_nonzero(problems):
            found = model_io.describe_problems(int(np.bitwise_or.reduce(problems)))
            raise ModelError(
                f"model {self.model_path} refuses routes its sidecar accepts ({found}): "
                "the pair does not match; re-export both with cg-export"
            )
        return [Estimate(*row) for row in zip(*(values.tolist() for values in outputs.values()))]

    def _notes(self, resolved: ResolvedRoute) -> tuple[str, ...]:
        """What the model's reading of a route warns of: a missing start or finish, holds it never saw."""
        return resolved.warnings + self.tokenizer.unseen_warning(resolved)

    def _prediction(
        self,
        index: int,
        route: Route,
        resolved: ResolvedRoute,
        estimate: Estimate,
        labels: dict[str, Any],
        warnings: tuple[str, ...],
    ) -> Prediction:
        grade = self.grades.grade(estimate.difficulty)
        return Prediction(
            index=index,
            difficulty=estimate.difficulty,
            font=grade.font,
            v_grade=grade.v,
            board=route.board,
            layout_id=route.layout_id,
            angle=route.angle,
            warnings=warnings + self._notes(resolved),
            labels=labels,
            low=estimate.low,
            high=estimate.high,
        )


def _chunks(items: Iterable[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    """(index of the chunk's first item, up to `size` items) over a stream of any length."""
    records = iter(items)
    done = 0
    while chunk := list(itertools.islice(records, size)):
        yield done, chunk
        done += len(chunk)


def _parse(route: Route | dict[str, Any]) -> tuple[Route, dict[str, Any], tuple[str, ...]]:
    if isinstance(route, Route):
        return route, {}, ()
    parsed = parse_route(route)
    extra = unknown_keys(route)
    warnings = (f"ignored unknown field(s) {', '.join(extra)}",) if extra else ()
    return parsed, route_labels(route), warnings


def _check_pair(model_path: Path, sidecar: Sidecar, session: Any) -> None:
    """Refuse a model whose graph does not fit its sidecar, listing every disagreement."""
    meta = session.get_modelmeta().custom_metadata_map
    problems = []
    expected = {
        model_io.META_FORMAT: str(model_io.MODEL_FORMAT),
        model_io.META_LAYOUTS: str(len(sidecar.tokenizer.layouts)),
        model_io.META_VOCAB_SIZE: str(len(sidecar.tokenizer.vocab)),
        model_io.META_MAX_LEN: str(sidecar.tokenizer.max_len),
        model_io.META_OPSET: str(sidecar.opset),
        model_io.META_FEATURES: str(sidecar.tokenizer.n_features),
    }
    for key, want in expected.items():
        if meta.get(key) != want:
            problems.append(f"{key.split('.')[-1]}: model {meta.get(key)}, sidecar {want}")
    inputs = tuple(i.name for i in session.get_inputs())
    outputs = tuple(o.name for o in session.get_outputs())
    if inputs != tuple(n for n, _ in model_io.INPUTS) or inputs != tuple(n for n, _ in sidecar.inputs):
        problems.append(f"inputs: model {inputs}, sidecar {tuple(n for n, _ in sidecar.inputs)}")
    known = [tuple(n for n, _ in o) for o in (model_io.OUTPUTS, model_io.INTERVAL_OUTPUTS)]  # without/with an interval
    if outputs not in known or outputs != tuple(n for n, _ in sidecar.outputs):
        problems.append(f"outputs: model {outputs}, sidecar {tuple(n for n, _ in sidecar.outputs)}")
    if problems:
        raise ModelError(
            f"model {model_path} and its sidecar do not match ({'; '.join(problems)}): re-export both with cg-export"
        )
