"""PyTorch predictions on training's batches: the one helper validation, calibration and tests use.

A batch is what `dataset.pad_batch` makes of rows the RouteEncoder encoded: the network's own
inputs. A whole split goes through `EncodedSet.predict_with(lambda batch: torch_predict(model, batch, device))`;
the exported graph (ids in) is held to the same network by export.py.
"""

from __future__ import annotations

import numpy as np
import torch

from .dataset import Batch
from .model import GradeModel


def to_tensors(batch: Batch, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A padded batch -> the network's arguments (ids, coords, padding mask)."""
    return tuple(torch.from_numpy(array).to(device) for array in batch)  # type: ignore[return-value]


@torch.no_grad()
def torch_outputs(model: GradeModel, batch: Batch, device: torch.device | str = "cpu") -> tuple[np.ndarray, ...]:
    """Eval-mode outputs of a batch, as the exported graph gives them (GradeModel.outputs)."""
    model.eval()
    return tuple(out.float().cpu().numpy() for out in model.outputs(*to_tensors(batch, device)))


def torch_predict(model: GradeModel, batch: Batch, device: torch.device | str = "cpu") -> np.ndarray:
    """Eval-mode difficulty of each row of a batch."""
    return torch_outputs(model, batch, device)[0]
