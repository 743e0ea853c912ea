"""Distillation: one network learns what a teacher (an ensemble run) predicts.

The student sees the teacher's full bin distribution (the members' averaged) on every training row,
mixed with the community grade, and on rows the data lacks but the teacher can label: each training
climb at every other angle its board offers (`--teacher-angles`) and mirrored (`--teacher-mirrors`).
Only training climbs are ever labelled: the teacher must split the data by the same rule, so the
student's validation and test climbs are never shown to it, in any form. The labels are computed once
and kept in the run folder (teacher.npz), so --resume does not label again.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from climbgrade_runtime.files import atomic_write_bytes
from climbgrade_runtime.graded import Example
from climbgrade_runtime.tokenizer import Tokenizer

from .checkpoints import load_checkpoint
from .config import TrainConfig, TrainError
from .dataset import EncodedSet, length_batches, pad_batch
from .model import BINS_HEAD, GradeModel
from .predict import to_tensors
from .run_folder import read_config, read_tokenizer

LABELS_FILE = "teacher.npz"
LABEL_BATCH = 512


def load_teacher(folder: Path, config: TrainConfig) -> tuple[GradeModel, Tokenizer]:
    """The teacher run's model and tokenizer (the student reads routes as the teacher did); refuses a
    teacher that could leak the student's held-out climbs or has no distribution to give."""
    for required in ("best.pt", "run.json", "tokenizer.json"):
        if not (folder / required).is_file():
            raise TrainError(f"--teacher {folder} is not a finished cg-train run ({required} missing)")
    teacher_config = read_config(folder)
    if teacher_config.split != config.split or teacher_config.climbs != config.climbs:
        raise TrainError(
            f"--teacher {folder} split its climbs with {teacher_config.split} and {teacher_config.climbs}, "
            f"this run with {config.split} and {config.climbs}: it may have trained on this run's "
            "validation or test climbs; give the student the teacher's --seed, fractions and filters"
        )
    if (teacher_config.features, teacher_config.hold_tokens) != (config.features, config.hold_tokens):
        raise TrainError(
            f"--teacher {folder} reads routes with other --features or --hold-tokens than this run: "
            "give the student the teacher's (its run.json has them)"
        )
    if config.train_fraction < 1 or teacher_config.train_fraction < 1:
        raise TrainError("--teacher needs --train-fraction 1 for both runs (a subset student would see the rest)")
    model = load_checkpoint(folder / "best.pt")
    if model.config.head != BINS_HEAD:
        raise TrainError(f"--teacher {folder} has a {model.config.head} head: distillation needs --head {BINS_HEAD}")
    return model, read_tokenizer(folder)


def extra_rows(train: EncodedSet, tokenizer: Tokenizer, angles: bool, mirrors: bool) -> EncodedSet:
    """Training climbs at the angles the data lacks, and mirrored, as rows with no grade (NaN)."""
    by_climb: dict[str, list[int]] = {}
    for i, example in enumerate(train.examples):
        by_climb.setdefault(example.uuid, []).append(i)
    examples: list[Example] = []
    for rows in by_climb.values():
        first = train.examples[rows[0]]
        graded = {train.examples[i].angle for i in rows}
        wanted = first.route.layout.angles if angles else tuple(sorted(graded))
        variants = [(first.route, graded)]
        mirrored = first.route.mirrored() if mirrors else None
        if mirrored is not None:
            variants.append((mirrored, set()))
        for route, skip in variants:
            for angle in wanted:
                if angle not in skip:
                    resolved = dataclasses.replace(route, angle=angle)
                    examples.append(
                        dataclasses.replace(first, angle=angle, difficulty=np.nan, ascents=0, route=resolved)
                    )
    return EncodedSet.build(examples, tokenizer)


@torch.inference_mode()
def teacher_distributions(model: GradeModel, data: EncodedSet) -> np.ndarray:
    """[rows, bins] float32: the teacher's averaged member distribution of every row."""
    model.eval()
    out = np.empty((len(data), model.config.bins), dtype=np.float32)
    for idx in tqdm(length_batches(data.lengths, LABEL_BATCH), desc="teacher labels", leave=False, disable=None):
        batch = pad_batch([data.encoded[i] for i in idx])
        out[idx] = model.distribution(*to_tensors(batch, "cpu")).numpy()
    return out


def distilled_training_set(
    train: EncodedSet, config: TrainConfig, tokenizer: Tokenizer, teacher: GradeModel, out: Path
) -> EncodedSet:
    """The training rows plus the extra rows, each with the teacher's distribution (read from the run
    folder when an earlier start of this run computed them)."""
    extra = extra_rows(train, tokenizer, config.teacher_angles, config.teacher_mirrors)
    rows = EncodedSet(
        examples=train.examples + extra.examples,
        rows=train.rows + extra.rows,
        encoded=train.encoded + extra.encoded,
        targets=np.concatenate([train.targets, extra.targets]),
        lengths=np.concatenate([train.lengths, extra.lengths]),
        ascents=np.concatenate([train.ascents, extra.ascents]),
    )
    path = out / LABELS_FILE
    if path.is_file():
        labels = np.load(path)["distributions"]
        if labels.shape != (len(rows), teacher.config.bins):
            raise TrainError(f"{path} holds labels for another set of rows: delete it to label again")
    else:
        started = time.perf_counter()
        labels = teacher_distributions(teacher, rows)
        buffer = io.BytesIO()
        np.savez(buffer, distributions=labels)
        atomic_write_bytes(path, buffer.getvalue())
        logging.getLogger(__name__).info(
            "teacher labelled %d training rows + %d extra (%s) in %.0fs",
            len(train),
            len(extra),
            ", ".join(n for n, on in (("angles", config.teacher_angles), ("mirrors", config.teacher_mirrors)) if on)
            or "none",
            time.perf_counter() - started,
        )
    return dataclasses.replace(rows, teacher=labels)
