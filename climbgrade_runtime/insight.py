"""What a route is beyond one number: its grade at other angles, what each hold does, its mirror.

The result types of GradePredictor.sweep / .explain / .mirror, the `--angles` spec cg-infer takes,
and RouteInsight: one graded route with the extras a cg-infer run asked for. Each `to_dict` gives the
keys cg-infer adds to the route's JSON answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import RouteError
from .geometry import LayoutGeometry
from .results import Prediction, interval_dict
from .routes import Route
from .tokenizer import ResolvedRoute, check_angle

_RANGE = re.compile(r"(\d{1,3})-(\d{1,3})")
_LIST = re.compile(r"\d{1,3}(?:,\d{1,3})*")
ANGLE_SPEC_FORMS = "all, a range such as 20-50, or a list such as 40,45"


@dataclass(frozen=True)
class AngleSpec:
    """Which angles to grade a route at: every angle of its board, those in a range, or a list."""

    text: str
    span: tuple[int, int] | None = None  # inclusive (low, high), for a range
    listed: tuple[int, ...] = ()  # for a list; empty with no span means "all"

    def angles(self, layout: LayoutGeometry) -> tuple[int, ...]:
        """The spec's angles on `layout`; RouteError for a listed angle the board lacks or a range holding none."""
        if self.span is not None:
            low, high = self.span
            found = tuple(a for a in layout.angles if low <= a <= high)
            if not found:
                raise RouteError(
                    f"angle range {self.text} holds no angle of {layout.board} layout {layout.layout_id} "
                    f"(angles: {', '.join(map(str, layout.angles))})"
                )
            return found
        for angle in self.listed:
            check_angle(layout, angle)
        return self.listed or layout.angles


def parse_angle_spec(text: str) -> AngleSpec:
    """`all`, `20-50` or `40,45` (spaces ignored) -> AngleSpec; ValueError naming the accepted forms otherwise."""
    compact = text.replace(" ", "")
    if compact.lower() == "all":
        return AngleSpec("all")
    if match := _RANGE.fullmatch(compact):
        low, high = int(match[1]), int(match[2])
        if low > high:
            raise ValueError(f"angle range {text!r} runs backwards: write {high}-{low}")
        return AngleSpec(compact, span=(low, high))
    if _LIST.fullmatch(compact):
        return AngleSpec(compact, listed=tuple(sorted({int(a) for a in compact.split(",")})))
    raise ValueError(f"{text!r} is not an angle spec: give {ANGLE_SPEC_FORMS}")


@dataclass(frozen=True)
class AngleGrade:
    """The route graded at one wall angle (with the model's interval there, when it has one)."""

    angle: int
    difficulty: float
    font: str
    v_grade: str
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "angle": self.angle,
            "difficulty": self.difficulty,
            **interval_dict(self.low, self.high),
            "font": self.font,
            "v_grade": self.v_grade,
        }


@dataclass(frozen=True)
class Sweep:
    """A route at its own angle (`prediction`) and at each angle asked for."""

    prediction: Prediction
    angles: tuple[AngleGrade, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"angles": [a.to_dict() for a in self.angles]}


@dataclass(frozen=True)
class HoldEffect:
    """effect = difficulty without the hold - difficulty with it: positive when the hold makes the route easier.

    None for a route's only hold: a route with no holds is not a route, so it cannot be left out.
    `warnings`: those of the route without this hold that the whole route does not have (e.g. "route
    has no start hold" for its only start hold: it is still scored).
    """

    placement_id: int
    role: str
    effect: float | None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"placement_id": self.placement_id, "role": self.role, "effect": self.effect}


ONLY_HOLD_WARNING = "a route's only hold cannot be left out: no effects"


@dataclass(frozen=True)
class Explanation:
    """The route graded whole and with each hold left out, in the route's canonical hold order.

    `crux` is the hold whose removal raises the grade most (None if no removal raises it). A one-hold
    route is still explained: its hold listed with no effect, and a warning saying why.
    """

    prediction: Prediction
    holds: tuple[HoldEffect, ...]
    crux: int | None

    @property
    def effects(self) -> dict[int, float]:
        """Placement id -> effect of each hold that has one: what a picture's rings are weighted by."""
        return {h.placement_id: h.effect for h in self.holds if h.effect is not None}

    @property
    def warnings(self) -> tuple[str, ...]:
        """The holds' warnings, each naming its hold ("without p1495: route has no start hold"), or why there are none."""
        alone = (ONLY_HOLD_WARNING,) if len(self.holds) == 1 else ()
        return alone + tuple(f"without p{h.placement_id}: {w}" for h in self.holds for w in h.warnings)

    def to_dict(self) -> dict[str, Any]:
        return {"holds": [h.to_dict() for h in self.holds], "crux": self.crux}


@dataclass(frozen=True)
class Mirror:
    """The route's left-right mirror, graded; `frames` spells it in Aurora frames, in the route's own role ids."""

    difficulty: float
    font: str
    v_grade: str
    frames: str
    holds: tuple[tuple[int, str], ...]
    warnings: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "difficulty": self.difficulty,
            **interval_dict(self.low, self.high),
            "font": self.font,
            "v_grade": self.v_grade,
            "frames": self.frames,
        }


def frames_of(route: ResolvedRoute, like: Route | None = None) -> str:
    """A resolved route as an Aurora frames string (`p<placement>r<role id>`...).

    Role ids are the ones `like` (the route as the user gave it) used for each role name, so a TB2
    route written with TB2's ids (r5-r8) stays in them; other roles take the layout's lowest id.
    """
    layout = route.layout
    given = {layout.roles[r]: r for _, r in (like.holds if like else ()) if isinstance(r, int) and r in layout.roles}
    role_ids = {**layout.role_ids, **given}
    return "".join(f"p{pid}r{role_ids[role]}" for pid, role in route.holds)


def no_mirror_reason(route: ResolvedRoute) -> str:
    """Why `route.mirrored()` is None, as a warning: the layout has no mirrors, or some holds lack one."""
    layout = route.layout
    where = f"{layout.board} layout {layout.layout_id}"
    if not layout.mirrors:
        return f"no mirror graded: {where} has no mirrored holes"
    missing = ", ".join(f"p{pid}" for pid, _ in route.holds if pid not in layout.mirrors)
    return f"no mirror graded: hold(s) {missing} have no mirror on {where}"


@dataclass(frozen=True)
class InsightRequest:
    """The extras a cg-infer run asks for each route: a sweep over `angles`, `explain`, `mirror`."""

    angles: AngleSpec | None = None
    explain: bool = False
    mirror: bool = False

    @property
    def empty(self) -> bool:
        return self.angles is None and not self.explain and not self.mirror


@dataclass(frozen=True)
class RouteInsight:
    """One graded route of a cg-infer run with the extras asked for (None where not asked)."""

    prediction: Prediction
    route: ResolvedRoute
    sweep: Sweep | None = None
    explanation: Explanation | None = None
    mirror: Mirror | None = None
    mirror_asked: bool = False
    mirror_notes: tuple[str, ...] = ()  # why there is no mirror, or the mirror's own warnings

    @property
    def index(self) -> int:
        return self.prediction.index

    @property
    def labels(self) -> dict[str, Any]:
        return self.prediction.labels

    @property
    def warnings(self) -> tuple[str, ...]:
        """The route's warnings and those its extras raised (per hold of --explain, of --mirror)."""
        explained = self.explanation.warnings if self.explanation is not None else ()
        return self.prediction.warnings + explained + self.mirror_notes

    def to_dict(self) -> dict[str, Any]:
        out = self.prediction.to_dict()
        out["warnings"] = list(self.warnings)
        if self.sweep is not None:
            out.update(self.sweep.to_dict())
        if self.explanation is not None:
            out.update(self.explanation.to_dict())
        if self.mirror_asked:
            out["mirror"] = None if self.mirror is None else self.mirror.to_dict()
        return out
