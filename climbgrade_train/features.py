"""The one implementation of the model's input features: Aurora ids in, token ids and features out.

`RouteEncoder` is a torch module built from a Tokenizer (vocabulary and board geometry). It is the
first half of every exported graph (grader.py), so any onnxruntime grades a route from its
`placement_id`/`role_id` numbers alone, and training runs the same module over its rows
(dataset.py), so what a model trains on and what it is asked in production are one computation.

Everything is batched tensor code: geometry in float64 (the distances, means and spreads of a route's
holds), cast to the float32 `coords` the network reads. A padded hold slot has placement id 0 (no
Aurora id is 0). Invalid ids are masked out and reported in `problems` (model_io.PROBLEM_BITS); the
graph never indexes out of range, whatever a client sends.

Features: per hold, `HOLD_FEATURES`; on the <CLS> token, `ROUTE_FEATURES` and `SHAPE_FEATURES` (the
numbers a setter reads off a route at a glance, then at a second glance). A route feature is one entry
of `REDUCED` (a statistic of per-hold values over some of the holds) or of `_derived`: adding a feature
is adding its entry there and its name here. Hand holds are every hold but feet (every hold when all
are feet). Distances are in board units / DISTANCE_SCALE, counts / COUNT_SCALE.

The graph is written for onnxruntime at batch 1, where each op costs about a microsecond whatever its
size: lookups are one gather per table, the holds are sorted once as one packed tensor, and every
reduced statistic comes out of one stacked pass (`_reduce`), not ~50 separate reductions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from climbgrade_runtime import model_io
from climbgrade_runtime.tokenizer import BASE_FEATURES, CLS_ID, PAD_ID, UNK_ID, Tokenizer

DISTANCE_SCALE = 48.0  # board units -> about one unit per 4 feet
COUNT_SCALE = 10.0
ANGLE_SCALE = 90.0  # "angle": wall angle / 90 on every token
ROLES = ("start", "middle", "finish", "foot")
BIG_MOVE, HUGE_MOVE = 0.75, 1.0  # hand moves longer than these (the real data's 75th and 93rd percentile)
SUPPORT_BELOW = (0.25, 1.0)  # holds this far below a hand hold (DISTANCE_SCALE units) can carry the feet
SIDEWAYS = 1e-9  # a move with |dx| above this goes left or right (for route_turns)

# Per-hold columns: x, y normalised to [-1, 1] per layout; is_hold; the role one-hot; the angle (on every
# token); the distances to the route's nearest and 2nd-nearest other holds; the move onto each hand hold
# from the hand hold below it (zero on feet and on the lowest hand hold).
MOVE_FEATURES = ("move_dx", "move_dy")
HOLD_FEATURES = (
    BASE_FEATURES + tuple(f"role_{role}" for role in ROLES) + ("angle", "nearest", "nearest2") + MOVE_FEATURES
)
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
ALL_ROUTE_FEATURES = ROUTE_FEATURES + SHAPE_FEATURES  # the <CLS> features, in this order
FEATURES = HOLD_FEATURES + ALL_ROUTE_FEATURES
# Names that stand for several features on a command line, each with a version: a group never changes
# once released (a new feature makes route@2), so a recorded command means what it meant.
FEATURE_GROUPS = {"route@1": ROUTE_FEATURES, "shape@1": SHAPE_FEATURES}
NEWEST_GROUPS = {"route": "route@1", "shape": "shape@1"}  # an unversioned name: its newest version


def expand_features(names: Iterable[str]) -> tuple[str, ...]:
    """Feature names with each group replaced by its features ("route@1" or "route" -> route_*)."""
    return tuple(f for name in names for f in FEATURE_GROUPS.get(NEWEST_GROUPS.get(name, name), (name,)))


def compact_features(names: Iterable[str]) -> tuple[str, ...]:
    """The inverse of expand_features: a group whose features all appear, in order, is written as its
    versioned name."""
    out = tuple(names)
    for group, members in FEATURE_GROUPS.items():
        for start in range(len(out) - len(members) + 1):
            if out[start : start + len(members)] == members:
                out = out[:start] + (group,) + out[start + len(members) :]
                break
    return out


def check_features(features: tuple[str, ...]) -> None:
    """ValueError unless `features` are ones RouteEncoder computes, x, y, is_hold first, each once."""
    unknown = [f for f in features if f not in FEATURES]
    if features[: len(BASE_FEATURES)] != BASE_FEATURES or unknown or len(set(features)) != len(features):
        raise ValueError(
            f"features must start with {', '.join(BASE_FEATURES)} and come from {', '.join(FEATURES)}; "
            f"got {', '.join(features)}"
        )


Tensor = torch.Tensor
# Statistics `_reduce` computes for every (values, mask) pair, in this order.
STATS = ("count", "sum", "max", "min", "mean", "std")
# Route features that are one statistic of per-hold values over a mask of holds (see Holds.pairs), and
# their divisor: feature -> (pair, statistic, divisor). Every other route feature is in _derived.
REDUCED: dict[str, tuple[str, str, float]] = {
    "route_holds": ("all_x", "count", COUNT_SCALE),
    **{f"route_{role}": (f"{role}_y", "count", COUNT_SCALE) for role in ROLES},
    **{
        f"route_{who}_{axis}_{stat}": (f"{who}_{axis}", stat, 1.0)
        for who in ("all", "hand")
        for axis in "xy"
        for stat in ("min", "max", "mean", "std")
    },
    "route_move_max": ("move", "max", 1.0),
    "route_move_sum": ("move", "sum", 1.0),
    "route_nearest_mean": ("nearest", "mean", 1.0),
    "route_nearest_max": ("nearest", "max", 1.0),
    # a route of feet only is its own hands: each foot is then 0 from the nearest "hand"
    "route_foot_hand": ("foot_hand", "mean", 1.0),
    "route_move_first": ("move_first", "sum", 1.0),
    "route_move_last": ("move_last", "sum", 1.0),
    "route_move_std": ("move", "std", 1.0),
    "route_move_dy_max": ("move_dy", "max", 1.0),
    "route_move_dx_sum": ("move_dx", "sum", 1.0),
    "route_turns": ("turns", "count", COUNT_SCALE),
    "route_big_moves": ("big_moves", "count", COUNT_SCALE),
    "route_huge_moves": ("huge_moves", "count", COUNT_SCALE),
    "route_hand_nearest_mean": ("hand_nearest", "mean", 1.0),
    "route_hand_nearest_max": ("hand_nearest", "max", 1.0),
    "route_support": ("support", "mean", COUNT_SCALE),
    "route_support_min": ("support", "min", COUNT_SCALE),
    "route_y_gap_max": ("y_gap", "max", 1.0),
}

# The (values, mask) pairs RouteEncoder.read makes for REDUCED and _derived, in _reduce's order.
PAIRS = (
    ("all_x", "all_y", "hand_x", "hand_y")
    + tuple(f"{role}_y" for role in ROLES)
    + ("move", "move_dx", "move_dy", "nearest", "foot_hand", "move_first", "move_last", "turns", "big_moves")
    + ("huge_moves", "lateral", "hand_nearest", "support", "y_gap", "lowest_hand_y", "top_hand_y")
)
DERIVED = (  # the route features _derived computes
    "route_start_y",
    "route_finish_y",
    "route_height_gain",
    "route_move_mean",
    "route_move_second",
    "route_move_lateral",
    "route_start_span",
    "route_foot_top",
)


@dataclass
class Holds:
    """One batch of routes, holds in canonical order (bottom to top, then left to right, then placement
    id), with everything the features are read from. [B, H] unless said; masks are bool."""

    hold: Tensor  # a real, valid hold (the first slots of each route: the sort puts them first)
    xy_norm: Tensor  # [B, H, 2] float64, [-1, 1] across the layout's holes
    kinds: Tensor  # [B, H, len(ROLES)] bool: the hold's role, by name
    role: dict[str, Tensor]  # role name -> mask (kinds' columns)
    any_nonfoot: Tensor  # [B]
    step: Tensor  # hand holds with a hand hold below (the moves), in hand order
    delta: Tensor  # [B, H, 2] float64: xy minus the previous hand hold's, on `step` (0 elsewhere)
    move: Tensor  # float64: the move's length, on `step`
    distance: Tensor  # [B, H, H] float64 between every two holds; inf on the diagonal and off holds
    nearest: Tensor  # float64: each hold's distance to its nearest other hold (inf for a lone hold)
    nearest2: Tensor  # to its 2nd-nearest (a tie counts twice)
    pairs: dict[str, tuple[Tensor, Tensor]]  # what REDUCED reads: name -> (values [B, H] float64, mask)
    angle: Tensor  # [B] float64 degrees


def _reduce(pairs: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
    """[B, len(pairs), len(STATS)] float64: each pair's statistics over its mask (0 where the mask is
    empty; std is the population std about the mean, as numpy's), every pair in one pass."""
    values = torch.stack([v for v, _ in pairs.values()], dim=-1)  # [B, H, K]
    mask = torch.stack([m for _, m in pairs.values()], dim=-1)
    count = mask.to(torch.float64).sum(dim=1)
    n = count.clamp(min=1.0)
    total = torch.where(mask, values, 0.0).sum(dim=1)
    mean = total / n
    deviation = values - mean[:, None, :]
    std = (torch.where(mask, deviation * deviation, 0.0).sum(dim=1) / n).sqrt()
    empty = count == 0
    top = torch.where(empty, 0.0, torch.where(mask, values, -torch.inf).amax(dim=1))
    low = torch.where(empty, 0.0, torch.where(mask, values, torch.inf).amin(dim=1))
    return torch.stack([count, total, top, low, mean, std], dim=-1)


def _previous(mask: Tensor) -> Tensor:
    """[B, H] int64: per slot of `mask`, the index of the slot of `mask` before it (-1 for its first slot,
    and off the mask). A sort of the slots (the mask's first) and a gather: no [B, H, H] work."""
    size = mask.shape[-1]
    index = torch.arange(size, device=mask.device)
    order = torch.where(mask, index, index + size).argsort(dim=-1)
    rank = mask.to(torch.int64).cumsum(dim=-1)  # 1 on the mask's first slot
    return torch.where(mask & (rank >= 2), order.gather(-1, (rank - 2).clamp(min=0)), -1)


def _next(values: Tensor) -> Tensor:
    """Each slot's next one along the hold axis (the last slot's is the first: mask it). Not torch.roll, which
    exports as a Mod by the axis' size."""
    return torch.cat([values[:, 1:], values[:, :1]], dim=1)


def _second_largest(values: Tensor, mask: Tensor) -> Tensor:
    """sorted(values)[-2] over `mask` (a tie for the largest counts twice); 0 with fewer than two."""
    top = torch.where(mask, values, -torch.inf).amax(dim=-1, keepdim=True)
    ties = (mask & (values == top)).sum(dim=-1) >= 2
    below = torch.where(mask & (values < top), values, -torch.inf).amax(dim=-1)
    second = torch.where(ties, top[:, 0], below)
    return torch.where(mask.sum(dim=-1) >= 2, second, 0.0)


def _derived(h: Holds, reduced: Tensor, n_moves: Tensor) -> dict[str, Tensor]:
    """The route features (DERIVED) that are not one REDUCED statistic: [B] float64 each. `reduced` is
    _reduce's output flattened to [B, pairs * stats]."""

    def get(pair: str, stat: str) -> Tensor:
        return reduced[:, PAIRS.index(pair) * len(STATS) + STATS.index(stat)]

    lowest = get("lowest_hand_y", "sum")
    start_y = torch.where(get("start_y", "count") > 0, get("start_y", "mean"), lowest)
    finish_y = torch.where(get("finish_y", "count") > 0, get("finish_y", "mean"), get("top_hand_y", "sum"))
    starts = h.role["start"]
    start_pairs = starts[:, :, None] & starts[:, None, :] & torch.isfinite(h.distance)
    span = torch.where(start_pairs, h.distance, -torch.inf).flatten(1).amax(dim=1)
    feet = get("foot_y", "count") > 0
    return {
        "route_start_y": start_y,
        "route_finish_y": finish_y,
        "route_height_gain": finish_y - start_y,
        "route_move_mean": get("move", "sum") / n_moves,
        "route_move_second": _second_largest(h.move, h.step),
        "route_move_lateral": get("lateral", "count") / n_moves,
        "route_start_span": torch.where(start_pairs.flatten(1).any(dim=1), span, 0.0),
        "route_foot_top": torch.where(feet, get("foot_y", "max") - start_y, 0.0),
    }


def _hold_block(h: Holds, count: Tensor) -> Tensor:
    """[B, H, len(HOLD_FEATURES)] float32: the per-hold columns, 0 off hold slots."""

    def scaled(distance: Tensor, mask: Tensor) -> Tensor:
        # in float32 board units, then scaled: the values every model so far was trained on
        return torch.where(mask, (distance * DISTANCE_SCALE).to(torch.float32) / DISTANCE_SCALE, 0.0)

    hold = h.hold[..., None]
    moved = (h.step & h.any_nonfoot[:, None])[..., None]  # a route of feet only has no move columns
    near = [scaled(h.nearest, h.hold & (count[:, None] >= 2)), scaled(h.nearest2, h.hold & (count[:, None] >= 3))]
    angle = torch.where(hold, (h.angle / ANGLE_SCALE).to(torch.float32)[:, None, None], 0.0)
    parts = [
        h.xy_norm.to(torch.float32),
        hold.to(torch.float32),
        h.kinds.to(torch.float32),
        angle,
        torch.stack(near, dim=-1),
        torch.where(moved, h.delta, 0.0).to(torch.float32),
    ]
    return torch.cat(parts, dim=-1)


class RouteEncoder(nn.Module):
    """Aurora ids -> (token_ids, coords, padding_mask, problems): what GradeModel reads, for one tokenizer.

    Tables (non-persistent buffers, rebuilt from the tokenizer, so checkpoints never hold them):
    per (layout, placement) whether it is on the layout and its hole's x and y; per (layout, role id)
    its role slot (the layout's role names, in order) and per (layout, slot) which role it is; per
    (layout, placement, slot) its token id; per layout its board token and x/y extents; per angle its
    token, and per (layout, angle) whether the layout has it.
    """

    cells: Tensor
    role_slots: Tensor
    role_kinds: Tensor
    tokens: Tensor
    extents: Tensor
    angled: Tensor
    angle_tokens: Tensor
    board_tokens: Tensor
    reduced_index: Tensor
    reduced_divisor: Tensor
    route_order: Tensor
    feature_index: Tensor

    def __init__(self, tokenizer: Tokenizer) -> None:
        super().__init__()
        check_features(tokenizer.features)
        self.features = tokenizer.features
        self.max_holds = tokenizer.max_holds
        layouts = list(tokenizer.layouts.values())  # sidecar order: model input `layout` indexes it
        self.n_layouts = len(layouts)
        self.n_placements = max(max(layout.placements) for layout in layouts) + 1
        self.n_roles = max(max(layout.roles) for layout in layouts) + 1
        self.n_slots = max(len(layout.role_names) for layout in layouts)
        self.n_angles = max(max(layout.angles) for layout in layouts) + 1
        cells = torch.zeros(self.n_layouts, self.n_placements, 3, dtype=torch.int32)  # on the layout, x, y
        slots = torch.full((self.n_layouts, self.n_roles), -1, dtype=torch.int64)
        kinds = torch.zeros(self.n_layouts, self.n_slots, len(ROLES), dtype=torch.bool)
        tokens = torch.full((self.n_layouts, self.n_placements, self.n_slots), UNK_ID, dtype=torch.int32)
        extents = torch.zeros(self.n_layouts, 2, 2, dtype=torch.float64)  # (low, high) x (x, y)
        angled = torch.zeros(self.n_layouts, self.n_angles, dtype=torch.bool)
        for li, layout in enumerate(layouts):
            for pid, (x, y) in layout.placements.items():
                cells[li, pid] = torch.tensor([1, x, y], dtype=torch.int32)
            for rid, name in layout.roles.items():
                slots[li, rid] = layout.role_names.index(name)
            for slot, name in enumerate(layout.role_names):
                if name in ROLES:
                    kinds[li, slot, ROLES.index(name)] = True
            for (pid, name), token in tokenizer.hold_ids[layout.key].items():
                tokens[li, pid, layout.role_names.index(name)] = token
            xs = [x for x, _ in layout.placements.values()]
            ys = [y for _, y in layout.placements.values()]
            extents[li] = torch.tensor([[min(xs), min(ys)], [max(xs), max(ys)]], dtype=torch.float64)
            angled[li, list(layout.angles)] = True
        angle_tokens = torch.full((self.n_angles,), UNK_ID, dtype=torch.int64)
        for angle, token in tokenizer.angle_ids.items():
            if 0 <= angle < self.n_angles:
                angle_tokens[angle] = token
        board_tokens = torch.tensor([tokenizer.board_ids[layout.key] for layout in layouts], dtype=torch.int64)
        # The canonical order sorts by one int64 key: (y, x, placement id) as digits of mixed radix.
        all_x = [x for layout in layouts for x, _ in layout.placements.values()]
        all_y = [y for layout in layouts for _, y in layout.placements.values()]
        self.x_low, self.y_low = min(all_x), min(all_y)
        self.x_span = max(all_x) - self.x_low + 1
        # Where REDUCED's features sit in _reduce's output, then every route feature's place in ALL_ROUTE_FEATURES.
        pairs = {name: i for i, name in enumerate(PAIRS)}
        stats = {name: i for i, name in enumerate(STATS)}
        reduced_index = [pairs[pair] * len(STATS) + stats[stat] for pair, stat, _ in REDUCED.values()]
        computed = list(REDUCED) + list(DERIVED)
        buffers = {
            "cells": cells.flatten(0, 1),
            "role_slots": slots.flatten(),
            "role_kinds": kinds.flatten(0, 1),
            "tokens": tokens.flatten(),
            "extents": extents,
            "angled": angled.flatten(),
            "angle_tokens": angle_tokens,
            "board_tokens": board_tokens,
            "reduced_index": torch.tensor(reduced_index, dtype=torch.int64),
            "reduced_divisor": torch.tensor([d for _, _, d in REDUCED.values()], dtype=torch.float64),
            "route_order": torch.tensor([computed.index(name) for name in ALL_ROUTE_FEATURES], dtype=torch.int64),
            "feature_index": torch.tensor([FEATURES.index(name) for name in self.features], dtype=torch.int64),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    def forward(
        self, layout: Tensor, angle: Tensor, placement_id: Tensor, role_id: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """layout, angle [B]; placement_id, role_id [B, H] (0 pads) -> token_ids [B, 3+H] int64,
        coords [B, 3+H, features] float32, padding_mask [B, 3+H] bool (True = padding), problems [B] int64."""
        holds, tokens, problems = self.read(layout, angle, placement_id, role_id)
        prefix = torch.stack([torch.full_like(layout, CLS_ID), tokens["board"], tokens["angle"]], dim=1)
        token_ids = torch.cat([prefix, tokens["holds"]], dim=1)
        padding = torch.cat([torch.zeros_like(prefix, dtype=torch.bool), ~holds.hold], dim=1)
        count = holds.hold.to(torch.float64).sum(dim=1)
        hold_rows = _hold_block(holds, count)  # [B, H, len(HOLD_FEATURES)]
        route = self.route_values(holds).to(torch.float32)  # [B, len(ALL_ROUTE_FEATURES)]
        on_holds = torch.cat([hold_rows, torch.zeros_like(hold_rows[..., :1]).expand(-1, -1, route.shape[1])], dim=-1)
        angle_value = (holds.angle / ANGLE_SCALE).to(torch.float32)[:, None]
        at_angle = HOLD_FEATURES.index("angle")
        before, after = (
            torch.zeros_like(route[:, :at_angle]),
            torch.zeros_like(route[:, : len(HOLD_FEATURES) - at_angle - 1]),
        )
        angle_part = torch.cat([before, angle_value, after], dim=1)  # the angle is on every token
        cls_row = torch.cat([angle_part, route], dim=1)
        prefix_row = torch.cat([angle_part, torch.zeros_like(route)], dim=1)
        channels = torch.cat([torch.stack([cls_row, prefix_row, prefix_row], dim=1), on_holds], dim=1)
        coords = channels if self.features == FEATURES else channels.index_select(-1, self.feature_index)
        return token_ids, coords, padding, problems

    def route_values(self, holds: Holds) -> Tensor:
        """[B, len(ALL_ROUTE_FEATURES)] float64: the <CLS> features, in that order."""
        reduced = _reduce(holds.pairs)  # [B, pairs, stats]
        flat = reduced.flatten(1)
        direct = flat.index_select(1, self.reduced_index) / self.reduced_divisor
        n_moves = holds.step.to(torch.float64).sum(dim=1).clamp(min=1.0)  # len(moves), a lone [0.0] if none
        derived = _derived(holds, flat, n_moves)
        values = torch.cat([direct, torch.stack([derived[name] for name in DERIVED], dim=1)], dim=1)
        return values.index_select(1, self.route_order)

    def route_features(self, layout: Tensor, angle: Tensor, placement_id: Tensor, role_id: Tensor) -> Tensor:
        """[B, len(ALL_ROUTE_FEATURES)] float64: the <CLS> features whatever the model uses (bench/gbm.py's inputs)."""
        holds, _, _ = self.read(layout, angle, placement_id, role_id)
        return self.route_values(holds)

    def read(
        self, layout: Tensor, angle: Tensor, placement_id: Tensor, role_id: Tensor
    ) -> tuple[Holds, dict[str, Tensor], Tensor]:
        """Look every id up, check it, and put the valid holds in canonical order."""
        bits = model_io.PROBLEM_BITS
        known_layout = (layout >= 0) & (layout < self.n_layouts)
        li = layout.clamp(0, self.n_layouts - 1)[:, None]
        present = placement_id != 0
        in_range = (placement_id > 0) & (placement_id < self.n_placements)
        flat = li * self.n_placements + placement_id.clamp(0, self.n_placements - 1)
        cell = self.cells[flat].to(torch.int64)  # [B, H, 3]: on the layout, x, y
        placed = (cell[..., 0] == 1) & in_range & known_layout[:, None]
        slot = self.role_slots[li * self.n_roles + role_id.clamp(0, self.n_roles - 1)]
        has_role = (slot >= 0) & (role_id > 0) & (role_id < self.n_roles)
        hold = present & placed & has_role
        slot = slot.clamp(min=0)
        token = self.tokens[flat * self.n_slots + slot].to(torch.int64)
        angle_c = angle.clamp(0, self.n_angles - 1)
        angled = self.angled[li[:, 0] * self.n_angles + angle_c] & (angle >= 0) & (angle < self.n_angles)
        index = torch.arange(placement_id.shape[1], device=layout.device)
        key = (
            (cell[..., 2] - self.y_low) * self.x_span + (cell[..., 1] - self.x_low)
        ) * self.n_placements + placement_id
        key = torch.where(hold, key, torch.iinfo(torch.int64).max)
        order = key.argsort(dim=1)
        packed = torch.stack([hold.to(torch.int64), cell[..., 1], cell[..., 2], token, slot, key], dim=-1)
        packed = packed.gather(1, order[..., None].expand_as(packed))
        hold = packed[..., 0] == 1
        not_last = index < placement_id.shape[1] - 1
        has_next = _next(hold) & hold & not_last
        repeated = (has_next & (_next(packed[..., 5]) == packed[..., 5])).any(dim=1)  # sorted: a repeat is adjacent
        n_present = present.sum(dim=1)
        flags = [
            (~known_layout, bits["unknown_layout"]),
            ((present & ~placed).any(dim=1) & known_layout, bits["placement"]),  # (of a known layout)
            ((present & placed & ~has_role).any(dim=1), bits["role"]),
            (~angled & known_layout, bits["angle"]),
            (repeated, bits["repeated"]),
            (n_present == 0, bits["no_holds"]),
            (n_present > self.max_holds, bits["too_many_holds"]),
        ]
        problems = torch.stack([flag.to(torch.int64) * bit for flag, bit in flags], dim=1).sum(dim=1)  # distinct bits

        raw = packed[..., 1:3].to(torch.float64)  # [B, H, 2] board units
        token = torch.where(hold, packed[..., 3], PAD_ID)
        kinds = self.role_kinds[li * self.n_slots + packed[..., 4]] & hold[..., None]
        on = hold[..., None]
        xy = torch.where(on, raw / DISTANCE_SCALE, 0.0)
        extents = self.extents[li[:, 0]]  # [B, 2, 2]: (low, high) x (x, y)
        low, span = extents[:, None, 0], (extents[:, 1] - extents[:, 0])[:, None]
        scaled = 2.0 * (raw - low) / span.clamp(min=1.0) - 1.0
        xy_norm = torch.where(on & (span > 0), scaled, 0.0)  # a layout whose holes share an x (or y) has 0
        role = {name: kinds[..., i] for i, name in enumerate(ROLES)}
        nonfoot = hold & ~role["foot"]
        any_nonfoot = nonfoot.any(dim=1)
        hand = nonfoot | (hold & ~any_nonfoot[:, None])  # (logic, not where: onnxruntime has no bool Where)

        steps = xy[:, :, None, :] - xy[:, None, :, :]  # [B, i, j, 2]
        both = hold[:, :, None] & hold[:, None, :] & (index[:, None] != index[None, :])
        distance = torch.where(both, (steps * steps).sum(dim=-1).sqrt(), torch.inf)
        beyond = torch.full_like(distance[..., :1], torch.inf).expand(-1, -1, 2)  # a lone hold's "neighbours"
        two = torch.cat([distance, beyond], dim=-1).topk(2, dim=-1, largest=False).values  # a tie counts twice
        nearest, nearest2 = two[..., 0], two[..., 1]
        nearest_hand = torch.where(hand[:, None, :], distance, torch.inf).amin(dim=-1)

        prev_hand = _previous(hand)
        step = hand & (prev_hand >= 0)
        below = xy.gather(1, prev_hand.clamp(min=0)[..., None].expand_as(xy))
        delta = torch.where(step[..., None], xy - below, 0.0)
        move = torch.where(step, (delta * delta).sum(dim=-1).sqrt(), 0.0)
        rank = hand.to(torch.int64).cumsum(dim=1)  # 1 for the lowest hand hold
        hands = rank[:, -1:]
        dx, dy = delta[..., 0], delta[..., 1]
        sideways = step & (dx.abs() > SIDEWAYS)
        previous_side = _previous(sideways)
        right = dx > 0
        turn = sideways & (previous_side >= 0) & (right != right.gather(1, previous_side.clamp(min=0)))
        low_support, high_support = SUPPORT_BELOW
        drop = xy[:, :, None, 1] - xy[:, None, :, 1]  # [B, hold, other]
        side = (xy[:, :, None, 0] - xy[:, None, :, 0]).abs()
        support = ((drop >= low_support) & (drop <= high_support) & (side <= high_support) & hold[:, None, :]).sum(-1)
        y = xy[..., 1]
        zero = torch.zeros_like(y)
        count = hold.sum(dim=1, keepdim=True)
        pairs = {
            "all_x": (xy[..., 0], hold),
            "all_y": (y, hold),
            "hand_x": (xy[..., 0], hand),
            "hand_y": (y, hand),
            **{f"{name}_y": (y, role[name]) for name in ROLES},
            "move": (move, step),
            "move_dx": (dx.abs(), step),
            "move_dy": (dy, step),
            "nearest": (torch.where(count >= 2, nearest, 0.0), hold),  # [0.0] for a lone hold
            "foot_hand": (nearest_hand, role["foot"] & any_nonfoot[:, None]),
            "move_first": (move, hand & (rank == 2)),
            "move_last": (move, step & (rank == hands)),
            "turns": (zero, turn),
            "big_moves": (zero, step & (move > BIG_MOVE)),
            "huge_moves": (zero, step & (move > HUGE_MOVE)),
            "lateral": (zero, step & (dx.abs() > dy.abs())),
            "hand_nearest": (nearest_hand, hand & (hands > 1)),
            "support": (support.to(torch.float64), step),
            "y_gap": (_next(y) - y, has_next),
            "lowest_hand_y": (y, hand & (rank == 1)),
            "top_hand_y": (y, hand & (rank == hands)),
        }
        holds = Holds(
            hold=hold,
            xy_norm=xy_norm,
            kinds=kinds,
            role=role,
            any_nonfoot=any_nonfoot,
            step=step,
            delta=delta,
            move=move,
            distance=distance,
            nearest=nearest,
            nearest2=nearest2,
            pairs={name: pairs[name] for name in PAIRS},
            angle=angle.to(torch.float64),
        )
        board = self.board_tokens[li[:, 0]]
        return holds, {"board": board, "angle": self.angle_tokens[angle_c], "holds": token}, problems
