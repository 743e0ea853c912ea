"""PyTorch predictions on the runtime's batches: the one helper validation, export checks and tests use.

A batch is what `climbgrade_runtime.model_io.pad_batch` makes, the very feeds onnxruntime gets, so
PyTorch and the exported graph are always compared on the same input. A whole split goes through
`EncodedSet.predict_with(lambda batch: torch_predict(model, batch, device))`.
"""

from __future__ import annotations

import numpy as np
import torch

from climbgrade_runtime.model_io import ATTENTION_MASK, COORDS, TOKEN_IDS

from .model import GradeModel


def to_tensors(
    batch: dict[str, np.ndarray], device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runtime batch (model_io names) -> model arguments (ids, coords, padding mask)."""
    ids = torch.from_numpy(batch[TOKEN_IDS]).to(device)
    coords = torch.from_numpy(batch[COORDS]).to(device)
    padding = torch.from_numpy(batch[ATTENTION_MASK] == 0).to(device)
    return ids, coords, padding


@torch.no_grad()
def torch_outputs(
    model: GradeModel, batch: dict[str, np.ndarray], device: torch.device | str = "cpu"
) -> tuple[np.ndarray, ...]:
    """Eval-mode outputs of a runtime-format batch, as the exported graph gives them (GradeModel.outputs):
    the reference ONNX is held to."""
    model.eval()
    return tuple(out.float().cpu().numpy() for out in model.outputs(*to_tensors(batch, device)))


def torch_predict(model: GradeModel, batch: dict[str, np.ndarray], device: torch.device | str = "cpu") -> np.ndarray:
    """Eval-mode difficulty of each route of a runtime-format batch."""
    return torch_outputs(model, batch, device)[0]
