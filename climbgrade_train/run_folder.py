"""A run folder: what a run is trained from, and everything export needs to rebuild it.

It holds best.pt, last.pt (for --resume; see checkpoints.py), run.json (options, data summary and
fingerprint, model config), tokenizer.json, grades.json, split.json, history.csv, test_predictions.csv
and metrics.json. The data, tokenizer and split of a run are made once (prepare_run) and read back
from here by --resume and cg-export, which refuse databases whose rows differ from the fingerprint's,
so both see exactly the rows the run was trained on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from climbgrade_runtime.files import atomic_write_text
from climbgrade_runtime.graded import LoadedData, load_examples
from climbgrade_runtime.grades import GradeTable
from climbgrade_runtime.split import SPLITS, hash_fraction
from climbgrade_runtime.tokenizer import Tokenizer

from .config import TrainConfig, TrainError
from .dataset import EncodedSet
from .fingerprint import KEY as FINGERPRINT
from .fingerprint import check_fingerprint, data_fingerprint, recorded_fingerprint
from .model import ModelConfig

logger = logging.getLogger(__name__)


@dataclass
class PreparedRun:
    """Data, tokenizer and splits of a run, fresh or rebuilt from its folder."""

    config: TrainConfig
    data: LoadedData
    tokenizer: Tokenizer
    split: dict[str, list[str]]
    sets: dict[str, EncodedSet]
    fingerprint: list[dict[str, Any]]  # run.json's "fingerprint" (fingerprint.py)


def prepare_run(config: TrainConfig, out: Path, resume: bool) -> PreparedRun:
    """Load data; a fresh run makes split and tokenizer, a resumed one reads them from `out`, after
    checking that the databases hold the rows it was trained on (before anything is encoded)."""
    recorded = recorded_fingerprint(read_run_info(out), config.databases, out) if resume else None
    data = load_examples(config.databases, config.climbs, config.catalog)
    fingerprint = data_fingerprint(data)
    if recorded is not None:
        check_fingerprint(recorded, fingerprint, out)
    split = config.split.split(e.uuid for e in data.examples)
    split["train"] = training_subset(split["train"], config.train_fraction, config.split.seed)
    trained_on = ("train", "val") if config.refit else ("train",)  # --refit trains on val too
    if resume:
        tokenizer = read_tokenizer(out)
    elif config.teacher:  # a student reads routes exactly as its teacher does
        tokenizer = read_tokenizer(Path(config.teacher))
    else:
        members = {uuid for name in trained_on for uuid in split[name]}
        train_routes = [e.route for e in data.examples if e.uuid in members]
        if config.mirror_prob > 0:  # mirrored holds are trained on too, so they need tokens
            train_routes += [m for m in (r.mirrored() for r in train_routes) if m is not None]
        tokenizer = Tokenizer.build(
            data.layouts.values(),
            train_routes,
            max_len=data.max_len,
            hold_tokens=config.hold_tokens,
            features=config.features,
        )
    where = {uuid: name for name in SPLITS for uuid in split[name]}
    sets = {
        name: EncodedSet.build(
            [e for e in data.examples if where.get(e.uuid) in (trained_on if name == "train" else (name,))],
            tokenizer,
            mirrors=name == "train" and config.mirror_prob > 0,
        )
        for name in SPLITS
    }
    for name in SPLITS:
        if not len(sets[name]):
            raise TrainError(f"the {name} split is empty: load more climbs or change the split fractions")
    logger.info(
        "split (seed %d): %s rows%s",
        config.split.seed,
        ", ".join(f"{n} {len(sets[n])}" for n in SPLITS),
        " (--refit: train holds the val rows too; nothing is selected on val)" if config.refit else "",
    )
    return PreparedRun(config, data, tokenizer, split, sets, fingerprint)


def training_subset(uuids: list[str], fraction: float, seed: int) -> list[str]:
    """The training climbs a run with --train-fraction keeps: grouped by climb, seeded, and nested
    (every climb kept at a fraction is kept at any larger one), so the points of a learning curve
    differ only in how much data they saw."""
    return [uuid for uuid in uuids if hash_fraction(f"{seed}/train-subset/{uuid}") < fraction]


def write_run_files(out: Path, run: PreparedRun, model_config: ModelConfig) -> None:
    """What a fresh run writes before its first epoch: run.json, tokenizer.json, grades.json, split.json."""
    out.mkdir(parents=True, exist_ok=True)
    run_info = {
        "config": run.config.to_dict(),
        "data": run.data.summary,
        FINGERPRINT: run.fingerprint,
        "model_config": model_config.to_dict(),
        "versions": {"torch": torch.__version__},
    }
    atomic_write_text(out / "run.json", json.dumps(run_info, indent=1) + "\n")
    atomic_write_text(out / "tokenizer.json", json.dumps(run.tokenizer.to_dict()) + "\n")
    atomic_write_text(out / "grades.json", json.dumps(run.data.grades.to_dict(), indent=1) + "\n")
    split = {**run.config.split.to_dict(), **run.split}
    atomic_write_text(out / "split.json", json.dumps(split) + "\n")


def read_run_info(out: Path) -> dict[str, Any]:
    """run.json: the run's options ("config"), data summary and fingerprint, and model config."""
    return json.loads((Path(out) / "run.json").read_text())


def moved_data(databases: Sequence[str], catalog: str | None) -> dict[str, Any]:
    """The run.json changes for data that moved since the run: the databases and catalogue given, if any."""
    return {**({"databases": tuple(databases)} if databases else {}), **({"catalog": catalog} if catalog else {})}


def read_config(out: Path, changes: dict[str, Any] | None = None) -> TrainConfig:
    """The run's TrainConfig from run.json, with `changes` (e.g. moved databases) applied."""
    return TrainConfig.from_dict(read_run_info(out)["config"]).replace(**(changes or {}))


def read_tokenizer(out: Path) -> Tokenizer:
    return Tokenizer.from_dict(json.loads((Path(out) / "tokenizer.json").read_text()))


def read_grades(out: Path) -> GradeTable:
    return GradeTable.from_dict(json.loads((Path(out) / "grades.json").read_text()))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))
