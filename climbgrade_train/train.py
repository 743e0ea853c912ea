"""Training: seeded climb-grouped split, length-bucketed batches, early stopping, resumable runs.

A run folder holds everything export needs: best.pt, last.pt (for --resume), run.json
(options, data summary, model config), tokenizer.json, grades.json, split.json, history.csv,
test_predictions.csv and metrics.json.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from climbgrade_runtime.boardlib_db import ClimbFilter
from climbgrade_runtime.errors import ClimbgradeError
from climbgrade_runtime.files import atomic_write_bytes, atomic_write_text
from climbgrade_runtime.graded import LoadedData, load_examples
from climbgrade_runtime.grades import GradeTable
from climbgrade_runtime.metrics import metrics_by_board, regression_metrics
from climbgrade_runtime.model_io import ATTENTION_MASK, COORDS, TOKEN_IDS, pad_batch
from climbgrade_runtime.split import SPLITS, SplitRule, hash_fraction
from climbgrade_runtime.tokenizer import BASE_FEATURES, FEATURES, PLACEMENT_ROLE, UNK_ID, Tokenizer, compact_features

from .calibration import fit_shrink
from .dataset import EncodedSet, length_batches
from .model import (
    BINS_HEAD, COORD_ENCODINGS, HEADS, MEMBER_HOLDS, PLACEMENT_HOLDS, VALUE_HEAD, GradeModel, GradeTransformer, ModelConfig,
)
from .workers import GroupEpoch, GroupRunner, GroupState, group_random_streams, load_group_weights, member_groups

logger = logging.getLogger(__name__)

LOSSES = ("mse", "huber", "l1")
SCHEDULES = ("constant", "cosine")
READOUTS = ("cls", "cls+sum", "cls+features")


class TrainError(ClimbgradeError):
    """A run that cannot start or resume as asked."""


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; saved in run.json so --resume and export can rebuild it."""

    databases: tuple[str, ...]
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
    coord_encoding: str = "linear"
    members: int = 1
    member_holds: tuple[str, ...] = ()  # cycled over members: "token" or "placement" (see ModelConfig)
    ema_decay: float = 0.0  # > 0: validate, keep and export an exponential moving average of the weights
    workers: int = 1  # processes the members are split over (climbgrade_train.workers)
    refit: bool = False  # train on train + val for exactly `epochs` and keep the last epoch; test stays held out
    train_fraction: float = 1.0  # < 1: train on this seeded share of the training climbs (learning curves)
    device: str = "auto"

    def __post_init__(self) -> None:
        bad = [f for f in self.features if f not in FEATURES]
        if bad or self.features[: len(BASE_FEATURES)] != BASE_FEATURES:
            raise TrainError(f"--features must start with {','.join(BASE_FEATURES)} and name only {','.join(compact_features(FEATURES))}"
                             + (f" (unknown: {', '.join(bad)})" if bad else ""))
        bad_holds = [h for h in self.member_holds if h not in MEMBER_HOLDS]
        if bad_holds:
            raise TrainError(f"--member-holds takes {', '.join(MEMBER_HOLDS)}, not {', '.join(bad_holds)}")
        if PLACEMENT_HOLDS in self.member_holds and self.hold_tokens != PLACEMENT_ROLE:
            raise TrainError(f"--member-holds {PLACEMENT_HOLDS} merges the roles of --hold-tokens {PLACEMENT_ROLE}; "
                             f"with --hold-tokens {self.hold_tokens} every member already embeds placements")
        for name, value, allowed in (("loss", self.loss, LOSSES), ("schedule", self.schedule, SCHEDULES),
                                     ("readout", self.readout, READOUTS), ("head", self.head, HEADS),
                                     ("coord-encoding", self.coord_encoding, COORD_ENCODINGS)):
            if value not in allowed:
                raise TrainError(f"--{name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.head == BINS_HEAD and self.loss != "mse":
            raise TrainError(f"--head {BINS_HEAD} is trained with cross-entropy over the bins: drop --loss {self.loss}")
        if self.bin_sigma < 0 or (self.bin_sigma > 0 and self.head != BINS_HEAD):
            raise TrainError(f"--bin-sigma shapes the target of --head {BINS_HEAD}: it needs that head and a width >= 0, "
                             f"not {self.bin_sigma}")
        if not 0 < self.shrink <= 1:
            raise TrainError(f"--shrink must be above 0 and at most 1, not {self.shrink}")
        if self.workers < 1:
            raise TrainError(f"--workers must be at least 1, not {self.workers}")
        if not 0 < self.train_fraction <= 1 or (self.refit and self.train_fraction < 1):
            raise TrainError(f"--train-fraction must be above 0 and at most 1 (and 1 with --refit), not {self.train_fraction}")

    @property
    def climb_filter(self) -> ClimbFilter:
        return ClimbFilter(self.min_ascents, self.layouts, self.min_angle, self.max_angle)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        data["databases"] = tuple(data["databases"])
        data["layouts"] = tuple(data["layouts"])
        data["features"] = tuple(data.get("features", BASE_FEATURES))
        data["member_holds"] = tuple(data.get("member_holds", ()))
        return cls(**data)

    def command(self, out: str | Path) -> str:
        """The cg-train command line that trains this configuration (options left at their defaults omitted)."""
        flags = {"databases": "--db", "layouts": "--layout", "n_heads": "--heads", "n_layers": "--layers", "d_ff": "--ff"}
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


@dataclass
class RunState:
    """What last.pt saves after each epoch."""

    epoch: int = 0
    best_val_mae: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class PreparedRun:
    """Data, tokenizer and splits of a run, fresh or rebuilt from its folder."""

    config: TrainConfig
    data: LoadedData
    tokenizer: Tokenizer
    split: dict[str, list[str]]
    sets: dict[str, EncodedSet]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_run(config: TrainConfig, out: Path, resume: bool) -> PreparedRun:
    """Load data; a fresh run makes split and tokenizer, a resumed one reads them from `out`."""
    data = load_examples(config.databases, config.climb_filter)
    split = config.split_rule.split(e.uuid for e in data.examples)
    split["train"] = training_subset(split["train"], config.train_fraction, config.seed)
    trained_on = ("train", "val") if config.refit else ("train",)  # --refit trains on val too
    if resume:
        tokenizer = Tokenizer.from_dict(json.loads((out / "tokenizer.json").read_text()))
    else:
        members = {uuid for name in trained_on for uuid in split[name]}
        train_routes = [e.route for e in data.examples if e.uuid in members]
        if config.mirror_prob > 0:  # mirrored holds are trained on too, so they need tokens
            train_routes += [m for m in (r.mirrored() for r in train_routes) if m is not None]
        tokenizer = Tokenizer.build(data.layouts.values(), train_routes, max_len=data.max_len,
                                    hold_tokens=config.hold_tokens, features=config.features)
    where = {uuid: name for name in SPLITS for uuid in split[name]}
    sets = {
        name: EncodedSet.build([e for e in data.examples if where.get(e.uuid) in (trained_on if name == "train" else (name,))],
                               tokenizer, mirrors=name == "train" and config.mirror_prob > 0)
        for name in SPLITS
    }
    for name in SPLITS:
        if not len(sets[name]):
            raise TrainError(f"the {name} split is empty: load more climbs or change the split fractions")
    logger.info("split (seed %d): %s rows%s", config.seed, ", ".join(f"{n} {len(sets[n])}" for n in SPLITS),
                " (--refit: train holds the val rows too; nothing is selected on val)" if config.refit else "")
    return PreparedRun(config, data, tokenizer, split, sets)


def training_subset(uuids: list[str], fraction: float, seed: int) -> list[str]:
    """The training climbs a run with --train-fraction keeps: grouped by climb, seeded, and nested
    (every climb kept at a fraction is kept at any larger one), so the points of a learning curve
    differ only in how much data they saw."""
    return [uuid for uuid in uuids if hash_fraction(f"{seed}/train-subset/{uuid}") < fraction]


def to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runtime batch (model_io names) -> model arguments (ids, coords, padding mask)."""
    ids = torch.from_numpy(batch[TOKEN_IDS]).to(device)
    coords = torch.from_numpy(batch[COORDS]).to(device)
    padding = torch.from_numpy(batch[ATTENTION_MASK] == 0).to(device)
    return ids, coords, padding


@torch.no_grad()
def predict(model: GradeModel, data: EncodedSet, device: torch.device) -> np.ndarray:
    """Eval-mode predictions in the set's order."""
    model.eval()
    return data.predict_with(lambda batch: model(*to_tensors(batch, device)).float().cpu().numpy())


def resume_run(out: Path, epochs: int | None = None, databases: tuple[str, ...] = ()) -> dict[str, Any]:
    """Continue the run in `out` with its saved options; only the epoch budget and database paths may change."""
    out = Path(out)
    if not (out / "last.pt").is_file() or not (out / "run.json").is_file():
        raise TrainError(f"{out} holds no run to resume (no last.pt): start it without --resume")
    changes: dict[str, Any] = {}
    if epochs is not None:
        changes["epochs"] = epochs
    if databases:
        changes["databases"] = databases
    config = TrainConfig.from_dict(json.loads((out / "run.json").read_text())["config"] | changes)
    return train_run(config, out, resume=True)


def train_run(config: TrainConfig, out: Path, resume: bool = False) -> dict[str, Any]:
    """Train a new run in `out` (or continue one, via resume_run); returns the metrics written to metrics.json."""
    out = Path(out)
    last_path = out / "last.pt"
    if not resume and last_path.exists():
        raise TrainError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    device = pick_device(config.device)
    run = prepare_run(config, out, resume)
    checkpoint = torch.load(last_path, map_location=device, weights_only=True) if resume else None
    groups = run.tokenizer.placement_groups()
    if checkpoint is not None:
        model_config = ModelConfig.from_dict(checkpoint["model_config"])
    else:
        train_targets = run.sets["train"].targets
        model_config = ModelConfig(
            vocab_size=len(run.tokenizer.vocab), max_len=run.tokenizer.max_len, n_features=run.tokenizer.n_features,
            d_model=config.d_model, n_heads=config.n_heads, n_layers=config.n_layers, d_ff=config.d_ff,
            dropout=config.dropout, readout=config.readout, coord_encoding=config.coord_encoding,
            members=config.members, member_holds=config.member_holds,
            placement_groups=max(groups) + 1 if PLACEMENT_HOLDS in config.member_holds else 0,
            target_mean=float(train_targets.mean()), target_std=float(train_targets.std()), head=config.head,
            shrink=config.shrink,
            **(_bin_range(train_targets) if config.head == BINS_HEAD else {}),
        )
        torch.manual_seed(config.seed)
    model = GradeModel(model_config).to(device)
    model.set_placement_groups(groups)
    # The average damps the step-to-step noise of small-batch training; it is what is validated and kept.
    kept = model if config.ema_decay == 0 else copy.deepcopy(model)
    member_sets = member_groups(model_config.members, config.workers)
    group_states = [GroupState() for _ in member_sets]
    state = RunState()
    if checkpoint is not None:
        model.load_state_dict(model_state(checkpoint))
        group_states = _group_states(checkpoint)
        state = RunState(**checkpoint["state"])
        logger.info("resuming %s after epoch %d (best val MAE %.3f)", out, state.epoch, state.best_val_mae)
    else:
        _write_run_files(out, run, model_config)
    logger.info("model: %d parameters on %s; members trained in %d group(s)%s",
                sum(p.numel() for p in model.parameters()), device, len(member_sets),
                f" {member_sets}" if len(member_sets) > 1 else "")

    with GroupRunner(train_group_epoch, run.sets["train"], member_sets, device) as runner:
        while state.epoch < config.epochs and (config.refit or state.bad_epochs < config.patience):
            epoch = state.epoch + 1
            started = time.perf_counter()
            results = runner.run(model, group_states, epoch, train_config=config, placement_groups=groups)
            for members, result in zip(member_sets, results):
                load_group_weights(model, members, result.weights)
                load_group_weights(kept, members, result.kept)
            group_states = [result.state for result in results]
            train_loss = sum(r.loss * len(m) for r, m in zip(results, member_sets)) / model_config.members
            state.epoch = epoch
            record = {"epoch": epoch, "train_loss": train_loss}
            is_best = config.refit  # val is training data then: every epoch is kept, so the last one is exported
            if not config.refit:
                val = regression_metrics(run.sets["val"].targets, predict(kept, run.sets["val"], device), run.data.grades)
                record |= {"val_mse": val["rmse"] ** 2, "val_mae": val["mae"], "val_within_1_vgrade": val["within_1_vgrade"]}
                is_best = val["mae"] < state.best_val_mae
                if is_best:
                    state.best_val_mae, state.bad_epochs = val["mae"], 0
                else:
                    state.bad_epochs += 1
            if is_best:
                state.best_epoch = epoch
                _save(out / "best.pt", {"model_config": model_config.to_dict(), "model": kept.state_dict(), "epoch": epoch})
            record["seconds"] = time.perf_counter() - started
            state.history.append(record)
            _save(last_path, {"model_config": model_config.to_dict(), "model": model.state_dict(),
                              "groups": [asdict(g) for g in group_states], "state": asdict(state)})
            _write_csv(out / "history.csv", pd.DataFrame(state.history))
            logger.info("epoch %d/%d  train loss %.3f  %s  %.1fs%s", epoch, config.epochs, train_loss,
                        "(refit: no validation)" if config.refit else
                        f"val MSE {record['val_mse']:.3f}  val MAE {record['val_mae']:.3f}  "
                        f"val within-1-V {100 * record['val_within_1_vgrade']:.1f}%",
                        record["seconds"], "  *best" if state.best_epoch == epoch and not config.refit else "")
    if state.bad_epochs >= config.patience:
        logger.info("early stop: no val MAE gain for %d epochs; best epoch %d", config.patience, state.best_epoch)
    return _final_evaluation(out, run, device, state)


def ascent_weights(ascents: np.ndarray, floor: float) -> np.ndarray:
    """Row weights: 1 from 20 ascents up, falling with log(1 + ascents) to `floor` at none."""
    if floor >= 1:
        return np.ones(len(ascents), dtype=np.float32)
    trust = np.minimum(1.0, np.log1p(ascents) / np.log1p(20))
    return (floor + (1 - floor) * trust).astype(np.float32)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then constant or cosine decay to zero at the last epoch; a pure function of
    the step, so a resumed run continues the schedule exactly."""
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    progress = (step - warmup) / max(1.0, config.epochs * steps_per_epoch - warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _bin_range(targets: np.ndarray) -> dict[str, Any]:
    """Bins one difficulty unit apart covering every training target (at least two, for two_hot)."""
    low, high = math.floor(float(targets.min())), math.ceil(float(targets.max()))
    return {"bin_low": float(low), "bins": max(2, high - low + 1)}


def two_hot(target: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """[B, bins]: each target split between its two nearest bin centres, so the bins' mean is the target."""
    position = (target - centres[0]).clamp(0, len(centres) - 1)
    lower = position.floor().clamp(max=len(centres) - 2)
    upper = (position - lower)[:, None]
    index = lower.long()[:, None]
    probs = torch.zeros(len(target), len(centres), device=target.device)
    probs.scatter_(1, index, 1 - upper)
    return probs.scatter_add_(1, index + 1, upper)


def bin_targets(target: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """[B, bins]: two_hot for sigma 0; else a Gaussian of width sigma around each target, so a near
    miss costs less than a far one (label distribution learning)."""
    if sigma == 0:
        return two_hot(target, centres)
    return (-0.5 * ((centres[None, :] - target[:, None]) / sigma) ** 2).softmax(dim=-1)


def _loss(config: TrainConfig, member: GradeTransformer, head_output: torch.Tensor, target: torch.Tensor,
          weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean loss of one member: cross-entropy against bin_targets for a bins head; else
    --loss on standardised difficulty (difficulty / std; MSE is the reference design's)."""
    if member.bin_centres is not None:
        targets = bin_targets(target, member.bin_centres, config.bin_sigma)
        per_row = -(targets * head_output.log_softmax(dim=-1)).sum(dim=-1)
        return (per_row * weight).sum() / weight.sum()
    scale = member.config.target_std
    predicted, target = member.difficulty(head_output) / scale, target / scale
    if config.loss == "mse":
        per_row = (predicted - target) ** 2
    elif config.loss == "huber":
        per_row = nn.functional.huber_loss(predicted, target, reduction="none", delta=config.huber_delta / scale)
    else:
        per_row = (predicted - target).abs()
    return (per_row * weight).sum() / weight.sum()


def train_group_epoch(*, train_config: TrainConfig, model_config: ModelConfig, placement_groups: list[int],
                      data: EncodedSet, device: torch.device, members: list[int], group: int, epoch: int,
                      state: GroupState, weights: list[dict[str, torch.Tensor]]) -> GroupEpoch:
    """One epoch of one member group, from its weights and state (what GroupRunner runs, here or in a worker)."""
    config = train_config
    model = GradeModel(model_config, members).to(device)
    model.set_placement_groups(placement_groups)
    load_group_weights(model, range(len(members)), weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay)) if config.ema_decay > 0 else None
    if ema is not None and state.ema is not None:
        ema.load_state_dict(state.ema)
    rng, torch_seed = group_random_streams(config.seed, epoch, group)
    torch.manual_seed(torch_seed)
    loss = _train_epoch(model, optimizer, data, config, device, epoch, ema, rng)
    kept = model if ema is None else ema.module
    return GroupEpoch(weights=[m.state_dict() for m in model.members], kept=[m.state_dict() for m in kept.members],
                      state=GroupState(optimizer.state_dict(), None if ema is None else ema.state_dict()), loss=loss)


def _train_epoch(model: GradeModel, optimizer: torch.optim.Optimizer, data: EncodedSet, config: TrainConfig,
                 device: torch.device, epoch: int, ema: AveragedModel | None, rng: np.random.Generator) -> float:
    """One pass over the training set; returns its mean training loss."""
    model.train()
    batches = length_batches(data.lengths, config.batch_size, rng)
    targets = torch.from_numpy(data.targets).to(device)
    weights = torch.from_numpy(ascent_weights(data.ascents, config.ascent_weight_floor)).to(device)
    total, count = 0.0, 0
    for step, idx in enumerate(tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=None)):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, (epoch - 1) * len(batches) + step, len(batches))
        ids, coords, padding = to_tensors(pad_batch(data.training_batch(idx, config.mirror_prob, rng)), device)
        if config.unk_prob > 0:
            holds = coords[..., 2] > 0
            ids = torch.where(holds & (torch.rand(ids.shape, device=device) < config.unk_prob), UNK_ID, ids)
        rows = torch.from_numpy(idx).to(device)
        outputs = model.member_head_outputs(ids, coords, padding)
        loss = sum(_loss(config, member, out, targets[rows], weights[rows]) for member, out in zip(model.members, outputs))
        loss = loss / len(outputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        total += loss.item() * len(idx)
        count += len(idx)
    return total / count


def _group_states(checkpoint: dict[str, Any]) -> list[GroupState]:
    """last.pt's per-group optimizer and average; a last.pt from before groups holds one group's."""
    if "groups" in checkpoint:
        return [GroupState(**g) for g in checkpoint["groups"]]
    return [GroupState(checkpoint["optimizer"], checkpoint.get("ema"))]


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The checkpoint's weights as GradeModel keys; checkpoints from before ensembles hold one
    network without the `members.0.` prefix."""
    state = checkpoint["model"]
    if any(key.startswith("members.") for key in state):
        return state
    return {f"members.0.{key}": value for key, value in state.items()}


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> GradeModel:
    """Rebuild a model from best.pt or last.pt (ModelConfig + weights), in eval mode."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    model = GradeModel(ModelConfig.from_dict(checkpoint["model_config"])).to(device)
    model.load_state_dict(model_state(checkpoint))
    return model.eval()


def _final_evaluation(out: Path, run: PreparedRun, device: torch.device, state: RunState) -> dict[str, Any]:
    model = load_checkpoint(out / "best.pt", device)
    grades = run.data.grades
    metrics: dict[str, Any] = {"best_epoch": state.best_epoch, "epochs_run": state.epoch}
    if run.config.refit:  # the val climbs were trained on: only test is held out
        metrics["trained_on"] = "train+val"
    for name in ("test",) if run.config.refit else ("val", "test"):
        data = run.sets[name]
        pred = predict(model, data, device)
        metrics[name] = metrics_by_board(data.boards, data.targets, pred, grades)
        if name == "val":
            fit = fit_shrink(pred, data.targets, model.config)
            metrics["val_best_shrink"] = fit.to_dict()
            logger.info("validation-best --shrink %.2f (val MAE %.3f -> %.3f): give it to a --refit of this recipe",
                        fit.shrink, fit.mae_before, fit.mae_after)
        if name == "test":
            frame = pd.DataFrame({
                "uuid": [e.uuid for e in data.examples], "board": data.boards,
                "layout_id": [e.layout_id for e in data.examples], "angle": [e.angle for e in data.examples],
                "ascents": [e.ascents for e in data.examples], "difficulty": data.targets, "predicted": pred,
                "grade": [grades.grade(d).name for d in data.targets],
                "predicted_grade": [grades.grade(p).name for p in pred],
            })
            _write_csv(out / "test_predictions.csv", frame)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    test = metrics["test"]["all"]
    logger.info("test (never trained or selected on): MAE %.3f  within-1-V %.1f%%  within-2-V %.1f%%  (%d rows)",
                test["mae"], 100 * test["within_1_vgrade"], 100 * test["within_2_vgrades"], test["count"])
    return metrics


def _write_run_files(out: Path, run: PreparedRun, model_config: ModelConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run_info = {"config": run.config.to_dict(), "data": run.data.summary, "model_config": model_config.to_dict(),
                "versions": {"torch": torch.__version__}}
    atomic_write_text(out / "run.json", json.dumps(run_info, indent=1) + "\n")
    atomic_write_text(out / "tokenizer.json", json.dumps(run.tokenizer.to_dict()) + "\n")
    atomic_write_text(out / "grades.json", json.dumps(run.data.grades.to_dict(), indent=1) + "\n")
    split = {**run.config.split_rule.to_dict(), **run.split}
    atomic_write_text(out / "split.json", json.dumps(split) + "\n")


def read_grades(out: Path) -> GradeTable:
    return GradeTable.from_dict(json.loads((Path(out) / "grades.json").read_text()))


def _save(path: Path, obj: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))
