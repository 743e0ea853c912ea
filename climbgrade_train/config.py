"""The options of a training run: TrainConfig (saved in run.json) and the values its options take."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from climbgrade_runtime.board_db import ClimbFilter
from climbgrade_runtime.errors import ClimbgradeError
from climbgrade_runtime.split import SplitRule
from climbgrade_runtime.tokenizer import BASE_FEATURES, PLACEMENT_ROLE

from .features import FEATURES, compact_features
from .model import BINS_HEAD, COORD_ENCODINGS, HEADS, MEMBER_HOLDS, PLACEMENT_HOLDS, VALUE_HEAD

LOSSES = ("mse", "huber", "l1")
SCHEDULES = ("constant", "cosine")
READOUTS = ("cls", "cls+sum", "cls+features")


class TrainError(ClimbgradeError):
    """A run that cannot start or resume as asked."""


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; saved in run.json so --resume and export can rebuild it."""

    databases: tuple[str, ...]
    catalog: str | None = None  # the geometry of Boardsesh snapshots among `databases`
    min_ascents: int = 0
    layouts: tuple[int, ...] = ()
    min_angle: int | None = None
    max_angle: int | None = None
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    patience: int = 5
    unk_prob: float = 0.01  # share of training hold tokens replaced by <UNK>, so <UNK> is learnt
    hold_tokens: str = PLACEMENT_ROLE  # tokenizer scheme (see climbgrade_runtime.tokenizer)
    features: tuple[str, ...] = BASE_FEATURES
    loss: str = "mse"
    huber_delta: float = 1.0  # in difficulty units (about one Font grade)
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    ascent_weight_floor: float = 1.0  # < 1: rows with few ascents (noisy grades) weigh down to this
    mirror_prob: float = 0.0  # chance a training route is replaced by its mirror (holes.mirrored_hole_id)
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    d_ff: int = 256
    dropout: float = 0.1
    readout: str = "cls"
    head: str = VALUE_HEAD  # "bins": a distribution over difficulty bins, trained with cross-entropy (see ModelConfig)
    bin_sigma: float = 0.0  # bins head's target: 0 = split between the two nearest bins; > 0 = a Gaussian this wide
    shrink: float = 1.0  # predictions pulled toward the training mean by this factor (ModelConfig.shrink)
    calibrate: bool = False  # after training, choose --shrink and the interval's width on validation, into best.pt
    interval_scale: float = 0.0  # the interval's width for a run with no validation (--refit): see ModelConfig
    teacher: str = ""  # a finished bins-head run whose distributions the network learns (distill.py)
    teacher_weight: float = 0.5  # share of the teacher in a graded row's target (the rest: the community grade)
    teacher_angles: bool = False  # the teacher also labels each training climb at every other angle of its board
    teacher_mirrors: bool = False  # ... and each training climb mirrored, where the layout has mirrors
    coord_encoding: str = "linear"
    members: int = 1
    member_holds: tuple[str, ...] = ()  # cycled over members: "token" or "placement" (see ModelConfig)
    ema_decay: float = 0.0  # > 0: validate, keep and export an exponential moving average of the weights
    workers: int = 1  # processes the members are split over (climbgrade_train.workers)
    refit: bool = False  # train on train + val for exactly `epochs` and keep the last epoch; test stays held out
    train_fraction: float = 1.0  # < 1: train on this seeded share of the training climbs (learning curves)
    device: str = "auto"
    amp: bool = False  # training steps in bfloat16 autocast (mixed precision; weights and evaluation stay float32)

    def __post_init__(self) -> None:
        bad = [f for f in self.features if f not in FEATURES]
        if bad or self.features[: len(BASE_FEATURES)] != BASE_FEATURES:
            raise TrainError(
                f"--features must start with {','.join(BASE_FEATURES)} and name only {','.join(compact_features(FEATURES))}"
                + (f" (unknown: {', '.join(bad)})" if bad else "")
            )
        bad_holds = [h for h in self.member_holds if h not in MEMBER_HOLDS]
        if bad_holds:
            raise TrainError(f"--member-holds takes {', '.join(MEMBER_HOLDS)}, not {', '.join(bad_holds)}")
        if PLACEMENT_HOLDS in self.member_holds and self.hold_tokens != PLACEMENT_ROLE:
            raise TrainError(
                f"--member-holds {PLACEMENT_HOLDS} merges the roles of --hold-tokens {PLACEMENT_ROLE}; "
                f"with --hold-tokens {self.hold_tokens} every member already embeds placements"
            )
        for name, value, allowed in (
            ("loss", self.loss, LOSSES),
            ("schedule", self.schedule, SCHEDULES),
            ("readout", self.readout, READOUTS),
            ("head", self.head, HEADS),
            ("coord-encoding", self.coord_encoding, COORD_ENCODINGS),
        ):
            if value not in allowed:
                raise TrainError(f"--{name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.head == BINS_HEAD and self.loss != "mse":
            raise TrainError(f"--head {BINS_HEAD} is trained with cross-entropy over the bins: drop --loss {self.loss}")
        if self.bin_sigma < 0 or (self.bin_sigma > 0 and self.head != BINS_HEAD):
            raise TrainError(
                f"--bin-sigma shapes the target of --head {BINS_HEAD}: it needs that head and a width >= 0, "
                f"not {self.bin_sigma}"
            )
        if not 0 < self.shrink <= 1:
            raise TrainError(f"--shrink must be above 0 and at most 1, not {self.shrink}")
        if self.calibrate and (self.refit or self.head != BINS_HEAD):
            raise TrainError(
                f"--calibrate chooses the shrink and interval on validation: it needs --head {BINS_HEAD} and no --refit "
                "(give a refit the values a validation run chose: --shrink and --interval-scale)"
            )
        if self.interval_scale < 0 or (self.interval_scale > 0 and self.head != BINS_HEAD):
            raise TrainError(f"--interval-scale needs --head {BINS_HEAD} and a value >= 0, not {self.interval_scale}")
        if not self.teacher and (self.teacher_angles or self.teacher_mirrors):
            raise TrainError("--teacher-angles and --teacher-mirrors are rows a teacher labels: give --teacher RUN")
        if self.teacher and self.head != BINS_HEAD:
            raise TrainError(f"--teacher gives a distribution over bins: the student needs --head {BINS_HEAD}")
        if not 0 <= self.teacher_weight <= 1:
            raise TrainError(f"--teacher-weight must be between 0 and 1, not {self.teacher_weight}")
        if self.workers < 1:
            raise TrainError(f"--workers must be at least 1, not {self.workers}")
        if not 0 < self.train_fraction <= 1 or (self.refit and self.train_fraction < 1):
            raise TrainError(
                f"--train-fraction must be above 0 and at most 1 (and 1 with --refit), not {self.train_fraction}"
            )

    @property
    def climb_filter(self) -> ClimbFilter:
        return ClimbFilter(self.min_ascents, self.layouts, self.min_angle, self.max_angle)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        data["databases"] = tuple(data["databases"])
        data["layouts"] = tuple(data["layouts"])
        data["features"] = tuple(data.get("features", BASE_FEATURES))
        data["member_holds"] = tuple(data.get("member_holds", ()))
        return cls(**data)

    def command(self, out: str | Path) -> str:
        """The cg-train command line that trains this configuration (options left at their defaults omitted)."""
        flags = {
            "databases": "--db",
            "layouts": "--layout",
            "n_heads": "--heads",
            "n_layers": "--layers",
            "d_ff": "--ff",
        }
        words = ["cg-train"] + [w for db in self.databases for w in ("--db", db)] + ["--out", str(out)]
        defaults = TrainConfig(databases=())
        for name, value in self.to_dict().items():
            if name in ("databases", "device") or value == getattr(defaults, name):
                continue
            flag = flags.get(name, "--" + name.replace("_", "-"))
            if isinstance(value, bool):  # a flag, written only when on (the default is off)
                words += [flag]
            elif name == "features":
                words += [flag, ",".join(compact_features(value))]
            elif name == "member_holds":
                words += [flag, ",".join(value)]
            elif isinstance(value, tuple):
                words += [w for item in value for w in (flag, str(item))]
            else:
                words += [flag, str(value)]
        return shlex.join(words)

    @property
    def split_rule(self) -> SplitRule:
        return SplitRule(self.seed, self.val_fraction, self.test_fraction)
