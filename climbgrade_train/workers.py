"""Ensemble members trained in groups, each group in its own worker process.

On this project's 2-core machines two processes of one torch thread each train about 1.5x more
member-epochs an hour than one process with two threads (1.7x in a one-step micro-benchmark): the
networks are small, so intra-op threading gains little. An ensemble's members share nothing but the data, so
`--workers N` splits them into N groups; each epoch every group trains in its own process and
hands back its weights, optimizer and weight average, and the main process validates and saves.

Each group has its own optimizer, gradient clipping and random streams (seeded from the seed,
the epoch and the group), so a run is reproducible and resumable for a given --workers. Group 0's
streams are those of the loop before groups existed, so a --workers 1 run trains exactly as before.
Which process runs which group does not matter: a job carries everything its group needs.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .dataset import EncodedSet
from .model import GradeModel


@dataclass
class GroupState:
    """What one member group carries from one epoch to the next (and what last.pt saves of it)."""

    optimizer: dict[str, Any] | None = None  # None before the first epoch
    ema: dict[str, Any] | None = None  # AveragedModel state, with --ema-decay


@dataclass
class GroupEpoch:
    """One group's epoch, as handed back to the main process."""

    weights: list[dict[str, torch.Tensor]]  # per member, trained weights
    kept: list[dict[str, torch.Tensor]]  # per member, what is validated and saved (the average with --ema-decay)
    state: GroupState
    loss: float  # mean training loss over the group's members


def member_groups(members: int, workers: int) -> list[list[int]]:
    """Members split into at most `workers` runs of consecutive indices, as even as can be.

    Consecutive members cycle through --member-holds, so each group mixes the kinds."""
    return [list(map(int, part)) for part in np.array_split(np.arange(members), min(members, workers))]


def group_random_streams(seed: int, epoch: int, group: int) -> tuple[np.random.Generator, int]:
    """(numpy generator for the batch order, torch seed for dropout and <UNK>) of one group's epoch."""
    numpy_seed = [seed, epoch] if group == 0 else [seed, epoch, group]
    return np.random.default_rng(numpy_seed), seed * 100_003 + epoch + 1_000_003 * group


class GroupRunner:
    """Runs each member group's epoch: in worker processes (on the CPU, with more than one group)
    or one group after another in this process. Use as a context manager."""

    def __init__(
        self,
        train_epoch: Callable[..., GroupEpoch],
        data: EncodedSet,
        groups: Sequence[Sequence[int]],
        device: torch.device,
    ) -> None:
        self.train_epoch = train_epoch
        self.data = data
        self.groups = [list(g) for g in groups]
        self.parallel = len(self.groups) > 1 and device.type == "cpu"
        self.device = device
        self.pool: Executor | None = None

    def __enter__(self) -> GroupRunner:
        if self.parallel:
            threads = max(1, torch.get_num_threads() // len(self.groups))  # this process's share of the cores, split
            # spawn, not fork: a forked torch with live OpenMP threads can deadlock
            self.pool = ProcessPoolExecutor(
                len(self.groups),
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.train_epoch, self.data, threads),
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def run(self, model: GradeModel, states: Sequence[GroupState], epoch: int, **options: Any) -> list[GroupEpoch]:
        """Train every group for epoch `epoch` from `model`'s current weights."""
        jobs = [
            dict(
                options,
                model_config=model.config,
                members=group,
                group=g,
                epoch=epoch,
                state=states[g],
                weights=[model.members[i].state_dict() for i in group],
            )
            for g, group in enumerate(self.groups)
        ]
        if self.pool is None:
            return [self.train_epoch(data=self.data, device=self.device, **job) for job in jobs]
        return list(self.pool.map(_run_in_worker, jobs))


# Set once in each worker process by _start_worker: the training set is sent once, not every epoch.
_worker: dict[str, Any] = {}


def _start_worker(train_epoch: Callable[..., GroupEpoch], data: EncodedSet, threads: int) -> None:
    torch.set_num_threads(threads)
    _worker.update(train_epoch=train_epoch, data=data)


def _run_in_worker(job: dict[str, Any]) -> GroupEpoch:
    return _worker["train_epoch"](data=_worker["data"], device=torch.device("cpu"), **job)


def load_group_weights(model: GradeModel, members: Sequence[int], weights: Sequence[dict[str, torch.Tensor]]) -> None:
    """Put a group's per-member weights into `model`'s members at indices `members`."""
    for i, state in zip(members, weights):
        model.members[i].load_state_dict(state)
