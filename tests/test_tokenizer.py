"""The one tokenizer: what the runtime makes of a user's route equals what training used."""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3

import numpy as np
import pytest

from climbgrade_runtime.errors import RouteError
from climbgrade_runtime.routes import Route, parse_route
from climbgrade_runtime.sidecar import Sidecar
from climbgrade_runtime.tokenizer import CLS, SPECIALS, UNK_ID, Tokenizer
from climbgrade_train.config import TrainConfig
from climbgrade_train.run_folder import prepare_run


def test_runtime_tokens_equal_training_tokens_for_every_route(pipeline):
    """Every row training encoded, re-read raw from the database and sent through the runtime's JSON path."""
    import json

    config = TrainConfig.from_dict(json.loads((pipeline.run_dir / "run.json").read_text())["config"])
    run = prepare_run(config, pipeline.run_dir, resume=True)
    runtime = Sidecar.load(f"{pipeline.model}.json").tokenizer
    raw = {}
    for path in pipeline.databases:
        con = sqlite3.connect(path)
        raw.update(
            {
                (u, a): (lay, fr)
                for u, lay, a, fr in con.execute(
                    "SELECT c.uuid, c.layout_id, s.angle, c.frames FROM climbs c JOIN climb_stats s ON s.climb_uuid = c.uuid"
                )
            }
        )
    checked = 0
    for split in run.sets.values():
        for example, encoded in zip(split.examples, split.encoded):
            layout_id, frames = raw[(example.uuid, example.angle)]
            route = {"board": example.board, "layout_id": layout_id, "angle": example.angle, "frames": frames}
            ours = runtime.encode(parse_route(route))
            assert np.array_equal(ours.ids, encoded.ids) and np.array_equal(ours.coords, encoded.coords)
            checked += 1
    assert checked == sum(len(s) for s in run.sets.values()) > 500


def test_sidecar_tokenizer_round_trips(fake_pipeline):
    tokenizer = Sidecar.load(f"{fake_pipeline.model}.json").tokenizer
    assert Tokenizer.from_dict(tokenizer.to_dict()) == tokenizer


@pytest.fixture(scope="module")
def tokenizer(fake_pipeline) -> Tokenizer:
    return Sidecar.load(f"{fake_pipeline.model}.json").tokenizer


def test_sequence_layout_and_coordinates(tokenizer):
    layout = tokenizer.layouts[("kilter", 1)]
    pids = sorted(layout.placements)[:3]
    encoded = tokenizer.encode(Route("kilter", 1, 40, ((pids[2], "finish"), (pids[0], "start"), (pids[1], 13))))
    assert tokenizer.vocab[encoded.ids[0]] == CLS
    assert tokenizer.vocab[encoded.ids[1]] == "<BOARD_kilter_1>"
    assert tokenizer.vocab[encoded.ids[2]] == "<ANGLE_40>"
    assert encoded.coords[:3, :3].tolist() == [[0, 0, 0]] * 3
    assert encoded.coords[3:, 2].tolist() == [1, 1, 1]
    assert np.all(np.abs(encoded.coords[:, :2]) <= 1)
    # role id 13 resolves to its name: the same token as writing "middle"
    same = tokenizer.encode(Route("kilter", 1, 40, ((pids[0], "start"), (pids[1], "middle"), (pids[2], "finish"))))
    assert np.array_equal(encoded.ids, same.ids)


def test_unseen_hold_maps_to_unk_with_warning(tokenizer):
    layout = tokenizer.layouts[("kilter", 1)]
    unseen = [pid for pid in layout.placements if f"kilter/1/p{pid}/foot" not in tokenizer.index]
    assert unseen, "the synthetic board should have holds no training climb used as feet"
    encoded = tokenizer.encode(Route("kilter", 1, 40, ((unseen[0], "foot"),)))
    assert encoded.ids[3] == UNK_ID
    assert any("never appeared in the training data" in w for w in encoded.warnings)


def test_routes_longer_than_the_model_are_refused(tokenizer):
    layout = tokenizer.layouts[("kilter", 1)]
    holds = tuple((pid, "middle") for pid in sorted(layout.placements)[: tokenizer.max_holds + 1])
    with pytest.raises(RouteError, match=f"this model takes at most {tokenizer.max_holds}"):
        tokenizer.encode(Route("kilter", 1, 40, holds))
    assert len(tokenizer.encode(Route("kilter", 1, 40, holds[:-1])).ids) == tokenizer.max_len


def test_encoded_ids_are_the_tokens_looked_up_in_the_vocabulary(pipeline):
    """encode_resolved's direct id lookup must equal mapping ResolvedRoute.tokens() through the vocab."""
    import json

    config = TrainConfig.from_dict(json.loads((pipeline.run_dir / "run.json").read_text())["config"])
    run = prepare_run(config, pipeline.run_dir, resume=True)
    tokenizer = run.tokenizer
    unknown = 0
    for example in run.sets["test"].examples + run.sets["val"].examples:
        ids = tokenizer.encode_resolved(example.route).ids.tolist()
        assert ids == [tokenizer.index.get(t, UNK_ID) for t in example.route.tokens()]
        unknown += ids.count(UNK_ID)
    assert unknown > 0, "held-out routes should include some holds never seen in training"


@pytest.fixture(scope="module")
def fake_data(fake_dbs):
    from climbgrade_runtime.boardlib_db import ClimbFilter
    from climbgrade_runtime.graded import load_examples

    return load_examples(fake_dbs, ClimbFilter())


def test_placement_scheme_puts_roles_angle_and_distances_in_features(fake_data):
    from climbgrade_runtime.tokenizer import FEATURES, PLACEMENT

    tokenizer = Tokenizer.build(
        fake_data.layouts.values(),
        [e.route for e in fake_data.examples],
        fake_data.max_len,
        hold_tokens=PLACEMENT,
        features=FEATURES,
    )
    layout = tokenizer.layouts[("kilter", 1)]
    pids = sorted(layout.placements, key=lambda p: layout.placements[p][1])
    low, mid, high = pids[0], pids[len(pids) // 2], pids[-1]
    route = Route("kilter", 1, 45, ((high, "finish"), (low, "start"), (mid, "foot")))
    encoded = tokenizer.encode(route)
    assert [tokenizer.vocab[i] for i in encoded.ids[3:]] == [f"kilter/1/p{p}" for p in (low, mid, high)]
    column = {name: i for i, name in enumerate(FEATURES)}
    roles = encoded.coords[
        3:, [column["role_start"], column["role_middle"], column["role_finish"], column["role_foot"]]
    ]
    assert roles.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    assert np.allclose(encoded.coords[:, column["angle"]], 45 / 90)
    xy = np.array([layout.placements[p] for p in (low, mid, high)], dtype=float)
    gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    assert np.allclose(encoded.coords[3:, column["nearest"]], np.sort(gaps, 1)[:, 0] / 48, atol=1e-5)
    assert np.allclose(encoded.coords[3:, column["nearest2"]], np.sort(gaps, 1)[:, 1] / 48, atol=1e-5)
    # The same placement in another role is the same token: the role lives in the features only.
    as_middle = tokenizer.encode(Route("kilter", 1, 45, ((high, "finish"), (low, "middle"), (mid, "foot"))))
    assert np.array_equal(as_middle.ids, encoded.ids) and not np.array_equal(as_middle.coords, encoded.coords)
    assert Tokenizer.from_dict(tokenizer.to_dict()) == tokenizer


def test_mirror_uses_mirrored_hole_ids(fake_data):
    mirrored = [(e.route, e.route.mirrored()) for e in fake_data.examples if e.board == "tension"]
    pairs = [(r, m) for r, m in mirrored if m is not None]
    assert pairs, "the synthetic TB2 board has mirrored holes"
    route, mirror = pairs[0]
    mirrors = route.layout.mirrors
    assert sorted(mirrors[p] for p, _ in route.holds) == sorted(p for p, _ in mirror.holds)
    assert mirror.mirrored().holds == route.holds  # mirroring twice gives the route back
    lonely = dataclasses.replace(route.layout, mirrors={})  # a board without mirrored holes (Kilter Original)
    assert dataclasses.replace(route, layout=lonely).mirrored() is None


def test_a_sidecar_with_unknown_features_is_refused(tokenizer):
    from climbgrade_runtime.errors import ModelError

    data = tokenizer.to_dict() | {"features": ["x", "y", "is_hold", "hold_size"]}
    with pytest.raises(ModelError, match="features must start with"):
        Tokenizer.from_dict(data)


def test_placement_groups_merge_one_placements_roles_only(tokenizer):
    groups = tokenizer.placement_groups()
    assert len(groups) == len(tokenizer.vocab) and groups[: len(SPECIALS)] == list(range(len(SPECIALS)))
    by_placement: dict[tuple[str, int, int], set[int]] = {}
    for token, group in zip(tokenizer.vocab, groups):
        parts = token.split("/")
        if len(parts) == 4:  # board/layout/p<id>/<role>
            by_placement.setdefault((parts[0], int(parts[1]), int(parts[2][1:])), set()).add(group)
    assert by_placement and all(len(g) == 1 for g in by_placement.values())
    assert len({min(g) for g in by_placement.values()}) == len(by_placement)  # other placements: other groups
    assert any(groups.count(g) > 1 for g in set(groups))  # some placement was used in two roles
    assert max(groups) + 1 == len(SPECIALS) + sum(
        1 for t in tokenizer.vocab if t.startswith("<") and t not in SPECIALS
    ) + len(by_placement)


def test_route_features_sit_on_cls_and_describe_the_route(fake_data):
    from climbgrade_runtime.route_features import ROUTE_FEATURES
    from climbgrade_runtime.tokenizer import BASE_FEATURES, expand_features

    features = expand_features(BASE_FEATURES + ("route",))
    assert features == BASE_FEATURES + ROUTE_FEATURES
    tokenizer = Tokenizer.build(
        fake_data.layouts.values(), [e.route for e in fake_data.examples], fake_data.max_len, features=features
    )
    layout = tokenizer.layouts[("kilter", 1)]
    by_height = sorted(layout.placements, key=lambda p: (layout.placements[p][1], layout.placements[p][0]))
    start, foot, middle, finish = (
        by_height[0],
        by_height[len(by_height) // 3],
        by_height[len(by_height) // 2],
        by_height[-1],
    )
    holds = ((finish, "finish"), (middle, "middle"), (start, "start"), (foot, "foot"))
    encoded = tokenizer.encode(Route("kilter", 1, 40, holds))
    route = dict(zip(ROUTE_FEATURES, encoded.coords[0, len(BASE_FEATURES) :].tolist()))
    assert not encoded.coords[1:, len(BASE_FEATURES) :].any()  # route geometry lives on <CLS> only
    xy = {pid: np.array(layout.placements[pid], dtype=float) / 48 for pid, _ in holds}
    hand = [xy[start], xy[middle], xy[finish]]  # bottom to top, the foot left out
    expected = {
        "route_holds": 0.4,
        "route_start": 0.1,
        "route_middle": 0.1,
        "route_finish": 0.1,
        "route_foot": 0.1,
        "route_start_y": xy[start][1],
        "route_finish_y": xy[finish][1],
        "route_height_gain": xy[finish][1] - xy[start][1],
        "route_move_sum": np.linalg.norm(hand[1] - hand[0]) + np.linalg.norm(hand[2] - hand[1]),
        "route_move_max": max(np.linalg.norm(hand[1] - hand[0]), np.linalg.norm(hand[2] - hand[1])),
        "route_hand_y_min": xy[start][1],
        "route_all_x_max": max(v[0] for v in xy.values()),
        "route_foot_hand": min(np.linalg.norm(xy[foot] - h) for h in hand),
    }
    assert {k: round(route[k], 4) for k in expected} == {k: round(float(v), 4) for k, v in expected.items()}
    moves = Tokenizer.build(
        fake_data.layouts.values(), [], fake_data.max_len, features=BASE_FEATURES + ("move_dx", "move_dy")
    ).encode(Route("kilter", 1, 40, holds))
    # Onto each hand hold from the hand hold below it; nothing on the foot or the lowest hand hold.
    assert np.allclose(
        moves.coords[3:, 3:], np.array([[0, 0], [0, 0], hand[1] - hand[0], hand[2] - hand[1]]), atol=1e-6
    )
    shuffled = tokenizer.encode(Route("kilter", 1, 40, holds[::-1]))  # any listing order: the same features
    assert np.array_equal(shuffled.coords, encoded.coords)


def test_shape_features_read_the_moves_and_support(fake_data):
    from climbgrade_runtime.route_features import ROUTE_FEATURES, SHAPE_FEATURES
    from climbgrade_runtime.tokenizer import BASE_FEATURES, expand_features

    tokenizer = Tokenizer.build(
        fake_data.layouts.values(), [], fake_data.max_len, features=expand_features(BASE_FEATURES + ("shape",))
    )
    layout = tokenizer.layouts[("kilter", 1)]
    by_height = sorted(layout.placements, key=lambda p: (layout.placements[p][1], layout.placements[p][0]))
    # Two starts side by side low down, a foot just above them, then a middle and the finish higher up.
    low = [p for p in by_height if layout.placements[p][1] == layout.placements[by_height[0]][1]]
    start_a, start_b = low[0], low[-1]
    foot = by_height[len(by_height) // 4]
    middle, finish = by_height[len(by_height) // 2], by_height[-1]
    holds = ((start_a, "start"), (start_b, "start"), (foot, "foot"), (middle, "middle"), (finish, "finish"))
    encoded = tokenizer.encode(Route("kilter", 1, 40, holds))
    shape = dict(zip(SHAPE_FEATURES, encoded.coords[0, len(BASE_FEATURES) :].tolist()))
    assert not set(SHAPE_FEATURES) & set(ROUTE_FEATURES)
    xy = {pid: np.array(layout.placements[pid], dtype=float) / 48 for pid, _ in holds}
    hand = [xy[start_a], xy[start_b], xy[middle], xy[finish]]  # bottom to top, then left to right
    steps = [b - a for a, b in itertools.pairwise(hand)]
    lengths = [float(np.linalg.norm(s)) for s in steps]
    below = [sum(1 for q in xy.values() if 0.25 <= h[1] - q[1] <= 1.0 and abs(h[0] - q[0]) <= 1.0) for h in hand[1:]]
    expected = {
        "route_move_first": lengths[0],
        "route_move_last": lengths[-1],
        "route_move_second": sorted(lengths)[-2],
        "route_move_dy_max": max(s[1] for s in steps),
        "route_move_dx_sum": sum(abs(s[0]) for s in steps),
        "route_move_lateral": np.mean([abs(s[0]) > abs(s[1]) for s in steps]),
        "route_big_moves": sum(v > 0.75 for v in lengths) / 10,
        "route_huge_moves": sum(v > 1.0 for v in lengths) / 10,
        "route_start_span": np.linalg.norm(xy[start_b] - xy[start_a]),
        "route_hand_nearest_max": max(min(np.linalg.norm(h - o) for o in hand if o is not h) for h in hand),
        "route_support": np.mean(below) / 10,
        "route_support_min": min(below) / 10,
        "route_foot_top": xy[foot][1] - xy[start_a][1],
        "route_y_gap_max": max(np.diff(sorted(v[1] for v in xy.values()))),
    }
    assert {k: round(shape[k], 4) for k in expected} == {k: round(float(v), 4) for k, v in expected.items()}
    assert shape["route_move_lateral"] > 0 and shape["route_start_span"] > 0  # the case tests something


def test_feature_groups_compact_and_expand():
    from climbgrade_runtime.route_features import ROUTE_FEATURES
    from climbgrade_runtime.tokenizer import FEATURES, compact_features, expand_features

    assert (
        compact_features(FEATURES)[-2:] == ("route", "shape")
        and expand_features(compact_features(FEATURES)) == FEATURES
    )
    partial = ("x", "y", "is_hold") + ROUTE_FEATURES[:3]  # a part of a group stays spelt out
    assert compact_features(partial) == partial
