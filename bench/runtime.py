"""Runtime benchmark: speed, footprint and int8 figures of a model, each beside its target and reference.

    .venv/bin/python bench/runtime.py            # every section; real routes from $CLIMBGRADE_DATA or ../shared/data
    .venv/bin/python bench/runtime.py --quick --section predict --section throughput   # the speed ratios, fast

The speed targets are ratios to the seed notebook's network (bench/seed_reference.py: random weights,
exported in this run, run bare in onnxruntime on the very feeds the model under test gets), timed
interleaved with the model so that a busy or drifting machine moves both alike. The PyTorch
comparison needs a checkpoint (--checkpoint RUN_DIR reads its best.pt); without one it is skipped.
Routes are real ones when the databases are here, else the examples repeated. Everything is measured
in one run and ends in one table (target | measured | reference | pass); nothing here is a timed test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from sample_routes import DATA_OPTION, load_routes
from seed_reference import seed_feeds, seed_model

from climbgrade_runtime import GradePredictor
from climbgrade_runtime.model_io import route_feeds
from climbgrade_runtime.predictor import DEFAULT_BATCH_SIZE
from climbgrade_runtime.routes import parse_route
from climbgrade_runtime.session import create_session
from climbgrade_runtime.tokenizer import RouteIds, Tokenizer
from climbgrade_train.checkpoints import load_checkpoint
from climbgrade_train.features import RouteEncoder
from climbgrade_train.grader import Grader

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Parts of the benchmark, in the order they run; --section picks some.
SECTIONS = ("predict", "throughput", "process", "soak", "int8", "insight", "eval", "venv")
SEED_SECTIONS = {"predict", "throughput"}  # the ones timed against the seed network
ROUTE_SECTIONS = SEED_SECTIONS | {"soak", "insight"}
ONE_ROUTE = ROOT / "examples" / "route.json"


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much each section measures: the full run, or --quick's."""

    routes: int  # predict_many's routes (the first `single` of them are graded one at a time)
    single: int
    rounds: int  # interleaved passes of predict_many and the seed; the median counts
    batch_sizes: tuple[int, ...]  # predict_many's; DEFAULT_BATCH_SIZE is the one held to the target
    processes: int  # fresh cg-infer processes (and as many `import torch`)
    soak: int


FULL = Scale(
    routes=10_000, single=3_000, rounds=3, batch_sizes=(64, 128, DEFAULT_BATCH_SIZE, 512), processes=10, soak=100_000
)
QUICK = Scale(routes=3_000, single=1_000, rounds=2, batch_sizes=(DEFAULT_BATCH_SIZE,), processes=5, soak=10_000)


@dataclasses.dataclass(frozen=True)
class Row:
    """One figure of the final table; `passed` is None where there is no target to pass."""

    figure: str
    measured: str
    target: str = ""
    reference: str = ""
    passed: bool | None = None


@dataclasses.dataclass(frozen=True)
class Bench:
    """What the sections measure: the model (and its int8 twin), the routes and the seed network."""

    model: Path
    int8_model: Path | None
    checkpoint: Path | None
    routes: list[dict[str, Any]]
    tokenizer: Tokenizer
    encoder: RouteEncoder  # the model's own, in PyTorch: makes the seed network's inputs
    seed: Path | None
    scale: Scale


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 of `samples` (seconds), in ms."""
    ms = np.array(samples) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def time_each(fn: Callable[[Any], Any], items: Sequence[Any], warmup: int = 300) -> list[float]:
    return time_interleaved({"": (fn, items)}, warmup)[""]


def time_interleaved(
    calls: dict[str, tuple[Callable[[Any], Any], Sequence[Any]]], warmup: int = 300
) -> dict[str, list[float]]:
    """Seconds of each call on each of its items (lists of one length), the calls taking turns item by
    item so that a drift in the machine's load hits them all alike."""
    count = min(len(items) for _, items in calls.values())
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for i in itertools.chain(range(min(warmup, count)), range(count)):
        for name, (fn, items) in calls.items():
            started = time.perf_counter()
            fn(items[i])
            samples[name].append(time.perf_counter() - started)
    return {name: s[min(warmup, count) :] for name, s in samples.items()}


def rates_interleaved(calls: dict[str, Callable[[], Any]], items: int, rounds: int) -> dict[str, float]:
    """Items per second of each call (one pass over `items` items), the median of `rounds` taking turns."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            started = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - started)
    return {name: items / statistics.median(s) for name, s in seconds.items()}


def verdict(passed: bool | None) -> str:
    return "" if passed is None else "PASS" if passed else "MISS"


def route_ids(tokenizer: Tokenizer, routes: Iterable[dict[str, Any]]) -> list[RouteIds]:
    return [tokenizer.ids(tokenizer.resolve(parse_route(r))) for r in routes]


def batches_of(rows: list[RouteIds], batch_size: int) -> list[list[RouteIds]]:
    """The batches predict_many runs: sorted by length, padded to each batch's longest."""
    ordered = sorted(rows, key=lambda r: len(r.placements))
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def predict_rows(bench: Bench) -> list[Row]:
    """predict end to end (1 thread) against the seed network and the model's own bare run, same routes."""
    assert bench.seed is not None
    routes = bench.routes[: bench.scale.single]
    ids = route_ids(bench.tokenizer, routes)
    feeds = [route_feeds([row]) for row in ids]
    seed = [seed_feeds(bench.encoder, [row]) for row in ids]
    calls: dict[str, tuple[Callable[[Any], Any], Sequence[Any]]] = {}
    for label, path in (("fp32", bench.model), ("int8", bench.int8_model)):
        if path is not None:
            predictor = GradePredictor.load(path, intra_op_threads=1)
            predictor.warm_up()
            calls[label] = (predictor.predict, routes)
    for label, path, inputs in (("bare", bench.model, feeds), ("seed", bench.seed, seed)):
        calls[label] = (functools.partial(create_session(path, intra_op_threads=1).run, None), inputs)
    p50 = {name: percentiles(s) for name, s in time_interleaved(calls).items()}
    seed_ms, model_ms, bare_ms = p50["seed"][0], p50["fp32"][0], p50["bare"][0]
    outside = (model_ms - bare_ms) / model_ms
    reference = f"seed network, bare onnxruntime: {seed_ms:.3f} ms"
    rows = [
        Row(
            f"`predict` end to end (parse, validate, run), {len(routes):,} routes, fp32, 1 thread: p50 / p99",
            f"{model_ms:.3f} / {p50['fp32'][1]:.3f} ms: {model_ms / seed_ms:.2f}x the seed",
            "p50 <= 1.0x the seed",
            reference,
            model_ms <= seed_ms,
        ),
        Row(
            "  share of it outside onnxruntime: (p50 - bare session.run p50) / p50",
            f"{100 * outside:.1f}% ({1e3 * (model_ms - bare_ms):.0f} us)",
            "",
            f"the model's bare session.run: {bare_ms:.3f} ms ({bare_ms / seed_ms:.2f}x the seed)",
        ),
        pytorch_row(bench, feeds, model_ms),
    ]
    if "int8" in p50:
        int8_ms = p50["int8"][0]
        rows.append(
            Row(
                "`predict`, int8, 1 thread: p50 / p99",
                f"{int8_ms:.3f} / {p50['int8'][1]:.3f} ms: {int8_ms / seed_ms:.2f}x the seed",
                reference=reference,
            )
        )
    return rows


def pytorch_row(bench: Bench, feeds: list[dict[str, np.ndarray]], model_ms: float) -> Row:
    """PyTorch eval of the checkpoint (the exported Grader: ids in, grade out) on the same feeds, 1 thread."""
    figure = "PyTorch eval of the checkpoint, same routes, 1 thread: p50"
    if bench.checkpoint is None:
        return Row(figure, "skipped: pass --checkpoint RUN_DIR (its best.pt) or a .pt file to compare")
    torch.set_num_threads(1)
    grader = Grader(load_checkpoint(bench.checkpoint), bench.tokenizer).eval()

    def run(batch: dict[str, np.ndarray]) -> Any:
        with torch.inference_mode():
            return grader(*map(torch.from_numpy, batch.values()))

    torch_ms = percentiles(time_each(run, feeds))[0]
    return Row(
        figure,
        f"{torch_ms:.3f} ms: `predict` is {torch_ms / model_ms:.1f}x faster",
        target=">= 2x faster than PyTorch",
        passed=torch_ms >= 2 * model_ms,
    )


def throughput_rows(bench: Bench) -> list[Row]:
    """predict_many (2 threads) against the seed network's bare batched runs of the same routes, same run."""
    assert bench.seed is not None
    routes, scale = bench.routes, bench.scale
    calls: dict[str, Callable[[], Any]] = {}
    for label, path in (("fp32", bench.model), ("int8", bench.int8_model)):
        if path is None:
            continue
        predictor = GradePredictor.load(path, intra_op_threads=2)
        predictor.warm_up()
        sizes = scale.batch_sizes if label == "fp32" else (DEFAULT_BATCH_SIZE,)
        for size in sizes:
            calls[f"{label} {size}"] = functools.partial(predictor.predict_many, routes, batch_size=size)
    batches = batches_of(route_ids(bench.tokenizer, routes), DEFAULT_BATCH_SIZE)
    seed, bare = create_session(bench.seed, intra_op_threads=2), create_session(bench.model, intra_op_threads=2)
    seed_inputs = [seed_feeds(bench.encoder, b) for b in batches]
    bare_inputs = [route_feeds(b) for b in batches]
    calls["seed"] = lambda: [seed.run(None, b) for b in seed_inputs]
    calls["bare"] = lambda: [bare.run(None, b) for b in bare_inputs]
    rates_interleaved(calls, len(routes), rounds=1)  # warm-up: every batch shape once
    rates = rates_interleaved(calls, len(routes), scale.rounds)
    seed_rate, model_rate = rates["seed"], rates[f"fp32 {DEFAULT_BATCH_SIZE}"]
    outside_us = 1e6 * (1 / model_rate - 1 / rates["bare"])
    reference = f"seed network, bare onnxruntime, batch {DEFAULT_BATCH_SIZE}: {seed_rate:,.0f} routes/s"
    rows = [
        Row(
            f"`predict_many`, {len(routes):,} routes, 2 threads, fp32, batch {DEFAULT_BATCH_SIZE}",
            f"{model_rate:,.0f} routes/s: {model_rate / seed_rate:.2f}x the seed",
            ">= 1.3x the seed",
            reference,
            model_rate >= 1.3 * seed_rate,
        ),
        Row(
            "  Python outside onnxruntime per route: 1/rate - 1/(the model's bare session.run rate)",
            f"{outside_us:.1f} us",
            "<= 30 us",
            f"the model's bare session.run: {rates['bare']:,.0f} routes/s",
            outside_us <= 30,
        ),
    ]
    others = [s for s in scale.batch_sizes if s != DEFAULT_BATCH_SIZE]
    if others:
        rows.append(Row("  other batch sizes", ", ".join(f"{s}: {rates[f'fp32 {s}']:,.0f} routes/s" for s in others)))
    if f"int8 {DEFAULT_BATCH_SIZE}" in rates:
        int8_rate = rates[f"int8 {DEFAULT_BATCH_SIZE}"]
        rows.append(
            Row(
                "`predict_many`, same, int8",
                f"{int8_rate:,.0f} routes/s: {int8_rate / seed_rate:.2f}x the seed",
                reference=reference,
            )
        )
    return rows


def run_process(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KB) of one fresh process, as GNU time reports them.

    Not os.wait4: a child forked from this process (torch loaded) inherits its RSS high-water mark.
    """
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    if result.returncode != 0:
        raise click.ClickException(f"{' '.join(args)} failed: {result.stderr[-500:]}")
    seconds, peak_kb = result.stderr.split()[-2:]
    return float(seconds), int(peak_kb)


def process_rows(bench: Bench) -> list[Row]:
    """Fresh `cg-infer` on one route against a fresh `import torch`, taking turns."""
    infer_args = [str(BIN / "cg-infer"), "--model", str(bench.model), str(ONE_ROUTE)]
    torch_args = [sys.executable, "-c", "import torch"]
    infer, torch_import = [], []
    for _ in range(bench.scale.processes):
        infer.append(run_process(infer_args))
        torch_import.append(run_process(torch_args)[0])
    wall, torch_wall = statistics.median(t for t, _ in infer), statistics.median(torch_import)
    peak_mb = max(rss for _, rss in infer) / 1024
    figure = f"fresh `cg-infer {ONE_ROUTE.relative_to(ROOT)}`, start to printed answer (median of {len(infer)})"
    reference = f"fresh `python -c 'import torch'`: {torch_wall:.3f} s"
    return [
        Row(
            figure,
            f"{wall:.3f} s: {torch_wall / wall:.1f}x faster",
            ">= 4x faster than `import torch`",
            reference,
            torch_wall >= 4 * wall,
        ),
        Row("  its wall time", f"{wall:.3f} s", "<= 0.35 s", "", wall <= 0.35),
        Row("  its peak RSS", f"{peak_mb:.0f} MB", "<= 120 MB", "", peak_mb <= 120),
    ]


def soak_rows(bench: Bench) -> list[Row]:
    """RSS before and after `scale.soak` more predictions in this process, once warm."""
    predictor = GradePredictor.load(bench.model, intra_op_threads=1)
    for route in bench.routes[:2000]:
        predictor.predict(route)
    before = _rss_mb()
    for i in range(bench.scale.soak):
        predictor.predict(bench.routes[i % len(bench.routes)])
    growth = _rss_mb() - before
    return [
        Row(
            f"soak: {bench.scale.soak:,} predictions in one process",
            f"RSS {before:.1f} MB, {growth:+.1f} MB after",
            "flat (< 1 MB growth)",
            "",
            growth < 1.0,
        )
    ]


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def int8_rows(bench: Bench) -> list[Row]:
    """The int8 twin's size and accuracy change, as its export measured them (in its sidecar)."""
    if bench.int8_model is None:
        return [Row("int8 model", f"skipped: no {int8_twin(bench.model).name} beside the model (--int8-model PATH)")]
    quant = json.loads(Path(f"{bench.int8_model}.json").read_text())["training"]["quantization"]
    change = quant["test_within_1_vgrade_change_points"]
    return [
        Row(
            "int8 model size",
            f"{quant['size_bytes'] / 1e6:.2f} MB",
            "",
            f"fp32: {quant['fp32_size_bytes'] / 1e6:.2f} MB",
        ),
        Row(
            f"int8 vs fp32 on the {quant['test_rows']:,} test routes: max / mean |diff|",
            f"{quant['test_max_abs_diff_vs_fp32']:.3f} / {quant['test_mean_abs_diff_vs_fp32']:.4f}",
        ),
        Row(
            "  within-1-V-grade on the test split, int8",
            f"{100 * quant['test_within_1_vgrade_int8']:.2f}% ({change:+.2f} points)",
            "change < 0.5 points to ship",
            f"fp32: {100 * quant['test_within_1_vgrade_fp32']:.2f}%",
            abs(change) < 0.5,
        ),
    ]


def insight_rows(bench: Bench) -> list[Row]:
    """p50 of GradePredictor.sweep at every angle of the route's board and of .explain, 1 thread."""
    predictor = GradePredictor.load(bench.model, intra_op_threads=1)
    predictor.warm_up()
    resolved = [predictor.tokenizer.resolve(parse_route(r)) for r in bench.routes[:300]]
    several = [(r, x) for r, x in zip(bench.routes, resolved) if len(x.holds) >= 2]  # explain needs 2 holds
    routes = [r for r, _ in several]
    timings = time_interleaved({"sweep": (predictor.sweep, routes), "explain": (predictor.explain, routes)}, warmup=20)
    angles = statistics.mean(len(x.layout.angles) for _, x in several)
    holds = statistics.mean(len(x.holds) for _, x in several)
    return [
        Row(
            f"sweep, every angle (~{angles:.0f}) of one route, fp32, 1 thread: p50",
            f"{percentiles(timings['sweep'])[0]:.2f} ms",
        ),
        Row(
            f"explain, one route (~{holds:.0f} holds: a batch of n+1), fp32, 1 thread: p50",
            f"{percentiles(timings['explain'])[0]:.2f} ms",
        ),
    ]


def eval_rows(bench: Bench, data_dir: Path) -> list[Row]:
    """Rows/s of `cg-eval --predictions` on every database in `data_dir` (fresh process, wall)."""
    figure = f"`cg-eval --predictions`, all of {data_dir.name}/, fresh process, 2 threads"
    dbs = [arg for db in sorted(data_dir.glob("*.db")) for arg in ("--db", str(db))]
    if not dbs:
        return [Row(figure, f"skipped: no databases in {data_dir}")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "predictions.csv"
        seconds, _ = run_process([str(BIN / "cg-eval"), "--model", str(bench.model), *dbs, "--predictions", str(out)])
        count = len(out.read_text().splitlines()) - 1
    return [Row(figure, f"{count:,} rows, {count / seconds:,.0f} rows/s (wall, reading the databases included)")]


def venv_rows() -> list[Row]:
    """Size on disk and packages of a fresh venv with only `pip install .`."""
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin/pip"), "install", "-q", str(ROOT)], check=True, capture_output=True)
        listing = subprocess.run(
            [str(venv / "bin/pip"), "list", "--format", "json"], check=True, capture_output=True, text=True
        ).stdout
        size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6
    packages = sorted(p["name"].lower() for p in json.loads(listing))
    heavy = sorted(set(packages) & {"torch", "pandas", "onnx", "onnxscript"})
    return [
        Row(
            "runtime-only install (`pip install .` in a fresh venv)",
            f"{size:.0f} MB; {', '.join(packages)}" + (f"; FOUND {', '.join(heavy)}" if heavy else ""),
            "<= 200 MB, no torch/pandas/onnx",
            "",
            size <= 200 and not heavy,
        )
    ]


def int8_twin(model: Path) -> Path:
    return model.with_name(f"{model.stem}.int8.onnx")


def checkpoint_file(path: Path | None) -> Path | None:
    """--checkpoint: a .pt file, or a run folder whose best.pt it means."""
    if path is None or path.is_file():
        return path
    if not (path / "best.pt").is_file():
        raise click.BadParameter(f"{path} holds no best.pt", param_hint="--checkpoint")
    return path / "best.pt"


def print_table(rows: list[Row], header: str) -> None:
    """The figures as one markdown table the docs can take as it is."""
    click.echo(f"\n{header}\n")
    click.echo("| figure | target | measured | reference | pass |")
    click.echo("|---|---|---|---|---|")
    for row in rows:
        cells = (row.figure, row.target, row.measured, row.reference, verdict(row.passed))
        click.echo("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    judged = [row.passed for row in rows if row.passed is not None]
    click.echo(f"\n{judged.count(True)} of {len(judged)} targets passed")


@click.command()
@DATA_OPTION
@click.option("--model", type=click.Path(exists=True, path_type=Path), default=ROOT / "exports/climbgrade.onnx")
@click.option(
    "--int8-model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The int8 twin (default: MODEL's .int8.onnx beside it, when there is one).",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    help="PyTorch reference: a run folder (its best.pt) or a .pt file. Without it that comparison is skipped.",
)
@click.option("--soak-predictions", type=int, help=f"Default {FULL.soak:,} ({QUICK.soak:,} with --quick).")
@click.option("--quick", is_flag=True, help=f"Fewer routes and repeats ({QUICK.routes:,} routes): a rough figure.")
@click.option("--skip-venv", is_flag=True, help="Skip building a fresh runtime venv (needs PyPI, ~30 s).")
@click.option(
    "--section",
    "sections",
    type=click.Choice(SECTIONS),
    multiple=True,
    help="Measure only this part (repeatable). Default: every part.",
)
def main(
    data_dir: Path,
    model: Path,
    int8_model: Path | None,
    checkpoint: Path | None,
    soak_predictions: int | None,
    quick: bool,
    skip_venv: bool,
    sections: tuple[str, ...],
) -> None:
    wanted = [s for s in SECTIONS if s in (sections or SECTIONS) and not (s == "venv" and skip_venv)]
    scale = QUICK if quick else FULL
    if soak_predictions is not None:
        scale = dataclasses.replace(scale, soak=soak_predictions)
    loaded = GradePredictor.load(model)  # a folder means its climbgrade.onnx
    model, tokenizer = loaded.model_path, loaded.tokenizer
    checkpoint = checkpoint_file(checkpoint)
    routes, source = load_routes(scale.routes, data_dir) if set(wanted) & ROUTE_SECTIONS else ([], "none")
    routes = list(itertools.islice(itertools.cycle(routes), scale.routes)) if routes else []
    twin = int8_model or (int8_twin(model) if int8_twin(model).is_file() else None)
    runs = {
        "predict": predict_rows,
        "throughput": throughput_rows,
        "process": process_rows,
        "soak": soak_rows,
        "int8": int8_rows,
        "insight": insight_rows,
        "eval": lambda b: eval_rows(b, data_dir),
        "venv": lambda b: venv_rows(),
    }
    rows: list[Row] = []
    encoder = RouteEncoder(tokenizer)
    example = seed_feeds(encoder, route_ids(tokenizer, routes[:2])) if set(wanted) & SEED_SECTIONS else {}
    seed = seed_model(tokenizer, example) if example else None
    with seed or contextlib.nullcontext() as seed_path:
        bench = Bench(model, twin, checkpoint, routes, tokenizer, encoder, seed_path, scale)
        for name in wanted:
            started = time.perf_counter()
            rows += runs[name](bench)
            click.echo(f"{name}: {time.perf_counter() - started:.0f} s", err=True)
    print_table(
        rows,
        f"climbgrade runtime benchmark: {model.relative_to(ROOT) if model.is_relative_to(ROOT) else model}"
        f"{f' (int8: {twin.name})' if twin else ''}; routes: {source}; {os.cpu_count()} CPUs"
        f"{'; --quick' if quick else ''}",
    )


if __name__ == "__main__":
    main()
