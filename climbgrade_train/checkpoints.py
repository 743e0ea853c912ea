"""best.pt and last.pt: writing them atomically, and rebuilding a model (or a run's state) from them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from climbgrade_runtime.files import atomic_write_bytes

from .model import GradeModel, ModelConfig
from .workers import GroupState


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """torch.save to memory, then one atomic write: an interrupted run never leaves half a checkpoint."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def saved_group_states(checkpoint: dict[str, Any]) -> list[GroupState]:
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
