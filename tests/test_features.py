"""RouteEncoder (climbgrade_train/features.py), the one implementation of the model's inputs: Aurora ids
in, token ids, per-token features and problem bits out.

Hand-made routes on a small made-up board whose holes sit on multiples of DISTANCE_SCALE (48 board
units), so every expected value below is worked out by hand from the hole positions in the comments.
Then what must not matter (hold order, padding, the rest of the batch), every problem bit, and the
exported graph against PyTorch on all of it.
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from statistics import fmean, pstdev
from typing import Any

import numpy as np
import pytest
import torch

from climbgrade_runtime import model_io
from climbgrade_runtime.geometry import LayoutGeometry
from climbgrade_runtime.session import create_session
from climbgrade_runtime.tokenizer import (
    CLS_ID,
    PAD_ID,
    PLACEMENT,
    UNK_ID,
    RouteIds,
    Tokenizer,
    hold_token,
    resolved_from_holds,
)
from climbgrade_train.export import export_onnx
from climbgrade_train.features import (
    ALL_ROUTE_FEATURES,
    FEATURES,
    HOLD_FEATURES,
    ROUTE_FEATURES,
    SHAPE_FEATURES,
    RouteEncoder,
    check_features,
    compact_features,
    expand_features,
)
from climbgrade_train.grader import Grader
from climbgrade_train.model import GradeModel, ModelConfig

S = math.sqrt
START, MIDDLE, FINISH, FOOT = 1, 2, 3, 4  # the demo board's role ids
ROLE_NAMES = {START: "start", MIDDLE: "middle", FINISH: "finish", FOOT: "foot"}
# Board units; in DISTANCE_SCALE units (/48) in the comments. Holes span x -96..96 and y 0..192, so
# x normalises to x / 96 and y to y / 96 - 1.
DEMO = LayoutGeometry(
    board="demo",
    layout_id=7,
    name="Demo",
    placements={
        10: (0, 0),  # (0, 0)
        11: (48, 0),  # (1, 0)
        12: (0, 48),  # (0, 1)
        13: (96, 96),  # (2, 2)
        14: (48, 144),  # (1, 3)
        15: (-48, 24),  # (-1, 0.5)
        16: (-96, 192),  # (-2, 4)
        17: (0, 24),  # (0, 0.5)
        18: (0, 0),  # the hole of 10
    },
    mirrors={},
    roles=dict(ROLE_NAMES),
    angles=(0, 20, 40),
)
# A second board: other role ids, angles and placements (ids the demo layout does not have).
OTHER = LayoutGeometry(
    board="other",
    layout_id=3,
    name="Other",
    placements={500: (0, 0), 501: (10, 10), 502: (20, 30)},
    mirrors={},
    roles={5: "start", 6: "middle", 7: "finish", 8: "foot"},
    angles=(0, 45, 50),
)
MAX_HOLDS = 6
DEMO_INDEX, OTHER_INDEX = 0, 1  # sidecar order: layouts sorted by (board, layout_id)

Holds = tuple[tuple[int, int], ...]  # (placement id, role id) as a client lists them

# Route A: two starts, a foot, two middles, a finish, listed in no order.
# Canonical order: 10 (0,0) start, 11 (1,0) foot, 15 (-1,.5) start, 12 (0,1) middle, 13 (2,2) middle, 14 (1,3) finish.
ROUTE_A: Holds = ((13, MIDDLE), (10, START), (14, FINISH), (11, FOOT), (15, START), (12, MIDDLE))
ROUTE_A_ORDER: Holds = ((10, START), (11, FOOT), (15, START), (12, MIDDLE), (13, MIDDLE), (14, FINISH))
ROUTE_C: Holds = ((14, FINISH), (12, MIDDLE), (10, START))  # moves 1.0 (big, not huge) and sqrt(5)
FEET_ONLY: Holds = ((13, FOOT), (10, FOOT), (12, FOOT))
ONE_HOLD: Holds = ((13, START),)  # (13, start) is in no training route: <UNK>
TWO_HOLDS: Holds = ((14, FINISH), (10, START))  # listed top first
SAME_HOLE: Holds = ((11, FINISH), (18, MIDDLE), (10, START))  # 10 and 18 share a hole: placement id decides
VOCAB_ROUTES = (ROUTE_A, ROUTE_C, FEET_ONLY, TWO_HOLDS, SAME_HOLE)


def _tokenizer(hold_tokens: str = "placement_role") -> Tokenizer:
    layouts = (OTHER, DEMO)
    seen = [resolved_from_holds(DEMO, 40, [(p, ROLE_NAMES[r]) for p, r in holds]) for holds in VOCAB_ROUTES]
    seen.append(resolved_from_holds(OTHER, 45, [(500, "start"), (502, "finish")]))
    return Tokenizer.build(layouts, seen, max_len=3 + MAX_HOLDS, hold_tokens=hold_tokens, features=FEATURES)


TOKENIZER = _tokenizer()
COLUMN = {name: i for i, name in enumerate(FEATURES)}


@pytest.fixture(scope="module")
def encoder() -> RouteEncoder:
    return RouteEncoder(TOKENIZER).eval()


def ids(holds: Holds, angle: int = 40, layout: int = DEMO_INDEX) -> RouteIds:
    return RouteIds(layout, angle, tuple(p for p, _ in holds), tuple(r for _, r in holds))


def run(encoder: RouteEncoder, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """(token_ids, coords, padding, problems) as numpy."""
    with torch.no_grad():
        found = encoder(*(torch.from_numpy(feeds[name]) for name, _ in model_io.INPUTS))
    return tuple(t.numpy() for t in found)


def encode(encoder: RouteEncoder, rows: list[RouteIds]) -> tuple[np.ndarray, ...]:
    return run(encoder, model_io.route_feeds(rows))


def route_features(encoder: RouteEncoder, rows: list[RouteIds]) -> np.ndarray:
    feeds = model_io.route_feeds(rows)
    with torch.no_grad():
        return encoder.route_features(*(torch.from_numpy(feeds[name]) for name, _ in model_io.INPUTS)).numpy()


def token(placement: int, role: int, layout: LayoutGeometry = DEMO) -> int:
    return TOKENIZER.index[hold_token(layout.board, layout.layout_id, placement, ROLE_NAMES[role])]


def hold_column(coords: np.ndarray, name: str, n: int) -> list[float]:
    """One per-hold feature of row 0's first n holds (after <CLS> <BOARD> <ANGLE>)."""
    return coords[0, 3 : 3 + n, COLUMN[name]].tolist()


def cls_features(coords: np.ndarray) -> dict[str, float]:
    return {name: float(coords[0, 0, COLUMN[name]]) for name in ALL_ROUTE_FEATURES}


# Route A's moves, between its hand holds bottom to top: 10 -> 15 -> 12 -> 13 -> 14.
A_MOVES = [S(1.25), S(1.25), S(5), S(2)]
A_NEAREST = [1, 1, S(1.25), 1, S(2), S(2)]
ROUTE_A_FEATURES = {
    "route_holds": 0.6,
    "route_start": 0.2,
    "route_middle": 0.2,
    "route_finish": 0.1,
    "route_foot": 0.1,
    "route_all_x_min": -1,
    "route_all_x_max": 2,
    "route_all_x_mean": 0.5,
    "route_all_x_std": pstdev([0, 1, -1, 0, 2, 1]),
    "route_all_y_min": 0,
    "route_all_y_max": 3,
    "route_all_y_mean": 6.5 / 6,
    "route_all_y_std": pstdev([0, 0, 0.5, 1, 2, 3]),
    "route_hand_x_min": -1,
    "route_hand_x_max": 2,
    "route_hand_x_mean": 0.4,
    "route_hand_x_std": pstdev([0, -1, 0, 2, 1]),
    "route_hand_y_min": 0,
    "route_hand_y_max": 3,
    "route_hand_y_mean": 1.3,
    "route_hand_y_std": pstdev([0, 0.5, 1, 2, 3]),
    "route_start_y": 0.25,  # the starts' mean height
    "route_finish_y": 3,
    "route_height_gain": 2.75,
    "route_move_mean": fmean(A_MOVES),
    "route_move_max": S(5),
    "route_move_sum": sum(A_MOVES),
    "route_nearest_mean": fmean(A_NEAREST),
    "route_nearest_max": S(2),
    "route_foot_hand": 1,  # the foot 11 is 1 from the start 10
    "route_move_first": S(1.25),
    "route_move_last": S(2),
    "route_move_second": S(2),
    "route_move_std": pstdev(A_MOVES),
    "route_move_dy_max": 1,
    "route_move_dx_sum": 5,  # |-1| + 1 + 2 + |-1|
    "route_move_lateral": 0.75,  # 3 of 4 moves go further sideways than up (13 -> 14 is 1 and 1)
    "route_turns": 0.2,  # left, right, right, left: 2 turns
    "route_big_moves": 0.4,
    "route_huge_moves": 0.4,
    "route_start_span": S(1.25),  # 10 to 15
    "route_hand_nearest_mean": fmean([1, S(1.25), 1, S(2), S(2)]),
    "route_hand_nearest_max": S(2),
    # holds 0.25..1 below and at most 1 to the side: 15 has 10; 12 has 10, 11, 15; 13 none; 14 has 13
    "route_support": 1.25 / 10,
    "route_support_min": 0,
    "route_y_gap_max": 1,  # heights 0, 0, 0.5, 1, 2, 3
    "route_foot_top": -0.25,  # the foot sits below the starts' mean height
}


def test_route_a_tokens_and_per_hold_features(encoder):
    token_ids, coords, padding, problems = encode(encoder, [ids(ROUTE_A)])
    assert problems.tolist() == [0]
    assert token_ids[0].tolist() == [
        CLS_ID,
        TOKENIZER.board_ids[("demo", 7)],
        TOKENIZER.angle_ids[40],
        *(token(p, r) for p, r in ROUTE_A_ORDER),
    ]
    assert UNK_ID not in token_ids[0] and padding.tolist() == [[False] * 9]
    assert coords.dtype == np.float32 and coords.shape == (1, 9, len(FEATURES))
    n = 6
    assert hold_column(coords, "x", n) == [0, 0.5, -0.5, 0, 1, 0.5]
    assert hold_column(coords, "y", n) == [-1, -1, -0.75, -0.5, 0, 0.5]
    assert hold_column(coords, "is_hold", n) == [1] * n
    assert hold_column(coords, "role_start", n) == [1, 0, 1, 0, 0, 0]
    assert hold_column(coords, "role_middle", n) == [0, 0, 0, 1, 1, 0]
    assert hold_column(coords, "role_finish", n) == [0, 0, 0, 0, 0, 1]
    assert hold_column(coords, "role_foot", n) == [0, 1, 0, 0, 0, 0]
    assert coords[0, :, COLUMN["angle"]].tolist() == [pytest.approx(40 / 90)] * 9  # on every token
    assert hold_column(coords, "nearest", n) == pytest.approx(A_NEAREST, rel=1e-6)
    assert hold_column(coords, "nearest2", n) == pytest.approx([1, S(2), S(1.25), S(1.25), S(5), S(5)], rel=1e-6)
    # the move onto each hand hold from the hand hold below it; none onto the foot or the lowest hand hold
    assert hold_column(coords, "move_dx", n) == [0, 0, -1, 1, 2, -1]
    assert hold_column(coords, "move_dy", n) == [0, 0, 0.5, 0.5, 1, 1]
    # the per-hold columns are 0 on the prefix, the route columns 0 on every token but <CLS>
    per_hold = [COLUMN[name] for name in HOLD_FEATURES if name != "angle"]
    route = [COLUMN[name] for name in ALL_ROUTE_FEATURES]
    assert not coords[0, :3][:, per_hold].any() and not coords[0, 1:][:, route].any()


def test_route_a_route_features(encoder):
    assert set(ROUTE_A_FEATURES) == set(ALL_ROUTE_FEATURES)  # every route feature is checked here
    _, coords, _, _ = encode(encoder, [ids(ROUTE_A)])
    assert cls_features(coords) == pytest.approx(ROUTE_A_FEATURES, rel=1e-6, abs=1e-7)
    exact = route_features(encoder, [ids(ROUTE_A)])
    assert exact.dtype == np.float64 and exact.shape == (1, len(ALL_ROUTE_FEATURES))
    assert dict(zip(ALL_ROUTE_FEATURES, exact[0].tolist())) == pytest.approx(ROUTE_A_FEATURES, rel=1e-12, abs=1e-12)
    assert np.array_equal(exact.astype(np.float32), coords[:, 0, [COLUMN[f] for f in ALL_ROUTE_FEATURES]])


def test_a_move_of_exactly_one_is_big_but_not_huge(encoder):
    # 10 (0,0) -> 12 (0,1) -> 14 (1,3): moves 1 and sqrt(5)
    _, coords, _, _ = encode(encoder, [ids(ROUTE_C, angle=0)])
    found = cls_features(coords)
    assert found["route_big_moves"] == pytest.approx(0.2) and found["route_huge_moves"] == pytest.approx(0.1)
    assert found["route_move_lateral"] == 0 and found["route_turns"] == 0  # one sideways move: nothing to turn from
    assert found["route_move_first"] == 1 and found["route_move_last"] == pytest.approx(S(5))
    assert found["route_move_second"] == 1 and found["route_move_dx_sum"] == 1 and found["route_move_dy_max"] == 2
    assert found["route_support"] == pytest.approx(0.05)  # 12 stands on 10; 14 has nothing 0.25..1 below
    assert found["route_foot"] == 0 and found["route_foot_hand"] == 0 and found["route_foot_top"] == 0
    assert found["route_start_span"] == 0  # one start
    # 10-12 is 1, 12-14 sqrt(5), 10-14 sqrt(10)
    assert hold_column(coords, "nearest", 3) == pytest.approx([1, 1, S(5)], rel=1e-6)
    assert hold_column(coords, "nearest2", 3) == pytest.approx([S(10), S(5), S(10)], rel=1e-6)
    assert coords[0, 0, COLUMN["angle"]] == 0


def test_a_route_of_feet_only_moves_between_its_feet(encoder):
    # 10 (0,0), 12 (0,1), 13 (2,2), all feet: they are the route's hands for its route features
    _, coords, _, problems = encode(encoder, [ids(FEET_ONLY, angle=20)])
    assert problems.tolist() == [0]
    assert hold_column(coords, "role_foot", 3) == [1, 1, 1]
    assert hold_column(coords, "move_dx", 3) == [0, 0, 0] and hold_column(coords, "move_dy", 3) == [0, 0, 0]
    found = cls_features(coords)
    expected = {
        "route_foot": 0.3,
        "route_start": 0,
        "route_move_sum": 1 + S(5),
        "route_move_first": 1,
        "route_move_last": S(5),
        "route_move_dx_sum": 2,
        "route_start_y": 0,  # no start: the lowest hand hold
        "route_finish_y": 2,  # no finish: the top hand hold
        "route_height_gain": 2,
        "route_hand_x_mean": 2 / 3,
        "route_hand_y_max": 2,
        "route_foot_hand": 0,
        "route_foot_top": 2,
        "route_support": 0.05,  # 12 stands on 10; 13 is 2 to the side of 12
    }
    assert {name: found[name] for name in expected} == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_a_one_hold_route(encoder):
    token_ids, coords, padding, problems = encode(encoder, [ids(ONE_HOLD, angle=0)])
    assert problems.tolist() == [0] and padding.tolist() == [[False] * 4]
    assert token_ids[0].tolist() == [CLS_ID, TOKENIZER.board_ids[("demo", 7)], TOKENIZER.angle_ids[0], UNK_ID]
    assert coords[0, 3, [COLUMN[f] for f in ("x", "y", "is_hold", "role_start")]].tolist() == [1, 0, 1, 1]
    assert hold_column(coords, "nearest", 1) == [0] and hold_column(coords, "nearest2", 1) == [0]
    found = cls_features(coords)
    # the hole (2, 2), alone: its counts and positions; every spread, move, distance and support is 0
    at = {"route_holds": 0.1, "route_start": 0.1, "route_start_y": 2, "route_finish_y": 2}
    at |= {
        f"route_{who}_{axis}_{stat}": 2 for who in ("all", "hand") for axis in "xy" for stat in ("min", "max", "mean")
    }
    assert found == dict.fromkeys(ALL_ROUTE_FEATURES, 0.0) | {name: pytest.approx(value) for name, value in at.items()}
    assert np.all(np.isfinite(coords))


def test_a_two_hold_route_listed_top_first(encoder):
    # 10 (0,0) start, 14 (1,3) finish
    token_ids, coords, _, _ = encode(encoder, [ids(TWO_HOLDS, angle=20)])
    assert token_ids[0, 3:].tolist() == [token(10, START), token(14, FINISH)]
    assert hold_column(coords, "nearest", 2) == pytest.approx([S(10), S(10)], rel=1e-6)
    assert hold_column(coords, "nearest2", 2) == [0, 0]  # fewer than 3 holds
    assert hold_column(coords, "move_dx", 2) == [0, 1] and hold_column(coords, "move_dy", 2) == [0, 3]
    found = cls_features(coords)
    expected = {
        "route_move_mean": S(10),
        "route_move_first": S(10),
        "route_move_last": S(10),
        "route_move_second": 0,
        "route_move_std": 0,
        "route_height_gain": 3,
        "route_y_gap_max": 3,
        "route_start_span": 0,
        "route_support": 0,
        "route_nearest_mean": S(10),
        "route_hand_nearest_max": S(10),
        "route_huge_moves": 0.1,
    }
    assert {name: found[name] for name in expected} == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_holds_sort_bottom_to_top_then_left_to_right_then_by_placement_id(encoder):
    # 10 and 18 share the hole (0,0); 11 is right of them at the same height
    token_ids, _, _, _ = encode(encoder, [ids(SAME_HOLE)])
    assert token_ids[0, 3:].tolist() == [token(10, START), token(18, MIDDLE), token(11, FINISH)]
    token_ids, _, _, _ = encode(encoder, [ids(((18, START), (12, MIDDLE), (10, FINISH)))])
    expected = [UNK_ID, UNK_ID, token(12, MIDDLE)]  # 10 as finish and 18 as start were in no training route
    assert token_ids[0, 3:].tolist() == expected
    _, coords, _, _ = encode(encoder, [ids(((18, START), (12, MIDDLE), (10, FINISH)))])
    assert hold_column(coords, "role_finish", 3) == [1, 0, 0] and hold_column(coords, "role_start", 3) == [0, 1, 0]


def test_the_placement_scheme_gives_a_placement_one_token_in_every_role(encoder):
    tokenizer = _tokenizer(PLACEMENT)
    by_placement, vocab = RouteEncoder(tokenizer), tokenizer.index
    as_start, coords, _, _ = encode(by_placement, [ids(((10, START), (12, MIDDLE)))])
    as_foot, _, _, _ = encode(by_placement, [ids(((10, FOOT), (12, FINISH)))])
    expected = [vocab[hold_token("demo", 7, 10, None)], vocab[hold_token("demo", 7, 12, None)]]
    assert as_start[0, 3:].tolist() == as_foot[0, 3:].tolist() == expected
    assert vocab[hold_token("demo", 7, 13, None)] == encode(by_placement, [ids(ONE_HOLD)])[0][0, 3]  # seen as a foot
    _, same, _, _ = encode(encoder, [ids(((10, START), (12, MIDDLE)))])
    assert np.array_equal(coords, same)  # the features do not depend on the token scheme


def test_a_batch_of_routes_without_holds_is_flagged_not_a_crash(encoder):
    _, _, _, problems = encode(encoder, [ids(()), ids((), angle=0)])
    assert problems.tolist() == [BITS["no_holds"]] * 2


def _padded(rows: list[RouteIds], rng: random.Random, extra: int) -> dict[str, np.ndarray]:
    """Feeds with each route's holds shuffled and zero (padding) slots put anywhere among them."""
    width = max(len(r.placements) for r in rows) + extra
    placements = np.zeros((len(rows), width), dtype=np.int64)
    roles = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        slots = sorted(rng.sample(range(width), len(row.placements)))
        holds = list(zip(row.placements, row.roles))
        rng.shuffle(holds)
        for slot, (p, r) in zip(slots, holds):
            placements[i, slot], roles[i, slot] = p, r
    return {
        model_io.LAYOUT: np.array([r.layout for r in rows], dtype=np.int64),
        model_io.ANGLE: np.array([r.angle for r in rows], dtype=np.int64),
        model_io.PLACEMENT_ID: placements,
        model_io.ROLE_ID: roles,
    }


HAND_MADE = [ids(ROUTE_A), ids(ROUTE_C, 0), ids(FEET_ONLY, 20), ids(ONE_HOLD, 0), ids(TWO_HOLDS, 20), ids(SAME_HOLE)]


def _alone(encoder: RouteEncoder, row: RouteIds) -> tuple[np.ndarray, np.ndarray]:
    token_ids, coords, _, _ = encode(encoder, [row])
    return token_ids[0], coords[0]


def test_hold_order_and_padding_change_nothing(encoder):
    rng = random.Random(0)
    for row in HAND_MADE:
        ids0, coords0 = _alone(encoder, row)
        n = len(ids0)
        for extra in (0, 1, 4):
            token_ids, coords, padding, problems = run(encoder, _padded([row], rng, extra))
            assert problems.tolist() == [0]
            assert np.array_equal(token_ids[0, :n], ids0) and np.array_equal(coords[0, :n], coords0), (row, extra)
            assert not padding[0, :n].any() and padding[0, n:].all()
            assert (token_ids[0, n:] == PAD_ID).all() and not coords[0, n:].any()


def test_every_permutation_of_a_route_encodes_alike(encoder):
    ids0, coords0 = _alone(encoder, ids(ROUTE_A))
    for order in itertools.permutations(ROUTE_A):
        token_ids, coords = _alone(encoder, ids(order))
        assert np.array_equal(token_ids, ids0) and np.array_equal(coords, coords0), order


def test_a_route_encodes_alike_whatever_else_is_in_its_batch(encoder):
    rng = random.Random(1)
    other = ids(((500, 5), (501, 6), (502, 7)), angle=45, layout=OTHER_INDEX)
    batch = [*HAND_MADE, other, ids((), 40)]  # the other board, and a route with no holds (flagged)
    for _ in range(5):
        rng.shuffle(batch)
        token_ids, coords, padding, problems = run(encoder, _padded(batch, rng, extra=2))
        for i, row in enumerate(batch):
            if not row.placements:
                assert problems[i] == model_io.PROBLEM_BITS["no_holds"]
                continue
            ids0, coords0 = _alone(encoder, row)
            n = len(ids0)
            assert problems[i] == 0
            assert np.array_equal(token_ids[i, :n], ids0) and np.array_equal(coords[i, :n], coords0), row
            assert padding[i, n:].all() and not padding[i, :n].any()


BITS = model_io.PROBLEM_BITS
HUGE = 2**40
GOOD = ((10, START), (14, FINISH))
INVALID = [  # (route, the problems it must have)
    (ids(GOOD, layout=2), BITS["unknown_layout"]),
    (ids(GOOD, layout=-1), BITS["unknown_layout"]),
    (ids(GOOD, layout=HUGE), BITS["unknown_layout"]),
    (ids(((10, START), (500, FINISH))), BITS["placement"]),  # on the other layout only
    (ids(((10, START), (13, 5)), angle=45, layout=OTHER_INDEX), BITS["placement"]),
    (ids(((10, START), (HUGE, FINISH))), BITS["placement"]),
    (ids(((10, START), (-3, FINISH))), BITS["placement"]),
    (ids(((10, START), (9, FINISH))), BITS["placement"]),  # below every placement id of the layout
    (ids(((10, START), (14, 5))), BITS["role"]),  # the other board's start
    (ids(((10, START), (14, 99))), BITS["role"]),
    (ids(((10, START), (14, -1))), BITS["role"]),
    (ids(((10, START), (14, 0))), BITS["role"]),
    (ids(((10, START), (14, HUGE))), BITS["role"]),
    (ids(GOOD, angle=25), BITS["angle"]),
    (ids(GOOD, angle=45), BITS["angle"]),  # the other layout's angle
    (ids(GOOD, angle=-20), BITS["angle"]),
    (ids(GOOD, angle=10**6), BITS["angle"]),
    (ids(((10, START), (10, FINISH))), BITS["repeated"]),
    (ids(((10, START), (12, MIDDLE), (10, START))), BITS["repeated"]),
    (ids(()), BITS["no_holds"]),
    (ids(tuple((p, MIDDLE) for p in range(10, 17))), BITS["too_many_holds"]),  # 7 holds, the model takes 6
    (ids(((10, START), (10, FINISH)), angle=25), BITS["repeated"] | BITS["angle"]),
    (ids(((10, START), (HUGE, FINISH), (14, 99))), BITS["placement"] | BITS["role"]),
]


def test_problem_bits_are_distinct_and_named():
    assert len(set(BITS.values())) == len(BITS) and all(bit & (bit - 1) == 0 for bit in BITS.values())
    assert model_io.describe_problems(BITS["angle"] | BITS["repeated"]) == "angle, repeated"
    assert model_io.describe_problems(0) == "none"


def test_every_problem_is_flagged_without_touching_the_valid_routes(encoder):
    valid = [ids(ROUTE_A), ids(TWO_HOLDS, 20)]
    batch = [valid[0], *(row for row, _ in INVALID), valid[1]]
    token_ids, coords, padding, problems = encode(encoder, batch)
    for i, (row, expected) in enumerate(INVALID, start=1):  # an unknown layout is that alone, not its placements too
        assert problems[i] == expected, (row, problems[i], expected)
    assert problems[0] == problems[-1] == 0
    for i, row in ((0, valid[0]), (len(batch) - 1, valid[1])):
        ids0, coords0 = _alone(encoder, row)
        n = len(ids0)
        assert np.array_equal(token_ids[i, :n], ids0) and np.array_equal(coords[i, :n], coords0)
        assert padding[i, n:].all()
    # whatever the ids, the outputs are in range: known tokens, finite features
    assert np.all(np.isfinite(coords)) and token_ids.min() >= 0 and token_ids.max() < len(TOKENIZER.vocab)
    assert np.all(np.isfinite(route_features(encoder, batch)))


def test_each_invalid_route_alone(encoder):
    for row, expected in INVALID:
        if not row.placements:
            continue  # a batch needs a hold slot; no_holds is checked among others above
        _, coords, _, problems = encode(encoder, [row])
        assert problems[0] & expected and np.all(np.isfinite(coords)), row


def test_feature_names():
    assert FEATURES == HOLD_FEATURES + ROUTE_FEATURES + SHAPE_FEATURES and len(set(FEATURES)) == len(FEATURES)
    assert len(ALL_ROUTE_FEATURES) == 47
    names = ("x", "y", "is_hold", "angle", "route", "shape")
    assert expand_features(names) == ("x", "y", "is_hold", "angle", *ROUTE_FEATURES, *SHAPE_FEATURES)
    assert compact_features(expand_features(names)) == ("x", "y", "is_hold", "angle", "route@1", "shape@1")
    check_features(FEATURES)
    for bad in (("x", "is_hold", "y"), ("x", "y", "is_hold", "hold_size"), ("x", "y", "is_hold", "angle", "angle")):
        with pytest.raises(ValueError, match="features must start with x, y, is_hold"):
            check_features(bad)


def test_an_encoder_of_fewer_features_reads_the_same_columns():
    chosen = ("x", "y", "is_hold", "route_start_span", "nearest", "angle")
    small = RouteEncoder(Tokenizer(TOKENIZER.vocab, TOKENIZER.layouts, TOKENIZER.max_len, features=chosen))
    full = RouteEncoder(TOKENIZER)
    _, coords, _, _ = encode(small, [ids(ROUTE_A)])
    _, every, _, _ = encode(full, [ids(ROUTE_A)])
    assert np.array_equal(coords, every[:, :, [COLUMN[name] for name in chosen]])


# The exported graph: a tiny untrained bins model with an interval, behind the same RouteEncoder.


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[Grader, Any]:
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=len(TOKENIZER.vocab),
        max_len=TOKENIZER.max_len,
        n_features=len(FEATURES),
        d_model=16,
        n_heads=2,
        n_layers=1,
        d_ff=32,
        readout="cls+features",
        head="bins",
        bins=6,
        bin_low=10.0,
        interval_scale=1.0,
    )
    grader = Grader(GradeModel(config), TOKENIZER).eval()
    data = export_onnx(grader, model_io.route_feeds([ids(ROUTE_A), ids(TWO_HOLDS, 20)]), 17)
    path = Path(tmp_path_factory.mktemp("features_graph")) / "tiny.onnx"
    path.write_bytes(data)
    return grader, create_session(path)


def _both(grader: Grader, session: Any, feeds: dict[str, np.ndarray]) -> tuple[dict, dict]:
    names = [name for name, _ in grader.output_names]
    found = dict(zip(names, session.run(names, feeds)))
    with torch.no_grad():
        expected = grader(*(torch.from_numpy(feeds[name]) for name, _ in model_io.INPUTS))
    return found, {name: value.numpy() for name, value in zip(names, expected)}


def test_the_graph_grades_as_pytorch_on_hand_made_and_invalid_routes(graph):
    grader, session = graph
    assert [name for name, _ in grader.output_names] == [name for name, _ in model_io.INTERVAL_OUTPUTS]
    rng = random.Random(2)
    batches = [[row] for row in HAND_MADE] + [HAND_MADE, HAND_MADE + [row for row, _ in INVALID]]
    for batch in batches:
        for feeds in (model_io.route_feeds(batch), _padded(batch, rng, extra=3)):
            found, expected = _both(grader, session, feeds)
            problems = found[model_io.PROBLEMS]
            assert problems.dtype == np.int64 and np.array_equal(problems, expected[model_io.PROBLEMS])
            valid = problems == 0
            for name in (model_io.DIFFICULTY, model_io.LOW, model_io.HIGH):
                assert found[name].shape == (len(batch),)
                assert np.max(np.abs(found[name][valid] - expected[name][valid])) <= 1e-4, name
    found, _ = _both(grader, session, model_io.route_feeds(HAND_MADE + [row for row, _ in INVALID]))
    problems = found[model_io.PROBLEMS]
    assert not problems[: len(HAND_MADE)].any() and problems[len(HAND_MADE) :].tolist() == [
        int(p) for p in encode(RouteEncoder(TOKENIZER), [row for row, _ in INVALID])[3]
    ]
    # the routes' grades differ: the comparison above is not of constants
    assert len({round(float(d), 5) for d in found[model_io.DIFFICULTY][: len(HAND_MADE)]}) == len(HAND_MADE)
