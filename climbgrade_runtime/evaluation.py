"""`cg-eval`'s library: score an exported model on every usable route of boardlib databases.

This is how a gym checks a model on its own board's data, and how the README's figures are
reproduced: with `split="test"` only the climbs the model's sidecar says it was tested on count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .boardlib_db import ClimbFilter
from .errors import ModelError
from .graded import load_examples, skip_reason
from .metrics import METRIC_NAMES, metrics_by_board
from .predictor import DEFAULT_BATCH_SIZE, GradePredictor, Prediction, RouteFailure
from .routes import Route
from .split import SPLITS, SplitRule, uuid_digest
from .tokenizer import UNSEEN_HOLDS

_HEADERS = ("board", "rows", "MAE", "RMSE", "R2", "<=1 diff", "<=2 diff", "exact V", "<=1 V", "<=2 V")


@dataclass(frozen=True)
class Evaluation:
    """Metrics overall ('all') and per board, with what was left out and why."""

    model: str
    split: str  # "all", or one of SPLITS
    min_ascents: int
    metrics: dict[str, dict[str, float]]
    not_graded: dict[str, int] = field(default_factory=dict)  # reason -> rows the model could not grade
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "split": self.split, "min_ascents": self.min_ascents, "metrics": self.metrics,
                "not_graded": self.not_graded, "notes": list(self.notes)}

    def table(self) -> str:
        lines = [f"model {self.model}  split {self.split}  min ascents {self.min_ascents}",
                 "  ".join(f"{h:>8}" for h in _HEADERS)]
        for board, m in self.metrics.items():
            cells = [board, f"{m['count']:,}", f"{m['mae']:.3f}", f"{m['rmse']:.3f}", f"{m['r2']:.3f}"]
            cells += [f"{100 * m[name]:.1f}%" for name in METRIC_NAMES[3:]]
            lines.append("  ".join(f"{c:>8}" for c in cells))
        return "\n".join(lines)


def evaluate(
    predictor: GradePredictor,
    databases: Sequence[str],
    *,
    min_ascents: int = 0,
    split: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Evaluation:
    """Grade every usable (climb, angle) row of `databases` (only `split`'s climbs, if given) and score it."""
    data = load_examples(databases, ClimbFilter(min_ascents=min_ascents))
    examples = data.examples
    notes: list[str] = []
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}")
        rule = SplitRule.from_dict(predictor.sidecar.data.get("split"))
        examples = [e for e in examples if rule.assign(e.uuid) == split]
        if split == "test":
            notes.append(_test_split_note(predictor.sidecar.data["split"], {e.uuid for e in examples}))
    routes = [Route(e.board, e.layout_id, e.angle, e.route.holds) for e in examples]
    results = predictor.predict_many(routes, batch_size=batch_size)
    graded = [(e, r) for e, r in zip(examples, results) if isinstance(r, Prediction)]
    not_graded = Counter(skip_reason(r.error) for r in results if isinstance(r, RouteFailure))
    if not graded:
        raise ModelError(f"this model could grade none of the {len(examples)} rows selected: "
                         + (", ".join(f"{n} where {why}" for why, n in not_graded.items()) or "the selection is empty"))
    unseen = sum(any(UNSEEN_HOLDS in w for w in r.warnings) for _, r in graded)
    if unseen:
        notes.append(f"{unseen} of {len(graded)} rows have holds the model never saw in training")
    metrics = metrics_by_board(
        [e.board for e, _ in graded],
        np.array([e.difficulty for e, _ in graded]),
        np.array([r.difficulty for _, r in graded]),
        predictor.grades,
    )
    return Evaluation(str(predictor.model_path), split or "all", min_ascents, metrics, dict(not_graded), tuple(notes))


def _test_split_note(recorded: dict[str, Any], found: set[str]) -> str:
    """Say whether these databases hold exactly the climbs the model was tested on."""
    expected = recorded.get("test_climbs")
    if recorded.get("test_climbs_sha256") == uuid_digest(found):
        return f"test climbs: the same {len(found)} climbs the model was tested on"
    return (f"test climbs: {len(found)} found here, {expected} in the model's test split (other databases or "
            "filters): these figures are not the sidecar's")
