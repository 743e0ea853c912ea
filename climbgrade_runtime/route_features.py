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

Plain Python over the route's holds (numpy only for the distances between every two holds, the one
step that grows with the square of their number): a route has ~15 holds, too few to pay numpy's
per-call overhead ~50 times per route. Every value is the float64 the earlier numpy reductions gave,
bit for bit, since every model was trained on those: the same operations in the same order, sums,
means and spreads in numpy's summation order (`numpy_sum`), distances as sqrt(dx*dx + dy*dy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from operator import itemgetter

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
_PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE: longer sums are split in two halves


def numpy_sum(values: Sequence[float]) -> float:
    """The float64 sum np.sum gives for `values`, bit for bit: numpy's pairwise_sum (in its umath loops)
    step for step. It adds fewer than 8 values in order and more in 8 interleaved running sums (in halves
    past 128), which rounds differently from a plain left-to-right sum once a route has 8 or more holds."""
    n = len(values)
    if n < 8:
        total = 0.0
        for value in values:
            total += value
        return total
    if n > _PAIRWISE_BLOCK:
        half = n // 2 - (n // 2) % 8
        return numpy_sum(values[:half]) + numpy_sum(values[half:])
    end = n - n % 8  # the values the eight running sums take, eight at a time
    lanes: Sequence[float] = values  # one round (fewer than 16 values): the first eight values themselves
    if end > 8:
        running = list(values[:8])
        for start in range(8, end, 8):
            for lane in range(8):
                running[lane] += values[start + lane]
        lanes = running
    total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
    for value in values[end:]:
        total += value
    return 0.0 + total  # numpy's reduction starts from 0.0 (which turns a -0.0 total into 0.0)


def numpy_mean(values: Sequence[float]) -> float:
    """np.mean, bit for bit (its sum divided by the count)."""
    return numpy_sum(values) / len(values)


def numpy_std(values: Sequence[float]) -> float:
    """np.std (population), bit for bit."""
    return _spread(values, numpy_mean(values))


def _spread(values: Sequence[float], centre: float) -> float:
    """np.std's arithmetic about a mean already worked out: the root of the mean squared deviation."""
    return math.sqrt(numpy_sum([(v - centre) * (v - centre) for v in values]) / len(values))


def _stats(values: Sequence[float]) -> list[float]:
    """min, max, mean and std of `values`, as numpy gave them."""
    centre = numpy_mean(values)
    return [min(values), max(values), centre, _spread(values, centre)]


@dataclass(frozen=True)
class RouteGeometry:
    """One route's hold positions, roles and distances, in its canonical bottom-to-top order.

    The distances, the hand holds and their steps are worked out once here and shared by the
    tokenizer's columns and every feature group, so the predict path never computes them twice.
    """

    x: list[float]  # per hold, board units / DISTANCE_SCALE
    y: list[float]  # per hold, non-decreasing (the canonical order is bottom to top)
    roles: list[str]  # role names
    distance: list[list[float]]  # between every two holds, same units; inf on the diagonal
    gaps: np.ndarray  # [holds, <= 2] per hold, its distances to its nearest and 2nd-nearest other holds
    hands: list[int]  # indices of the hand holds, bottom to top (empty when every hold is a foot)
    hand_index: list[int]  # the hand holds; a route of feet only counts every hold as a hand
    hand_steps: list[tuple[float, float]]  # (dx, dy) from each hand_index hold to the next one up
    move_lengths: list[float]  # the length of each hand step; [0.0] for a single hand hold
    start_y: float  # mean height of the start holds (of the lowest hand hold when none is marked start)

    @classmethod
    def of(cls, layout: LayoutGeometry, holds: Sequence[tuple[int, str]]) -> RouteGeometry:
        """The geometry of `holds` ((placement id, role name), in canonical order) on `layout`."""
        points = [layout.placements[pid] for pid, _ in holds]
        x = [px / DISTANCE_SCALE for px, _ in points]
        y = [py / DISTANCE_SCALE for _, py in points]
        roles = [role for _, role in holds]
        hands = [i for i, role in enumerate(roles) if role != "foot"]
        hand_index = hands or list(range(len(x)))
        steps = [(x[b] - x[a], y[b] - y[a]) for a, b in pairwise(hand_index)]
        starts = [yi for yi, role in zip(y, roles) if role == "start"]
        distance, gaps = _distances(x, y)
        return cls(
            x=x,
            y=y,
            roles=roles,
            distance=distance,
            gaps=gaps,
            hands=hands,
            hand_index=hand_index,
            hand_steps=steps,
            move_lengths=[math.sqrt(dx * dx + dy * dy) for dx, dy in steps] or [0.0],
            start_y=numpy_mean(starts) if starts else y[hand_index[0]],
        )

    def hand_moves(self) -> list[tuple[float, float]]:
        """The move onto each hand hold but the lowest (none for a route of feet only)."""
        return self.hand_steps if self.hands else []


def _distances(x: list[float], y: list[float]) -> tuple[list[list[float]], np.ndarray]:
    """Every two holds' distance (inf for a hold and itself), and per hold the distances to its nearest and
    2nd-nearest other holds. The one step that grows with the square of the holds (a long route has 60), so
    numpy's, computed as it always was: sqrt(dx*dx + dy*dy), never hypot, which rounds differently."""
    xy = np.array([x, y])
    steps = xy[:, :, None] - xy[:, None, :]  # [2, holds, holds]: dx and dy between every two holds
    squared = steps * steps
    distance = np.sqrt(squared[0] + squared[1])
    distance.flat[:: len(x) + 1] = np.inf
    return distance.tolist(), np.sort(distance, axis=1)[:, : min(len(x) - 1, 2)]


def route_features(geometry: RouteGeometry) -> list[float]:
    """The ROUTE_FEATURES of one route (at least one hold), float64 as LightGBM bins them; the
    tokenizer stores them in its float32 coords."""
    x, y, roles, distance, hands = geometry.x, geometry.y, geometry.roles, geometry.distance, geometry.hands
    position_stats = _stats(x) + _stats(y)
    if len(geometry.hand_index) == len(x):  # no feet (or only feet): the hand holds are all the holds
        hand_stats, hand_y = position_stats, y
    else:
        hand_y = [y[i] for i in hands]
        hand_stats = _stats([x[i] for i in hands]) + _stats(hand_y)
    moves = geometry.move_lengths
    move_sum = numpy_sum(moves)
    nearest = geometry.gaps[:, 0].tolist() if len(x) > 1 else [0.0]
    feet = [i for i, role in enumerate(roles) if role == "foot"]
    # A route of feet only is its own hands: each foot is then 0 from the nearest "hand".
    foot_hand = numpy_mean(_nearest_of(distance, feet, hands)) if feet and hands else 0.0
    start_y = geometry.start_y
    finishes = [yi for yi, role in zip(y, roles) if role == "finish"]
    finish_y = numpy_mean(finishes) if finishes else hand_y[-1]
    counts = [len(x)] + [roles.count(role) for role in ROLES]
    return (
        [c / COUNT_SCALE for c in counts]
        + position_stats
        + hand_stats
        + [
            start_y,
            finish_y,
            finish_y - start_y,
            move_sum / len(moves),
            max(moves),
            move_sum,
            numpy_mean(nearest),
            max(nearest),
            foot_hand,
        ]
    )


def shape_features(geometry: RouteGeometry) -> list[float]:
    """The SHAPE_FEATURES of one route: move sequence (ends, spread, lateral travel, direction changes,
    big moves), the start hands' span, how sparse the hand holds are, and the support below them."""
    x, y, distance, index = geometry.x, geometry.y, geometry.distance, geometry.hand_index
    steps = geometry.hand_steps or [(0.0, 0.0)]
    moves = geometry.move_lengths
    sides = [dx > 0 for dx, _ in steps if abs(dx) > 1e-9]  # left or right, where the move goes sideways
    turns = sum([a != b for a, b in pairwise(sides)])
    starts = [i for i, role in enumerate(geometry.roles) if role == "start"]
    start_span = max([distance[a][b] for a in starts for b in starts if a != b]) if len(starts) > 1 else 0.0
    hand_nearest = _nearest_of(distance, index, index) if len(index) > 1 else [0.0]
    support = _support(index, x, y)
    heights = sorted(y)
    feet = [yi for yi, role in zip(y, geometry.roles) if role == "foot"]
    return [
        moves[0],
        moves[-1],
        sorted(moves)[-2] if len(moves) > 1 else 0.0,
        numpy_std(moves),
        max([dy for _, dy in steps]),
        numpy_sum([abs(dx) for dx, _ in steps]),
        sum([abs(dx) > abs(dy) for dx, dy in steps]) / len(steps),
        turns / COUNT_SCALE,
        sum([v > BIG_MOVE for v in moves]) / COUNT_SCALE,
        sum([v > HUGE_MOVE for v in moves]) / COUNT_SCALE,
        start_span,
        numpy_mean(hand_nearest),
        max(hand_nearest),
        sum(support) / len(support) / COUNT_SCALE,
        min(support) / COUNT_SCALE,
        max([b - a for a, b in pairwise(heights)]) if len(heights) > 1 else 0.0,
        max(feet) - geometry.start_y if feet else 0.0,
    ]


def _nearest_of(distance: list[list[float]], holds: list[int], among: list[int]) -> list[float]:
    """Per hold of `holds`, its distance to the nearest of `among` (at least one hold; itself is inf away)."""
    if len(among) == len(distance):
        return [min(distance[i]) for i in holds]
    if len(among) == 1:
        return [distance[i][among[0]] for i in holds]
    pick = itemgetter(*among)  # a tuple of a row's distances to `among`, read in C
    return [min(pick(distance[i])) for i in holds]


def _support(hands: list[int], x: list[float], y: list[float]) -> list[int]:
    """Per hand hold but the lowest, how many holds sit SUPPORT_BELOW below it, within SUPPORT_BELOW[1] to
    either side ([0] for a single hand hold).

    Walks down from the hold just below each one and stops past SUPPORT_BELOW[1]: y never decreases along
    the canonical order, so no later hold is below it and every earlier one is lower still."""
    low, high = SUPPORT_BELOW
    counts = []
    for hand in hands[1:]:
        hand_x, hand_y = x[hand], y[hand]
        count = 0
        for j in range(hand - 1, -1, -1):
            drop = hand_y - y[j]
            if drop > high:
                break
            if drop >= low and abs(hand_x - x[j]) <= high:
                count += 1
        counts.append(count)
    return counts or [0]


# The <CLS> feature groups and the function that computes each: the tokenizer calls only the ones a model uses.
CLS_FEATURE_GROUPS = ((ROUTE_FEATURES, route_features), (SHAPE_FEATURES, shape_features))


def all_route_features(geometry: RouteGeometry) -> np.ndarray:
    """ALL_ROUTE_FEATURES of one route, in that order, float64 (what bench/gbm.py grades from)."""
    return np.array([value for _, compute in CLS_FEATURE_GROUPS for value in compute(geometry)], dtype=np.float64)
