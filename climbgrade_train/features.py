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
numbers a setter reads off a route at a glance, then at a second glance). Each is one entry of
`_hold_columns` / `_route_columns` below: adding a feature is adding an entry there and its name here.
Hand holds are every hold but feet (every hold when all are feet). Distances are in board units /
DISTANCE_SCALE, counts / COUNT_SCALE.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
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
FEATURE_GROUPS = {"route": ROUTE_FEATURES, "shape": SHAPE_FEATURES}  # names that stand for several on a command line


def expand_features(names: Iterable[str]) -> tuple[str, ...]:
    """Feature names with each FEATURE_GROUPS name replaced by its features ("route" -> route_*)."""
    return tuple(f for name in names for f in FEATURE_GROUPS.get(name, (name,)))


def compact_features(names: Iterable[str]) -> tuple[str, ...]:
    """The inverse of expand_features: a group whose features all appear, in order, is written as its name."""
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


@dataclass
class Holds:
    """One batch of routes, holds in canonical order (bottom to top, then left to right, then placement
    id), with everything the features are read from. [B, H] unless said; masks are bool."""

    hold: Tensor  # a real, valid hold (the first `count` slots of each route)
    count: Tensor  # [B] float64: holds per route
    x: Tensor  # float64, board units / DISTANCE_SCALE (0 where not a hold)
    y: Tensor
    x_norm: Tensor  # float64, [-1, 1] across the layout's holes
    y_norm: Tensor
    role: dict[str, Tensor]  # role name -> mask
    hand: Tensor  # the hand holds: non-feet, or every hold when all are feet
    any_nonfoot: Tensor  # [B]
    distance: Tensor  # [B, H, H] float64 between every two holds; inf on the diagonal and off holds
    prev_hand: Tensor  # int64: index of the hand hold below each hand hold (-1: none)
    step: Tensor  # hand holds with a hand hold below (the moves)
    dx: Tensor  # float64: x minus the previous hand hold's x, on `step` (0 elsewhere)
    dy: Tensor
    move: Tensor  # float64: the move's length, on `step`
    n_moves: Tensor  # [B] float64: len(moves), counting a lone [0.0] when there is no move
    nearest: Tensor  # float64: each hold's distance to its nearest other hold (inf for a lone hold)
    nearest2: Tensor  # to its 2nd-nearest (a tie counts twice)
    nearest_hand: Tensor  # to the nearest other hand hold (inf if none)
    start_y: Tensor  # [B] mean height of the starts (the lowest hand hold's when none is marked start)
    angle: Tensor  # [B] float64 degrees


def _masked(values: Tensor, mask: Tensor, fill: float) -> Tensor:
    return torch.where(mask, values, torch.full_like(values, fill))


def _sum(values: Tensor, mask: Tensor) -> Tensor:
    return _masked(values, mask, 0.0).sum(dim=-1)


def _max(values: Tensor, mask: Tensor, empty: float = 0.0) -> Tensor:
    """max over `mask` (last axis), `empty` where the mask is empty."""
    found = _masked(values, mask, -torch.inf).amax(dim=-1)
    return torch.where(mask.any(dim=-1), found, torch.full_like(found, empty))


def _min(values: Tensor, mask: Tensor, empty: float = 0.0) -> Tensor:
    found = _masked(values, mask, torch.inf).amin(dim=-1)
    return torch.where(mask.any(dim=-1), found, torch.full_like(found, empty))


def _count(mask: Tensor) -> Tensor:
    return mask.to(torch.float64).sum(dim=-1)


def _mean(values: Tensor, mask: Tensor, empty: float = 0.0) -> Tensor:
    n = _count(mask)
    mean = _sum(values, mask) / n.clamp(min=1.0)
    return torch.where(n > 0, mean, torch.full_like(mean, empty))


def _std(values: Tensor, mask: Tensor) -> Tensor:
    """Population std over `mask` (0 where empty), about the mean as numpy works it out."""
    n = _count(mask).clamp(min=1.0)
    centre = _sum(values, mask) / n
    deviation = values - centre[..., None]
    return (_sum(deviation * deviation, mask) / n).sqrt()


def _second_largest(values: Tensor, mask: Tensor) -> Tensor:
    """sorted(values)[-2] over `mask` (a tie for the largest counts twice); 0 with fewer than two."""
    top = _max(values, mask, -torch.inf)
    ties = (mask & (values == top[..., None])).sum(dim=-1) >= 2
    below = _max(values, mask & (values < top[..., None]), 0.0)
    second = torch.where(ties, top, below)
    return torch.where(mask.sum(dim=-1) >= 2, second, torch.zeros_like(second))


def _previous(mask: Tensor) -> Tensor:
    """[B, H] int64: per slot, the index of the nearest earlier slot in `mask` (-1 if none)."""
    size = mask.shape[-1]
    index = torch.arange(size, device=mask.device)
    earlier = (index[None, :] < index[:, None])[None] & mask[:, None, :]  # [B, i, j]: j before i, in mask
    return torch.where(earlier, index[None, None, :], torch.full_like(earlier, -1, dtype=torch.int64)).amax(dim=-1)


def _at(values: Tensor, index: Tensor) -> Tensor:
    """values[b, index[b, i]] (index -1 reads slot 0; callers mask those)."""
    return values.gather(-1, index.clamp(min=0))


# Per-hold columns (HOLD_FEATURES but angle): name -> [B, H] float32, 0 off hold slots.
def _hold_columns(h: Holds) -> dict[str, Callable[[], Tensor]]:
    def scaled(distance: Tensor, mask: Tensor) -> Tensor:
        # in float32 board units, then scaled: the values every model so far was trained on
        found = (distance * DISTANCE_SCALE).to(torch.float32) / DISTANCE_SCALE
        return torch.where(mask, found, torch.zeros_like(found))

    moved = h.step & h.any_nonfoot[:, None]  # a route of feet only has no move columns
    return {
        "x": lambda: h.x_norm.to(torch.float32),
        "y": lambda: h.y_norm.to(torch.float32),
        "is_hold": lambda: h.hold.to(torch.float32),
        **{f"role_{role}": functools.partial(h.role[role].to, torch.float32) for role in ROLES},
        "nearest": lambda: scaled(h.nearest, h.hold & (h.count[:, None] >= 2)),
        "nearest2": lambda: scaled(h.nearest2, h.hold & (h.count[:, None] >= 3)),
        "move_dx": lambda: _masked(h.dx, moved, 0.0).to(torch.float32),
        "move_dy": lambda: _masked(h.dy, moved, 0.0).to(torch.float32),
    }


# <CLS> columns: name -> [B] float64.
def _route_columns(h: Holds) -> dict[str, Callable[[], Tensor]]:
    hold, hand = h.hold, h.hand
    single = h.count < 2
    finish = h.role["finish"]
    finish_y = torch.where(finish.any(dim=-1), _mean(h.y, finish), _sum(h.y, _last(hand)))  # else the top hand hold
    feet = h.role["foot"]
    steps = h.step
    move_sum = _sum(h.move, steps)
    lone_nearest = torch.where(single[:, None], torch.zeros_like(h.nearest), h.nearest)
    hand_nearest = h.hand & (_count(h.hand) > 1)[:, None]
    sideways = steps & (h.dx.abs() > SIDEWAYS)
    previous_side = _previous(sideways)
    right = h.dx > 0
    turns = sideways & (previous_side >= 0) & (right != _at(right.to(torch.int64), previous_side).bool())
    support = _support(h)
    starts = h.role["start"]
    start_pairs = starts[:, :, None] & starts[:, None, :] & torch.isfinite(h.distance)
    # each hold's rise to the next one up (held to the same width: a one-hold batch has no pairs)
    not_last = torch.arange(hold.shape[1], device=hold.device) < hold.shape[1] - 1
    next_y, has_next = torch.roll(h.y, -1, dims=1), torch.roll(hold, -1, dims=1) & hold & not_last

    def stats(values: Tensor, mask: Tensor) -> dict[str, Callable[[], Tensor]]:
        return {
            "min": lambda: _min(values, mask),
            "max": lambda: _max(values, mask),
            "mean": lambda: _mean(values, mask),
            "std": lambda: _std(values, mask),
        }

    columns: dict[str, Callable[[], Tensor]] = {
        "route_holds": functools.partial(_share, h.hold),
        **{f"route_{role}": functools.partial(_share, h.role[role]) for role in ROLES},
    }
    for who, mask in (("all", hold), ("hand", hand)):
        for axis, values in (("x", h.x), ("y", h.y)):
            for stat, compute in stats(values, mask).items():
                columns[f"route_{who}_{axis}_{stat}"] = compute
    columns |= {
        "route_start_y": lambda: h.start_y,
        "route_finish_y": lambda: finish_y,
        "route_height_gain": lambda: finish_y - h.start_y,
        "route_move_mean": lambda: move_sum / h.n_moves,
        "route_move_max": lambda: _max(h.move, steps),
        "route_move_sum": lambda: move_sum,
        "route_nearest_mean": lambda: _mean(lone_nearest, hold),
        "route_nearest_max": lambda: _max(lone_nearest, hold),
        # a route of feet only is its own hands: each foot is then 0 from the nearest "hand"
        "route_foot_hand": lambda: _mean(h.nearest_hand, feet & h.any_nonfoot[:, None]),
        "route_move_first": lambda: _sum(h.move, steps & (_previous(h.step) < 0)),
        "route_move_last": lambda: _sum(h.move, steps & _last(h.step)),
        "route_move_second": lambda: _second_largest(h.move, steps),
        "route_move_std": lambda: _std(h.move, steps),
        "route_move_dy_max": lambda: _max(h.dy, steps),
        "route_move_dx_sum": lambda: _sum(h.dx.abs(), steps),
        "route_move_lateral": lambda: _count(steps & (h.dx.abs() > h.dy.abs())) / h.n_moves,
        "route_turns": lambda: _count(turns) / COUNT_SCALE,
        "route_big_moves": lambda: _count(steps & (h.move > BIG_MOVE)) / COUNT_SCALE,
        "route_huge_moves": lambda: _count(steps & (h.move > HUGE_MOVE)) / COUNT_SCALE,
        "route_start_span": lambda: _max(h.distance.flatten(1), start_pairs.flatten(1)),
        "route_hand_nearest_mean": lambda: _mean(h.nearest_hand, hand_nearest),
        "route_hand_nearest_max": lambda: _max(h.nearest_hand, hand_nearest),
        "route_support": lambda: _mean(support, h.step) / COUNT_SCALE,
        "route_support_min": lambda: _min(support, h.step) / COUNT_SCALE,
        "route_y_gap_max": lambda: _max(next_y - h.y, has_next),
        "route_foot_top": lambda: torch.where(
            feet.any(dim=-1), _max(h.y, feet) - h.start_y, torch.zeros_like(h.start_y)
        ),
    }
    return columns


def _share(mask: Tensor) -> Tensor:
    """How many of a route's holds are in `mask`, / COUNT_SCALE."""
    return _count(mask) / COUNT_SCALE


def _last(mask: Tensor) -> Tensor:
    """The last slot of each row's `mask`."""
    size = mask.shape[-1]
    index = torch.arange(size, device=mask.device)
    last = _masked(index.expand_as(mask), mask, -1).amax(dim=-1)
    return mask & (index[None, :] == last[:, None])


def _support(h: Holds) -> Tensor:
    """[B, H] float64: per hand hold, how many holds sit SUPPORT_BELOW below it, within SUPPORT_BELOW[1] to either side."""
    low, high = SUPPORT_BELOW
    drop = h.y[:, :, None] - h.y[:, None, :]  # [B, hand, other]
    side = (h.x[:, :, None] - h.x[:, None, :]).abs()
    below = (drop >= low) & (drop <= high) & (side <= high) & h.hold[:, None, :]
    return below.to(torch.float64).sum(dim=-1)


class RouteEncoder(nn.Module):
    """Aurora ids -> (token_ids, coords, padding_mask, problems): what GradeModel reads, for one tokenizer.

    Tables (non-persistent buffers, rebuilt from the tokenizer, so checkpoints never hold them):
    per (layout, placement) whether it is on the layout and its hole's x and y; per (layout, role id)
    its role slot (the layout's role names, in order); per (layout, placement, slot) its token id;
    per layout its board token and x/y extents; per angle its token, and per (layout, angle) whether
    the layout has it.
    """

    placed: Tensor
    hole_x: Tensor
    hole_y: Tensor
    role_slots: Tensor
    role_kinds: Tensor
    tokens: Tensor
    extents: Tensor
    angled: Tensor
    angle_tokens: Tensor
    board_tokens: Tensor

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
        placed = torch.zeros(self.n_layouts, self.n_placements, dtype=torch.bool)
        hole = torch.zeros(2, self.n_layouts, self.n_placements, dtype=torch.int32)
        slots = torch.full((self.n_layouts, self.n_roles), -1, dtype=torch.int64)
        kinds = torch.zeros(len(ROLES), self.n_layouts, self.n_slots, dtype=torch.bool)
        tokens = torch.full((self.n_layouts, self.n_placements, self.n_slots), UNK_ID, dtype=torch.int32)
        extents = torch.zeros(4, self.n_layouts, dtype=torch.float64)
        angled = torch.zeros(self.n_layouts, self.n_angles, dtype=torch.bool)
        for li, layout in enumerate(layouts):
            for pid, (x, y) in layout.placements.items():
                placed[li, pid] = True
                hole[0, li, pid], hole[1, li, pid] = x, y
            for rid, name in layout.roles.items():
                slots[li, rid] = layout.role_names.index(name)
            for slot, name in enumerate(layout.role_names):
                if name in ROLES:
                    kinds[ROLES.index(name), li, slot] = True
            known = tokenizer.hold_ids[layout.key]
            for (pid, name), token in known.items():
                tokens[li, pid, layout.role_names.index(name)] = token
            xs = [x for x, _ in layout.placements.values()]
            ys = [y for _, y in layout.placements.values()]
            extents[:, li] = torch.tensor([min(xs), max(xs), min(ys), max(ys)], dtype=torch.float64)
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
        buffers = {
            "placed": placed.flatten(),
            "hole_x": hole[0].flatten(),
            "hole_y": hole[1].flatten(),
            "role_slots": slots.flatten(),
            "role_kinds": kinds.flatten(1),
            "tokens": tokens.flatten(),
            "extents": extents,
            "angled": angled.flatten(),
            "angle_tokens": angle_tokens,
            "board_tokens": board_tokens,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    def forward(
        self, layout: Tensor, angle: Tensor, placement_id: Tensor, role_id: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """layout, angle [B]; placement_id, role_id [B, H] (0 pads) -> token_ids [B, 3+H] int64,
        coords [B, 3+H, features] float32, padding_mask [B, 3+H] bool (True = padding), problems [B] int64."""
        holds, tokens, problems = self.read(layout, angle, placement_id, role_id)
        prefix = torch.stack(
            [torch.full_like(layout, CLS_ID), self.board_tokens[tokens["layout"]], self.angle_tokens[tokens["angle"]]],
            dim=1,
        )
        token_ids = torch.cat([prefix, tokens["holds"]], dim=1)
        padding = torch.cat([torch.zeros_like(prefix, dtype=torch.bool), ~holds.hold], dim=1)
        per_hold, route = _hold_columns(holds), _route_columns(holds)
        angle_value = (holds.angle / ANGLE_SCALE).to(torch.float32)
        none_per_hold = torch.zeros_like(holds.x, dtype=torch.float32)
        none_per_route = torch.zeros_like(angle_value)
        on_holds, on_cls, on_prefix = [], [], []  # per feature: its column on hold slots, <CLS>, <BOARD>/<ANGLE>
        for name in self.features:
            if name == "angle":
                on_holds.append(torch.where(holds.hold, angle_value[:, None], none_per_hold))
                on_cls.append(angle_value)
                on_prefix.append(angle_value)
            elif name in per_hold:
                on_holds.append(per_hold[name]())
                on_cls.append(none_per_route)
                on_prefix.append(none_per_route)
            else:
                on_holds.append(none_per_hold)
                on_cls.append(route[name]().to(torch.float32))
                on_prefix.append(none_per_route)
        cls_row, other_row = torch.stack(on_cls, dim=-1), torch.stack(on_prefix, dim=-1)
        coords = torch.cat([torch.stack([cls_row, other_row, other_row], dim=1), torch.stack(on_holds, dim=-1)], dim=1)
        return token_ids, coords, padding, problems

    def route_features(self, layout: Tensor, angle: Tensor, placement_id: Tensor, role_id: Tensor) -> Tensor:
        """[B, len(ALL_ROUTE_FEATURES)] float64: the <CLS> features whatever the model uses (bench/gbm.py's inputs)."""
        holds, _, _ = self.read(layout, angle, placement_id, role_id)
        route = _route_columns(holds)
        return torch.stack([route[name]() for name in ALL_ROUTE_FEATURES], dim=1)

    def read(
        self, layout: Tensor, angle: Tensor, placement_id: Tensor, role_id: Tensor
    ) -> tuple[Holds, dict[str, Tensor], Tensor]:
        """Look every id up, check it, and put the valid holds in canonical order."""
        bits = model_io.PROBLEM_BITS
        known_layout = (layout >= 0) & (layout < self.n_layouts)
        li = layout.clamp(0, self.n_layouts - 1)
        present = placement_id != 0
        in_range = (placement_id > 0) & (placement_id < self.n_placements)
        flat = li[:, None] * self.n_placements + placement_id.clamp(0, self.n_placements - 1)
        placed = self.placed[flat] & in_range & known_layout[:, None]
        role_in_range = (role_id > 0) & (role_id < self.n_roles)
        slot = self.role_slots[li[:, None] * self.n_roles + role_id.clamp(0, self.n_roles - 1)]
        has_role = (slot >= 0) & role_in_range
        hold = present & placed & has_role
        angle_in_range = (angle >= 0) & (angle < self.n_angles)
        angle_c = angle.clamp(0, self.n_angles - 1)
        angled = self.angled[li * self.n_angles + angle_c] & angle_in_range
        same = (placement_id[:, :, None] == placement_id[:, None, :]) & hold[:, :, None] & hold[:, None, :]
        size = placement_id.shape[1]
        index = torch.arange(size, device=layout.device)
        repeated = (same & (index[None, :, None] < index[None, None, :])).flatten(1).any(dim=1)
        n_present = present.sum(dim=1)
        flags = [
            (~known_layout, bits["unknown_layout"]),
            ((present & ~placed).any(dim=1), bits["placement"]),
            ((present & placed & ~has_role).any(dim=1), bits["role"]),
            (~angled & known_layout, bits["angle"]),
            (repeated, bits["repeated"]),
            (n_present == 0, bits["no_holds"]),
            (n_present > self.max_holds, bits["too_many_holds"]),
        ]
        problems = torch.zeros_like(layout)
        for flag, bit in flags:
            problems = problems + flag.to(torch.int64) * bit  # distinct bits: adding is or-ing

        x_raw = self.hole_x[flat].to(torch.int64)
        y_raw = self.hole_y[flat].to(torch.int64)
        key = ((y_raw - self.y_low) * self.x_span + (x_raw - self.x_low)) * self.n_placements + placement_id
        key = torch.where(hold, key, torch.full_like(key, torch.iinfo(torch.int64).max))
        order = key.argsort(dim=1)
        hold = hold.gather(1, order)
        x_raw, y_raw = x_raw.gather(1, order).to(torch.float64), y_raw.gather(1, order).to(torch.float64)
        slot = slot.gather(1, order).clamp(min=0)
        flat = flat.gather(1, order)
        token = self.tokens[flat * self.n_slots + slot].to(torch.int64)
        token = torch.where(hold, token, torch.full_like(token, PAD_ID))

        zero = torch.zeros_like(x_raw)
        x = torch.where(hold, x_raw / DISTANCE_SCALE, zero)
        y = torch.where(hold, y_raw / DISTANCE_SCALE, zero)
        extents = self.extents[:, li]  # [4, B]: x low, x high, y low, y high
        x_norm = torch.where(hold, _normalise(x_raw, extents[0], extents[1]), zero)
        y_norm = torch.where(hold, _normalise(y_raw, extents[2], extents[3]), zero)
        kind_index = li[:, None] * self.n_slots + slot
        role = {name: self.role_kinds[i][kind_index] & hold for i, name in enumerate(ROLES)}
        count = _count(hold)
        nonfoot = hold & ~role["foot"]
        any_nonfoot = nonfoot.any(dim=1)
        hand = nonfoot | (hold & ~any_nonfoot[:, None])  # (logic, not where: onnxruntime has no bool Where)

        dx_all = x[:, :, None] - x[:, None, :]
        dy_all = y[:, :, None] - y[:, None, :]
        both = hold[:, :, None] & hold[:, None, :] & (index[:, None] != index[None, :])[None]
        distance = torch.where(both, (dx_all * dx_all + dy_all * dy_all).sqrt(), torch.full_like(dx_all, torch.inf))
        nearest = distance.amin(dim=-1)
        ties = (distance == nearest[..., None]).sum(dim=-1) >= 2
        rest = torch.where(distance == nearest[..., None], torch.full_like(distance, torch.inf), distance).amin(dim=-1)
        nearest2 = torch.where(ties, nearest, rest)
        nearest_hand = torch.where(hand[:, None, :], distance, torch.full_like(distance, torch.inf)).amin(dim=-1)

        prev_hand = _previous(hand)
        step = hand & (prev_hand >= 0)
        dx = torch.where(step, x - _at(x, prev_hand), zero)
        dy = torch.where(step, y - _at(y, prev_hand), zero)
        move = torch.where(step, (dx * dx + dy * dy).sqrt(), zero)
        n_moves = _count(step).clamp(min=1.0)
        starts = role["start"]
        lowest_hand = hand & (prev_hand < 0)
        start_y = torch.where(starts.any(dim=1), _mean(y, starts), _sum(y, lowest_hand))
        holds = Holds(
            hold=hold,
            count=count,
            x=x,
            y=y,
            x_norm=x_norm,
            y_norm=y_norm,
            role=role,
            hand=hand,
            any_nonfoot=any_nonfoot,
            distance=distance,
            prev_hand=prev_hand,
            step=step,
            dx=dx,
            dy=dy,
            move=move,
            n_moves=n_moves,
            nearest=nearest,
            nearest2=nearest2,
            nearest_hand=nearest_hand,
            start_y=start_y,
            angle=angle.to(torch.float64),
        )
        return holds, {"layout": li, "angle": angle_c, "holds": token}, problems


def _normalise(value: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """[-1, 1] across [low, high] per route (0 for a layout whose holes all share the value)."""
    span = high - low
    scaled = 2.0 * (value - low[:, None]) / span.clamp(min=1.0)[:, None] - 1.0
    return torch.where(span[:, None] > 0, scaled, torch.zeros_like(scaled))
