"""The exported model: Aurora ids in, grade out (model format 2, docs/model-format.md).

Grader puts the RouteEncoder (features.py: lookups, canonical order, tokens, features, problem bits)
in front of the trained GradeModel, so one ONNX graph is the whole computation from the numbers of a
route's frames string to its grade and interval. Its forward has the graph's signature, in
climbgrade_runtime.model_io's order.
"""

from __future__ import annotations

import torch
from torch import nn

from climbgrade_runtime import model_io
from climbgrade_runtime.tokenizer import Tokenizer

from .features import RouteEncoder
from .model import GradeModel


class Grader(nn.Module):
    """RouteEncoder + GradeModel: what cg-export writes and the runtime runs."""

    def __init__(self, model: GradeModel, tokenizer: Tokenizer) -> None:
        super().__init__()
        if tokenizer.n_features != model.config.n_features or len(tokenizer.vocab) != model.config.vocab_size:
            raise ValueError("the tokenizer does not belong to the model (feature count or vocabulary size differ)")
        self.encoder = RouteEncoder(tokenizer)
        self.model = model

    @property
    def output_names(self) -> tuple[tuple[str, str], ...]:
        """The graph's outputs (model_io): with the interval when the model has one."""
        return model_io.INTERVAL_OUTPUTS if self.model.has_interval else model_io.OUTPUTS

    def forward(
        self, layout: torch.Tensor, angle: torch.Tensor, placement_id: torch.Tensor, role_id: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        token_ids, coords, padding, problems = self.encoder(layout, angle, placement_id, role_id)
        return (*self.model.outputs(token_ids, coords, padding), problems)
