"""What onnxruntime fuses in our graphs, and what an offline-optimized graph gains: issue 18's export question.

    .venv/bin/python bench/graph.py            # ~2,000 real routes from $CLIMBGRADE_DATA or ../shared/data
    .venv/bin/python bench/graph.py --quick    # a few hundred: a rough figure

Two networks of the same size (d_model 128, 4 heads, 4 layers, feed-forward 256), random weights (seeded),
sized by --model's tokenizer: the student as `climbgrade_train` builds it now (the batch-first encoder of
climbgrade_train/encoder.py, a bins head with an interval), exported by the project's exporter, and the seed
notebook's network (`nn.TransformerEncoderLayer`, bench/seed_reference.py). For each, four graphs:

- exported: the file as exported, run as the runtime's session factory opens it (ORT_ENABLE_ALL at load);
- ORT_ENABLE_ALL: what onnxruntime actually runs from it (SessionOptions.optimized_model_filepath),
  opened with graph optimizations disabled: the offline-optimized file the runtime could ship;
- transformer optimizer: onnxruntime.transformers.optimizer.optimize_model (BERT fusions), opened by the
  session factory, and its ORT_ENABLE_ALL output opened unoptimized, when the optimizer produced a model.

Each row: op-type counts (Transpose with its perms), session creation (median), p50 of single real routes
(1 thread, batch 1) and batch-256 throughput (2 threads), every graph taking turns on the same feeds so that
load on the machine moves all alike, and the largest |difference| of every output from the exported graph's.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
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
import torch
from runtime import percentiles, rates_interleaved, seed_batches, time_interleaved
from sample_routes import DATA_OPTION, load_routes
from seed_reference import D_FF, D_MODEL, HEADS, LAYERS, export_seed

from climbgrade_runtime.errors import ClimbgradeError
from climbgrade_runtime.model_io import TOKEN_IDS, pad_batch
from climbgrade_runtime.predictor import DEFAULT_BATCH_SIZE
from climbgrade_runtime.routes import parse_route
from climbgrade_runtime.session import create_session
from climbgrade_runtime.sidecar import Sidecar, sidecar_path
from climbgrade_runtime.tokenizer import Tokenizer
from climbgrade_train.export import DEFAULT_OPSET, DEFAULT_TOLERANCE, export_onnx
from climbgrade_train.model import BINS_HEAD, GradeModel, ModelConfig

ROOT = Path(__file__).resolve().parents[1]
# Op types shown in the table's columns (what a fusion replaces, and what it makes); the rest are listed below it.
COLUMNS = {
    "LayerNorm": ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization"),
    "GELU": ("Gelu", "BiasGelu", "FastGelu", "Erf"),
    "attention": ("Attention", "MultiHeadAttention", "Softmax"),
    "matmul": ("MatMul", "FusedMatMul", "Gemm"),
}
SHORT = {"LayerNormalization": "LN", "SkipLayerNormalization": "SkipLN", "SimplifiedLayerNormalization": "RMSLN"}


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much is measured: the full run, or --quick's."""

    routes: int  # single routes timed one at a time (1 thread), and batched by 256 (2 threads)
    rounds: int  # interleaved passes over the batches; the median counts
    creations: int  # session creations per graph; the median counts
    parity_singles: int  # batch-1 feeds compared with the exported graph (plus every batch of 256)


FULL = Scale(routes=2_000, rounds=3, creations=5, parity_singles=500)
QUICK = Scale(routes=300, rounds=1, creations=3, parity_singles=100)


@dataclasses.dataclass(frozen=True)
class Graph:
    """One ONNX file and how it is opened: by the session factory, or already optimized (optimizations off)."""

    network: str
    name: str
    path: Path
    preoptimized: bool

    @property
    def label(self) -> str:
        return f"{self.network}: {self.name}"

    def open(self, threads: int) -> Any:
        if self.preoptimized:
            return preoptimized_session(self.path, threads)
        return create_session(self.path, intra_op_threads=threads)


def preoptimized_session(path: Path, threads: int) -> Any:
    """A session on an already optimized file: the session factory's settings with graph optimizations off."""
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


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The transformer optimizer logs every fusion it tries; its statistics are reported instead."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def transformer_optimize(source: Path, target: Path) -> tuple[Path | None, str]:
    """onnxruntime's BERT fusions on `source`, saved to `target`; (None, why) when it fails."""
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        with quiet():
            optimized = optimize_model(str(source), model_type="bert", num_heads=HEADS, hidden_size=D_MODEL)
            fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
            optimized.save_model_to_file(str(target))
    except Exception as exc:  # the optimizer's failures are what this row reports, whatever they are
        return None, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return target, "fused " + (", ".join(f"{op} {n}" for op, n in sorted(fused.items())) or "nothing")


def op_counts(path: Path) -> collections.Counter[str]:
    """Op types of the graph in `path` (nested subgraphs and local functions included)."""
    proto = onnx.load(str(path))
    nodes = [*proto.graph.node, *(n for f in proto.functions for n in f.node)]
    counts: collections.Counter[str] = collections.Counter()
    while nodes:
        node = nodes.pop()
        counts[node.op_type] += 1
        nodes += [n for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for n in a.g.node]
    return counts


def transpose_perms(path: Path) -> collections.Counter[str]:
    """How many Transposes of each perm the top-level graph holds."""
    perms: collections.Counter[str] = collections.Counter()
    for node in onnx.load(str(path)).graph.node:
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [])
            perms["".join(map(str, perm)) or "rev"] += 1
    return perms


def export_student(tokenizer: Tokenizer, example: dict[str, np.ndarray], path: Path) -> Path:
    """The student at the seed's size with random (seeded) weights, exported by climbgrade_train.export."""
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=len(tokenizer.vocab),
        max_len=tokenizer.max_len,
        n_features=tokenizer.n_features,
        d_model=D_MODEL,
        n_heads=HEADS,
        n_layers=LAYERS,
        d_ff=D_FF,
        head=BINS_HEAD,  # issue 18's student: 24 one-unit bins from 10, with an interval
        bins=24,
        bin_low=10.0,
        interval_scale=1.0,
    )
    path.write_bytes(export_onnx(GradeModel(config).eval(), example, DEFAULT_OPSET))
    return path


def graphs_of(network: str, exported: Path, folder: Path) -> tuple[list[Graph], str]:
    """The exported graph, its ORT_ENABLE_ALL form, and the transformer optimizer's (and its ORT_ENABLE_ALL
    form) when it made one; with what the optimizer did."""
    graphs = [
        Graph(network, "exported", exported, False),
        Graph(network, "ORT_ENABLE_ALL", write_ort_optimized(exported, folder / f"{network}.ort.onnx"), True),
    ]
    fused, outcome = transformer_optimize(exported, folder / f"{network}.bert.onnx")
    if fused is not None:
        graphs += [
            Graph(network, "transformer optimizer", fused, False),
            Graph(
                network,
                "transformer optimizer + ORT_ENABLE_ALL",
                write_ort_optimized(fused, folder / f"{network}.bert.ort.onnx"),
                True,
            ),
        ]
    return graphs, outcome


def creation_ms(graph: Graph, times: int) -> float:
    """Median wall time of opening `graph` (1 thread), in ms."""
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        graph.open(1)
        samples.append(time.perf_counter() - started)
    return 1e3 * statistics.median(samples)


def max_diff(graph: Graph, reference: Any, feeds: Sequence[dict[str, np.ndarray]]) -> float:
    """Largest |output - reference output| of `graph` over every output and feed."""
    session = graph.open(1)
    names = [o.name for o in reference.get_outputs()]
    worst = 0.0
    for feed in feeds:
        for found, expected in zip(session.run(names, feed), reference.run(names, feed)):
            worst = max(worst, float(np.max(np.abs(found - expected))))
    return worst


def rotations(labels: Sequence[str], count: int) -> Iterator[list[str]]:
    """`count` turn orders of `labels`, each starting at another one: a graph always timed first (or right
    after the same neighbour) would carry that position's bias."""
    for i in range(count):
        start = i * len(labels) // count
        yield [*labels[start:], *labels[:start]]


def p50_ms(graphs: Sequence[Graph], singles: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """p50 of session.run on single routes, 1 thread, the graphs taking turns route by route; the routes are
    cut in as many slices as there are graphs, each slice starting the turns at another graph."""
    run = {g.label: functools.partial(g.open(1).run, None) for g in graphs}
    samples: dict[str, list[float]] = {label: [] for label in run}
    step = -(-len(singles) // len(graphs))
    for i, order in enumerate(rotations(list(run), len(graphs))):
        part = singles[i * step : (i + 1) * step]
        calls: dict[str, tuple[Callable[[Any], Any], Sequence[Any]]] = {label: (run[label], part) for label in order}
        for label, found in time_interleaved(calls, warmup=300 if i == 0 else 20).items():
            samples[label] += found
    return {label: percentiles(found)[0] for label, found in samples.items()}


def throughput(graphs: Sequence[Graph], batches: Sequence[dict[str, np.ndarray]], rounds: int) -> dict[str, float]:
    """Routes/s over every batch, 2 threads, the median of `rounds` passes taking turns in rotated orders."""
    routes = sum(len(b[TOKEN_IDS]) for b in batches)
    many: dict[str, Callable[[], Any]] = {g.label: functools.partial(run_batches, g.open(2), batches) for g in graphs}
    rates_interleaved(many, routes, rounds=1)  # warm-up: every batch shape once
    found: dict[str, list[float]] = {label: [] for label in many}
    for order in rotations(list(many), rounds):
        for label, rate in rates_interleaved({label: many[label] for label in order}, routes, rounds=1).items():
            found[label].append(rate)
    return {label: statistics.median(rates) for label, rates in found.items()}


def measure(
    graphs: Sequence[Graph],
    singles: Sequence[dict[str, np.ndarray]],
    batches: Sequence[dict[str, np.ndarray]],
    scale: Scale,
) -> dict[str, dict[str, str]]:
    """Each graph's cells: creation ms, p50 ms, routes/s, and its outputs' max |diff| from the exported graph's."""
    figures: dict[str, dict[str, str]] = {g.label: {} for g in graphs}
    for graph in graphs:
        figures[graph.label]["create"] = f"{creation_ms(graph, scale.creations):.0f}"
    for label, ms in p50_ms(graphs, singles).items():
        figures[label]["p50"] = f"{ms:.3f}"
    for label, rate in throughput(graphs, batches, scale.rounds).items():
        figures[label]["rate"] = f"{rate:,.0f}"
    references = {g.network: create_session(g.path) for g in graphs if g.name == "exported"}
    feeds = [*singles[: scale.parity_singles], *batches]
    for graph in graphs:
        if graph.name == "exported":
            figures[graph.label]["diff"] = "(reference)"
            continue
        diff = max_diff(graph, references[graph.network], feeds)
        figures[graph.label]["diff"] = f"{diff:.1e} {'ok' if diff <= DEFAULT_TOLERANCE else 'OVER 1e-4'}"
    return figures


def run_batches(session: Any, batches: Sequence[dict[str, np.ndarray]]) -> None:
    for batch in batches:
        session.run(None, batch)


def cell(counts: collections.Counter[str], ops: Sequence[str]) -> str:
    return ", ".join(f"{SHORT.get(op, op)} {counts[op]}" for op in ops if counts[op]) or "0"


def print_table(
    graphs: list[Graph],
    figures: dict[str, dict[str, str]],
    outcomes: dict[str, str],
    header: str,
) -> None:
    """One markdown table, a graph per row, then the transformer optimizer's outcome and every op count."""
    head = [
        "graph",
        "nodes",
        "Transpose (perms)",
        *COLUMNS,
        "create ms",
        "p50 ms (1 thr, b1)",
        f"routes/s (2 thr, b{DEFAULT_BATCH_SIZE})",
        "max abs diff vs exported",
    ]
    click.echo(f"\n{header}\n")
    click.echo("| " + " | ".join(head) + " |")
    click.echo("|" + "---|" * len(head))
    counts_of = {g.label: op_counts(g.path) for g in graphs}
    for graph in graphs:
        counts, perms = counts_of[graph.label], transpose_perms(graph.path)
        perm_text = ", ".join(f"{perm} x{n}" for perm, n in sorted(perms.items()))
        transposes = f"{counts['Transpose']} ({perm_text})" if perms else str(counts["Transpose"])
        cells = [
            graph.label,
            str(sum(counts.values())),
            transposes,
            *(cell(counts, ops) for ops in COLUMNS.values()),
            *figures[graph.label].values(),
        ]
        click.echo("| " + " | ".join(cells) + " |")
    click.echo("")
    for network, outcome in outcomes.items():
        click.echo(f"transformer optimizer on {network}: {outcome}")
    shown = {op for ops in COLUMNS.values() for op in ops} | {"Transpose"}
    for graph in graphs:
        rest = sorted((n, op) for op, n in counts_of[graph.label].items() if op not in shown)
        click.echo(f"other ops, {graph.label}: " + ", ".join(f"{op} {n}" for n, op in reversed(rest)))


@click.command()
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=ROOT / "exports/climbgrade.onnx",
    help="A model whose sidecar gives the tokenizer (vocabulary, lengths, features) both networks are sized by.",
)
@DATA_OPTION
@click.option("--quick", is_flag=True, help=f"{QUICK.routes} routes and fewer repeats: a rough figure.")
def main(model: Path, data_dir: Path, quick: bool) -> None:
    scale = QUICK if quick else FULL
    try:
        tokenizer = Sidecar.load(sidecar_path(model)).tokenizer
    except ClimbgradeError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc
    routes, source = load_routes(scale.routes, data_dir)
    routes = [routes[i % len(routes)] for i in range(scale.routes)]
    singles = [pad_batch([tokenizer.encode(parse_route(r))]) for r in routes]
    batches = seed_batches(tokenizer, routes, DEFAULT_BATCH_SIZE)
    example = seed_batches(tokenizer, routes[:2], 2)[0]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="climbgrade-graph-") as tmp:
        folder = Path(tmp)
        graphs: list[Graph] = []
        outcomes: dict[str, str] = {}
        for network, export in (("student", export_student), ("seed", export_seed)):
            started = time.perf_counter()
            exported = export(tokenizer, example, folder / f"{network}.onnx")
            found, outcomes[network] = graphs_of(network, exported, folder)
            graphs += found
            click.echo(f"{network}: exported and optimized in {time.perf_counter() - started:.0f} s", err=True)

        started = time.perf_counter()
        figures = measure(graphs, singles, batches, scale)
        click.echo(f"timed in {time.perf_counter() - started:.0f} s", err=True)
        print_table(
            graphs,
            figures,
            outcomes,
            f"onnxruntime {ort.__version__} graph optimizations, d_model {D_MODEL}, {HEADS} heads, {LAYERS} layers, "
            f"ff {D_FF}, random weights; tokenizer of {model.name}; routes: {source}; {os.cpu_count()} CPUs, load "
            f"average {os.getloadavg()[0]:.1f} at the end{'; --quick' if quick else ''}",
        )


if __name__ == "__main__":
    main()
