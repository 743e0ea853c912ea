"""The grade model: BERT-style transformer encoders regressing Aurora difficulty from tokens.

GradeModel is what training, checkpoints and export use: the mean of `members` GradeTransformers
(one, unless an ensemble was asked for), so an ensemble exports as one ONNX graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from climbgrade_runtime.options import check_options, option
from climbgrade_runtime.tokenizer import PAD_ID, PREFIX_TOKENS

from .encoder import Encoder

READOUTS = ("cls", "cls+sum", "cls+features")
TOKEN_HOLDS, PLACEMENT_HOLDS = "token", "placement"
MEMBER_HOLDS = (TOKEN_HOLDS, PLACEMENT_HOLDS)
COORD_ENCODINGS = ("linear", "fourier")
VALUE_HEAD, BINS_HEAD = "value", "bins"
HEADS = (VALUE_HEAD, BINS_HEAD)
FOURIER_FREQUENCIES = 6  # octaves from one period across the board down to about one hole spacing


@dataclass(frozen=True)
class ModelOptions:
    """The network a user chooses: declared once here, nested in TrainConfig and extended by ModelConfig."""

    d_model: int = option(128, "Width of the encoder.", "model", minimum=8)
    n_heads: int = option(4, "Attention heads.", "model", flag="--heads", minimum=1)
    n_layers: int = option(4, "Encoder layers.", "model", flag="--layers", minimum=1)
    d_ff: int = option(256, "Width of the feed-forward blocks.", "model", flag="--ff", minimum=8)
    dropout: float = option(0.1, "Dropout.", "model", minimum=0, maximum=1, below=True)
    readout: str = option(
        "cls",
        "cls: MLP on the <CLS> token; cls+sum: plus a per-token score summed over the route; "
        "cls+features: the MLP also reads the <CLS> token's input features (route geometry).",
        "model",
        choices=READOUTS,
    )
    coord_encoding: str = option(
        "linear",
        "linear: per-token features as they are; fourier: plus sin/cos of x and y at 6 frequencies.",
        "model",
        choices=COORD_ENCODINGS,
    )
    members: int = option(
        1, "Ensemble size: networks trained together and averaged (exported as one graph).", "model", minimum=1
    )
    member_holds: tuple[str, ...] = option(
        (),
        "Comma-separated, cycled over members: token (embed the tokenizer's token) or placement "
        "(one embedding per placement, roles merged). Default: token for every member.",
        "model",
        choices=MEMBER_HOLDS,
        comma=True,
    )
    head: str = option(
        VALUE_HEAD,
        "value: regress one number (--loss); bins: a distribution over difficulty bins one unit apart, "
        "trained with cross-entropy, predicting its mean.",
        "model",
        choices=HEADS,
    )
    # The graph outputs target_mean + shrink * (ensemble mean - target_mean) (--calibrate chooses it on
    # validation; see calibration.py)
    shrink: float = option(
        1.0,
        "Pull predictions toward the training mean by this factor (the graph outputs mean + S x (p - mean)). "
        "Below 1 corrects an ensemble that spreads its predictions wider than the grades; a run without "
        "--refit logs (and writes to metrics.json) the value best on its validation climbs.",
        "model",
        minimum=0,
        above=True,
        maximum=1,
    )
    interval_scale: float = option(
        0.0,
        "Width of the interval for a --refit run (what --calibrate chose on a validation run); 0 = none. "
        "The graph also outputs low and high around the difficulty, the predicted distribution's "
        "10th-90th percentiles' distances from its mean times this factor.",
        "model",
        minimum=0,
    )  # calibrated on validation to hold model_io.INTERVAL_COVERAGE of the grades (calibration.py)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True, kw_only=True)
class ModelConfig(ModelOptions):
    """Everything needed to rebuild the model: the chosen options and what the data fixes; in every checkpoint."""

    vocab_size: int
    max_len: int
    n_features: int = 3  # width of the coords input (Tokenizer.features)
    placement_groups: int = 0  # embedding rows of a "placement" member
    target_mean: float = 0.0  # the head predicts standardised difficulty; forward undoes it
    target_std: float = 1.0
    # a bins head's logits are over difficulty bins one unit apart from bin_low (`bins` of them),
    # read out as the distribution's mean
    bin_low: float = 0.0
    bins: int = 0
    # (board token id, scale) pairs: a board's own interval_scale, read from each route's board token
    # (calibrated on that board's validation rows); boards not listed take interval_scale
    board_interval_scales: tuple[tuple[int, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["member_holds"] = tuple(values.get("member_holds", ()))
        values["board_interval_scales"] = tuple((int(t), float(v)) for t, v in values.get("board_interval_scales", ()))
        return cls(**values)

    def holds_of(self, member: int) -> str:
        return self.member_holds[member % len(self.member_holds)] if self.member_holds else TOKEN_HOLDS


BOARD_POSITION = PREFIX_TOKENS - 2  # <CLS> <BOARD_..> <ANGLE_..>: where a route's board token sits
INTERVAL_QUANTILES = (0.1, 0.9)  # the central 80% of a predicted distribution, before calibration


def quantiles(probs: torch.Tensor, qs: tuple[float, ...], bin_low: float) -> torch.Tensor:
    """[B, len(qs)]: the quantiles of bin distributions [B, bins], each bin spread evenly over one
    difficulty unit around its centre (bin_low + i). Elementwise ops and a cumulative sum, all the
    quantiles in one pass (each op costs a single route time in onnxruntime), so it exports."""
    before = (probs.cumsum(dim=-1) - probs)[:, None, :]  # the mass below each bin
    q = torch.tensor(qs, dtype=probs.dtype, device=probs.device)[:, None]
    filled = ((q - before) / probs.clamp(min=1e-12)[:, None, :]).clamp(0.0, 1.0)  # each bin's share below q
    return bin_low - 0.5 + filled.sum(dim=-1)


class GradeTransformer(nn.Module):
    """Token + learned position embeddings + projected coordinates -> pre-norm encoder -> <CLS> head."""

    # Buffers (register_buffer), None where this member's options do not use them.
    token_groups: torch.Tensor | None
    frequencies: torch.Tensor | None
    bin_centres: torch.Tensor | None

    def __init__(self, config: ModelConfig, holds: str = TOKEN_HOLDS) -> None:
        super().__init__()
        self.config = config
        # A "placement" member looks its ids up through token -> placement group (a saved buffer,
        # filled by training from the tokenizer) before embedding them.
        groups = torch.zeros(config.vocab_size, dtype=torch.long) if holds == PLACEMENT_HOLDS else None
        self.register_buffer("token_groups", groups)
        rows = config.placement_groups if groups is not None else config.vocab_size
        self.token_embedding = nn.Embedding(rows, config.d_model, padding_idx=PAD_ID)
        self.position_embedding = nn.Embedding(config.max_len, config.d_model)
        # Fourier features let attention compare hold positions finely; a linear map of x and y
        # cannot express a distance between two holds.
        frequencies = math.pi * 2.0 ** torch.arange(FOURIER_FREQUENCIES) if config.coord_encoding == "fourier" else None
        self.register_buffer("frequencies", frequencies, persistent=False)
        n_waves = 0 if frequencies is None else 4 * FOURIER_FREQUENCIES
        self.coord_projection = nn.Linear(config.n_features + n_waves, config.d_model)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.encoder = Encoder(config.d_model, config.n_heads, config.d_ff, config.dropout, config.n_layers)
        # The route geometry straight into the head, as a tree model reads it, beside what attention made of it.
        self.head_features = config.n_features if config.readout == "cls+features" else 0
        bins = config.head == BINS_HEAD
        outputs = config.bins if bins else 1
        self.head = nn.Sequential(
            nn.Linear(config.d_model + self.head_features, config.d_model),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.d_model, outputs),
        )
        centres = config.bin_low + torch.arange(config.bins, dtype=torch.float32) if bins else None
        self.register_buffer("bin_centres", centres, persistent=False)
        # Sum readout: an additive per-token score (like a linear model over one-hot holds, but
        # in context), added to the <CLS> head; padding is masked out.
        self.token_score = nn.Linear(config.d_model, outputs) if config.readout == "cls+sum" else None
        if self.token_score is not None:  # starts at zero: training begins as the <CLS>-only model
            nn.init.zeros_(self.token_score.weight)
            nn.init.zeros_(self.token_score.bias)

    def forward(self, token_ids: torch.Tensor, coords: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """token_ids [B, L] int64, coords [B, L, n_features] float, padding_mask [B, L] bool (True = padding) -> [B]."""
        return self.difficulty(self.head_output(token_ids, coords, padding_mask))

    def difficulty(self, head_output: torch.Tensor) -> torch.Tensor:
        """Head output -> difficulty [B]: the bins' mean, or the standardised value scaled back."""
        if self.bin_centres is not None:
            return head_output.softmax(dim=-1) @ self.bin_centres
        return head_output * self.config.target_std + self.config.target_mean

    def head_output(self, token_ids: torch.Tensor, coords: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """What training's loss reads: standardised difficulty [B], or bin logits [B, bins]."""
        # clamped: a route longer than max_len (which the graph flags in `problems`) must not index past the table
        positions = torch.arange(token_ids.shape[1], device=token_ids.device).clamp(max=self.config.max_len - 1)
        cls_features = coords[:, 0]
        if self.token_groups is not None:
            token_ids = self.token_groups[token_ids]
        if self.frequencies is not None:
            phases = (coords[..., :2, None] * self.frequencies).flatten(-2)  # x and y at every frequency
            coords = torch.cat([coords, phases.sin(), phases.cos()], dim=-1)
        x = self.token_embedding(token_ids) + self.position_embedding(positions) + self.coord_projection(coords)
        x = self.encoder(self.embedding_dropout(x), padding_mask)
        readout = torch.cat([x[:, 0], cls_features], dim=-1) if self.head_features else x[:, 0]
        output = self.head(readout)
        if self.token_score is not None:
            output = output + self.token_score(x[:, 1:]).masked_fill(padding_mask[:, 1:, None], 0.0).sum(dim=1)
        return output if self.bin_centres is not None else output.squeeze(-1)


class GradeModel(nn.Module):
    """The mean of `config.members` independently initialised GradeTransformers.

    Members that embed holds differently (config.member_holds) err differently, so they average
    better than members that differ only in their initialisation.
    """

    interval_scales: torch.Tensor  # buffer: per token id, the interval's scale (see ModelConfig)

    def __init__(self, config: ModelConfig, members: Sequence[int] | None = None) -> None:
        """`members`: build only these of the config's members (the share one training worker trains)."""
        super().__init__()
        self.config = config
        chosen = range(config.members) if members is None else members
        self.members = nn.ModuleList(GradeTransformer(config, config.holds_of(i)) for i in chosen)
        # Per token id, the interval's scale: the board token (position 1 of every route) picks it.
        scales = torch.full((config.vocab_size,), config.interval_scale)
        for token, scale in config.board_interval_scales:
            scales[token] = scale
        self.register_buffer("interval_scales", scales, persistent=False)

    @property
    def transformers(self) -> list[GradeTransformer]:
        """The members, typed (nn.ModuleList yields plain Modules to a type checker)."""
        return [member for member in self.members if isinstance(member, GradeTransformer)]

    def set_placement_groups(self, groups: list[int]) -> None:
        """Fill the token -> placement map of every "placement" member (Tokenizer.placement_groups)."""
        for member in self.transformers:
            if member.token_groups is not None:
                member.token_groups.copy_(torch.tensor(groups, dtype=torch.long))

    def member_head_outputs(
        self, token_ids: torch.Tensor, coords: torch.Tensor, padding_mask: torch.Tensor
    ) -> list[torch.Tensor]:
        """Each member's head output (GradeTransformer.head_output); training gives each member its own loss."""
        return [member.head_output(token_ids, coords, padding_mask) for member in self.transformers]

    @property
    def has_interval(self) -> bool:
        return self.config.head == BINS_HEAD and self.config.interval_scale > 0

    def distribution(self, token_ids: torch.Tensor, coords: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """[B, bins]: the members' bin distributions averaged (bins heads only): what a student distils."""
        total = self.transformers[0].head_output(token_ids, coords, padding_mask).softmax(dim=-1)
        for member in self.transformers[1:]:
            total = total + member.head_output(token_ids, coords, padding_mask).softmax(dim=-1)
        return total if len(self.members) == 1 else total / len(self.members)

    def with_interval(
        self, token_ids: torch.Tensor, coords: torch.Tensor, padding_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(difficulty, low, high), each [B]: the difficulty as forward gives it, and around it the
        distribution's central interval (INTERVAL_QUANTILES) scaled by config.interval_scale (or the
        route's board's, config.board_interval_scales)."""
        probs = self.distribution(token_ids, coords, padding_mask)
        centres = self.transformers[0].bin_centres
        assert centres is not None  # has_interval: a bins head
        mean = probs @ centres
        shrink = self.config.shrink  # as forward: target_mean + shrink * (mean - target_mean)
        difficulty = mean if shrink == 1.0 else mean * shrink + (1.0 - shrink) * self.config.target_mean
        # low = difficulty - scale * (mean - q10), high = difficulty + scale * (q90 - mean), both at once
        gaps = quantiles(probs, INTERVAL_QUANTILES, self.config.bin_low) - mean[:, None]
        sides = torch.tensor([-1.0, 1.0], dtype=probs.dtype, device=probs.device)
        scale = self.interval_scales[token_ids[:, BOARD_POSITION]] if self.config.board_interval_scales else None
        widths = (sides * gaps).clamp(min=0.0) * (self.config.interval_scale if scale is None else scale[:, None])
        bounds = difficulty[:, None] + sides * widths
        low, high = bounds.unbind(dim=1)
        return difficulty, low, high

    def outputs(
        self, token_ids: torch.Tensor, coords: torch.Tensor, padding_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """What the exported graph outputs, in model_io order: (difficulty,) or (difficulty, low, high)."""
        if self.has_interval:
            return self.with_interval(token_ids, coords, padding_mask)
        return (self(token_ids, coords, padding_mask),)

    def forward(self, token_ids: torch.Tensor, coords: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        # A chain of Adds, not stack().mean(): ReduceMean changed at opset 18 and the exporter's
        # conversion down to 17 cannot rewrite it.
        total = self.members[0](token_ids, coords, padding_mask)
        for member in self.members[1:]:
            total = total + member(token_ids, coords, padding_mask)
        mean = total if len(self.members) == 1 else total / len(self.members)
        if self.config.shrink == 1.0:
            return mean
        return self.config.target_mean + self.config.shrink * (mean - self.config.target_mean)
