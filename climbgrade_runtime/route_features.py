"""Route geometry: where a route's holds sit, and the route-level features derived from it.

RouteGeometry is worked out once per encoded route and read by every geometric feature: the
tokenizer's per-hold distance and move columns, `route_features`, the numbers a setter reads off a
route at a glance (hold and role counts, position statistics, moves, neighbour distances), and
`shape_features`, the second glance (the move sequence, spans, how sparse the hand holds are, the
support below them). The tokenizer puts those on the <CLS> token (feature names "route_*"), so a
network gets them as inputs instead of having to derive them from ~15 holds; bench/gbm.py grades
from the same numbers.
Hand holds are every hold but feet. Distances are in board units / DISTANCE_SCALE, counts /
COUNT_SCALE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .geometry import LayoutGeometry

DISTANCE_SCALE = 48.0  # board units -> about one unit per 4 feet
COUNT_SCALE = 10.0
ROLES = ("start", "middle", "finish", "foot")
ROUTE_FEATURES = (
    ("route_holds",)
    + tuple(f"route_{role}" for role in ROLES)
    + tuple(
        f"route_{who}_{axis}_{stat}"
        for who in ("all", "hand")
        for axis in "xy"
        for stat in ("min", "max", "mean", "std")
    )
    + (
        "route_start_y",
        "route_finish_y",
        "route_height_gain",
        "route_move_mean",
        "route_move_max",
        "route_move_sum",
        "route_nearest_mean",
        "route_nearest_max",
        "route_foot_hand",
    )
)
# The finer reading of a route's moves and support, a setter's second glance (group "shape").
BIG_MOVE, HUGE_MOVE = 0.75, 1.0  # hand moves longer than these (the real data's 75th and 93rd percentile)
SUPPORT_BELOW = (0.25, 1.0)  # holds this far below a hand hold (DISTANCE_SCALE units) can carry the feet
SHAPE_FEATURES = (
    "route_move_first",
    "route_move_last",
    "route_move_second",
    "route_move_std",
    "route_move_dy_max",
    "route_move_dx_sum",
    "route_move_lateral",
    "route_turns",
    "route_big_moves",
    "route_huge_moves",
    "route_start_span",
    "route_hand_nearest_mean",
    "route_hand_nearest_max",
    "route_support",
    "route_support_min",
    "route_y_gap_max",
    "route_foot_top",
)
ALL_ROUTE_FEATURES = ROUTE_FEATURES + SHAPE_FEATURES  # what all_route_features returns, in this order


@dataclass(frozen=True)
class RouteGeometry:
    """One route's hold positions, roles and distances, in its canonical bottom-to-top order.

    The distance matrix, the hand holds and their steps are worked out once here and shared by the
    tokenizer's columns and every feature group, so the predict path never computes them twice.
    """

    xy: np.ndarray  # [holds, 2] board units / DISTANCE_SCALE (float64)
    roles: np.ndarray  # [holds] role names
    distance: np.ndarray  # [holds, holds] between every two holds, same units; inf on the diagonal
    gaps: np.ndarray  # [holds, holds - 1] distances to the other holds, nearest first
    hands: np.ndarray  # indices of the hand holds, bottom to top (empty when every hold is a foot)

    @classmethod
    def of(cls, layout: LayoutGeometry, holds: Sequence[tuple[int, str]]) -> RouteGeometry:
        """The geometry of `holds` ((placement id, role name), in canonical order) on `layout`."""
        place = layout.placements
        xy = np.array([place[pid] for pid, _ in holds], dtype=np.float64) / DISTANCE_SCALE
        roles = np.array([role for _, role in holds])
        distance = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
        np.fill_diagonal(distance, np.inf)
        gaps = np.sort(distance, axis=1)[:, :-1]
        return cls(xy=xy, roles=roles, distance=distance, gaps=gaps, hands=np.flatnonzero(roles != "foot"))

    @cached_property
    def hand_index(self) -> np.ndarray:
        """The hand holds' indices; a route of feet only counts every hold as a hand."""
        return self.hands if len(self.hands) else np.arange(len(self.xy))

    @cached_property
    def hand_xy(self) -> np.ndarray:
        """[hands, 2]: the hand holds' positions (every hold's for a route of feet only)."""
        return self.xy[self.hand_index]

    @cached_property
    def hand_steps(self) -> np.ndarray:
        """[len(hand_xy) - 1, 2]: the step from each hand hold to the next one up."""
        return np.diff(self.hand_xy, axis=0)

    @cached_property
    def start_y(self) -> float:
        """Mean height of the start holds (of the lowest hand hold when none is marked start)."""
        starts = self.roles == "start"
        return float(self.xy[starts, 1].mean()) if starts.any() else float(self.hand_xy[0, 1])

    def hand_moves(self) -> np.ndarray:
        """[hands - 1, 2]: the move onto each hand hold but the lowest (none for a route of feet only)."""
        return self.hand_steps if len(self.hands) else np.zeros((0, 2))


def _stats(values: np.ndarray) -> list[float]:
    return [values.min(), values.max(), values.mean(), values.std()]


def route_features(geometry: RouteGeometry) -> np.ndarray:
    """The ROUTE_FEATURES of one route (at least one hold), float64 as LightGBM bins them; the
    tokenizer stores them in its float32 coords."""
    xy, roles, hand = geometry.xy, geometry.roles, geometry.hand_xy
    moves = np.sqrt((geometry.hand_steps**2).sum(1)) if len(hand) > 1 else np.zeros(1)
    nearest = geometry.gaps[:, 0] if len(xy) > 1 else np.zeros(1)
    feet = np.flatnonzero(roles == "foot")
    # A route of feet only is its own hands: each foot is then 0 from the nearest "hand".
    foot_hand = (
        geometry.distance[np.ix_(feet, geometry.hands)].min(1).mean() if len(feet) and len(geometry.hands) else 0.0
    )
    start_y = geometry.start_y
    finish_y = xy[roles == "finish", 1].mean() if (roles == "finish").any() else hand[-1, 1]
    counts = [len(xy)] + [float((roles == r).sum()) for r in ROLES]
    values = (
        [c / COUNT_SCALE for c in counts]
        + _stats(xy[:, 0])
        + _stats(xy[:, 1])
        + _stats(hand[:, 0])
        + _stats(hand[:, 1])
        + [
            start_y,
            finish_y,
            finish_y - start_y,
            moves.mean(),
            moves.max(),
            moves.sum(),
            nearest.mean(),
            nearest.max(),
            foot_hand,
        ]
    )
    return np.array(values, dtype=np.float64)


def shape_features(geometry: RouteGeometry) -> np.ndarray:
    """The SHAPE_FEATURES of one route: move sequence (ends, spread, lateral travel, direction changes,
    big moves), the start hands' span, how sparse the hand holds are, and the support below them."""
    xy, hand = geometry.xy, geometry.hand_xy
    step = geometry.hand_steps if len(hand) > 1 else np.zeros((1, 2))
    moves = np.sqrt((step**2).sum(1))
    second = np.sort(moves)[-2] if len(moves) > 1 else 0.0
    lateral = np.abs(step[:, 0]) > np.abs(step[:, 1])
    sides = np.sign(step[np.abs(step[:, 0]) > 1e-9, 0])
    turns = float((sides[1:] != sides[:-1]).sum())
    starts = np.flatnonzero(geometry.roles == "start")
    start_pairs = geometry.distance[np.ix_(starts, starts)]
    start_span = start_pairs[np.isfinite(start_pairs)].max() if len(starts) > 1 else 0.0
    between = geometry.distance[np.ix_(geometry.hand_index, geometry.hand_index)]  # inf on the diagonal
    hand_nearest = between.min(1) if len(hand) > 1 else np.zeros(1)
    drop = hand[:, None, 1] - xy[None, :, 1]  # [hands, holds]: how far each hold sits below each hand hold
    support = (
        (drop >= SUPPORT_BELOW[0])
        & (drop <= SUPPORT_BELOW[1])
        & (np.abs(hand[:, None, 0] - xy[None, :, 0]) <= SUPPORT_BELOW[1])
    ).sum(1)[1:]  # not the lowest hand
    support = support if len(support) else np.zeros(1)
    heights = np.sort(xy[:, 1])
    feet = xy[geometry.roles == "foot", 1]
    values = [
        moves[0],
        moves[-1],
        second,
        moves.std(),
        step[:, 1].max(),
        np.abs(step[:, 0]).sum(),
        lateral.mean(),
        turns / COUNT_SCALE,
        (moves > BIG_MOVE).sum() / COUNT_SCALE,
        (moves > HUGE_MOVE).sum() / COUNT_SCALE,
        start_span,
        hand_nearest.mean(),
        hand_nearest.max(),
        support.mean() / COUNT_SCALE,
        support.min() / COUNT_SCALE,
        np.diff(heights).max() if len(heights) > 1 else 0.0,
        feet.max() - geometry.start_y if len(feet) else 0.0,
    ]
    return np.array(values, dtype=np.float64)


# The <CLS> feature groups and the function that computes each: the tokenizer calls only the ones a model uses.
CLS_FEATURE_GROUPS = ((ROUTE_FEATURES, route_features), (SHAPE_FEATURES, shape_features))


def all_route_features(geometry: RouteGeometry) -> np.ndarray:
    """ALL_ROUTE_FEATURES of one route, in that order (what bench/gbm.py grades from)."""
    return np.concatenate([compute(geometry) for _, compute in CLS_FEATURE_GROUPS])
