"""Training data: routes encoded by the runtime's tokenizer, length-bucketed batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from climbgrade_runtime.graded import Example
from climbgrade_runtime.model_io import pad_batch
from climbgrade_runtime.tokenizer import Encoded, Tokenizer


@dataclass
class EncodedSet:
    """One split, encoded: what the training loop and evaluation iterate over."""

    examples: list[Example]
    encoded: list[Encoded]
    targets: np.ndarray
    lengths: np.ndarray
    ascents: np.ndarray
    mirrored: list[Encoded | None] | None = None  # for mirror augmentation (training set only)
    teacher: np.ndarray | None = None  # [rows, bins] a teacher's distributions (distill.py; training set only)

    @classmethod
    def build(cls, examples: list[Example], tokenizer: Tokenizer, mirrors: bool = False) -> EncodedSet:
        encoded = [tokenizer.encode_resolved(e.route) for e in examples]
        mirrored = None
        if mirrors:
            mirrored = [
                None if m is None else tokenizer.encode_resolved(m) for m in (e.route.mirrored() for e in examples)
            ]
        return cls(
            examples=examples,
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

    def predict_with(
        self, run_batch: Callable[[dict[str, np.ndarray]], np.ndarray], batch_size: int = 256
    ) -> np.ndarray:
        """Predictions for the whole split in its own order, from length-grouped runtime batches.

        `run_batch` is PyTorch (training) or onnxruntime (export checks): one loop serves both.
        """
        return self.outputs_with(lambda batch: (run_batch(batch),), batch_size)[0]

    def outputs_with(
        self, run_batch: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, ...]], batch_size: int = 256
    ) -> tuple[np.ndarray, ...]:
        """predict_with for a model with several outputs (difficulty, low, high): one array each."""
        outs: list[np.ndarray] = []
        for idx in length_batches(self.lengths, batch_size):
            found = run_batch(pad_batch([self.encoded[i] for i in idx]))
            if not outs:
                outs = [np.empty(len(self), dtype=np.float32) for _ in found]
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
