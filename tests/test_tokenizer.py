"""The one tokenizer: what the runtime makes of a user's route equals what training used."""

from __future__ import annotations

import dataclasses
import itertools
import re
import sqlite3

import pytest

from climbgrade_runtime.errors import RouteError
from climbgrade_runtime.routes import Route
from climbgrade_runtime.sidecar import Sidecar
from climbgrade_runtime.tokenizer import (
    CLS,
    CLS_ID,
    PLACEMENT,
    PREFIX_TOKENS,
    SPECIALS,
    UNK_ID,
    UNSEEN_HOLDS,
    Tokenizer,
)
from climbgrade_train.config import TrainConfig
from climbgrade_train.run_folder import prepare_run


def test_training_rows_are_the_contracts_ids_read_from_the_raw_frames(pipeline):
    """Every row training encoded is what docs/model-format.md tells any host to send, worked out here
    from the database's raw frames string and the sidecar's JSON with no climbgrade code: the layout's
    position in the sidecar's layouts, the angle, and the p<placement>r<role> numbers in the route's
    order, each role spelt as the layout's own product does (its `roles` name, then `own_roles` id)."""
    import json

    config = TrainConfig.from_dict(json.loads((pipeline.run_dir / "run.json").read_text())["config"])
    run = prepare_run(config, pipeline.run_dir, resume=True)
    layouts = [(d["board"], d["layout_id"]) for d in pipeline.sidecar["layouts"]]
    own_role = [{int(r): d["own_roles"][name] for r, name in d["roles"].items()} for d in pipeline.sidecar["layouts"]]
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
        assert len(split.rows) == len(split.examples) == len(split.encoded)
        for example, row, encoded in zip(split.examples, split.rows, split.encoded):
            layout_id, frames = raw[(example.uuid, example.angle)]
            index = layouts.index((example.board, layout_id))
            numbers = [(int(p), own_role[index][int(r)]) for p, r in re.findall(r"p(\d+)r(\d+)", frames)]
            expected = (index, example.angle, *map(tuple, zip(*numbers)))
            assert tuple(row) == expected, (example.uuid, frames)
            assert len(encoded.ids) == PREFIX_TOKENS + len(numbers)  # one token per hold the host sent
            checked += 1
    assert checked == sum(len(s) for s in run.sets.values()) > 500


def test_sidecar_tokenizer_round_trips(fake_pipeline):
    data = Sidecar.load(f"{fake_pipeline.model}.json")
    tokenizer = data.tokenizer
    assert Tokenizer.from_dict(tokenizer.to_dict()) == tokenizer
    # The sidecar keeps the layouts apart, in the order the graph's `layout` input indexes them.
    raw = fake_pipeline.sidecar
    assert "layouts" not in raw["tokenizer"] and "token_features" not in raw["tokenizer"]
    assert Tokenizer.from_dict(tokenizer.to_dict(with_layouts=False), layouts=raw["layouts"]) == tokenizer
    assert [(d["board"], d["layout_id"]) for d in raw["layouts"]] == list(tokenizer.layout_index)
    assert list(tokenizer.layout_index.values()) == list(range(len(raw["layouts"])))


@pytest.fixture(scope="module")
def tokenizer(fake_pipeline) -> Tokenizer:
    return Sidecar.load(f"{fake_pipeline.model}.json").tokenizer


def by_height(layout) -> list[int]:
    """The layout's placements bottom to top, then left to right: the canonical order."""
    return sorted(layout.placements, key=lambda p: (layout.placements[p][1], layout.placements[p][0], p))


def test_sequence_layout_and_ids(tokenizer):
    layout = tokenizer.layouts[("kilter", 1)]
    order = by_height(layout)
    low, mid, high = order[0], order[len(order) // 2], order[-1]
    middle_id = next(rid for rid, name in layout.roles.items() if name == "middle")
    resolved = tokenizer.resolve(Route("kilter", 1, 40, ((high, "finish"), (low, "start"), (mid, middle_id))))
    tokens = resolved.tokens()
    assert tokens[:3] == [CLS, "<BOARD_kilter_1>", "<ANGLE_40>"]
    assert tokens[3:] == [f"kilter/1/p{low}/start", f"kilter/1/p{mid}/middle", f"kilter/1/p{high}/finish"]
    # What the host sends the graph: the layout's position, the angle, the holds as the route lists them
    # (the graph sorts them itself), each role as the layout's own product spells it.
    ids = tokenizer.ids(resolved)
    assert ids.layout == tokenizer.layout_index[("kilter", 1)]
    assert ids.angle == 40 and ids.placements == (high, low, mid)
    assert ids.roles == tuple(layout.role_ids[r] for r in ("finish", "start", "middle"))
    assert [layout.roles[r] for r in ids.roles] == ["finish", "start", "middle"]
    assert resolved.holds == ((low, "start"), (mid, "middle"), (high, "finish"))  # what a person reads
    # The vocabulary the graph's tables are made from names the same tokens.
    assert tokenizer.vocab[tokenizer.board_ids[("kilter", 1)]] == "<BOARD_kilter_1>"
    assert tokenizer.vocab[tokenizer.angle_ids[40]] == "<ANGLE_40>"
    # A role id resolves to its name: the same route as writing "middle"
    same = tokenizer.resolve(Route("kilter", 1, 40, ((high, "finish"), (low, "start"), (mid, "middle"))))
    assert same.holds == resolved.holds and tokenizer.ids(same) == ids


def test_ids_at_another_angle_change_only_the_angle(tokenizer):
    layout = tokenizer.layouts[("kilter", 1)]
    resolved = tokenizer.resolve(Route("kilter", 1, 40, tuple((p, "middle") for p in by_height(layout)[:4])))
    own = tokenizer.ids(resolved)
    for angle in layout.angles:
        moved = tokenizer.ids(resolved, angle)
        assert moved == own._replace(angle=angle) == tokenizer.ids(dataclasses.replace(resolved, angle=angle))


def test_roles_are_sent_as_the_layouts_own_role_ids(tokenizer):
    """Whatever id a route spells a role with, the graph gets the id the layout's own product uses."""
    checked = 0
    for key, layout in tokenizer.layouts.items():
        pid = sorted(layout.placements)[0]
        for rid, name in layout.roles.items():
            route = Route(key[0], key[1], layout.angles[0], ((pid, rid),))
            [role] = tokenizer.ids(tokenizer.resolve(route)).roles
            assert role == layout.role_ids[name] and layout.roles[role] == name
            checked += 1
    assert checked > len(tokenizer.layouts)


def test_unseen_hold_maps_to_unk_with_warning(tokenizer):
    layout = tokenizer.layouts[("kilter", 1)]
    known = tokenizer.hold_ids[("kilter", 1)]
    unseen = [pid for pid in layout.placements if f"kilter/1/p{pid}/foot" not in tokenizer.index]
    assert unseen, "the synthetic board should have holds no training climb used as feet"
    assert (unseen[0], "foot") not in known
    resolved = tokenizer.resolve(Route("kilter", 1, 40, ((unseen[0], "foot"),)))
    [warning] = tokenizer.unseen_warning(resolved)
    assert f"p{unseen[0]} as foot" in warning and UNSEEN_HOLDS in warning
    seen_pid, seen_role = next(iter(known))
    seen = tokenizer.resolve(Route("kilter", 1, 40, ((seen_pid, seen_role),)))
    assert tokenizer.unseen_warning(seen) == ()
    assert tokenizer.vocab[known[(seen_pid, seen_role)]] == f"kilter/1/p{seen_pid}/{seen_role}"


def test_routes_longer_than_the_model_are_refused(tokenizer):
    layout = tokenizer.layouts[("kilter", 1)]
    holds = tuple((pid, "middle") for pid in sorted(layout.placements)[: tokenizer.max_holds + 1])
    with pytest.raises(RouteError, match=f"this model takes at most {tokenizer.max_holds}"):
        tokenizer.resolve(Route("kilter", 1, 40, holds))
    longest = tokenizer.ids(tokenizer.resolve(Route("kilter", 1, 40, holds[:-1])))
    assert len(longest.placements) == tokenizer.max_holds == tokenizer.max_len - PREFIX_TOKENS


def test_hold_ids_are_the_tokens_looked_up_in_the_vocabulary(pipeline):
    """The (placement, role) -> id tables the graph is built from equal mapping ResolvedRoute.tokens() through the vocab."""
    import json

    config = TrainConfig.from_dict(json.loads((pipeline.run_dir / "run.json").read_text())["config"])
    run = prepare_run(config, pipeline.run_dir, resume=True)
    tokenizer = run.tokenizer
    unknown = 0
    for example in run.sets["test"].examples + run.sets["val"].examples:
        route = example.route
        key = route.layout.key
        table = tokenizer.hold_ids[key]
        ids = [CLS_ID, tokenizer.board_ids[key], tokenizer.angle_ids[route.angle]]
        ids += [table.get(hold, UNK_ID) for hold in route.holds]
        assert ids == [tokenizer.index.get(t, UNK_ID) for t in route.tokens(tokenizer.hold_tokens)]
        unknown += ids.count(UNK_ID)
        assert bool(tokenizer.unseen_warning(route)) == (UNK_ID in ids)
    assert unknown > 0, "held-out routes should include some holds never seen in training"


@pytest.fixture(scope="module")
def fake_data(fake_dbs):
    from climbgrade_runtime.board_db import ClimbFilter
    from climbgrade_runtime.graded import load_examples

    return load_examples(fake_dbs, ClimbFilter())


def test_placement_scheme_gives_one_token_per_placement_whatever_its_role(fake_data):
    tokenizer = Tokenizer.build(
        fake_data.layouts.values(), [e.route for e in fake_data.examples], fake_data.max_len, hold_tokens=PLACEMENT
    )
    layout = tokenizer.layouts[("kilter", 1)]
    order = by_height(layout)
    low, mid, high = order[0], order[len(order) // 2], order[-1]
    route = tokenizer.resolve(Route("kilter", 1, 45, ((high, "finish"), (low, "start"), (mid, "foot"))))
    assert route.tokens(PLACEMENT)[3:] == [f"kilter/1/p{p}" for p in (low, mid, high)]
    # The same placement in another role is the same token: the role reaches the graph as role_id only.
    as_middle = tokenizer.resolve(Route("kilter", 1, 45, ((high, "finish"), (low, "middle"), (mid, "foot"))))
    assert as_middle.tokens(PLACEMENT) == route.tokens(PLACEMENT)
    table = tokenizer.hold_ids[("kilter", 1)]
    seen = [pid for pid in layout.placements if f"kilter/1/p{pid}" in tokenizer.index]
    assert seen and all(len({table[(pid, name)] for name in layout.role_names}) == 1 for pid in seen)
    ids, moved = tokenizer.ids(route), tokenizer.ids(as_middle)
    assert ids.placements == moved.placements and ids.roles != moved.roles
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


def test_holds_in_any_listing_order_are_the_same_route(tokenizer):
    """However a route lists its holds, it is the same route: the same holds in canonical order for a
    person, and the same (placement, role) pairs for the graph, sent as listed (the graph sorts them)."""
    layout = tokenizer.layouts[("kilter", 1)]
    order = by_height(layout)
    holds = (
        (order[-1], "finish"),
        (order[len(order) // 2], "middle"),
        (order[0], "start"),
        (order[len(order) // 3], "foot"),
    )
    canonical = (holds[2], holds[3], holds[1], holds[0])  # bottom to top
    assert [layout.placements[pid][1] for pid, _ in canonical] == sorted(layout.placements[pid][1] for pid, _ in holds)
    for shuffled in itertools.permutations(holds):
        resolved = tokenizer.resolve(Route("kilter", 1, 40, shuffled))
        assert resolved.holds == canonical and resolved.given == shuffled
        ids = tokenizer.ids(resolved)
        assert ids.placements == tuple(pid for pid, _ in shuffled)
        assert ids.roles == tuple(layout.role_ids[role] for _, role in shuffled)
        assert tokenizer.unseen_warning(resolved) == tokenizer.unseen_warning(
            tokenizer.resolve(Route("kilter", 1, 40, holds))
        )
