"""The seed notebook's network with random weights: the speed reference of issue 18's runtime targets.

The seed's architecture (d_model 128, 4 heads, 4 layers, feed-forward 256: `nn.TransformerEncoder` of
pre-norm GELU layers, token + position embeddings + a linear projection of the coordinates, an MLP on
`<CLS>`), sized by the model under test's tokenizer and taking its inputs, so both run on the same
padded feeds. Weights are random (seeded): the speed of a network does not depend on them. It is
exported fresh in every bench run, with the exporter settings the shipped model is exported with, and
run bare in onnxruntime, so a ratio to it holds across machines. It takes the seed's inputs (token ids,
per-token features, attention mask), which climbgrade's own RouteEncoder (climbgrade_train.features)
makes for it in PyTorch, outside the timing: the seed's time is the network's alone, while the model
under test computes those inputs inside its graph.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from climbgrade_runtime import model_io
from climbgrade_runtime.tokenizer import PAD_ID, RouteIds, Tokenizer
from climbgrade_train.features import RouteEncoder

D_MODEL, HEADS, LAYERS, D_FF = 128, 4, 4, 256
OPSET = 17
INPUTS = ("token_ids", "coords", "attention_mask")  # the seed's: int64 [B, L], float32 [B, L, F], int64 [B, L]


class SeedNetwork(nn.Module):
    """The seed notebook's grade transformer, taking the runtime's three inputs, returning difficulty [B]."""

    def __init__(self, vocab_size: int, max_len: int, n_features: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, D_MODEL, padding_idx=PAD_ID)
        self.position_embedding = nn.Embedding(max_len, D_MODEL)
        self.coord_projection = nn.Linear(n_features, D_MODEL)
        layer = nn.TransformerEncoderLayer(
            D_MODEL, HEADS, dim_feedforward=D_FF, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, LAYERS, norm=nn.LayerNorm(D_MODEL), enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(D_MODEL, D_MODEL), nn.GELU(), nn.Linear(D_MODEL, 1))

    def forward(self, token_ids: torch.Tensor, coords: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(token_ids.shape[1])
        x = self.token_embedding(token_ids) + self.position_embedding(positions) + self.coord_projection(coords)
        x = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        return self.head(x[:, 0]).squeeze(-1)


def export_network(network: nn.Module, example: dict[str, np.ndarray], path: Path, outputs: list[str]) -> Path:
    """`network` (taking the seed's INPUTS) exported to `path` as the shipped model is: opset 17, batch and
    sequence axes dynamic, weights inside the file. `example` is a padded batch of at least 2 routes."""
    if example[INPUTS[0]].shape[0] < 2:
        raise ValueError("the example batch needs at least 2 routes, or the batch axis gets hard-coded")
    names = list(INPUTS)
    dynamic = {name: {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC} for name in names}
    for name in ("torch.onnx", "onnxscript"):  # "built at opset 18, converted down": checked below
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporter's progress
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network.eval(),
            tuple(torch.from_numpy(example[name]) for name in names),
            str(path),
            dynamo=True,
            opset_version=OPSET,
            dynamic_shapes=dynamic,
            input_names=names,
            output_names=outputs,
            external_data=False,
            verbose=False,
        )
    opsets = {o.domain: o.version for o in onnx.load(str(path)).opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != OPSET:
        raise RuntimeError(f"{type(network).__name__} was exported at opsets {opsets}, not {OPSET}")
    return path


def export_seed(tokenizer: Tokenizer, example: dict[str, np.ndarray], path: Path, seed: int = 0) -> Path:
    """Export a randomly initialised SeedNetwork for `tokenizer`'s inputs to `path` (export_network)."""
    torch.manual_seed(seed)
    network = SeedNetwork(len(tokenizer.vocab), tokenizer.max_len, tokenizer.n_features)
    return export_network(network, example, path, [model_io.DIFFICULTY])


@torch.inference_mode()
def seed_feeds(encoder: RouteEncoder, rows: list[RouteIds]) -> dict[str, np.ndarray]:
    """The seed network's inputs for one batch of routes: what the model under test computes in its graph
    (`encoder`: RouteEncoder(the model's tokenizer), built once; it takes ~40 ms)."""
    token_ids, coords, padding, _ = encoder(*map(torch.from_numpy, model_io.route_feeds(rows).values()))
    return {INPUTS[0]: token_ids.numpy(), INPUTS[1]: coords.numpy(), INPUTS[2]: (~padding).to(torch.int64).numpy()}


@contextlib.contextmanager
def seed_model(tokenizer: Tokenizer, example: dict[str, np.ndarray]) -> Iterator[Path]:
    """The seed network exported to a temporary .onnx file, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="climbgrade-seed-") as tmp:
        yield export_seed(tokenizer, example, Path(tmp) / "seed.onnx")
