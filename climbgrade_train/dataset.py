"""Training data: rows encoded by the model's own RouteEncoder (features.py), length-bucketed batches.

A row is read from the database as the runtime's host reads a route (Tokenizer.ids: Aurora ids),
and its token ids and features are what the exported graph computes from those ids, run here once
per row in big batches (what the network then trains on, epoch after epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from climbgrade_runtime.graded import Example
from climbgrade_runtime.model_io import route_feeds
from climbgrade_runtime.tokenizer import RouteIds, Tokenizer

from .features import RouteEncoder

ENCODE_BATCH = 1024  # rows per RouteEncoder call when a set is built


@dataclass(frozen=True)
class Encoded:
    """One row as the network reads it: token ids [L] and per-token features [L, len(Tokenizer.features)]."""

    ids: np.ndarray
    coords: np.ndarray


class Batch(NamedTuple):
    """Rows stacked for the network, padded to the longest: ids [B, L], coords [B, L, F], padding [B, L] (True = pad)."""

    token_ids: np.ndarray
    coords: np.ndarray
    padding: np.ndarray


def pad_batch(encoded: Sequence[Encoded]) -> Batch:
    """Stack encoded rows, padding only to the longest in this batch."""
    if not encoded:
        raise ValueError("pad_batch needs at least one row")
    length = max(len(e.ids) for e in encoded)
    ids = np.zeros((len(encoded), length), dtype=np.int64)
    coords = np.zeros((len(encoded), length, encoded[0].coords.shape[1]), dtype=np.float32)
    padding = np.ones((len(encoded), length), dtype=bool)
    for row, item in enumerate(encoded):
        n = len(item.ids)
        ids[row, :n] = item.ids
        coords[row, :n] = item.coords
        padding[row, :n] = False
    return Batch(ids, coords, padding)


@torch.inference_mode()
def encode_rows(encoder: RouteEncoder, rows: Sequence[RouteIds]) -> list[Encoded]:
    """Each row's tokens and features, computed by `encoder` in batches of similar length."""
    out: list[Encoded | None] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].placements))
    for start in range(0, len(order), ENCODE_BATCH):
        chunk = order[start : start + ENCODE_BATCH]
        feeds = route_feeds([rows[i] for i in chunk])
        ids, coords, padding, problems = encoder(*(torch.from_numpy(v) for v in feeds.values()))
        if problems.any():
            raise ValueError("a training row has ids the model's tables refuse (the loader should have skipped it)")
        lengths = (~padding).sum(dim=1).tolist()
        for row, i, n in zip(range(len(chunk)), chunk, lengths):
            out[i] = Encoded(ids[row, :n].numpy(), coords[row, :n].numpy())
    return [e for e in out if e is not None]


@dataclass
class EncodedSet:
    """One split, encoded: what the training loop and evaluation iterate over."""

    examples: list[Example]
    rows: list[RouteIds]  # each row as the exported graph takes it
    encoded: list[Encoded]
    targets: np.ndarray
    lengths: np.ndarray
    ascents: np.ndarray
    mirrored: list[Encoded | None] | None = None  # for mirror augmentation (training set only)
    teacher: np.ndarray | None = None  # [rows, bins] a teacher's distributions (distill.py; training set only)

    @classmethod
    def build(cls, examples: list[Example], tokenizer: Tokenizer, mirrors: bool = False) -> EncodedSet:
        encoder = RouteEncoder(tokenizer)
        rows = [tokenizer.ids(e.route) for e in examples]
        encoded = encode_rows(encoder, rows)
        mirrored = None
        if mirrors:
            flipped = [e.route.mirrored() for e in examples]
            found = encode_rows(encoder, [tokenizer.ids(m) for m in flipped if m is not None])
            iterator = iter(found)
            mirrored = [None if m is None else next(iterator) for m in flipped]
        return cls(
            examples=examples,
            rows=rows,
            encoded=encoded,
            targets=np.array([e.difficulty for e in examples], dtype=np.float32),
            lengths=np.array([len(x.ids) for x in encoded], dtype=np.int64),
            ascents=np.array([e.ascents for e in examples], dtype=np.int64),
            mirrored=mirrored,
        )

    def training_batch(self, idx: np.ndarray, mirror_prob: float, rng: np.random.Generator) -> list[Encoded]:
        """The routes of one batch, each replaced by its mirror (when it has one) with `mirror_prob`."""
        if self.mirrored is None or mirror_prob <= 0:
            return [self.encoded[i] for i in idx]
        flips = rng.random(len(idx)) < mirror_prob
        return [self.mirrored[i] or self.encoded[i] if flip else self.encoded[i] for i, flip in zip(idx, flips)]

    def __len__(self) -> int:
        return len(self.encoded)

    @property
    def boards(self) -> list[str]:
        return [e.board for e in self.examples]

    def predict_with(self, run_batch: Callable[[Batch], np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Predictions for the whole split in its own order, from length-grouped runtime batches.

        `run_batch` is PyTorch on the network's inputs (training, calibration, export's int8 check).
        """
        return self.outputs_with(lambda batch: (run_batch(batch),), batch_size)[0]

    def outputs_with(
        self, run_batch: Callable[[Batch], tuple[np.ndarray, ...]], batch_size: int = 256
    ) -> tuple[np.ndarray, ...]:
        """predict_with for a model with several outputs (difficulty, low, high): one array each."""
        return self._collect(lambda idx: run_batch(pad_batch([self.encoded[i] for i in idx])), batch_size)

    def graph_outputs_with(
        self, run_feeds: Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]], batch_size: int = 256
    ) -> tuple[np.ndarray, ...]:
        """outputs_with for an exported graph: `run_feeds` (onnxruntime) on each batch's model_io feeds."""
        return self._collect(lambda idx: run_feeds(route_feeds([self.rows[i] for i in idx])), batch_size)

    def _collect(self, run: Callable[[np.ndarray], Sequence[np.ndarray]], batch_size: int) -> tuple[np.ndarray, ...]:
        """`run` on length-grouped index batches, its outputs put back in the split's order."""
        outs: list[np.ndarray] = []
        for idx in length_batches(self.lengths, batch_size):
            found = run(idx)
            if not outs:
                outs = [np.empty(len(self), dtype=v.dtype) for v in found]
            for out, values in zip(outs, found):
                out[idx] = values
        return tuple(outs)


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Index batches of routes of similar length (each padded only to its own max).

    With `rng`, ties are broken randomly and the batch order is shuffled (training); without it
    the order is deterministic (evaluation).
    """
    if rng is None:
        order = np.argsort(lengths, kind="stable")
    else:
        order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
