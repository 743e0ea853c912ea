"""The contract between the exporter and the runtime: ONNX tensor names, dtypes and batch layout.

The exporter imports these names; nothing else spells them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .tokenizer import Encoded

TOKEN_IDS = "token_ids"  # int64 [batch, seq]
COORDS = "coords"  # float32 [batch, seq, features]: x_norm, y_norm, is_hold, then Tokenizer.features' others
ATTENTION_MASK = "attention_mask"  # int64 [batch, seq]: 1 = token, 0 = padding
DIFFICULTY = "difficulty"  # float32 [batch]: Aurora display_difficulty
LOW = "low"  # float32 [batch]: lower end of the model's calibrated interval (see INTERVAL_COVERAGE)
HIGH = "high"  # float32 [batch]: upper end

INPUTS = ((TOKEN_IDS, "int64"), (COORDS, "float32"), (ATTENTION_MASK, "int64"))
OUTPUTS = ((DIFFICULTY, "float32"),)
# A model with a bins head also outputs an interval; a model without one (older releases, value
# heads) outputs OUTPUTS alone, and the runtime answers without low/high.
INTERVAL_OUTPUTS = OUTPUTS + ((LOW, "float32"), (HIGH, "float32"))
INTERVAL_COVERAGE = 0.8  # the share of community grades the interval is calibrated to hold (on validation)

# Keys of the ONNX file's metadata_props that tie it to its sidecar.
META_VOCAB_SIZE = "climbgrade.vocab_size"
META_MAX_LEN = "climbgrade.max_len"
META_OPSET = "climbgrade.opset"
META_FEATURES = "climbgrade.features"  # width of the coords input


def pad_batch(encoded: Sequence[Encoded]) -> dict[str, np.ndarray]:
    """Stack encoded routes, padding only to the longest in this batch."""
    if not encoded:
        raise ValueError("pad_batch needs at least one route")
    if len(encoded) == 1:  # a single route (the kiosk's case) needs no padding: views, no copies
        ids, coords = encoded[0].ids, encoded[0].coords
        return {TOKEN_IDS: ids[None], COORDS: coords[None], ATTENTION_MASK: np.ones((1, len(ids)), dtype=np.int64)}
    length = max(len(e.ids) for e in encoded)
    ids = np.zeros((len(encoded), length), dtype=np.int64)
    coords = np.zeros((len(encoded), length, encoded[0].coords.shape[1]), dtype=np.float32)
    mask = np.zeros((len(encoded), length), dtype=np.int64)
    for row, item in enumerate(encoded):
        n = len(item.ids)
        ids[row, :n] = item.ids
        coords[row, :n] = item.coords
        mask[row, :n] = 1
    return {TOKEN_IDS: ids, COORDS: coords, ATTENTION_MASK: mask}
