"""The host's half of reading a route: check it against the board, with a message naming any
problem, and turn it into the Aurora ids the model takes (model_io: layout, angle, placement and role ids).

Everything the model computes from those ids (the tokens, the canonical hold order, every feature)
is in the model's graph (climbgrade_train.features), never here. The Tokenizer is the model's
vocabulary and board geometry, as its sidecar records them: training builds it, the graph's lookup
tables are made from it, and the host reads it to validate routes and to warn of holds the model
never saw.

Two hold-token schemes, recorded in the sidecar:
- "placement_role" (the reference design): one token per (placement, role);
- "placement": one token per placement, whatever its role.
`features` names the model's per-token input columns; the graph computes them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import ModelError, RouteError
from .geometry import LayoutGeometry
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

BASE_FEATURES = (
    "x",
    "y",
    "is_hold",
)  # every model's first coords columns (climbgrade_train.features computes them all)
UNSEEN_HOLDS = "never appeared in the training data"  # in the warning for holds mapped to <UNK>


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


@dataclass(frozen=True)
class ResolvedRoute:
    """A route checked against the board geometry: its holds (placement, role name) as given, and in
    canonical order for what a person reads (explanations, pictures, mirrors' frames).

    Grading needs no order (the graph sorts the holds itself), so `holds` is sorted on first use only.
    """

    layout: LayoutGeometry
    angle: int
    given: tuple[tuple[int, str], ...]
    warnings: tuple[str, ...]

    @functools.cached_property
    def holds(self) -> tuple[tuple[int, str], ...]:
        """Bottom to top, then left to right (then placement id): the order the model reads them in."""
        place = self.layout.placements
        return tuple(sorted(self.given, key=lambda h: (place[h[0]][1], place[h[0]][0], h[0])))

    def tokens(self, scheme: str = PLACEMENT_ROLE) -> list[str]:
        board, layout_id = self.layout.key
        return [CLS, board_token(board, layout_id), angle_token(self.angle)] + [
            hold_token(board, layout_id, pid, role if scheme == PLACEMENT_ROLE else None) for pid, role in self.holds
        ]

    def mirrored(self) -> ResolvedRoute | None:
        """The left-right mirror through holes.mirrored_hole_id, or None if a hold has no mirror."""
        mirrors = self.layout.mirrors
        if not all(pid in mirrors for pid, _ in self.given):
            return None
        holds = tuple((mirrors[pid], role) for pid, role in self.given)
        return ResolvedRoute(layout=self.layout, angle=self.angle, given=holds, warnings=self.warnings)


class RouteIds(NamedTuple):
    """One route as the model takes it (model_io): its layout's position in the sidecar's layouts, the
    angle, and per hold its placement id and its role id as the layout's own product spells it."""

    layout: int
    angle: int
    placements: tuple[int, ...]
    roles: tuple[int, ...]


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
    roles, role_ids = layout.roles, layout.role_ids
    # The usual route is good: checked in a few set operations; a bad one is walked hold by hold for its message.
    pids, given_roles = zip(*route.holds)
    names = [roles.get(role) if isinstance(role, int) else role if role in role_ids else None for role in given_roles]
    placements = set(pids)
    if None not in names and len(placements) == len(names) and placements <= layout.placements.keys():
        return resolved_from_holds(layout, route.angle, zip(pids, names))  # type: ignore[arg-type]
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
    given = tuple(holds)
    roles = {role for _, role in given}
    warnings = tuple(f"route has no {r} hold" for r in ("start", "finish") if r in layout.role_ids and r not in roles)
    return ResolvedRoute(layout=layout, angle=angle, given=given, warnings=warnings)


@dataclass(frozen=True)
class Tokenizer:
    """Vocabulary, board geometry, maximum sequence length, token scheme and feature names of one model."""

    vocab: tuple[str, ...]
    layouts: Mapping[tuple[str, int], LayoutGeometry]  # in the sidecar's order: the model's `layout` input indexes it
    max_len: int
    hold_tokens: str = PLACEMENT_ROLE
    features: tuple[str, ...] = BASE_FEATURES
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    # Worked out once: each layout's position, board token, each angle token, and per layout the token of
    # each (placement, role name) in the vocabulary (what the graph's token table holds; the rest are <UNK>).
    layout_index: dict[tuple[str, int], int] = field(init=False, repr=False, compare=False)
    board_ids: dict[tuple[str, int], int] = field(init=False, repr=False, compare=False)
    angle_ids: dict[int, int] = field(init=False, repr=False, compare=False)
    hold_ids: dict[tuple[str, int], dict[tuple[int, str], int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check()
        object.__setattr__(self, "index", {tok: i for i, tok in enumerate(self.vocab)})
        object.__setattr__(self, "layout_index", {key: i for i, key in enumerate(self.layouts)})
        object.__setattr__(self, "board_ids", {key: self.index.get(board_token(*key), UNK_ID) for key in self.layouts})
        object.__setattr__(self, "angle_ids", _angle_ids(self.index))
        object.__setattr__(self, "hold_ids", self._hold_ids())

    def _check(self) -> None:
        """ModelError unless the vocabulary, length and scheme are ones this tokenizer can use."""
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
        if not self.layouts:
            raise ModelError("the tokenizer has no layouts")

    def _hold_ids(self) -> dict[tuple[str, int], dict[tuple[int, str], int]]:
        """Per layout, (placement, role name) -> token id for the holds in the vocabulary."""
        tables: dict[tuple[str, int], dict[tuple[int, str], int]] = {key: {} for key in self.layouts}
        for token, i in self.index.items():
            parsed = _parse_hold_token(token)
            if (
                parsed is None
                or parsed[0] not in self.layouts
                or (parsed[2] is None) != (self.hold_tokens == PLACEMENT)
            ):
                continue
            key, pid, role = parsed
            names = self.layouts[key].role_names if role is None else (role,)
            for name in names:
                tables[key][(pid, name)] = i
        return tables

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
        by_key = {layout.key: layout for layout in sorted(layouts, key=lambda layout: layout.key)}
        angles = sorted({a for layout in by_key.values() for a in layout.angles})
        holds = sorted({tok for route in train_routes for tok in route.tokens(hold_tokens)[PREFIX_TOKENS:]})
        vocab = SPECIALS + tuple(board_token(*key) for key in by_key) + tuple(map(angle_token, angles))
        return cls(
            vocab=vocab + tuple(holds), layouts=by_key, max_len=max_len, hold_tokens=hold_tokens, features=features
        )

    def resolve(self, route: Route) -> ResolvedRoute:
        return resolve_route(route, self.layouts, self.max_holds)

    def ids(self, resolved: ResolvedRoute, angle: int | None = None) -> RouteIds:
        """The model's inputs for a resolved route (at `angle`, if given: a sweep re-angles one route)."""
        layout = resolved.layout
        placements, names = zip(*resolved.given)
        return RouteIds(
            self.layout_index[layout.key],
            resolved.angle if angle is None else angle,
            placements,
            tuple(map(layout.role_ids.__getitem__, names)),
        )

    def unseen_warning(self, resolved: ResolvedRoute) -> tuple[str, ...]:
        """A warning naming the holds the model reads as <UNK> (never in its training data), if any."""
        known = self.hold_ids[resolved.layout.key]
        if known.keys() >= set(resolved.given):
            return ()
        unknown = [
            f"p{pid}" + (f" as {role}" if self.hold_tokens == PLACEMENT_ROLE else "")
            for pid, role in resolved.holds
            if (pid, role) not in known
        ]
        return (f"hold(s) {', '.join(unknown)} {UNSEEN_HOLDS}; graded as unknown holds",) if unknown else ()

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

    def to_dict(self, with_layouts: bool = True) -> dict[str, Any]:
        """The run folder's tokenizer.json; the sidecar keeps the layouts apart (with_layouts=False)."""
        out: dict[str, Any] = {
            "vocab": list(self.vocab),
            "max_len": self.max_len,
            "hold_tokens": self.hold_tokens,
            "features": list(self.features),
        }
        if with_layouts:
            out["layouts"] = layouts_to_list(self.layouts)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], layouts: list[Any] | None = None) -> Tokenizer:
        """From to_dict's output; `layouts` (a sidecar's top-level list) when they are kept apart."""
        geometry = [LayoutGeometry.from_dict(d) for d in (data["layouts"] if layouts is None else layouts)]
        return cls(
            vocab=tuple(data["vocab"]),
            layouts={layout.key: layout for layout in geometry},
            max_len=int(data["max_len"]),
            hold_tokens=str(data.get("hold_tokens", PLACEMENT_ROLE)),
            features=tuple(data.get("features", BASE_FEATURES)),
        )


def layouts_to_list(layouts: Mapping[tuple[str, int], LayoutGeometry]) -> list[dict[str, Any]]:
    """The layouts in their order (the model's `layout` input is a position in this list)."""
    return [layout.to_dict() for layout in layouts.values()]
