"""The contract between the exporter and every host: ONNX tensor names, dtypes and problem bits (model format 2).

The graph grades a route from Aurora's own ids (docs/model-format.md): a host parses a route, looks
its layout up in the sidecar's `layouts` list, and passes the numbers of its frames string. The
exporter imports these names; nothing else spells them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .tokenizer import RouteIds

MODEL_FORMAT = 2  # the sidecar's format_version: format 1 graphs took token_ids, coords and attention_mask

LAYOUT = "layout"  # int64 [batch]: position of the route's (board, layout_id) in the sidecar's "layouts"
ANGLE = "angle"  # int64 [batch]: wall angle in degrees
PLACEMENT_ID = "placement_id"  # int64 [batch, holds >= 1]: p<placement> of each frame, in any order; 0 pads
ROLE_ID = "role_id"  # int64 [batch, holds >= 1]: r<role> of each frame (the board's own role ids); 0 pads
DIFFICULTY = "difficulty"  # float32 [batch]: Aurora display_difficulty
LOW = "low"  # float32 [batch]: lower end of the model's calibrated interval (see INTERVAL_COVERAGE)
HIGH = "high"  # float32 [batch]: upper end
PROBLEMS = "problems"  # int64 [batch]: 0 for a route the graph can grade, else PROBLEM_BITS or'ed together

INPUTS = ((LAYOUT, "int64"), (ANGLE, "int64"), (PLACEMENT_ID, "int64"), (ROLE_ID, "int64"))
OUTPUTS = ((DIFFICULTY, "float32"), (PROBLEMS, "int64"))
# A model with a bins head also outputs an interval; a model without one (value heads) outputs OUTPUTS
# alone, and the runtime answers without low/high.
INTERVAL_OUTPUTS = ((DIFFICULTY, "float32"), (LOW, "float32"), (HIGH, "float32"), (PROBLEMS, "int64"))
INTERVAL_COVERAGE = 0.8  # the share of community grades the interval is calibrated to hold (on validation)

# Why the graph cannot grade a route: its answer for that route means nothing.
PROBLEM_BITS = {
    "unknown_layout": 1,  # `layout` is not a position in the sidecar's layouts
    "placement": 2,  # a placement id is not on the layout
    "role": 4,  # a role id is not a role of the layout's board
    "angle": 8,  # the angle is not one of the layout's
    "repeated": 16,  # a placement is listed twice
    "no_holds": 32,  # no holds at all
    "too_many_holds": 64,  # more holds than the model takes (the sidecar's tokenizer max_len - 3)
}

# Keys of the ONNX file's metadata_props that tie it to its sidecar.
META_FORMAT = "climbgrade.model_format"
META_VOCAB_SIZE = "climbgrade.vocab_size"
META_MAX_LEN = "climbgrade.max_len"
META_OPSET = "climbgrade.opset"
META_FEATURES = "climbgrade.features"  # how many per-token features the graph computes
META_LAYOUTS = "climbgrade.layouts"  # how many layouts its tables hold


def describe_problems(problems: int) -> str:
    """The names of the bits set in a `problems` value, for a message."""
    return ", ".join(name.replace("_", " ") for name, bit in PROBLEM_BITS.items() if problems & bit) or "none"


def route_feeds(routes: Sequence[RouteIds]) -> dict[str, np.ndarray]:
    """The graph's inputs for a batch, hold axis padded with 0 to the batch's longest route (at least one
    slot wide: a batch of routes without holds is one column of padding, which the graph flags)."""
    if not routes:
        raise ValueError("route_feeds needs at least one route")
    width = max(1, *(len(r.placements) for r in routes))
    placements = np.zeros((len(routes), width), dtype=np.int64)
    roles = np.zeros((len(routes), width), dtype=np.int64)
    for row, route in enumerate(routes):
        placements[row, : len(route.placements)] = route.placements
        roles[row, : len(route.roles)] = route.roles
    return {
        LAYOUT: np.array([r.layout for r in routes], dtype=np.int64),
        ANGLE: np.array([r.angle for r in routes], dtype=np.int64),
        PLACEMENT_ID: placements,
        ROLE_ID: roles,
    }
