"""What training minimises and how fast: the per-member loss, its targets and row weights, and the
learning-rate schedule. Pure functions of their arguments, so a resumed run continues exactly."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .model import GradeTransformer


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


def distilled_targets(
    config: TrainConfig, target: torch.Tensor, teacher: torch.Tensor, centres: torch.Tensor
) -> torch.Tensor:
    """[B, bins]: the teacher's distribution mixed with the community grade's (--teacher-weight), or
    the teacher's alone on rows with no grade (NaN: the extra angles and mirrors)."""
    graded = ~target.isnan()
    community = bin_targets(torch.where(graded, target, centres[0]), centres, config.bin_sigma)
    mixed = config.teacher_weight * teacher + (1 - config.teacher_weight) * community
    return torch.where(graded[:, None], mixed, teacher)


def member_loss(
    config: TrainConfig,
    member: GradeTransformer,
    head_output: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    teacher: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean loss of one member: cross-entropy against bin_targets (or, given a teacher's
    distributions, distilled_targets) for a bins head; else --loss on standardised difficulty
    (difficulty / std; MSE is the reference design's)."""
    if member.bin_centres is not None:
        if teacher is None:
            targets = bin_targets(target, member.bin_centres, config.bin_sigma)
        else:
            targets = distilled_targets(config, target, teacher, member.bin_centres)
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
