"""The climb-grouped train/val/test split, shared by cg-train and cg-eval.

A climb's split depends only on the seed and its uuid (a hash), never on which other climbs were
loaded: so every angle of a climb lands in one split, and `cg-eval --split test` finds the same
test climbs in any database holding them, whatever filters it uses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ModelError
from .options import OptionError, check_options, option

SPLITS = ("train", "val", "test")
RULE = "climb uuid -> first 8 bytes of sha256('<seed>/<uuid>') as a fraction u of 2**64: u < test_fraction -> test; u < test_fraction + val_fraction -> val; else train"


def hash_fraction(key: str) -> float:
    """The first 8 bytes of sha256(key) as a fraction of 2**64: a seeded, order-free draw in [0, 1)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class SplitRule:
    """Seed and fractions of a split; recorded in the run folder and the model's sidecar."""

    seed: int = option(0, "Seed of the split, the initialisation and the batch order.", "data")
    val_fraction: float = option(
        0.1, "Share of the climbs held out for validation (early stopping, calibration).", "data", minimum=0, above=True
    )
    test_fraction: float = option(
        0.1, "Share of the climbs held out for the test, never trained or selected on.", "data", minimum=0, above=True
    )

    def __post_init__(self) -> None:
        check_options(self)
        if self.val_fraction + self.test_fraction >= 1:
            raise OptionError(
                f"--val-fraction and --test-fraction must sum below 1, not {self.val_fraction + self.test_fraction:g}"
            )

    def assign(self, uuid: str) -> str:
        u = hash_fraction(f"{self.seed}/{uuid}")
        if u < self.test_fraction:
            return "test"
        return "val" if u < self.test_fraction + self.val_fraction else "train"

    def split(self, uuids: Iterable[str]) -> dict[str, list[str]]:
        """Sorted uuids of each split."""
        out: dict[str, list[str]] = {name: [] for name in SPLITS}
        for uuid in sorted(set(uuids)):
            out[self.assign(uuid)].append(uuid)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"rule": RULE, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any) -> SplitRule:
        if not isinstance(data, dict) or data.get("rule") != RULE:
            raise ModelError(
                "this model's sidecar records no split this climbgrade can reproduce; "
                "evaluate on all rows (no --split), or re-export the model"
            )
        return cls(int(data["seed"]), float(data["val_fraction"]), float(data["test_fraction"]))


def uuid_digest(uuids: Iterable[str]) -> str:
    """Fingerprint of a set of climbs: lets cg-eval tell whether it found the model's test climbs."""
    return hashlib.sha256("\n".join(sorted(set(uuids))).encode()).hexdigest()
