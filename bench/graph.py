"""What the graph's features cost in onnxruntime: model format 2's question (issue 22).

    .venv/bin/python bench/graph.py            # ~2,000 real routes from $CLIMBGRADE_DATA or ../shared/data
    .venv/bin/python bench/graph.py --quick    # a few hundred: a rough figure

A format-2 graph computes the network's inputs itself (canonical order, tokens and every feature:
climbgrade_train.features.RouteEncoder) from a route's Aurora ids. Two graphs of one trained network:

- whole graph: --model (the shipped model) fed model_io.route_feeds, as the runtime runs it;
- network alone: --run's GradeModel (its best.pt: the shipped model's weights), exported here behind a
  small wrapper taking the seed's three inputs (token ids, features, attention mask), fed
  bench/seed_reference.seed_feeds (the RouteEncoder in PyTorch, outside the timing).

Each is opened with ORT_ENABLE_ALL (the runtime's session factory) and with graph optimizations disabled.
All four take turns on the same real routes: p50 of single routes (1 thread, batch 1) and batch-256
throughput (2 threads); the features' cost is the whole graph minus the network alone at the same level,
in the same run. The largest |difficulty - the shipped graph's| shows both compute one network. Last, the
shipped graph's nodes split into the feature subgraph (what the exporter attributes to RouteEncoder) and
the network, and the node counts onnxruntime runs after ORT_ENABLE_ALL.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import onnx
import onnxruntime as ort
import seed_reference
import torch
from runtime import batches_of, percentiles, rates_interleaved, route_ids, time_interleaved
from sample_routes import DATA_OPTION, load_routes
from seed_reference import seed_feeds
from torch import nn

from climbgrade_runtime import model_io
from climbgrade_runtime.errors import ClimbgradeError
from climbgrade_runtime.predictor import DEFAULT_BATCH_SIZE
from climbgrade_runtime.session import create_session
from climbgrade_runtime.sidecar import Sidecar, sidecar_path
from climbgrade_train.checkpoints import load_checkpoint
from climbgrade_train.features import RouteEncoder
from climbgrade_train.model import GradeModel
from climbgrade_train.run_folder import read_tokenizer

ROOT = Path(__file__).resolve().parents[1]
FEATURE_MODULE = "climbgrade_train.features.RouteEncoder"  # in a node's pkg.torch.onnx.class_hierarchy
LEVELS = {"ORT_ENABLE_ALL": True, "disabled": False}


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much is measured: the full run, or --quick's."""

    routes: int  # single routes timed one at a time (1 thread), and batched by 256 (2 threads)
    rounds: int  # interleaved passes over the batches; the median counts
    parity_singles: int  # batch-1 feeds compared with the shipped graph (plus every batch of 256)


FULL = Scale(routes=2_000, rounds=5, parity_singles=500)
QUICK = Scale(routes=512, rounds=5, parity_singles=100)


@dataclasses.dataclass(frozen=True)
class Graph:
    """One ONNX file, its feeds (batch 1 and batch 256), and whether onnxruntime optimizes it at load."""

    name: str
    path: Path
    optimized: bool
    singles: Sequence[dict[str, np.ndarray]]
    batches: Sequence[dict[str, np.ndarray]]

    @property
    def level(self) -> str:
        return "ORT_ENABLE_ALL" if self.optimized else "disabled"

    @property
    def label(self) -> str:
        return f"{self.name}, {self.level}"

    def open(self, threads: int) -> Any:
        if self.optimized:
            return create_session(self.path, intra_op_threads=threads)
        return unoptimized_session(self.path, threads)


def unoptimized_session(path: Path, threads: int) -> Any:
    """The session factory's settings with graph optimizations off."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0" if threads > 1 else "1")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def write_ort_optimized(source: Path, target: Path) -> Path:
    """The graph onnxruntime runs from `source` at ORT_ENABLE_ALL (the session factory's level), saved to `target`."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
    return target


class NetworkAlone(nn.Module):
    """A GradeModel taking the seed's inputs (attention mask 1 on tokens), returning what the graph returns but `problems`."""

    def __init__(self, model: GradeModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, token_ids: torch.Tensor, coords: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        return self.model.outputs(token_ids, coords, attention_mask == 0)


def export_network(model: GradeModel, example: dict[str, np.ndarray], path: Path) -> Path:
    """NetworkAlone(model), exported as the seed network is (seed_reference.export_network)."""
    outputs = model_io.INTERVAL_OUTPUTS if model.has_interval else model_io.OUTPUTS
    return seed_reference.export_network(
        NetworkAlone(model), example, path, [n for n, _ in outputs if n != model_io.PROBLEMS]
    )


def nodes(path: Path) -> list[onnx.NodeProto]:
    """The nodes of the graph in `path` (nested subgraphs and local functions included)."""
    proto = onnx.load(str(path))
    pending = [*proto.graph.node, *(n for f in proto.functions for n in f.node)]
    out = []
    while pending:
        node = pending.pop()
        out.append(node)
        pending += [n for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for n in a.g.node]
    return out


def from_features(node: onnx.NodeProto) -> bool | None:
    """Whether the exporter made `node` from RouteEncoder code (None: the node says nothing of its module)."""
    meta = {m.key: m.value for m in node.metadata_props}
    if "pkg.torch.onnx.class_hierarchy" not in meta:
        return None
    return FEATURE_MODULE in ast.literal_eval(meta["pkg.torch.onnx.class_hierarchy"])


def op_summary(found: Sequence[onnx.NodeProto], top: int = 8) -> str:
    counts = collections.Counter(n.op_type for n in found)
    return ", ".join(f"{op} {n}" for op, n in counts.most_common(top))


def rotations(labels: Sequence[str], count: int) -> Iterator[list[str]]:
    """`count` turn orders of `labels`, each starting at another one: a graph always timed first (or right
    after the same neighbour) would carry that position's bias."""
    for i in range(count):
        start = i * len(labels) // count
        yield [*labels[start:], *labels[:start]]


def p50_ms(graphs: Sequence[Graph]) -> dict[str, float]:
    """p50 of session.run on single routes, 1 thread, the graphs taking turns route by route; the routes are
    cut in as many slices as there are graphs, each slice starting the turns at another graph."""
    run = {g.label: functools.partial(g.open(1).run, None) for g in graphs}
    singles = {g.label: g.singles for g in graphs}
    samples: dict[str, list[float]] = {label: [] for label in run}
    count = min(len(s) for s in singles.values())
    step = -(-count // len(graphs))
    for i, order in enumerate(rotations(list(run), len(graphs))):
        calls: dict[str, tuple[Callable[[Any], Any], Sequence[Any]]] = {
            label: (run[label], singles[label][i * step : (i + 1) * step]) for label in order
        }
        for label, found in time_interleaved(calls, warmup=300 if i == 0 else 20).items():
            samples[label] += found
    return {label: percentiles(found)[0] for label, found in samples.items()}


def throughput(graphs: Sequence[Graph], routes: int, rounds: int) -> dict[str, float]:
    """Routes/s over every batch, 2 threads, the median of `rounds` passes taking turns in rotated orders."""
    many: dict[str, Callable[[], Any]] = {g.label: functools.partial(run_batches, g.open(2), g.batches) for g in graphs}
    rates_interleaved(many, routes, rounds=1)  # warm-up: every batch shape once
    found: dict[str, list[float]] = {label: [] for label in many}
    for order in rotations(list(many), rounds):
        for label, rate in rates_interleaved({label: many[label] for label in order}, routes, rounds=1).items():
            found[label].append(rate)
    return {label: statistics.median(rates) for label, rates in found.items()}


def run_batches(session: Any, batches: Sequence[dict[str, np.ndarray]]) -> None:
    for batch in batches:
        session.run(None, batch)


def max_diff(graph: Graph, reference: Graph, singles: int) -> float:
    """Largest |difficulty - the reference graph's| over the first `singles` single feeds and every batch."""
    session, expected = graph.open(1), reference.open(1)
    worst = 0.0
    pairs = [*zip(graph.singles[:singles], reference.singles[:singles]), *zip(graph.batches, reference.batches)]
    for ours, theirs in pairs:
        found = session.run([model_io.DIFFICULTY], ours)[0]
        wanted = expected.run([model_io.DIFFICULTY], theirs)[0]
        worst = max(worst, float(np.max(np.abs(found - wanted))))
    return worst


@click.command()
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=ROOT / "exports/climbgrade.onnx",
    help="The whole graph (format 2) whose features are measured.",
)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=ROOT / "runs/climbgrade",
    help="The run folder of --model (best.pt, tokenizer.json): its network is exported alone.",
)
@DATA_OPTION
@click.option("--quick", is_flag=True, help=f"{QUICK.routes} routes and fewer repeats: a rough figure.")
def main(model: Path, run_dir: Path, data_dir: Path, quick: bool) -> None:
    scale = QUICK if quick else FULL
    try:
        tokenizer = Sidecar.load(sidecar_path(model)).tokenizer
    except ClimbgradeError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc
    if read_tokenizer(run_dir).to_dict() != tokenizer.to_dict():
        raise click.BadParameter(f"{run_dir}/tokenizer.json is not {model.name}'s tokenizer", param_hint="--run")
    routes, source = load_routes(scale.routes, data_dir)
    rows = route_ids(tokenizer, [routes[i % len(routes)] for i in range(scale.routes)])
    batches = batches_of(rows, DEFAULT_BATCH_SIZE)
    torch.set_num_threads(1)
    encoder = RouteEncoder(tokenizer)
    with tempfile.TemporaryDirectory(prefix="climbgrade-graph-") as tmp:
        started = time.perf_counter()
        network = export_network(
            load_checkpoint(run_dir / "best.pt"), seed_feeds(encoder, rows[:2]), Path(tmp) / "network.onnx"
        )
        feeds = {
            "whole graph": (
                model,
                [model_io.route_feeds([r]) for r in rows],
                [model_io.route_feeds(b) for b in batches],
            ),
            "network alone": (
                network,
                [seed_feeds(encoder, [r]) for r in rows],
                [seed_feeds(encoder, b) for b in batches],
            ),
        }
        graphs = [
            Graph(name, path, on, singles, many)
            for name, (path, singles, many) in feeds.items()
            for on in LEVELS.values()
        ]
        optimized = {
            name: nodes(write_ort_optimized(path, Path(tmp) / f"{name}.ort.onnx"))
            for name, (path, _, _) in feeds.items()
        }
        click.echo(f"network exported, feeds made in {time.perf_counter() - started:.0f} s", err=True)

        started = time.perf_counter()
        p50 = p50_ms(graphs)
        rates = throughput(graphs, len(rows), scale.rounds)
        click.echo(f"timed in {time.perf_counter() - started:.0f} s", err=True)
        diffs = {g.label: max_diff(g, graphs[0], scale.parity_singles) for g in graphs[1:]}
        exported = {"whole graph": nodes(model), "network alone": nodes(network)}

    head = [
        "graph",
        "optimizations",
        "nodes run",
        "p50 ms (1 thr, b1)",
        "features' share of b1",
        f"routes/s (2 thr, b{DEFAULT_BATCH_SIZE})",
        f"features' share of b{DEFAULT_BATCH_SIZE}",
        "max abs diff vs shipped",
    ]
    click.echo(
        f"\nonnxruntime {ort.__version__}: the features' cost in {model.name} (whole graph, fed Aurora ids) against "
        f"its network alone (--run's best.pt, fed seed_feeds); routes: {source}; {os.cpu_count()} CPUs, load "
        f"average {os.getloadavg()[0]:.1f} at the end{'; --quick' if quick else ''}\n"
    )
    click.echo("| " + " | ".join(head) + " |")
    click.echo("|" + "---|" * len(head))
    for graph in graphs:
        alone = f"network alone, {graph.level}"
        whole = graph.name == "whole graph"
        share_b1 = (p50[graph.label] - p50[alone]) / p50[graph.label]
        share_many = 1 - rates[graph.label] / rates[alone]  # (1/rate - 1/alone rate) / (1/rate)
        count = len(optimized[graph.name] if graph.optimized else exported[graph.name])
        cells = [
            graph.name,
            graph.level,
            str(count),
            f"{p50[graph.label]:.3f}",
            f"{100 * share_b1:.0f}% ({1e3 * (p50[graph.label] - p50[alone]):.0f} us)" if whole else "(reference)",
            f"{rates[graph.label]:,.0f}",
            f"{100 * share_many:.0f}% ({1e6 * (1 / rates[graph.label] - 1 / rates[alone]):.1f} us/route)"
            if whole
            else "(reference)",
            "(reference)" if graph is graphs[0] else f"{diffs[graph.label]:.1e}",
        ]
        click.echo("| " + " | ".join(cells) + " |")
    click.echo("")
    for name in feeds:
        on, off = f"{name}, ORT_ENABLE_ALL", f"{name}, disabled"
        click.echo(
            f"ORT_ENABLE_ALL against disabled, {name}: p50 {p50[off] / p50[on]:.2f}x faster, "
            f"batch {DEFAULT_BATCH_SIZE} {rates[on] / rates[off]:.2f}x"
        )
    split = collections.defaultdict(list)
    for node in exported["whole graph"]:
        split[{True: "feature subgraph", False: "network", None: "unattributed"}[from_features(node)]].append(node)
    for part, found in sorted(split.items()):
        click.echo(f"{model.name} as exported, {part}: {len(found)} nodes ({op_summary(found)})")
    click.echo(
        f"network alone as exported: {len(exported['network alone'])} nodes ({op_summary(exported['network alone'])})"
    )
    difference = len(optimized["whole graph"]) - len(optimized["network alone"])
    click.echo(
        f"after ORT_ENABLE_ALL: whole graph {len(optimized['whole graph'])} nodes, network alone "
        f"{len(optimized['network alone'])}: the features about {difference} ({op_summary(optimized['whole graph'])})"
    )


if __name__ == "__main__":
    main()
