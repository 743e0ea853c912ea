"""The one tokenizer: `<CLS> <BOARD_..> <ANGLE_..> <hold tokens..>` plus per-token coordinates.

Training imports this module; nothing re-implements it. Holds are put in a canonical order
(bottom to top, then left to right), so the same route listed in any order gets the same tokens.
Each hold token names (board, layout, placement, role); a hold that is on the layout but never
appeared in the training split maps to <UNK> and keeps its real coordinates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ModelError, RouteError
from .geometry import LayoutGeometry
from .model_io import COORD_FEATURES
from .routes import Route, shown

PAD, UNK, CLS = "<PAD>", "<UNK>", "<CLS>"
SPECIALS = (PAD, UNK, CLS)
PAD_ID, UNK_ID, CLS_ID = 0, 1, 2
PREFIX_TOKENS = 3  # <CLS> <BOARD_..> <ANGLE_..>


def board_token(board: str, layout_id: int) -> str:
    return f"<BOARD_{board}_{layout_id}>"


def angle_token(angle: int) -> str:
    return f"<ANGLE_{angle}>"


def hold_token(board: str, layout_id: int, placement_id: int, role: str) -> str:
    return f"{board}/{layout_id}/p{placement_id}/{role}"


def _parse_hold_token(token: str) -> tuple[tuple[str, int], tuple[int, str]] | None:
    """Inverse of hold_token: ((board, layout_id), (placement_id, role)), or None for other tokens."""
    parts = token.split("/", 3)
    if len(parts) != 4 or not parts[1].isdigit() or not parts[2].startswith("p") or not parts[2][1:].isdigit():
        return None
    return (parts[0], int(parts[1])), (int(parts[2][1:]), parts[3])


@dataclass(frozen=True)
class ResolvedRoute:
    """A route checked against the board geometry, holds in canonical order with role names."""

    layout: LayoutGeometry
    angle: int
    holds: tuple[tuple[int, str], ...]
    warnings: tuple[str, ...]

    def tokens(self) -> list[str]:
        board, layout_id = self.layout.key
        return [CLS, board_token(board, layout_id), angle_token(self.angle)] + [
            hold_token(board, layout_id, pid, role) for pid, role in self.holds
        ]


@dataclass(frozen=True)
class Encoded:
    """Model input for one route: token ids [L] and coordinate features [L, 3]."""

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
    if route.angle not in layout.angles:
        raise RouteError(f"angle {shown(route.angle)} is not an angle of {where} (angles: {', '.join(map(str, layout.angles))})")
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
                raise RouteError(f"role id {shown(role)} of placement {pid} is not a role of {where} (roles: {', '.join(layout.role_names)})")
            role = layout.roles[role]
        elif role not in role_ids:
            raise RouteError(f"role {shown(role)} of placement {pid} is not a role of {where} (roles: {', '.join(layout.role_names)})")
        holds.append((pid, role))
    holds.sort(key=lambda h: (layout.placements[h[0]][1], layout.placements[h[0]][0], h[0]))
    roles = {role for _, role in holds}
    warnings = tuple(f"route has no {r} hold" for r in ("start", "finish") if r in role_ids and r not in roles)
    return ResolvedRoute(layout=layout, angle=route.angle, holds=tuple(holds), warnings=warnings)


@dataclass(frozen=True)
class Tokenizer:
    """Vocabulary, board geometry and maximum sequence length of one model."""

    vocab: tuple[str, ...]
    layouts: Mapping[tuple[str, int], LayoutGeometry]
    max_len: int
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    # Per layout, (placement, role) -> token id: encoding looks ids up without building token strings.
    hold_ids: dict[tuple[str, int], dict[tuple[int, str], int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.vocab[: len(SPECIALS)] != SPECIALS:
            raise ModelError(f"vocabulary must start with {', '.join(SPECIALS)}")
        if len(set(self.vocab)) != len(self.vocab):
            raise ModelError("vocabulary has duplicate tokens")
        if self.max_len <= PREFIX_TOKENS:
            raise ModelError(f"max_len must exceed {PREFIX_TOKENS}, got {self.max_len}")
        object.__setattr__(self, "index", {tok: i for i, tok in enumerate(self.vocab)})
        hold_ids: dict[tuple[str, int], dict[tuple[int, str], int]] = {key: {} for key in self.layouts}
        for token, i in self.index.items():
            parsed = _parse_hold_token(token)
            if parsed is not None and parsed[0] in hold_ids:
                hold_ids[parsed[0]][parsed[1]] = i
        object.__setattr__(self, "hold_ids", hold_ids)

    @property
    def max_holds(self) -> int:
        return self.max_len - PREFIX_TOKENS

    @classmethod
    def build(
        cls, layouts: Iterable[LayoutGeometry], train_routes: Iterable[ResolvedRoute], max_len: int
    ) -> "Tokenizer":
        """Vocabulary: specials, every layout's board token, every valid angle, holds seen in training."""
        by_key = {layout.key: layout for layout in layouts}
        angles = sorted({a for layout in by_key.values() for a in layout.angles})
        holds = sorted({tok for route in train_routes for tok in route.tokens()[PREFIX_TOKENS:]})
        vocab = SPECIALS + tuple(board_token(*key) for key in sorted(by_key)) + tuple(map(angle_token, angles))
        return cls(vocab=vocab + tuple(holds), layouts=by_key, max_len=max_len)

    def resolve(self, route: Route) -> ResolvedRoute:
        return resolve_route(route, self.layouts, self.max_holds)

    def encode(self, route: Route) -> Encoded:
        """Token ids and coordinate features; raises RouteError for a route this model cannot take."""
        return self.encode_resolved(self.resolve(route))

    def encode_resolved(self, resolved: ResolvedRoute) -> Encoded:
        """Ids of ResolvedRoute.tokens() (unknown holds -> <UNK>) and their coordinate features."""
        layout = resolved.layout
        index = self.index
        holds = self.hold_ids[layout.key]
        hold_ids = [holds.get(hold, UNK_ID) for hold in resolved.holds]
        prefix = [CLS_ID, index.get(board_token(*layout.key), UNK_ID), index.get(angle_token(resolved.angle), UNK_ID)]
        ids = np.array(prefix + hold_ids, dtype=np.int64)
        coords = np.zeros((len(ids), COORD_FEATURES), dtype=np.float32)
        normalised = layout.normalised
        coords[PREFIX_TOKENS:, :2] = [normalised[pid] for pid, _ in resolved.holds]  # resolve_route: >= 1 hold
        coords[PREFIX_TOKENS:, 2] = 1.0
        warnings = resolved.warnings
        if UNK_ID in hold_ids:
            unknown = [f"p{pid} as {role}" for (pid, role), i in zip(resolved.holds, hold_ids) if i == UNK_ID]
            warnings += (f"hold(s) {', '.join(unknown)} never appeared in the training data; graded as unknown holds",)
        return Encoded(ids=ids, coords=coords, warnings=warnings)

    def token_features(self) -> list[list[float]]:
        """(x_norm, y_norm, is_hold) of every vocabulary token, for readers of the sidecar."""
        out = []
        for token in self.vocab:
            parsed = _parse_hold_token(token)
            if parsed is None:
                out.append([0.0, 0.0, 0.0])
            else:
                x, y = self.layouts[parsed[0]].normalised[parsed[1][0]]
                out.append([x, y, 1.0])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocab": list(self.vocab),
            "max_len": self.max_len,
            "token_features": self.token_features(),
            "layouts": [layout.to_dict() for _, layout in sorted(self.layouts.items())],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tokenizer":
        layouts = [LayoutGeometry.from_dict(d) for d in data["layouts"]]
        tokenizer = cls(vocab=tuple(data["vocab"]), layouts={l.key: l for l in layouts}, max_len=int(data["max_len"]))
        if "token_features" in data and data["token_features"] != tokenizer.token_features():
            raise ModelError("the sidecar's token_features disagree with its geometry: the sidecar was edited; re-export it")
        return tokenizer
