"""Training data: rows encoded by the model's own RouteEncoder (features.py), length-bucketed batches.

A row is read from the database as the runtime's host reads a route (Tokenizer.ids: Aurora ids),
and its token ids and features are what the exported graph computes from those ids, run here once
per row in big batches (what the network then trains on, epoch after epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from climbgrade_runtime.graded import Example
from climbgrade_runtime.model_io import route_feeds
from climbgrade_runtime.tokenizer import PREFIX_TOKENS, RouteIds, Tokenizer

from .features import RouteEncoder

ENCODE_BATCH = 1024  # rows per RouteEncoder call when a set is built


@dataclass(frozen=True)
class Encoded:
    """One row as the network reads it: token ids [L] and per-token features [L, len(Tokenizer.features)]."""

    ids: np.ndarray
    coords: np.ndarray


@dataclass(frozen=True)
class PackedRows:
    """Encoded rows end to end in three flat arrays, row i's tokens at offsets[i]:offsets[i + 1].

    A full catalogue is a few hundred thousand rows: as arrays they cost their bytes and nothing per row
    (no Python object, which would also be copied into every --workers process as its refcounts change).
    """

    ids: np.ndarray  # [tokens] int32
    coords: np.ndarray  # [tokens, features] float32
    offsets: np.ndarray  # [rows + 1] int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> Encoded:
        start, end = self.offsets[row], self.offsets[row + 1]
        return Encoded(self.ids[start:end], self.coords[start:end])

    def __iter__(self) -> Iterator[Encoded]:
        return (self[row] for row in range(len(self)))

    def __add__(self, other: PackedRows) -> PackedRows:
        return PackedRows(
            np.concatenate([self.ids, other.ids]),
            np.concatenate([self.coords, other.coords]),
            np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]]),
        )

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


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
def encode_rows(encoder: RouteEncoder, rows: Sequence[RouteIds]) -> PackedRows:
    """Each row's tokens and features, computed by `encoder` in batches of similar length, packed in row order.

    A row is PREFIX_TOKENS and one token per hold, so where each row goes is known before it is encoded
    and each batch is written straight into place (no second copy of the set).
    """
    lengths = np.array([PREFIX_TOKENS + len(r.placements) for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids_out = np.empty(offsets[-1], dtype=np.int32)
    coords_out = np.empty((offsets[-1], len(encoder.features)), dtype=np.float32)
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), ENCODE_BATCH):
        chunk = order[start : start + ENCODE_BATCH]
        feeds = route_feeds([rows[i] for i in chunk])
        ids, coords, padding, problems = encoder(*(torch.from_numpy(v) for v in feeds.values()))
        if problems.any():
            raise ValueError("a training row has ids the model's tables refuse (the loader should have skipped it)")
        kept = ~padding
        if not np.array_equal(kept.sum(dim=1).numpy(), lengths[chunk]):
            raise ValueError("the encoder gave a row other than one token per hold after its prefix")
        where = np.repeat(offsets[chunk] - (np.cumsum(lengths[chunk]) - lengths[chunk]), lengths[chunk])
        where += np.arange(len(where))  # each token's place: its row's start, plus its place within the batch
        ids_out[where] = ids[kept].numpy()
        coords_out[where] = coords[kept].numpy()
    return PackedRows(ids_out, coords_out, offsets)


@dataclass
class EncodedSet:
    """One split, encoded: what the training loop and evaluation iterate over."""

    examples: list[Example]
    rows: list[RouteIds]  # each row as the exported graph takes it
    encoded: PackedRows
    targets: np.ndarray
    lengths: np.ndarray
    ascents: np.ndarray
    # For mirror augmentation (training set only): the mirrors, and per row its mirror's index there (-1: none).
    mirrored: tuple[PackedRows, np.ndarray] | None = None
    teacher: np.ndarray | None = None  # [rows, bins] a teacher's distributions (distill.py; training set only)

    @classmethod
    def build(cls, examples: list[Example], tokenizer: Tokenizer, mirrors: bool = False) -> EncodedSet:
        encoder = RouteEncoder(tokenizer)
        rows = [tokenizer.ids(e.route) for e in examples]
        encoded = encode_rows(encoder, rows)
        mirrored = None
        if mirrors:
            flipped = [e.route.mirrored() for e in examples]
            has = np.array([m is not None for m in flipped], dtype=bool)
            found = encode_rows(encoder, [tokenizer.ids(m) for m in flipped if m is not None])
            mirrored = (found, np.where(has, np.cumsum(has) - 1, -1))
        return cls(
            examples=examples,
            rows=rows,
            encoded=encoded,
            targets=np.array([e.difficulty for e in examples], dtype=np.float32),
            lengths=encoded.lengths,
            ascents=np.array([e.ascents for e in examples], dtype=np.int64),
            mirrored=mirrored,
        )

    def training_batch(self, idx: np.ndarray, mirror_prob: float, rng: np.random.Generator) -> list[Encoded]:
        """The routes of one batch, each replaced by its mirror (when it has one) with `mirror_prob`."""
        if self.mirrored is None or mirror_prob <= 0:
            return [self.encoded[i] for i in idx]
        mirrors, index = self.mirrored
        flips = rng.random(len(idx)) < mirror_prob
        return [mirrors[index[i]] if flip and index[i] >= 0 else self.encoded[i] for i, flip in zip(idx, flips)]

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
