"""The one tokenizer: `<CLS> <BOARD_..> <ANGLE_..> <hold tokens..>` plus per-token features.

Training imports this module; nothing re-implements it. Holds are put in a canonical order
(bottom to top, then left to right), so the same route listed in any order gets the same tokens.
A hold that is on the layout but never appeared in the training split maps to <UNK> and keeps its
real features.

Two hold-token schemes, recorded in the sidecar:
- "placement_role" (the reference design): one token per (placement, role), features x, y, is_hold.
- "placement": one token per placement, the role given as a feature, so a hold's embedding learns
  from every route that uses it in any role.
Optional features (either scheme): role one-hot, the angle as a number, the distances to the
route's nearest other holds, the move onto each hand hold from the one below it, and route-level
geometry on <CLS> (climbgrade_runtime.route_features).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ModelError, RouteError
from .geometry import LayoutGeometry
from .route_features import (
    ALL_ROUTE_FEATURES,
    CLS_FEATURE_GROUPS,
    DISTANCE_SCALE,
    ROUTE_FEATURES,
    SHAPE_FEATURES,
    RouteGeometry,
)
from .routes import Route, shown

PAD, UNK, CLS = "<PAD>", "<UNK>", "<CLS>"
SPECIALS = (PAD, UNK, CLS)
PAD_ID, UNK_ID, CLS_ID = 0, 1, 2
PREFIX_TOKENS = 3  # <CLS> <BOARD_..> <ANGLE_..>


def board_token(board: str, layout_id: int) -> str:
    return f"<BOARD_{board}_{layout_id}>"


def angle_token(angle: int) -> str:
    return f"<ANGLE_{angle}>"


ANGLE_TOKEN = re.compile(r"<ANGLE_(-?\d+)>")  # what angle_token writes


PLACEMENT_ROLE, PLACEMENT = "placement_role", "placement"
HOLD_TOKEN_SCHEMES = (PLACEMENT_ROLE, PLACEMENT)

# Per-token features (the `coords` input). x, y, is_hold always come first, in this order.
BASE_FEATURES = ("x", "y", "is_hold")
ROLE_FEATURES = {"role_start": "start", "role_middle": "middle", "role_finish": "finish", "role_foot": "foot"}
ANGLE_SCALE = 90.0  # "angle": wall angle / 90 on every token
# "nearest", "nearest2": distance to the route's nearest / 2nd-nearest other hold, board units / DISTANCE_SCALE.
# ALL_ROUTE_FEATURES ("route_*"; groups "route" and "shape"): the route's geometry as a whole, on the <CLS> token only.
# "move_dx", "move_dy": the move onto a hand hold from the hand hold below it (bottom-to-top order), board
# units / DISTANCE_SCALE; zero on feet and on the lowest hand hold.
MOVE_FEATURES = ("move_dx", "move_dy")
FEATURES = BASE_FEATURES + tuple(ROLE_FEATURES) + ("angle", "nearest", "nearest2") + MOVE_FEATURES + ALL_ROUTE_FEATURES
GEOMETRY_FEATURES = frozenset(("nearest", "nearest2") + MOVE_FEATURES + ALL_ROUTE_FEATURES)  # read from a RouteGeometry
FEATURE_GROUPS = {
    "route": ROUTE_FEATURES,
    "shape": SHAPE_FEATURES,
}  # a name that stands for several features on a command line
UNSEEN_HOLDS = "never appeared in the training data"  # in the warning for holds mapped to <UNK>


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


def hold_token(board: str, layout_id: int, placement_id: int, role: str | None) -> str:
    """`board/layout/p<id>/<role>`, or `board/layout/p<id>` in the "placement" scheme (role None)."""
    return f"{board}/{layout_id}/p{placement_id}" + ("" if role is None else f"/{role}")


def _parse_hold_token(token: str) -> tuple[tuple[str, int], int, str | None] | None:
    """Inverse of hold_token: ((board, layout_id), placement_id, role or None), or None for other tokens."""
    parts = token.split("/", 3)
    if len(parts) < 3 or not parts[1].isdigit() or not parts[2].startswith("p") or not parts[2][1:].isdigit():
        return None
    return (parts[0], int(parts[1])), int(parts[2][1:]), parts[3] if len(parts) == 4 else None


def _angle_ids(index: Mapping[str, int]) -> dict[int, int]:
    """Angle -> id, for each angle token in `index` (the inverse of angle_token)."""
    out = {}
    for token, i in index.items():
        match = ANGLE_TOKEN.fullmatch(token)
        if match and angle_token(int(match[1])) == token:
            out[int(match[1])] = i
    return out


def _as_slice(columns: list[int]) -> slice | list[int]:
    """`columns` as a slice when they run contiguously (numpy assigns a slice ~3x faster than a list)."""
    if columns and columns == list(range(columns[0], columns[-1] + 1)):
        return slice(columns[0], columns[-1] + 1)
    return columns


def _pick(values: list[float], positions: list[int] | None) -> list[float]:
    """values[positions]; every value, in order, for None."""
    return values if positions is None else [values[p] for p in positions]


@dataclass(frozen=True)
class _LayoutHolds:
    """One layout's holds as a tokenizer encodes them (Tokenizer._tabulate_holds)."""

    entries: dict[tuple[int, str], tuple[int, int]]  # (placement, role name) -> (token id, row of `static`)
    static: np.ndarray  # float32 [rows, static features]: x, y, is_hold and the role features, in coords order


@dataclass(frozen=True)
class ResolvedRoute:
    """A route checked against the board geometry, holds in canonical order with role names."""

    layout: LayoutGeometry
    angle: int
    holds: tuple[tuple[int, str], ...]
    warnings: tuple[str, ...]

    def tokens(self, scheme: str = PLACEMENT_ROLE) -> list[str]:
        board, layout_id = self.layout.key
        return [CLS, board_token(board, layout_id), angle_token(self.angle)] + [
            hold_token(board, layout_id, pid, role if scheme == PLACEMENT_ROLE else None) for pid, role in self.holds
        ]

    def mirrored(self) -> ResolvedRoute | None:
        """The left-right mirror through holes.mirrored_hole_id, or None if a hold has no mirror."""
        mirrors = self.layout.mirrors
        if not all(pid in mirrors for pid, _ in self.holds):
            return None
        holds = _canonical_order([(mirrors[pid], role) for pid, role in self.holds], self.layout)
        return ResolvedRoute(layout=self.layout, angle=self.angle, holds=holds, warnings=self.warnings)


@dataclass(frozen=True)
class Encoded:
    """Model input for one route: token ids [L] and per-token features [L, len(Tokenizer.features)]."""

    ids: np.ndarray
    coords: np.ndarray
    warnings: tuple[str, ...]


def resolve_route(
    route: Route, layouts: Mapping[tuple[str, int], LayoutGeometry], max_holds: int | None = None
) -> ResolvedRoute:
    """Validate a route against the geometry; raise RouteError naming the first problem."""
    layout = layouts.get((route.board, route.layout_id))
    if layout is None:
        boards = sorted({b for b, _ in layouts})
        if route.board not in boards:
            raise RouteError(f"unknown board {shown(route.board)}: this model knows {', '.join(boards)}")
        known = ", ".join(str(lid) for b, lid in sorted(layouts) if b == route.board)
        raise RouteError(f"board {route.board} has no layout {shown(route.layout_id)} in this model (layouts: {known})")
    where = f"{layout.board} layout {layout.layout_id}"
    check_angle(layout, route.angle)
    if not route.holds:
        raise RouteError("route has no holds")
    if max_holds is not None and len(route.holds) > max_holds:
        raise RouteError(f"route has {len(route.holds)} holds; this model takes at most {max_holds}")
    role_ids = layout.role_ids
    seen: set[int] = set()
    holds: list[tuple[int, str]] = []
    for pid, role in route.holds:
        if pid not in layout.placements:
            raise RouteError(f"placement {shown(pid)} is not on {where}")
        if pid in seen:
            raise RouteError(f"placement {pid} is listed twice")
        seen.add(pid)
        if isinstance(role, int):
            if role not in layout.roles:
                raise RouteError(
                    f"role id {shown(role)} of placement {pid} is not a role of {where} (roles: {', '.join(layout.role_names)})"
                )
            role = layout.roles[role]
        elif role not in role_ids:
            raise RouteError(
                f"role {shown(role)} of placement {pid} is not a role of {where} (roles: {', '.join(layout.role_names)})"
            )
        holds.append((pid, role))
    return resolved_from_holds(layout, route.angle, holds)


def check_angle(layout: LayoutGeometry, angle: int) -> None:
    """RouteError unless `angle` is one of the layout's wall angles (for a route, or a sweep's angles)."""
    if angle not in layout.angles:
        where, angles = f"{layout.board} layout {layout.layout_id}", ", ".join(map(str, layout.angles))
        raise RouteError(f"angle {shown(angle)} is not an angle of {where} (angles: {angles})")


def resolved_from_holds(layout: LayoutGeometry, angle: int, holds: Iterable[tuple[int, str]]) -> ResolvedRoute:
    """Holds already checked against `layout` (placement ids, role names) as a ResolvedRoute with its warnings.

    resolve_route ends here; GradePredictor.explain builds its leave-one-out routes here.
    """
    ordered = _canonical_order(list(holds), layout)
    roles = {role for _, role in ordered}
    warnings = tuple(f"route has no {r} hold" for r in ("start", "finish") if r in layout.role_ids and r not in roles)
    return ResolvedRoute(layout=layout, angle=angle, holds=ordered, warnings=warnings)


def _canonical_order(holds: list[tuple[int, str]], layout: LayoutGeometry) -> tuple[tuple[int, str], ...]:
    """Bottom to top, then left to right (then placement id): the order every route is tokenized in."""
    place = layout.placements
    return tuple(sorted(holds, key=lambda h: (place[h[0]][1], place[h[0]][0], h[0])))


@dataclass(frozen=True)
class Tokenizer:
    """Vocabulary, board geometry, maximum sequence length and token scheme of one model."""

    vocab: tuple[str, ...]
    layouts: Mapping[tuple[str, int], LayoutGeometry]
    max_len: int
    hold_tokens: str = PLACEMENT_ROLE
    features: tuple[str, ...] = BASE_FEATURES
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    # Token id of each layout's board token and of each angle token: the prefix of every encoding,
    # looked up without formatting token strings per route.
    board_ids: dict[tuple[str, int], int] = field(init=False, repr=False, compare=False)
    angle_ids: dict[int, int] = field(init=False, repr=False, compare=False)
    # Worked out once from `features`, read by every encode: feature name -> coords column; the coords
    # columns of the features a hold token has whatever its route (x, y, is_hold, roles: a slice where they
    # are contiguous, as in every model so far); the neighbour-distance columns ((rank, column)); whether
    # any feature needs a RouteGeometry; per <CLS> feature group in use, the function that computes the
    # group and the positions of the features used in its output; and the coords columns those fill.
    columns: dict[str, int] = field(init=False, repr=False, compare=False)
    static_columns: slice | list[int] = field(init=False, repr=False, compare=False)
    nearest_columns: list[tuple[int, int]] = field(init=False, repr=False, compare=False)
    uses_geometry: bool = field(init=False, repr=False, compare=False)
    cls_groups: tuple[tuple[Callable[[RouteGeometry], list[float]], list[int] | None], ...] = field(
        init=False, repr=False, compare=False
    )
    cls_columns: slice | list[int] = field(init=False, repr=False, compare=False)
    # Per layout, its holds' token ids and static features, looked up once per hold (_LayoutHolds).
    holds: dict[tuple[str, int], _LayoutHolds] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check()
        self._index_tokens()
        self._plan_columns()
        self._tabulate_holds()

    def _check(self) -> None:
        """ModelError unless the vocabulary, length, scheme and features are ones this tokenizer can use."""
        if self.vocab[: len(SPECIALS)] != SPECIALS:
            raise ModelError(f"vocabulary must start with {', '.join(SPECIALS)}")
        if len(set(self.vocab)) != len(self.vocab):
            raise ModelError("vocabulary has duplicate tokens")
        if self.max_len <= PREFIX_TOKENS:
            raise ModelError(f"max_len must exceed {PREFIX_TOKENS}, got {self.max_len}")
        if self.hold_tokens not in HOLD_TOKEN_SCHEMES:
            raise ModelError(
                f"unknown hold-token scheme {self.hold_tokens!r}; this climbgrade knows {', '.join(HOLD_TOKEN_SCHEMES)}"
            )
        unknown = [f for f in self.features if f not in FEATURES]
        if (
            self.features[: len(BASE_FEATURES)] != BASE_FEATURES
            or unknown
            or len(set(self.features)) != len(self.features)
        ):
            raise ModelError(
                f"features must start with {', '.join(BASE_FEATURES)} and come from {', '.join(FEATURES)}; "
                f"got {', '.join(self.features)}: upgrade climbgrade or re-export the model"
            )

    def _index_tokens(self) -> None:
        """Token -> id, and the ids encoding looks up per route without building token strings."""
        object.__setattr__(self, "index", {tok: i for i, tok in enumerate(self.vocab)})
        object.__setattr__(self, "board_ids", {key: self.index.get(board_token(*key), UNK_ID) for key in self.layouts})
        object.__setattr__(self, "angle_ids", _angle_ids(self.index))

    def _plan_columns(self) -> None:
        """Where each feature goes in coords, worked out once so that encoding only fills columns."""
        columns = {name: i for i, name in enumerate(self.features)}
        object.__setattr__(self, "columns", columns)
        static = [columns[name] for name in self.features if name in BASE_FEATURES or name in ROLE_FEATURES]
        object.__setattr__(self, "static_columns", _as_slice(static))
        nearest = [(rank, columns[name]) for rank, name in enumerate(("nearest", "nearest2")) if name in columns]
        object.__setattr__(self, "nearest_columns", nearest)
        object.__setattr__(self, "uses_geometry", not GEOMETRY_FEATURES.isdisjoint(self.features))
        cls_groups, cls_columns = [], []
        for names, compute in CLS_FEATURE_GROUPS:
            used = [(i, names.index(name)) for i, name in enumerate(self.features) if name in names]
            if used:
                positions = [p for _, p in used]
                cls_groups.append((compute, None if positions == list(range(len(names))) else positions))
                cls_columns += [i for i, _ in used]
        object.__setattr__(self, "cls_groups", tuple(cls_groups))
        object.__setattr__(self, "cls_columns", _as_slice(cls_columns))

    def _tabulate_holds(self) -> None:
        """Every (placement, role name) a resolved route can hold on each layout: its token id (hold
        tokens outside the vocabulary -> <UNK>) and its row of static features (x, y, is_hold, the role
        features, in coords order), so that encoding looks each hold up once instead of building token
        strings and filling those columns one by one."""
        token_ids: dict[tuple[tuple[str, int], Any], int] = {}  # (layout key, hold key by scheme) -> id
        for token, i in self.index.items():
            parsed = _parse_hold_token(token)
            if parsed is not None and (parsed[2] is None) == (self.hold_tokens == PLACEMENT):
                token_ids[(parsed[0], parsed[1] if parsed[2] is None else (parsed[1], parsed[2]))] = i
        static = [name for name in self.features if name in BASE_FEATURES or name in ROLE_FEATURES]
        tables = {}
        for key, layout in self.layouts.items():
            entries: dict[tuple[int, str], tuple[int, int]] = {}
            rows: list[list[float]] = []
            for pid, (x, y) in layout.normalised.items():
                for role in layout.role_names:
                    hold = pid if self.hold_tokens == PLACEMENT else (pid, role)
                    entries[(pid, role)] = (token_ids.get((key, hold), UNK_ID), len(rows))
                    values = {"x": x, "y": y, "is_hold": 1.0}
                    rows.append([values.get(name, float(ROLE_FEATURES.get(name) == role)) for name in static])
            tables[key] = _LayoutHolds(entries, np.array(rows, dtype=np.float32))
        object.__setattr__(self, "holds", tables)

    @property
    def max_holds(self) -> int:
        return self.max_len - PREFIX_TOKENS

    @property
    def n_features(self) -> int:
        return len(self.features)

    @classmethod
    def build(
        cls,
        layouts: Iterable[LayoutGeometry],
        train_routes: Iterable[ResolvedRoute],
        max_len: int,
        hold_tokens: str = PLACEMENT_ROLE,
        features: tuple[str, ...] = BASE_FEATURES,
    ) -> Tokenizer:
        """Vocabulary: specials, every layout's board token, every valid angle, holds seen in training."""
        by_key = {layout.key: layout for layout in layouts}
        angles = sorted({a for layout in by_key.values() for a in layout.angles})
        holds = sorted({tok for route in train_routes for tok in route.tokens(hold_tokens)[PREFIX_TOKENS:]})
        vocab = SPECIALS + tuple(board_token(*key) for key in sorted(by_key)) + tuple(map(angle_token, angles))
        return cls(
            vocab=vocab + tuple(holds), layouts=by_key, max_len=max_len, hold_tokens=hold_tokens, features=features
        )

    def resolve(self, route: Route) -> ResolvedRoute:
        return resolve_route(route, self.layouts, self.max_holds)

    def encode(self, route: Route) -> Encoded:
        """Token ids and coordinate features; raises RouteError for a route this model cannot take."""
        return self.encode_resolved(self.resolve(route))

    def encode_resolved(self, resolved: ResolvedRoute) -> Encoded:
        """Ids of ResolvedRoute.tokens(scheme) (unknown holds -> <UNK>) and their features."""
        layout, holds = resolved.layout, resolved.holds
        table = self.holds[layout.key]
        entries = [table.entries[hold] for hold in holds]  # resolve_route: >= 1 hold, each on the layout
        hold_ids = [i for i, _ in entries]
        prefix = [CLS_ID, self.board_ids[layout.key], self.angle_ids.get(resolved.angle, UNK_ID)]
        ids = np.array(prefix + hold_ids, dtype=np.int64)
        coords = np.zeros((len(ids), len(self.features)), dtype=np.float32)
        coords[PREFIX_TOKENS:, self.static_columns] = table.static[[row for _, row in entries]]
        if "angle" in self.columns:
            coords[:, self.columns["angle"]] = resolved.angle / ANGLE_SCALE
        if self.uses_geometry:
            self._geometry_features(RouteGeometry.of(layout, holds), coords)
        warnings = resolved.warnings
        if UNK_ID in hold_ids:
            unknown = [
                f"p{pid}" + (f" as {role}" if self.hold_tokens == PLACEMENT_ROLE else "")
                for (pid, role), i in zip(holds, hold_ids)
                if i == UNK_ID
            ]
            warnings += (f"hold(s) {', '.join(unknown)} {UNSEEN_HOLDS}; graded as unknown holds",)
        return Encoded(ids=ids, coords=coords, warnings=warnings)

    def at_angle(self, encoded: Encoded, angle: int) -> Encoded:
        """`encoded` (of a route whose angle is a valid one) as the same route at `angle`: what
        encode_resolved gives at that angle, bit for bit, without recomputing the hold features,
        none of which but the angle token and the "angle" column depend on the wall angle."""
        ids = encoded.ids.copy()
        ids[PREFIX_TOKENS - 1] = self.angle_ids.get(angle, UNK_ID)  # <CLS> <BOARD_..> <ANGLE_..>
        coords = encoded.coords
        if "angle" in self.columns:
            coords = coords.copy()
            coords[:, self.columns["angle"]] = angle / ANGLE_SCALE
        return Encoded(ids=ids, coords=coords, warnings=encoded.warnings)

    def _geometry_features(self, geometry: RouteGeometry, coords: np.ndarray) -> None:
        """Fill the neighbour-distance, move and <CLS> route columns in place."""
        holds = coords[PREFIX_TOKENS:]
        if self.nearest_columns:
            # in float32 board units, then scaled: the values every model so far was trained on
            nearest = (geometry.gaps * DISTANCE_SCALE).astype(np.float32) / np.float32(DISTANCE_SCALE)
            for rank, column in self.nearest_columns:
                if rank < nearest.shape[1]:  # a route of 2 holds has no 2nd-nearest other hold
                    holds[:, column] = nearest[:, rank]
        moved = geometry.hands[1:]  # every hand hold but the lowest; feet and that one keep 0.0
        for name, values in zip(MOVE_FEATURES, (geometry.step_x, geometry.step_y)):
            if name in self.columns and moved:
                holds[moved, self.columns[name]] = values
        if self.cls_groups:
            coords[0, self.cls_columns] = [
                value for compute, positions in self.cls_groups for value in _pick(compute(geometry), positions)
            ]

    def placement_groups(self) -> list[int]:
        """Per token id, a group id shared by one placement's tokens in every role (others alone).

        A "placement" member of a mixed ensemble embeds these groups: it reads a placement_role
        tokenizer's ids as if they were placement tokens. Groups follow vocabulary order, so the
        specials keep their ids (<PAD> stays 0).
        """
        groups: dict[Any, int] = {}
        out = []
        for token in self.vocab:
            parsed = _parse_hold_token(token)
            out.append(groups.setdefault(token if parsed is None else parsed[:2], len(groups)))
        return out

    def token_features(self) -> list[list[float]]:
        """(x_norm, y_norm, is_hold) of every vocabulary token, for readers of the sidecar."""
        out = []
        for token in self.vocab:
            parsed = _parse_hold_token(token)
            if parsed is None:
                out.append([0.0, 0.0, 0.0])
            else:
                x, y = self.layouts[parsed[0]].normalised[parsed[1]]
                out.append([x, y, 1.0])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocab": list(self.vocab),
            "max_len": self.max_len,
            "hold_tokens": self.hold_tokens,
            "features": list(self.features),
            "token_features": self.token_features(),
            "layouts": [layout.to_dict() for _, layout in sorted(self.layouts.items())],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        layouts = [LayoutGeometry.from_dict(d) for d in data["layouts"]]
        tokenizer = cls(
            vocab=tuple(data["vocab"]),
            layouts={layout.key: layout for layout in layouts},
            max_len=int(data["max_len"]),
            hold_tokens=str(data.get("hold_tokens", PLACEMENT_ROLE)),
            features=tuple(data.get("features", BASE_FEATURES)),
        )
        if "token_features" in data and data["token_features"] != tokenizer.token_features():
            raise ModelError(
                "the sidecar's token_features disagree with its geometry: the sidecar was edited; re-export it"
            )
        return tokenizer
