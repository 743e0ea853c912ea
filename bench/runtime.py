"""Runtime benchmark: speed, footprint and int8 figures of the shipped model, with their targets.

    .venv/bin/python bench/runtime.py            # real routes from $CLIMBGRADE_DATA or ../shared/data
    .venv/bin/python bench/runtime.py --section insight --section eval   # only those figures

Needs the training extra (PyTorch is the reference) and the real databases. Every figure is
measured here, in one run; nothing is asserted on timing in the test suite.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from climbgrade_runtime import GradePredictor
from climbgrade_runtime.boardlib_db import ClimbFilter
from climbgrade_runtime.graded import load_examples
from climbgrade_runtime.model_io import pad_batch
from climbgrade_runtime.routes import parse_route
from climbgrade_train.checkpoints import load_checkpoint
from climbgrade_train.predict import torch_predict

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Parts of the benchmark, in the order they run; --section picks some.
SECTIONS = ("predict", "throughput", "process", "soak", "int8", "insight", "eval", "venv")


class TimedSession:
    """Wraps an onnxruntime session to add up the time spent inside `run`."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.seconds = 0.0

    def run(self, *args: Any) -> Any:
        started = time.perf_counter()
        out = self.session.run(*args)
        self.seconds += time.perf_counter() - started
        return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.array(samples) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def time_each(fn: Callable[[Any], Any], items: list[Any], warmup: int = 300) -> list[float]:
    for item in items[:warmup]:
        fn(item)
    out = []
    for item in items:
        started = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - started)
    return out


def real_routes(data_dir: Path, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` real routes as users send them (JSON objects with frames), sampled across lengths."""
    examples = load_examples([str(p) for p in sorted(data_dir.glob("*.db"))], ClimbFilter()).examples
    random.Random(seed).shuffle(examples)
    routes = []
    for e in examples[:count]:
        layout = e.route.layout
        frames = "".join(f"p{pid}r{layout.role_ids[role]}" for pid, role in e.route.holds)
        routes.append({"board": layout.board, "layout_id": layout.layout_id, "angle": e.angle, "frames": frames})
    return routes


def single_route(model: Path, routes: list[dict[str, Any]]) -> dict[str, float]:
    """GradePredictor.predict end to end (parse + tokenize + run), 1 thread, and its time inside onnxruntime."""
    predictor = GradePredictor.load(model, intra_op_threads=1)
    predictor.warm_up()
    timed = TimedSession(predictor._session)
    predictor._session_instance = timed
    for route in routes[:300]:
        predictor.predict(route)
    timed.seconds = 0.0
    samples = time_each(predictor.predict, routes, warmup=0)
    p50, p99 = percentiles(samples)
    return {"p50": p50, "p99": p99, "outside_share": 1 - timed.seconds / sum(samples)}


def pytorch_single_route(checkpoint: Path, model: Path, routes: list[dict[str, Any]]) -> float:
    """PyTorch eval of the same model on the same routes, 1 thread (tokenized by the runtime, excluded)."""
    torch.set_num_threads(1)
    net = load_checkpoint(checkpoint)
    tokenizer = GradePredictor.load(model).tokenizer
    batches = [pad_batch([tokenizer.encode(parse_route(r))]) for r in routes]
    return percentiles(time_each(lambda b: torch_predict(net, b), batches))[0]


def throughput(model: Path, routes: list[dict[str, Any]], threads: int) -> dict[int, float]:
    """Routes per second of predict_many on all routes (parse + tokenize + batched run), per batch size."""
    predictor = GradePredictor.load(model, intra_op_threads=threads)
    predictor.warm_up()
    out = {}
    for batch_size in (64, 128, 256, 512):
        predictor.predict_many(routes[:2000], batch_size=batch_size)
        started = time.perf_counter()
        predictor.predict_many(routes, batch_size=batch_size)
        out[batch_size] = len(routes) / (time.perf_counter() - started)
    return out


def insight_route(model: Path, routes: list[dict[str, Any]]) -> dict[str, float]:
    """p50 (ms) of GradePredictor.sweep at every angle of the route's board and of .explain, 1 thread."""
    predictor = GradePredictor.load(model, intra_op_threads=1)
    predictor.warm_up()
    several = [r for r in routes if r["frames"].count("p") >= 2]  # explain needs 2 holds
    return {
        "sweep": percentiles(time_each(predictor.sweep, several, warmup=20))[0],
        "explain": percentiles(time_each(predictor.explain, several, warmup=20))[0],
        "angles": statistics.mean(len(predictor.tokenizer.resolve(parse_route(r)).layout.angles) for r in several),
        "holds": statistics.mean(r["frames"].count("p") for r in several),
    }


def eval_throughput(model: Path, data_dir: Path) -> tuple[int, float]:
    """Rows and rows/s of `cg-eval --predictions` on every database in `data_dir` (fresh process, wall)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "predictions.csv"
        dbs = [arg for db in sorted(data_dir.glob("*.db")) for arg in ("--db", str(db))]
        seconds, _ = run_process([str(BIN / "cg-eval"), "--model", str(model), *dbs, "--predictions", str(out)])
        rows = len(out.read_text().splitlines()) - 1
    return rows, rows / seconds


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


def soak(model: Path, routes: list[dict[str, Any]], count: int) -> tuple[float, float]:
    """RSS (MB) after warming up and after `count` more predictions in this process."""
    predictor = GradePredictor.load(model, intra_op_threads=1)
    for route in routes[:2000]:
        predictor.predict(route)
    before = _rss_mb()
    for i in range(count):
        predictor.predict(routes[i % len(routes)])
    return before, _rss_mb()


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def runtime_venv_size() -> tuple[float, list[str]]:
    """Size on disk (MB) and packages of a fresh venv with only `pip install .`."""
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin/pip"), "install", "-q", str(ROOT)], check=True, capture_output=True)
        listing = subprocess.run(
            [str(venv / "bin/pip"), "list", "--format", "json"], check=True, capture_output=True, text=True
        ).stdout
        size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
        return size / 1e6, sorted(p["name"].lower() for p in json.loads(listing))


def predict_rows(
    model: Path, int8_model: Path, checkpoint: Path, single_routes: list[dict[str, Any]]
) -> list[tuple[str, str, str]]:
    fp32 = single_route(model, single_routes)
    torch_p50 = pytorch_single_route(checkpoint, model, single_routes)
    int8 = single_route(int8_model, single_routes)
    return [
        ("predict, fp32, 1 thread: p50 / p99", f"{fp32['p50']:.3f} / {fp32['p99']:.3f} ms", "<= 0.5 / <= 1 ms"),
        ("  share of it outside onnxruntime", f"{100 * fp32['outside_share']:.1f}%", "<= 15%"),
        (
            "  PyTorch eval p50 (same routes) and ratio",
            f"{torch_p50:.3f} ms, {torch_p50 / fp32['p50']:.1f}x slower",
            ">= 2x",
        ),
        ("predict, int8, 1 thread: p50 / p99", f"{int8['p50']:.3f} / {int8['p99']:.3f} ms", ""),
    ]


def throughput_rows(model: Path, int8_model: Path, routes: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    rows = []
    for label, path in (("fp32", model), ("int8", int8_model)):
        rates = throughput(path, routes, threads=2)
        best = max(rates, key=lambda b: rates[b])
        rows.append(
            (
                f"predict_many, 10,000 real routes, 2 threads, {label}",
                f"{rates[best]:,.0f} routes/s at batch {best} ("
                + ", ".join(f"{b}: {r:,.0f}" for b, r in rates.items())
                + ")",
                ">= 5,000 routes/s" if label == "fp32" else "",
            )
        )
    return rows


def process_rows() -> list[tuple[str, str, str]]:
    infer = [run_process([str(BIN / "cg-infer"), "examples/routes.json"]) for _ in range(10)]
    torch_import = [run_process([sys.executable, "-c", "import torch"])[0] for _ in range(5)]
    wall = statistics.median(t for t, _ in infer)
    return [
        (
            "cg-infer examples/routes.json, fresh process, wall (median of 10)",
            f"{wall:.3f} s; import torch alone {statistics.median(torch_import):.3f} s "
            f"({statistics.median(torch_import) / wall:.1f}x)",
            "<= 0.35 s, >= 4x",
        ),
        ("  its peak RSS", f"{max(rss for _, rss in infer) / 1024:.0f} MB", "<= 120 MB"),
    ]


def int8_rows(int8_model: Path) -> list[tuple[str, str, str]]:
    quant = json.loads(Path(f"{int8_model}.json").read_text())["training"]["quantization"]
    return [
        ("int8 model size (fp32)", f"{quant['size_bytes'] / 1e6:.2f} MB ({quant['fp32_size_bytes'] / 1e6:.2f} MB)", ""),
        (
            f"int8 vs fp32 on the {quant['test_rows']:,} test routes: max / mean |diff|",
            f"{quant['test_max_abs_diff_vs_fp32']:.3f} / {quant['test_mean_abs_diff_vs_fp32']:.4f}",
            "",
        ),
        (
            "  within-1-V-grade fp32 -> int8",
            f"{100 * quant['test_within_1_vgrade_fp32']:.2f}% -> "
            f"{100 * quant['test_within_1_vgrade_int8']:.2f}% ({quant['test_within_1_vgrade_change_points']:+.2f} points)",
            "change < 0.5 points to ship",
        ),
    ]


@click.command()
@click.option(
    "--data",
    "data_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=lambda: os.environ.get("CLIMBGRADE_DATA", str(ROOT.parent / "shared" / "data")),
)
@click.option("--model", type=click.Path(exists=True, path_type=Path), default=ROOT / "exports/climbgrade.onnx")
@click.option(
    "--int8-model", type=click.Path(exists=True, path_type=Path), default=ROOT / "exports/climbgrade.int8.onnx"
)
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path), default=ROOT / "exports/climbgrade.pt")
@click.option("--soak-predictions", type=int, default=100_000, show_default=True)
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
    int8_model: Path,
    checkpoint: Path,
    soak_predictions: int,
    skip_venv: bool,
    sections: tuple[str, ...],
) -> None:
    wanted = set(sections or SECTIONS) - ({"venv"} if skip_venv else set())
    routes = real_routes(data_dir, 10_000) if wanted & {"predict", "throughput", "soak", "insight"} else []
    single_routes = routes[:3000]
    rows: list[tuple[str, str, str]] = []

    if "predict" in wanted:
        rows += predict_rows(model, int8_model, checkpoint, single_routes)
    if "throughput" in wanted:
        rows += throughput_rows(model, int8_model, routes)
    if "process" in wanted:
        rows += process_rows()
    if "soak" in wanted:
        before, after = soak(model, routes, soak_predictions)
        rows.append(
            (
                f"soak: {soak_predictions:,} predictions in one process",
                f"RSS {before:.1f} -> {after:.1f} MB ({after - before:+.1f} MB)",
                "flat",
            )
        )
    if "int8" in wanted:
        rows += int8_rows(int8_model)
    if "insight" in wanted:
        timings = insight_route(model, routes[:300])
        rows += [
            (
                f"sweep, every angle (~{timings['angles']:.0f}) of one route, fp32, 1 thread: p50",
                f"{timings['sweep']:.2f} ms",
                "",
            ),
            (
                f"explain, one route (~{timings['holds']:.0f} holds: a batch of n+1), fp32, 1 thread: p50",
                f"{timings['explain']:.2f} ms",
                "",
            ),
        ]
    if "eval" in wanted:
        count, rate = eval_throughput(model, data_dir)
        rows.append(
            (
                f"cg-eval --predictions, all of {data_dir.name}/ ({count:,} rows), fresh process, 2 threads",
                f"{rate:,.0f} rows/s (wall, reading the databases included)",
                "",
            )
        )
    if "venv" in wanted:
        size, packages = runtime_venv_size()
        heavy = sorted(set(packages) & {"torch", "pandas", "onnx", "onnxscript"})
        rows.append(
            (
                "runtime-only venv (pip install .)",
                f"{size:.0f} MB; {', '.join(packages)}",
                f"<= 200 MB, no torch/pandas/onnx{'' if not heavy else ' -- FOUND ' + ', '.join(heavy)}",
            )
        )

    width = max(len(r[0]) for r in rows)
    click.echo(f"climbgrade runtime benchmark ({os.cpu_count()} CPUs, onnxruntime model {model.name})")
    for name, value, target in rows:
        click.echo(f"{name.ljust(width)}  {value}" + (f"   [target {target}]" if target else ""))


if __name__ == "__main__":
    main()
