"""The training loop: epochs over member groups, validation, early stopping, resumable runs.

A run is configured by a TrainConfig (config.py), trained from and into a run folder
(run_folder.py, checkpoints.py), on the loss and schedule of objective.py; this module holds the
loop that ties them together and the final evaluation that writes metrics.json.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from climbgrade_runtime.files import atomic_write_text
from climbgrade_runtime.metrics import TRUSTED_ASCENTS, interval_report, metrics_by_board, regression_metrics
from climbgrade_runtime.model_io import INTERVAL_COVERAGE
from climbgrade_runtime.tokenizer import UNK_ID, Tokenizer

from .calibration import fit_board_interval_scales, fit_shrink
from .checkpoints import load_checkpoint, model_state, save_checkpoint, saved_group_states
from .config import TrainConfig, TrainError
from .dataset import EncodedSet, length_batches, pad_batch
from .distill import distilled_training_set, load_teacher
from .model import BINS_HEAD, PLACEMENT_HOLDS, GradeModel, ModelConfig
from .objective import ascent_weights, learning_rate, member_loss
from .predict import to_tensors, torch_outputs, torch_predict
from .run_folder import PreparedRun, moved_data, prepare_run, read_config, write_csv, write_run_files
from .workers import GroupEpoch, GroupRunner, GroupState, group_random_streams, load_group_weights, member_groups

logger = logging.getLogger(__name__)


@dataclass
class RunState:
    """What last.pt saves after each epoch."""

    epoch: int = 0
    best_val_mae: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resume_run(
    out: Path, epochs: int | None = None, databases: tuple[str, ...] = (), catalog: str | None = None
) -> dict[str, Any]:
    """Continue the run in `out` with its saved options; only the epoch budget and data paths may change."""
    out = Path(out)
    if not (out / "last.pt").is_file() or not (out / "run.json").is_file():
        raise TrainError(f"{out} holds no run to resume (no last.pt): start it without --resume")
    changes = moved_data(databases, catalog)
    if epochs is not None:
        changes["epochs"] = epochs
    config = read_config(out, changes)
    return train_run(config, out, resume=True)


def train_run(config: TrainConfig, out: Path, resume: bool = False) -> dict[str, Any]:
    """Train a new run in `out` (or continue one, via resume_run); returns the metrics written to metrics.json."""
    out = Path(out)
    last_path = out / "last.pt"
    if not resume and last_path.exists():
        raise TrainError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    device = pick_device(config.device)
    # the teacher is checked before anything is read from it (prepare_run takes its tokenizer)
    teacher = load_teacher(Path(config.teacher), config) if config.teacher else None
    run = prepare_run(config, out, resume)
    checkpoint = torch.load(last_path, map_location=device, weights_only=True) if resume else None
    groups = run.tokenizer.placement_groups()
    if checkpoint is not None:
        model_config = ModelConfig.from_dict(checkpoint["model_config"])
    else:
        model_config = new_model_config(config, run, groups, teacher)
        torch.manual_seed(config.split.seed)
    train_set = run.sets["train"]
    if teacher is not None:
        out.mkdir(parents=True, exist_ok=True)
        train_set = distilled_training_set(train_set, config, run.tokenizer, teacher[0], out)
    model = GradeModel(model_config).to(device)
    model.set_placement_groups(groups)
    # The average damps the step-to-step noise of small-batch training; it is what is validated and kept.
    kept = model if config.ema_decay == 0 else copy.deepcopy(model)
    member_sets = member_groups(model_config.members, config.workers)
    group_states = [GroupState() for _ in member_sets]
    state = RunState()
    if checkpoint is not None:
        model.load_state_dict(model_state(checkpoint))
        group_states = saved_group_states(checkpoint)
        state = RunState(**checkpoint["state"])
        logger.info("resuming %s after epoch %d (best val MAE %.3f)", out, state.epoch, state.best_val_mae)
    else:
        write_run_files(out, run, model_config)
    logger.info(
        "model: %d parameters on %s; members trained in %d group(s)%s",
        sum(p.numel() for p in model.parameters()),
        device,
        len(member_sets),
        f" {member_sets}" if len(member_sets) > 1 else "",
    )

    with GroupRunner(train_group_epoch, train_set, member_sets, device) as runner:
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
                val_pred = run.sets["val"].predict_with(lambda batch: torch_predict(kept, batch, device))
                val = regression_metrics(run.sets["val"].targets, val_pred, run.data.grades)
                record |= {
                    "val_mse": val["rmse"] ** 2,
                    "val_mae": val["mae"],
                    "val_within_1_vgrade": val["within_1_vgrade"],
                }
                is_best = val["mae"] < state.best_val_mae
                if is_best:
                    state.best_val_mae, state.bad_epochs = val["mae"], 0
                else:
                    state.bad_epochs += 1
            if is_best:
                state.best_epoch = epoch
                save_checkpoint(
                    out / "best.pt",
                    {"model_config": model_config.to_dict(), "model": kept.state_dict(), "epoch": epoch},
                )
            record["seconds"] = time.perf_counter() - started
            state.history.append(record)
            save_checkpoint(
                last_path,
                {
                    "model_config": model_config.to_dict(),
                    "model": model.state_dict(),
                    "groups": [asdict(g) for g in group_states],
                    "state": asdict(state),
                },
            )
            write_csv(out / "history.csv", pd.DataFrame(state.history))
            logger.info(
                "epoch %d/%d  train loss %.3f  %s  %.1fs%s",
                epoch,
                config.epochs,
                train_loss,
                "(refit: no validation)"
                if config.refit
                else f"val MSE {record['val_mse']:.3f}  val MAE {record['val_mae']:.3f}  "
                f"val within-1-V {100 * record['val_within_1_vgrade']:.1f}%",
                record["seconds"],
                "  *best" if state.best_epoch == epoch and not config.refit else "",
            )
    if state.bad_epochs >= config.patience:
        logger.info("early stop: no val MAE gain for %d epochs; best epoch %d", config.patience, state.best_epoch)
    return _final_evaluation(out, run, device, state)


def new_model_config(
    config: TrainConfig,
    run: PreparedRun,
    placement_groups: list[int],
    teacher: tuple[GradeModel, Tokenizer] | None = None,
) -> ModelConfig:
    """A fresh run's network: the options' sizes, the tokenizer's vocabulary and the training targets'
    scale (a student takes its teacher's bins, so their distributions line up)."""
    tokenizer, train_targets = run.tokenizer, run.sets["train"].targets
    bins: dict[str, Any] = {}
    if teacher is not None:
        bins = {"bin_low": teacher[0].config.bin_low, "bins": teacher[0].config.bins}
    elif config.model.head == BINS_HEAD:
        bins = _bin_range(train_targets)
    return ModelConfig(
        **asdict(config.model),
        vocab_size=len(tokenizer.vocab),
        max_len=tokenizer.max_len,
        n_features=tokenizer.n_features,
        placement_groups=max(placement_groups) + 1 if PLACEMENT_HOLDS in config.model.member_holds else 0,
        target_mean=float(train_targets.mean()),
        target_std=float(train_targets.std()),
        **bins,
    )


def _bin_range(targets: np.ndarray) -> dict[str, Any]:
    """Bins one difficulty unit apart covering every training target (at least two, for two_hot)."""
    low, high = math.floor(float(targets.min())), math.ceil(float(targets.max()))
    return {"bin_low": float(low), "bins": max(2, high - low + 1)}


def train_group_epoch(
    *,
    train_config: TrainConfig,
    model_config: ModelConfig,
    placement_groups: list[int],
    data: EncodedSet,
    device: torch.device,
    members: list[int],
    group: int,
    epoch: int,
    state: GroupState,
    weights: list[dict[str, torch.Tensor]],
) -> GroupEpoch:
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
    rng, torch_seed = group_random_streams(config.split.seed, epoch, group)
    torch.manual_seed(torch_seed)
    loss = _train_epoch(model, optimizer, data, config, device, epoch, ema, rng)
    kept = model if ema is None else cast(GradeModel, ema.module)
    return GroupEpoch(
        weights=[m.state_dict() for m in model.members],
        kept=[m.state_dict() for m in kept.members],
        state=GroupState(optimizer.state_dict(), None if ema is None else ema.state_dict()),
        loss=loss,
    )


def _train_epoch(
    model: GradeModel,
    optimizer: torch.optim.Optimizer,
    data: EncodedSet,
    config: TrainConfig,
    device: torch.device,
    epoch: int,
    ema: AveragedModel | None,
    rng: np.random.Generator,
) -> float:
    """One pass over the training set; returns its mean training loss."""
    model.train()
    batches = length_batches(data.lengths, config.batch_size, rng)
    targets = torch.from_numpy(data.targets).to(device)
    teacher = None if data.teacher is None else torch.from_numpy(data.teacher).to(device)
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
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp):
            outputs = model.member_head_outputs(ids, coords, padding)
            member_losses = (
                member_loss(
                    config, member, out, targets[rows], weights[rows], None if teacher is None else teacher[rows]
                )
                for member, out in zip(model.transformers, outputs)
            )
            loss = cast(torch.Tensor, sum(member_losses)) / len(outputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        total += loss.item() * len(idx)
        count += len(idx)
    return total / count


def _final_evaluation(out: Path, run: PreparedRun, device: torch.device, state: RunState) -> dict[str, Any]:
    """best.pt on val and test: metrics.json, test_predictions.csv, the validation-best --shrink and,
    with --calibrate, that shrink and the interval's width built into best.pt."""
    model = load_checkpoint(out / "best.pt", device)
    grades = run.data.grades
    metrics: dict[str, Any] = {"best_epoch": state.best_epoch, "epochs_run": state.epoch}
    if run.config.refit:  # the val climbs were trained on: only test is held out
        metrics["trained_on"] = "train+val"
    else:
        val = run.sets["val"]
        fit = fit_shrink(val.predict_with(lambda batch: torch_predict(model, batch, device)), val.targets, model.config)
        metrics["val_best_shrink"] = fit.to_dict()
        logger.info(
            "validation-best --shrink %.2f (val MAE %.3f -> %.3f)%s",
            fit.shrink,
            fit.mae_before,
            fit.mae_after,
            ": built into best.pt (--calibrate)" if run.config.calibrate else ": give it to a --refit of this recipe",
        )
        if run.config.calibrate:
            model = _calibrate(out / "best.pt", model, val, fit.shrink, run.tokenizer, device)
            metrics["calibration"] = {
                "shrink": fit.shrink,
                "interval_scale": model.config.interval_scale,
                "board_interval_scales": model.config.board_interval_scales,
            }
    for name in ("test",) if run.config.refit else ("val", "test"):
        data = run.sets[name]
        outputs = data.outputs_with(lambda batch: torch_outputs(model, batch, device))
        pred = outputs[0]
        metrics[name] = metrics_by_board(data.boards, data.targets, pred, grades)
        if model.has_interval:
            metrics[name + "_interval"] = _interval_report(data, *outputs)
        if name == "test":
            frame = pd.DataFrame(
                {
                    "uuid": [e.uuid for e in data.examples],
                    "board": data.boards,
                    "layout_id": [e.layout_id for e in data.examples],
                    "angle": [e.angle for e in data.examples],
                    "ascents": [e.ascents for e in data.examples],
                    "difficulty": data.targets,
                    "predicted": pred,
                    "grade": [grades.grade(d).name for d in data.targets],
                    "predicted_grade": [grades.grade(p).name for p in pred],
                }
                | ({"low": outputs[1], "high": outputs[2]} if model.has_interval else {})
            )
            write_csv(out / "test_predictions.csv", frame)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    if model.has_interval:
        covered = metrics["test_interval"]
        logger.info(
            "test interval (scale %.2f): coverage %s; mean width %.2f",
            model.config.interval_scale,
            ", ".join(f"{board} {100 * m['coverage']:.1f}%" for board, m in covered["rows"].items()),
            covered["rows"]["all"]["mean_width"],
        )
    test = metrics["test"]["all"]
    logger.info(
        "test (never trained or selected on): MAE %.3f  within-1-V %.1f%%  within-2-V %.1f%%  (%d rows)",
        test["mae"],
        100 * test["within_1_vgrade"],
        100 * test["within_2_vgrades"],
        test["count"],
    )
    return metrics


def _calibrate(
    path: Path, model: GradeModel, val: EncodedSet, shrink: float, tokenizer: Tokenizer, device: torch.device
) -> GradeModel:
    """`model` with `shrink` and the interval widths (one per board) that hold INTERVAL_COVERAGE of the
    validation grades (calibration.py); saved into the checkpoint at `path`, so export writes them into
    the graph."""
    wide = _with_config(
        model, dataclasses.replace(model.config, shrink=shrink, interval_scale=1.0, board_interval_scales=())
    )
    difficulty, low, high = val.outputs_with(lambda batch: torch_outputs(wide, batch, device))
    board_tokens: dict[str, list[int]] = {}
    for (board, _layout), token in tokenizer.board_ids.items():
        board_tokens.setdefault(board, []).append(token)
    overall, per_board = fit_board_interval_scales(difficulty, low, high, val.targets, val.boards, board_tokens)
    calibrated = _with_config(
        model, dataclasses.replace(wide.config, interval_scale=overall, board_interval_scales=per_board)
    )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    save_checkpoint(path, checkpoint | {"model_config": calibrated.config.to_dict()})
    logger.info(
        "interval width x%.2f (%s) holds %.0f%% of validation grades",
        overall,
        ", ".join(f"{t}: x{v:.2f}" for t, v in per_board) or "one for every board",
        100 * INTERVAL_COVERAGE,
    )
    return calibrated


def _with_config(model: GradeModel, config: ModelConfig) -> GradeModel:
    """The same weights under another config (one that changes only what the graph computes from them)."""
    rebuilt = GradeModel(config).to(next(model.parameters()).device)
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt.eval()


def _interval_report(data: EncodedSet, difficulty: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, Any]:
    """Interval coverage and width per board, over all rows and over rows with settled grades."""
    rows, trusted = interval_report(data.boards, data.targets, low, high, data.ascents)
    return {"rows": rows, f"rows_with_{TRUSTED_ASCENTS}_ascents": trusted}
