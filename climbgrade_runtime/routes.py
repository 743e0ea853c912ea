"""Routes as users and databases give them: JSON objects and Aurora `frames` strings.

Parsing only checks shape and types; whether a hold is on the board is the tokenizer's job,
because that needs the model's geometry.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import RouteError

# Aurora ids are small numbers; bounding their digits keeps int() away from huge digit runs.
_FRAME = re.compile(r"p(\d{1,9})r(\d{1,9})")
# Fields a route may carry to identify itself; they are echoed back next to its prediction.
LABEL_KEYS = ("id", "uuid", "name")
_LABEL_SET = frozenset(LABEL_KEYS)
ROUTE_KEYS = frozenset({"board", "layout_id", "angle", "frames", "holds", *LABEL_KEYS})
HOLD_KEYS = frozenset({"placement_id", "role"})
MAX_FRAMES_CHARS = 100_000


@dataclass(frozen=True)
class Route:
    """A route on a wall: holds are (placement id, role name or Aurora role id)."""

    board: str
    layout_id: int
    angle: int
    holds: tuple[tuple[int, str | int], ...]


def parse_frames(frames: str) -> tuple[tuple[int, int], ...]:
    """`p1145r12p1200r13` -> ((1145, 12), (1200, 13)); anything else is a RouteError."""
    if not isinstance(frames, str):
        raise RouteError(f"'frames' must be a string like 'p1145r12p1200r13', got {_kind(frames)}")
    if len(frames) > MAX_FRAMES_CHARS:
        raise RouteError(f"'frames' is {len(frames)} characters long; no route needs more than {MAX_FRAMES_CHARS}")
    # One regex pass: split leaves [text before, placement, role, text between, ..., text after], and the
    # frames parse when they hold a frame and nothing but frames (every piece of text between is empty).
    parts = _FRAME.split(frames)
    if len(parts) == 1 or any(parts[::3]):
        raise RouteError(f"'frames' {shown(frames)} does not parse: expected p<placement>r<role> repeated")
    return tuple(zip(map(int, parts[1::3]), map(int, parts[2::3])))


def parse_route(obj: Any) -> Route:
    """Check a decoded JSON route and turn it into a Route."""
    if not isinstance(obj, dict):
        raise RouteError(
            f"a route must be a JSON object with board, layout_id, angle and frames or holds, got {_kind(obj)}"
        )
    for key in ("board", "layout_id", "angle"):
        if key not in obj:
            raise RouteError(f"route is missing '{key}'")
    board = obj["board"]
    if not isinstance(board, str) or not board:
        raise RouteError(f"'board' must be a board name such as 'kilter', got {_kind(board)}")
    layout_id = _integer(obj["layout_id"], "layout_id")
    angle = _integer(obj["angle"], "angle")
    has_frames, has_holds = "frames" in obj, "holds" in obj
    if has_frames == has_holds:
        raise RouteError("route must give exactly one of 'frames' (e.g. 'p1145r12p1200r13') or 'holds'")
    holds = parse_frames(obj["frames"]) if has_frames else _parse_holds(obj["holds"])
    return Route(board=board, layout_id=layout_id, angle=angle, holds=holds)


def unknown_keys(obj: dict[str, Any]) -> list[str]:
    """Keys of a route object this parser does not use (reported as a warning, never dropped silently)."""
    if obj.keys() <= ROUTE_KEYS:  # the usual case, checked in C
        return []
    return sorted(shown(k) for k in obj if k not in ROUTE_KEYS)


def route_labels(obj: Any) -> dict[str, Any]:
    """The identifying fields a user gave (id, uuid, name), to echo next to the answer."""
    if not isinstance(obj, dict) or not obj.keys() & _LABEL_SET:
        return {}
    return {
        k: obj[k]
        for k in LABEL_KEYS
        if k in obj and isinstance(obj[k], (str, int, float)) and not isinstance(obj[k], bool)
    }


def _parse_holds(holds: Any) -> tuple[tuple[int, str | int], ...]:
    if not isinstance(holds, list):
        raise RouteError(f'\'holds\' must be a list of {{"placement_id": N, "role": "start"}}, got {_kind(holds)}')
    out: list[tuple[int, str | int]] = []
    for i, hold in enumerate(holds):
        if not isinstance(hold, dict) or "placement_id" not in hold or "role" not in hold:
            raise RouteError(f"holds[{i}] must be an object with 'placement_id' and 'role'")
        extra = set(hold) - HOLD_KEYS
        if extra:
            raise RouteError(f"holds[{i}] has unknown field(s) {', '.join(sorted(map(shown, extra)))}")
        placement = _integer(hold["placement_id"], f"holds[{i}].placement_id")
        role = hold["role"]
        if (isinstance(role, str) and role) or (isinstance(role, int) and not isinstance(role, bool)):
            out.append((placement, role))
        else:
            raise RouteError(
                f"holds[{i}].role must be a role name such as 'start' or an Aurora role id, got {_kind(role)}"
            )
    return tuple(out)


def _integer(value: Any, name: str) -> int:
    """JSON numbers that are whole (40 or 40.0) are accepted; anything else is an error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RouteError(f"'{name}' must be a whole number, got {_kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise RouteError(f"'{name}' must be a whole number, got {value!r}")
        return int(value)
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return f"{type(value).__name__} {shown(value)}"
    return type(value).__name__


def shown(value: Any, limit: int = 60) -> str:
    """A user's value as an error message quotes it: on one line (repr escapes newlines) and short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
