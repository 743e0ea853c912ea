"""Board geometry per Aurora layout: where each placement sits, its mirror, roles and angles.

The runtime needs this to validate and tokenize a route without the database, so it travels in the
model's sidecar. Coordinates are normalised to [-1, 1] per layout from the extents of its holes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# boardlib's board names, matched against `products.name` to tell which board a database holds.
BOARD_NAMES = ("kilter", "tension", "decoy", "grasshopper", "touchstone", "aurora", "soill")


@dataclass(frozen=True)
class LayoutGeometry:
    """One layout of one board (e.g. Kilter Board Original = kilter/1, TB2 Spray = tension/11)."""

    board: str
    layout_id: int
    name: str
    placements: dict[int, tuple[int, int]]  # placement id -> hole (x, y) in board units
    mirrors: dict[int, int]  # placement id -> mirrored placement id (same layout)
    roles: dict[int, str]  # role id -> role name (start / middle / finish / foot)
    angles: tuple[int, ...]  # valid wall angles in degrees
    # Role name -> the id the layout's own product uses for it (TB2 spells start r5, where r1 is the
    # Tension Board 1's): how a frames string written for this board spells roles. Empty in sidecars
    # written before it was recorded; then the lowest id of each role name is used.
    own_roles: dict[str, int] = field(default_factory=dict)
    normalised: dict[int, tuple[float, float]] = field(init=False, repr=False, compare=False)
    role_ids: dict[str, int] = field(init=False, repr=False, compare=False)  # role name -> an Aurora id for it
    role_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.placements:
            raise ValueError(f"layout {self.board}/{self.layout_id} has no placements")
        xs = [x for x, _ in self.placements.values()]
        ys = [y for _, y in self.placements.values()]
        object.__setattr__(
            self,
            "normalised",
            {
                pid: (_scale(x, min(xs), max(xs)), _scale(y, min(ys), max(ys)))
                for pid, (x, y) in self.placements.items()
            },
        )
        # Looked up for every hold of every route: computed once here, not per call.
        lowest = {name: rid for rid, name in sorted(self.roles.items(), reverse=True)}
        own = {name: rid for name, rid in self.own_roles.items() if self.roles.get(rid) == name}
        object.__setattr__(self, "role_ids", {**lowest, **own})
        object.__setattr__(self, "role_names", tuple(dict.fromkeys(name for _, name in sorted(self.roles.items()))))

    @property
    def key(self) -> tuple[str, int]:
        return (self.board, self.layout_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "board": self.board,
            "layout_id": self.layout_id,
            "name": self.name,
            "angles": list(self.angles),
            "roles": {str(rid): name for rid, name in sorted(self.roles.items())},
            "placements": {str(pid): list(xy) for pid, xy in sorted(self.placements.items())},
            "mirrors": {str(pid): mid for pid, mid in sorted(self.mirrors.items())},
            **({"own_roles": dict(sorted(self.own_roles.items(), key=lambda item: item[1]))} if self.own_roles else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayoutGeometry:
        return cls(
            board=str(data["board"]),
            layout_id=int(data["layout_id"]),
            name=str(data["name"]),
            placements={int(pid): (int(xy[0]), int(xy[1])) for pid, xy in data["placements"].items()},
            mirrors={int(pid): int(mid) for pid, mid in data["mirrors"].items()},
            roles={int(rid): str(name) for rid, name in data["roles"].items()},
            angles=tuple(int(a) for a in data["angles"]),
            own_roles={str(name): int(rid) for name, rid in data.get("own_roles", {}).items()},
        )


def _scale(value: float, low: float, high: float) -> float:
    return 0.0 if high == low else 2.0 * (value - low) / (high - low) - 1.0
