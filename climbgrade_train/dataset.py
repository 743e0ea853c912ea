"""Training data: graded routes from boardlib databases, a seeded climb-grouped split, batches."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from climbgrade_runtime.boardlib_db import ClimbFilter, open_database
from climbgrade_runtime.errors import DatabaseError, RouteError
from climbgrade_runtime.geometry import LayoutGeometry
from climbgrade_runtime.grades import GradeTable
from climbgrade_runtime.model_io import pad_batch
from climbgrade_runtime.routes import Route, parse_frames
from climbgrade_runtime.tokenizer import PREFIX_TOKENS, Encoded, ResolvedRoute, Tokenizer, resolve_route

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Example:
    """One graded (climb, angle) row, checked against its board's geometry."""

    uuid: str
    board: str
    layout_id: int
    angle: int
    difficulty: float
    ascents: int
    route: ResolvedRoute


@dataclass
class LoadedData:
    examples: list[Example]
    layouts: dict[tuple[str, int], LayoutGeometry]
    grades: GradeTable
    summary: dict[str, object] = field(default_factory=dict)

    @property
    def max_len(self) -> int:
        """Sequence length that covers the longest route loaded."""
        return PREFIX_TOKENS + max(len(e.route.holds) for e in self.examples)


def load_examples(db_specs: Sequence[str], where: ClimbFilter) -> LoadedData:
    """Read every usable row; unusable climbs are skipped and counted, never fatal."""
    if not db_specs:
        raise DatabaseError("no database given: pass --db PATH (or set CLIMBGRADE_DATA to a folder of .db files)")
    examples: list[Example] = []
    layouts: dict[tuple[str, int], LayoutGeometry] = {}
    grades: GradeTable | None = None
    db_summaries = []
    for spec in db_specs:
        db = open_database(spec)
        rows = db.read_climbs(where)
        for layout in db.read_layouts({r.layout_id for r in rows}).values():
            if layouts.setdefault(layout.key, layout) != layout:
                raise DatabaseError(f"{db.path}: layout {layout.board}/{layout.layout_id} differs from another database's")
        table = db.read_grades()
        if grades is not None and table != grades:
            raise DatabaseError(f"{db.path}: its difficulty_grades table differs from the first database's")
        grades = table
        skipped: Counter[str] = Counter()
        first_skip: dict[str, str] = {}
        kept = 0
        for row in rows:
            try:
                route = Route(row.board, row.layout_id, row.angle, parse_frames(row.frames))
                resolved = resolve_route(route, layouts)
            except RouteError as exc:
                reason = _reason(str(exc))
                skipped[reason] += 1
                first_skip.setdefault(reason, f"climb {row.uuid} at {row.angle} deg: {exc}")
                continue
            examples.append(Example(row.uuid, row.board, row.layout_id, row.angle, row.difficulty, row.ascents, resolved))
            kept += 1
        for reason, count in skipped.items():
            logger.warning("%s: skipped %d row(s) where %s (e.g. %s)", db.path, count, reason, first_skip[reason])
        logger.info("%s: %s board, %d usable climb x angle rows", db.path, db.board, kept)
        db_summaries.append({"path": str(db.path), "board": db.board, "rows": kept, "skipped": dict(skipped)})
    if not examples or grades is None:
        raise DatabaseError("no usable climbs in the given database(s) with these filters")
    summary = {
        "databases": db_summaries,
        "filter": {"min_ascents": where.min_ascents, "layouts": list(where.layouts),
                   "min_angle": where.min_angle, "max_angle": where.max_angle},
        "rows": len(examples),
        "climbs": len({e.uuid for e in examples}),
        "rows_by_board": dict(sorted(Counter(e.board for e in examples).items())),
    }
    return LoadedData(examples, layouts, grades, summary)


def _reason(message: str) -> str:
    """Group skip messages by kind (the message text without its numbers)."""
    return " ".join("N" if word.strip("'\",()").isdigit() else word for word in message.split())


def split_climbs(examples: Sequence[Example], seed: int, val_fraction: float, test_fraction: float) -> dict[str, list[str]]:
    """Seeded split of climb uuids, per board, so one climb's angles never straddle two splits."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("val and test fractions must be in (0, 1) and sum below 1")
    by_board: dict[str, set[str]] = defaultdict(set)
    for e in examples:
        by_board[e.board].add(e.uuid)
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    for board in sorted(by_board):
        uuids = sorted(by_board[board])
        order = rng.permutation(len(uuids))
        n_test = max(1, round(len(uuids) * test_fraction))
        n_val = max(1, round(len(uuids) * val_fraction))
        out["test"] += [uuids[i] for i in order[:n_test]]
        out["val"] += [uuids[i] for i in order[n_test : n_test + n_val]]
        out["train"] += [uuids[i] for i in order[n_test + n_val :]]
    return {name: sorted(ids) for name, ids in out.items()}


@dataclass
class EncodedSet:
    """One split, encoded: what the training loop and evaluation iterate over."""

    examples: list[Example]
    encoded: list[Encoded]
    targets: np.ndarray
    lengths: np.ndarray

    @classmethod
    def build(cls, examples: list[Example], tokenizer: Tokenizer) -> "EncodedSet":
        encoded = [tokenizer.encode_resolved(e.route) for e in examples]
        return cls(
            examples=examples,
            encoded=encoded,
            targets=np.array([e.difficulty for e in examples], dtype=np.float32),
            lengths=np.array([len(x.ids) for x in encoded], dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def boards(self) -> list[str]:
        return [e.board for e in self.examples]

    def predict_with(self, run_batch: Callable[[dict[str, np.ndarray]], np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Predictions for the whole split in its own order, from length-grouped runtime batches.

        `run_batch` is PyTorch (training) or onnxruntime (export checks): one loop serves both.
        """
        out = np.empty(len(self), dtype=np.float32)
        for idx in length_batches(self.lengths, batch_size):
            out[idx] = run_batch(pad_batch([self.encoded[i] for i in idx]))
        return out


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
