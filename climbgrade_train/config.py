"""The options of a training run: TrainConfig, each option declared once (climbgrade_runtime.options).

cg-train's flags, their checks, recipe files (--config FILE.toml), run.json and the command a
sidecar records are all derived from the fields below and the nested ClimbFilter, SplitRule and
ModelOptions.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from climbgrade_runtime.board_db import ClimbFilter
from climbgrade_runtime.cli import CATALOG_HELP, DB_HELP
from climbgrade_runtime.errors import ClimbgradeError
from climbgrade_runtime.options import (
    build,
    check_options,
    command_words,
    flat_values,
    from_record,
    option,
    recipe_values,
)
from climbgrade_runtime.split import SplitRule
from climbgrade_runtime.tokenizer import BASE_FEATURES, HOLD_TOKEN_SCHEMES, PLACEMENT_ROLE

from .features import FEATURES, compact_features, expand_features
from .model import BINS_HEAD, PLACEMENT_HOLDS, ModelOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the train extra pulls tomli there
    import tomli as tomllib

LOSSES = ("mse", "huber", "l1")
SCHEDULES = ("constant", "cosine")


class TrainError(ClimbgradeError):
    """A run that cannot start or resume as asked."""


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; saved in run.json so --resume and export can rebuild it."""

    databases: tuple[str, ...] = option(
        (),
        f"{DB_HELP[0].upper()}{DB_HELP[1:]} (repeatable). Default: every .db in $CLIMBGRADE_DATA.",
        "data",
        flag="--db",
        metavar="[BOARD=]PATH",
        resumable=True,
    )
    catalog: str | None = option(None, CATALOG_HELP, "data", metavar="PATH", resumable=True)
    climbs: ClimbFilter = field(default_factory=ClimbFilter)
    split: SplitRule = field(default_factory=SplitRule)
    train_fraction: float = option(
        1.0,
        "Train on this seeded share of the training climbs (grouped by climb; validation and test unchanged): "
        "how accuracy grows with data (bench/learning_curve.py).",
        "data",
        minimum=0,
        above=True,
        maximum=1,
    )
    epochs: int = option(
        30, "Maximum epochs (with --resume: a new budget for the run).", "run", minimum=1, resumable=True
    )
    patience: int = option(5, "Early-stopping patience (epochs without a validation MAE gain).", "run", minimum=1)
    refit: bool = option(
        False,
        "Train on the training and validation climbs for exactly --epochs and keep the last epoch "
        "(choose --epochs from a run without it); the test climbs stay held out.",
        "run",
    )
    workers: int = option(
        1,
        "Processes the ensemble's members are split over, one CPU thread each share (2 on a 2-core machine: "
        "about 1.5x faster than 1). Results depend on it: it is part of the run's options.",
        "run",
        minimum=1,
    )
    device: str = option("auto", "auto (GPU when present), cpu, cuda, cuda:1 ...", "run", recorded=False)
    hold_tokens: str = option(
        PLACEMENT_ROLE,
        "One token per (placement, role), or per placement with the role as a feature.",
        "model",
        choices=HOLD_TOKEN_SCHEMES,
    )
    features: tuple[str, ...] = option(
        BASE_FEATURES,
        "Comma-separated per-token features, starting x,y,is_hold; groups stand for several: route@1 (counts, "
        "x/y statistics, moves on <CLS>), shape@1 (move sequence, spans, support); route and shape mean "
        "their newest version. The recorded command names groups with their version.",
        "model",
        comma=True,
        parse=expand_features,
        render=compact_features,
    )
    unk_prob: float = option(
        0.01,
        "Share of training holds replaced by <UNK> so unseen holds are graded sensibly.",
        "optimiser",
        minimum=0,
        maximum=1,
        below=True,
    )
    model: ModelOptions = field(default_factory=ModelOptions)
    bin_sigma: float = option(
        0.0,
        "Bins head's target: 0 splits each grade between its two nearest bins; > 0 spreads it as a "
        "Gaussian this wide (difficulty units), so near misses cost less.",
        "model",
    )
    calibrate: bool = option(
        False,
        "After training, choose --shrink and the width of the 80% interval on the validation climbs and "
        "build both into best.pt (the exported graph then also outputs low and high). Not with --refit.",
        "model",
    )
    teacher: str = option(
        "",
        "Distil: learn this finished bins-head run's distributions (an ensemble; same split and filters). "
        "The student reads routes with the teacher's tokenizer.",
        "distillation",
        metavar="RUN",
    )
    teacher_weight: float = option(
        0.5,
        "Share of the teacher's distribution in a graded row's target; the rest is the community grade.",
        "distillation",
        minimum=0,
        maximum=1,
    )
    teacher_angles: bool = option(
        False, "The teacher also labels every training climb at each other angle its board offers.", "distillation"
    )
    teacher_mirrors: bool = option(
        False, "The teacher also labels every training climb mirrored (layouts with mirrored holes).", "distillation"
    )
    batch_size: int = option(64, "Routes per training step.", "optimiser", minimum=1)
    lr: float = option(3e-4, "Peak learning rate (AdamW).", "optimiser", minimum=0, above=True)
    weight_decay: float = option(1e-2, "AdamW weight decay.", "optimiser", minimum=0)
    grad_clip: float = option(
        1.0, "Largest gradient norm of a step (clipped above it).", "optimiser", minimum=0, above=True
    )
    schedule: str = option(
        "constant",
        "Learning rate after warm-up: constant, or cosine decay to 0 at --epochs.",
        "optimiser",
        choices=SCHEDULES,
    )
    warmup_epochs: float = option(0.0, "Epochs of linear learning-rate warm-up.", "optimiser", minimum=0)
    loss: str = option("mse", "Loss of a value head.", "optimiser", choices=LOSSES)
    huber_delta: float = option(
        1.0, "Huber loss threshold in difficulty units (about one Font grade).", "optimiser", minimum=0, above=True
    )
    ascent_weight_floor: float = option(
        1.0,
        "Weight of a row with no recorded ascents (rises to 1 at 20 ascents); 1 = unweighted.",
        "optimiser",
        minimum=0,
        above=True,
        maximum=1,
    )
    mirror_prob: float = option(
        0.0,
        "Chance a training route is replaced by its left-right mirror (boards with mirrored holes).",
        "optimiser",
        minimum=0,
        maximum=1,
    )
    ema_decay: float = option(
        0.0,
        "Keep an exponential moving average of the weights with this decay per step (0 = off).",
        "optimiser",
        minimum=0,
        maximum=1,
        below=True,
    )
    amp: bool = option(
        False,
        "Mixed precision: training steps under bfloat16 autocast (for GPUs with bfloat16; weights stay float32).",
        "optimiser",
    )

    def __post_init__(self) -> None:
        check_options(self)
        bad = [f for f in self.features if f not in FEATURES]
        if bad or self.features[: len(BASE_FEATURES)] != BASE_FEATURES:
            raise TrainError(
                f"--features must start with {','.join(BASE_FEATURES)} and name only {','.join(compact_features(FEATURES))}"
                + (f" (unknown: {', '.join(bad)})" if bad else "")
            )
        model = self.model
        if PLACEMENT_HOLDS in model.member_holds and self.hold_tokens != PLACEMENT_ROLE:
            raise TrainError(
                f"--member-holds {PLACEMENT_HOLDS} merges the roles of --hold-tokens {PLACEMENT_ROLE}; "
                f"with --hold-tokens {self.hold_tokens} every member already embeds placements"
            )
        if model.head == BINS_HEAD and self.loss != "mse":
            raise TrainError(f"--head {BINS_HEAD} is trained with cross-entropy over the bins: drop --loss {self.loss}")
        if self.bin_sigma < 0 or (self.bin_sigma > 0 and model.head != BINS_HEAD):
            raise TrainError(
                f"--bin-sigma shapes the target of --head {BINS_HEAD}: it needs that head and a width >= 0, "
                f"not {self.bin_sigma}"
            )
        if self.calibrate and (self.refit or model.head != BINS_HEAD):
            raise TrainError(
                f"--calibrate chooses the shrink and interval on validation: it needs --head {BINS_HEAD} and no --refit "
                "(give a refit the values a validation run chose: --shrink and --interval-scale)"
            )
        if model.interval_scale > 0 and model.head != BINS_HEAD:
            raise TrainError(f"--interval-scale needs --head {BINS_HEAD}, not --head {model.head}")
        if not self.teacher and (self.teacher_angles or self.teacher_mirrors):
            raise TrainError("--teacher-angles and --teacher-mirrors are rows a teacher labels: give --teacher RUN")
        if self.teacher and model.head != BINS_HEAD:
            raise TrainError(f"--teacher gives a distribution over bins: the student needs --head {BINS_HEAD}")
        if self.refit and self.train_fraction < 1:
            raise TrainError(
                f"--train-fraction must be above 0 and at most 1 (and 1 with --refit), not {self.train_fraction}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """From run.json's "config": nested, or flat as runs before nested options saved it."""
        return from_record(cls, data)

    def replace(self, **changes: Any) -> TrainConfig:
        """This configuration with options changed by field name, nested ones included (e.g. members=8)."""
        return build(TrainConfig, flat_values(self) | changes)

    def command(self, out: str | Path) -> str:
        """The cg-train command line that trains this configuration (options left at their defaults omitted)."""
        databases = [w for db in self.databases for w in ("--db", db)]
        return shlex.join(["cg-train", *databases, "--out", str(out), *command_words(self, skip=("databases",))])


def read_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe file's option values by field name: TOML whose keys are cg-train's flags without --."""
    try:
        with open(path, "rb") as handle:
            recipe = tomllib.load(handle)
    except OSError as exc:
        raise TrainError(f"cannot read the recipe {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TrainError(f"{path} is not valid TOML: {exc}") from exc
    return recipe_values(TrainConfig, recipe, str(path))
