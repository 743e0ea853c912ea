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
from functools import reduce
from itertools import combinations, pairwise
from operator import add, gt, sub
from typing import NamedTuple

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
    past 128), which rounds differently from a plain left-to-right sum once a route has 8 or more holds.
    (Never the builtin sum: from Python 3.12 it compensates, which rounds differently again.)"""
    n = len(values)
    if n < 8:
        return reduce(add, values, 0.0)
    if n > _PAIRWISE_BLOCK:
        half = n // 2 - (n // 2) % 8
        return numpy_sum(values[:half]) + numpy_sum(values[half:])
    end = n - n % 8  # the values the eight running sums take, eight at a time
    # each running sum adds its lane left to right; one round (under 16 values) is the first eight themselves
    lanes = [reduce(add, values[lane:end:8]) for lane in range(8)] if end > 8 else values
    total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
    return 0.0 + reduce(add, values[end:], total)  # numpy's reduction starts from 0.0 (-0.0 becomes 0.0)


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
    centre = numpy_sum(values) / len(values)  # numpy_mean
    return [min(values), max(values), centre, _spread(values, centre)]


def _distance(x: list[float], y: list[float], a: int, b: int) -> float:
    """Holds a and b's distance as numpy worked it out: sqrt(dx*dx + dy*dy), never hypot (which rounds differently)."""
    dx, dy = x[a] - x[b], y[a] - y[b]
    return math.sqrt(dx * dx + dy * dy)


class RouteGeometry(NamedTuple):
    """One route's hold positions, roles and distances, in its canonical bottom-to-top order.

    The distances, the hand holds and their steps are worked out once here and shared by the
    tokenizer's columns and every feature group, so the predict path never computes them twice.
    (A NamedTuple: built once per encoded route, where a frozen dataclass's checked setattr per field costs.)
    """

    x: list[float]  # per hold, board units / DISTANCE_SCALE
    y: list[float]  # per hold, non-decreasing (the canonical order is bottom to top)
    roles: list[str]  # role names
    gaps: np.ndarray  # [holds, <= 2] per hold, its distances to its nearest and 2nd-nearest other holds
    nearest: list[float]  # gaps[:, 0]; [0.0] for a single hold
    nearest_hand: list[float]  # per hold, its distance to the nearest other hand_index hold (inf if none)
    hands: list[int]  # indices of the hand holds, bottom to top (empty when every hold is a foot)
    feet: list[int]  # indices of the feet
    hand_index: list[int]  # the hand holds; a route of feet only counts every hold as a hand
    hand_x: list[float]  # x of the hand_index holds
    hand_y: list[float]  # y, likewise
    step_x: list[float]  # dx from each hand_index hold to the next one up (the move onto hands[1:], if any)
    step_y: list[float]  # dy, likewise
    move_lengths: list[float]  # the length of each hand step; [0.0] for a single hand hold
    move_sum: float  # numpy_sum(move_lengths), read by both feature groups
    start_y: float  # mean height of the start holds (of the lowest hand hold when none is marked start)

    @classmethod
    def of(cls, layout: LayoutGeometry, holds: Sequence[tuple[int, str]]) -> RouteGeometry:
        """The geometry of `holds` ((placement id, role name), in canonical order) on `layout`."""
        points = [layout.placements[pid] for pid, _ in holds]
        x = [px / DISTANCE_SCALE for px, _ in points]
        y = [py / DISTANCE_SCALE for _, py in points]
        roles = [role for _, role in holds]
        every = list(range(len(x)))
        feet = [i for i in every if roles[i] == "foot"]
        hands = [i for i in every if roles[i] != "foot"] if feet else every
        hand_index = hands or every
        hand_x, hand_y = (x, y) if hand_index is every else ([x[i] for i in hand_index], [y[i] for i in hand_index])
        step_x, step_y = list(map(sub, hand_x[1:], hand_x)), list(map(sub, hand_y[1:], hand_y))
        moves = [math.sqrt(dx * dx + dy * dy) for dx, dy in zip(step_x, step_y)] or [0.0]
        starts = [y[i] for i in every if roles[i] == "start"]
        return cls(
            x,
            y,
            roles,
            *_neighbours(x, y, hand_index),
            hands,
            feet,
            hand_index,
            hand_x,
            hand_y,
            step_x,
            step_y,
            moves,
            numpy_sum(moves),
            numpy_mean(starts) if starts else y[hand_index[0]],
        )


def _neighbours(x: list[float], y: list[float], among: list[int]) -> tuple[np.ndarray, list[float], list[float]]:
    """RouteGeometry's gaps, nearest and nearest_hand (the nearest other hold of `among`). The one step that grows with the square of the holds (a long route has 60), so numpy's, computed
    as it always was: sqrt(dx*dx + dy*dy) between every two holds, never hypot, which rounds differently."""
    n = len(x)
    xy = np.array([x, y])
    steps = xy[:, :, None] - xy[:, None, :]  # [2, holds, holds]: dx and dy between every two holds
    squared = steps * steps
    distance = np.sqrt(squared[0] + squared[1])
    distance.flat[:: n + 1] = np.inf  # a hold is not its own neighbour
    gaps = np.sort(distance, axis=1)[:, : min(n - 1, 2)]
    if n == 1:
        return gaps, [0.0], [math.inf]
    nearest = gaps[:, 0].tolist()
    return gaps, nearest, nearest if len(among) == n else distance[:, among].min(axis=1).tolist()


def route_features(geometry: RouteGeometry) -> list[float]:
    """The ROUTE_FEATURES of one route (at least one hold), float64 as LightGBM bins them; the
    tokenizer stores them in its float32 coords."""
    x, y, roles, hands, feet = geometry.x, geometry.y, geometry.roles, geometry.hands, geometry.feet
    n = len(x)
    position_stats = _stats(x) + _stats(y)
    hand_y = geometry.hand_y
    if len(hand_y) == n:  # no feet (or only feet): the hand holds are all the holds
        hand_stats = position_stats
    else:
        hand_stats = _stats(geometry.hand_x) + _stats(hand_y)
    moves, move_sum = geometry.move_lengths, geometry.move_sum
    nearest = geometry.nearest
    # A route of feet only is its own hands: each foot is then 0 from the nearest "hand".
    foot_hand = numpy_mean([geometry.nearest_hand[i] for i in feet]) if feet and hands else 0.0
    start_y = geometry.start_y
    finishes = [yi for yi, role in zip(y, roles) if role == "finish"]
    finish_y = numpy_mean(finishes) if finishes else hand_y[-1]
    return (
        [n / COUNT_SCALE, *[roles.count(role) / COUNT_SCALE for role in ROLES]]
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
    x, y, index = geometry.x, geometry.y, geometry.hand_index
    step_x, step_y = geometry.step_x or [0.0], geometry.step_y or [0.0]
    moves = geometry.move_lengths
    sides = [dx > 0 for dx in step_x if abs(dx) > 1e-9]  # left or right, where the move goes sideways
    turns = sum([a != b for a, b in pairwise(sides)])
    starts = [i for i, role in enumerate(geometry.roles) if role == "start"]
    start_span = max([_distance(x, y, a, b) for a, b in combinations(starts, 2)]) if len(starts) > 1 else 0.0
    hand_nearest = [geometry.nearest_hand[i] for i in index] if len(index) > 1 else [0.0]
    support = _support(index, x, y)
    feet = geometry.feet
    return [
        moves[0],
        moves[-1],
        sorted(moves)[-2] if len(moves) > 1 else 0.0,
        _spread(moves, geometry.move_sum / len(moves)),  # numpy_std(moves)
        max(step_y),
        numpy_sum(list(map(abs, step_x))),
        sum(map(gt, map(abs, step_x), map(abs, step_y))) / len(step_x),  # the moves more sideways than up
        turns / COUNT_SCALE,
        sum([v > BIG_MOVE for v in moves]) / COUNT_SCALE,
        sum([v > HUGE_MOVE for v in moves]) / COUNT_SCALE,
        start_span,
        numpy_mean(hand_nearest),
        max(hand_nearest),
        sum(support) / len(support) / COUNT_SCALE,
        min(support) / COUNT_SCALE,
        max(map(sub, y[1:], y)) if len(y) > 1 else 0.0,  # y is sorted: the largest gap in height
        max([y[i] for i in feet]) - geometry.start_y if feet else 0.0,
    ]


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
