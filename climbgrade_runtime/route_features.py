"""Route geometry: where a route's holds sit, and the route-level features derived from it.

RouteGeometry is worked out once per encoded route and read by every geometric feature: the
tokenizer's per-hold distance and move columns and `route_features`, the numbers a setter reads
off a route at a glance (hold and role counts, position statistics, moves, neighbour distances).
The tokenizer puts those on the <CLS> token (feature names "route_*"), so a network gets them as
inputs instead of having to derive them from ~15 holds; bench/gbm.py grades from the same numbers.
Hand holds are every hold but feet. Distances are in board units / DISTANCE_SCALE, counts /
COUNT_SCALE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .tokenizer import ResolvedRoute

DISTANCE_SCALE = 48.0  # board units -> about one unit per 4 feet
COUNT_SCALE = 10.0
ROLES = ("start", "middle", "finish", "foot")
ROUTE_FEATURES = (
    ("route_holds",) + tuple(f"route_{role}" for role in ROLES)
    + tuple(f"route_{who}_{axis}_{stat}" for who in ("all", "hand") for axis in "xy" for stat in ("min", "max", "mean", "std"))
    + ("route_start_y", "route_finish_y", "route_height_gain", "route_move_mean", "route_move_max", "route_move_sum",
       "route_nearest_mean", "route_nearest_max", "route_foot_hand")
)


@dataclass(frozen=True)
class RouteGeometry:
    """One route's hold positions, roles and neighbour distances, in its canonical bottom-to-top order."""

    xy: np.ndarray  # [holds, 2] board units / DISTANCE_SCALE (float64)
    roles: np.ndarray  # [holds] role names
    gaps: np.ndarray  # [holds, holds - 1] distances to the other holds, nearest first, same units
    hands: np.ndarray  # indices of the hand holds, bottom to top (empty when every hold is a foot)

    @classmethod
    def of(cls, resolved: "ResolvedRoute") -> "RouteGeometry":
        place = resolved.layout.placements
        xy = np.array([place[pid] for pid, _ in resolved.holds], dtype=np.float64) / DISTANCE_SCALE
        roles = np.array([role for _, role in resolved.holds])
        distance = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
        np.fill_diagonal(distance, np.inf)
        gaps = np.sort(distance, axis=1)[:, :-1]
        return cls(xy=xy, roles=roles, gaps=gaps, hands=np.flatnonzero(roles != "foot"))

    def hand_moves(self) -> np.ndarray:
        """[hands - 1, 2]: the step from each hand hold to the next one up (board units / DISTANCE_SCALE)."""
        return np.diff(self.xy[self.hands], axis=0)


def _stats(values: np.ndarray) -> list[float]:
    return [values.min(), values.max(), values.mean(), values.std()]


def route_features(geometry: RouteGeometry) -> np.ndarray:
    """The ROUTE_FEATURES of one route (at least one hold), float64 as LightGBM bins them; the
    tokenizer stores them in its float32 coords. A route of feet only counts every hold as a hand."""
    xy, roles = geometry.xy, geometry.roles
    hand = xy[geometry.hands] if len(geometry.hands) else xy
    moves = np.sqrt((np.diff(hand, axis=0) ** 2).sum(1)) if len(hand) > 1 else np.zeros(1)
    nearest = geometry.gaps[:, 0] if len(xy) > 1 else np.zeros(1)
    feet = xy[roles == "foot"]
    foot_hand = np.sqrt(((feet[:, None] - hand[None]) ** 2).sum(-1)).min(1).mean() if len(feet) else 0.0
    start_y = xy[roles == "start", 1].mean() if (roles == "start").any() else hand[0, 1]
    finish_y = xy[roles == "finish", 1].mean() if (roles == "finish").any() else hand[-1, 1]
    counts = [len(xy)] + [float((roles == r).sum()) for r in ROLES]
    values = (
        [c / COUNT_SCALE for c in counts]
        + _stats(xy[:, 0]) + _stats(xy[:, 1]) + _stats(hand[:, 0]) + _stats(hand[:, 1])
        + [start_y, finish_y, finish_y - start_y, moves.mean(), moves.max(), moves.sum(), nearest.mean(), nearest.max(),
           foot_hand]
    )
    return np.array(values, dtype=np.float64)
