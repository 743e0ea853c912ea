"""Export a run to ONNX + sidecar (model format 2), refusing any file onnxruntime does not run like PyTorch.

The graph is traced through Grader (grader.py), whose forward has the graph's signature (model_io
names): Aurora ids in, grade out. Before anything is written, onnxruntime (through the runtime's own
session factory) runs real validation batches of several sizes and lengths, and every board's edge
cases, against PyTorch; every mismatch is listed in one ExportValidationError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import io
import itertools
import json
import logging
import platform
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import torch

from climbgrade_runtime import model_io
from climbgrade_runtime.errors import ClimbgradeError
from climbgrade_runtime.files import atomic_write_bytes
from climbgrade_runtime.metrics import metrics_by_board, regression_metrics
from climbgrade_runtime.session import create_session
from climbgrade_runtime.sidecar import Sidecar, sidecar_path
from climbgrade_runtime.split import uuid_digest
from climbgrade_runtime.tokenizer import RouteIds, Tokenizer

from .checkpoints import load_checkpoint
from .config import TrainError
from .dataset import EncodedSet
from .grader import Grader
from .run_folder import moved_data, prepare_run, read_config, read_grades, read_run_info, read_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = 1e-4
VALIDATION_BATCH_SIZES = (1, 7, 128)
VALIDATION_ROUTES = 512
DEFAULT_INT8_MAX_DROP = 0.5  # points of within-1-V-grade an int8 model may lose on the test split


class ExportError(ClimbgradeError):
    """The exported graph is not what the runtime expects (opset, static dims)."""


class ExportValidationError(ExportError):
    """onnxruntime and PyTorch disagree; lists every mismatching batch."""

    def __init__(self, mismatches: Sequence[str], tolerance: float) -> None:
        self.mismatches = list(mismatches)
        super().__init__(
            f"ONNX output differs from PyTorch by more than {tolerance:g} in {len(self.mismatches)} batch(es): "
            + "; ".join(self.mismatches)
            + ". Nothing was written."
        )


def export_onnx(grader: Grader, example: dict[str, np.ndarray], opset: int) -> bytes:
    """Trace with the dynamo exporter (batch and hold axes dynamic) and return the checked model bytes."""
    if example[model_io.LAYOUT].shape[0] < 2 or example[model_io.PLACEMENT_ID].shape[1] < 2:
        raise ExportError("the example batch needs at least 2 routes of 2 holds, or an axis gets hard-coded")
    grader = grader.eval()
    args = tuple(torch.from_numpy(example[name]) for name, _ in model_io.INPUTS)
    batch, holds = torch.export.Dim("batch"), torch.export.Dim("holds")
    dynamic = {
        model_io.LAYOUT: {0: batch},
        model_io.ANGLE: {0: batch},
        model_io.PLACEMENT_ID: {0: batch, 1: holds},
        model_io.ROLE_ID: {0: batch, 1: holds},
    }
    outputs = grader.output_names
    noise = io.StringIO()  # the exporter prints its progress to stdout
    with (
        tempfile.TemporaryDirectory() as tmp,
        contextlib.redirect_stdout(noise),
        warnings.catch_warnings(),
        _quiet_loggers("torch.onnx", "onnxscript"),
    ):
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations, not ours to fix
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            grader,
            args,
            str(path),
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=dynamic,
            input_names=[n for n, _ in model_io.INPUTS],
            output_names=[n for n, _ in outputs],
            external_data=False,
            verbose=False,
        )
        proto = onnx.load(str(path))
    logger.debug("exporter output:\n%s", noise.getvalue())
    if opset == 17 and _opset(proto) == 18:
        _axes_as_attributes(proto)
    for node in proto.graph.node:  # the exporter's per-node debug notes: half a MB, with this machine's paths
        del node.metadata_props[:]
    _check_graph(proto, opset, outputs)
    config = grader.model.config
    meta = {
        model_io.META_FORMAT: str(model_io.MODEL_FORMAT),
        model_io.META_LAYOUTS: str(grader.encoder.n_layouts),
        model_io.META_VOCAB_SIZE: str(config.vocab_size),
        model_io.META_MAX_LEN: str(config.max_len),
        model_io.META_FEATURES: str(config.n_features),
        model_io.META_OPSET: str(opset),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "climbgrade"
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """The exporter warns about building at opset 18 and converting down, which _check_graph verifies."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


AXES_INPUT_AT_18 = ("ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum")


def _axes_as_attributes(proto: onnx.ModelProto) -> None:
    """Opset 18 -> 17 in place. torch's exporter writes opset 18 when the graph has ReduceMax/ReduceMin
    (the features' masked maxima) and its converter goes no lower, nor does ONNX's cleanly; the only
    change between the two for these graphs is that those reductions take their axes as an input from
    18 on, as an attribute before. Any other op of 18 fails the opset check and onnx's full check."""
    graph = proto.graph
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    for node in graph.node:
        if node.op_type not in AXES_INPUT_AT_18 or len(node.input) < 2:
            continue
        if node.input[1] not in constants:
            raise ExportError(f"{node.name}: reduction axes computed at run time cannot be written at opset 17")
        axes = [int(a) for a in np.atleast_1d(constants[node.input[1]])]
        del node.input[1]
        kept = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
        del node.attribute[:]
        node.attribute.extend([*kept, onnx.helper.make_attribute("axes", axes)])
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 17


def _opset(proto: onnx.ModelProto) -> int | None:
    found = {o.domain: o.version for o in proto.opset_import}
    return found.get("", found.get("ai.onnx"))


def _check_graph(proto: onnx.ModelProto, opset: int, outputs: tuple[tuple[str, str], ...]) -> None:
    if _opset(proto) != opset:
        found = {o.domain: o.version for o in proto.opset_import}
        raise ExportError(f"exported opset_import is {found}, not {opset}: this torch/onnx cannot write opset {opset}")
    names = [i.name for i in proto.graph.input]
    found_outputs = [o.name for o in proto.graph.output]
    if names != [n for n, _ in model_io.INPUTS] or found_outputs != [n for n, _ in outputs]:
        raise ExportError(
            f"exported graph has inputs {names} and outputs {found_outputs}, expected "
            f"{[n for n, _ in model_io.INPUTS]} and {[n for n, _ in outputs]}"
        )
    for tensor in proto.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        if any(not d.dim_param for d in dims):
            raise ExportError(f"input {tensor.name} has a fixed batch or hold axis {[d.dim_value for d in dims]}")


def validation_batches(data: EncodedSet, tokenizer: Tokenizer, limit: int = VALIDATION_ROUTES) -> list[list[RouteIds]]:
    """Real routes in batches of 1, 7 and 128, mixing lengths, so every batch has its own padded length;
    then every layout's edge cases (edge_cases), one batch each, and each of them alone."""
    rng = np.random.default_rng(0)
    chosen = rng.permutation(len(data))[:limit]
    sizes = itertools.cycle(VALIDATION_BATCH_SIZES)
    batches: list[list[RouteIds]] = []
    start = 0
    while start < len(chosen):
        size = next(sizes)
        batches.append([data.rows[i] for i in chosen[start : start + size]])
        start += size
    for cases in edge_cases(tokenizer).values():
        batches.append(cases)
        batches.extend([case] for case in cases)
    return batches


def edge_cases(tokenizer: Tokenizer) -> dict[str, list[RouteIds]]:
    """Per layout, routes at the edges of what the features see: one hold, two holds, feet only, no start
    or finish, the longest route the model takes (holds listed top to bottom, so the graph must sort them)."""
    out = {}
    for key, layout in tokenizer.layouts.items():
        index = tokenizer.layout_index[key]
        own = layout.role_ids
        roles = {name: own[name] for name in ("start", "middle", "finish", "foot") if name in own}
        fallback = next(iter(own.values()))
        start, middle = roles.get("start", fallback), roles.get("middle", fallback)
        finish, foot = roles.get("finish", fallback), roles.get("foot", fallback)
        by_height = sorted(
            layout.placements, key=lambda pid: (layout.placements[pid][1], layout.placements[pid][0], pid)
        )
        n = min(tokenizer.max_holds, len(by_height))
        spread = [by_height[round(i * (len(by_height) - 1) / max(n - 1, 1))] for i in range(n)]
        bottom_up = ([start, start] + [middle if i % 3 else foot for i in range(max(n - 4, 0))] + [finish, finish])[:n]
        angle = layout.angles[len(layout.angles) // 2]
        cases = [
            RouteIds(index, angle, (spread[0],), (start,)),
            RouteIds(index, angle, (spread[0], spread[-1]), (start, finish)),
            RouteIds(index, angle, tuple(spread[:4]), (foot,) * 4),
            RouteIds(index, layout.angles[0], tuple(spread[1:6]), (middle,) * 5),
            RouteIds(index, layout.angles[-1], tuple(reversed(spread)), tuple(reversed(bottom_up))),
        ]
        out[f"{key[0]}/{key[1]}"] = cases
    return out


def compare_with_torch(session: Any, grader: Grader, batches: Sequence[Sequence[RouteIds]]) -> list[tuple[str, float]]:
    """Max |onnxruntime - PyTorch| of each batch, with a description naming its size and hold count.
    The `problems` output must be equal (and 0: these routes are all valid)."""
    names = [n for n, _ in grader.output_names]
    out = []
    for n, batch in enumerate(batches):
        feeds = model_io.route_feeds(batch)
        found = dict(zip(names, session.run(names, feeds)))
        with torch.no_grad():
            expected = dict(
                zip(names, (t.numpy() for t in grader(*(torch.from_numpy(feeds[k]) for k, _ in model_io.INPUTS))))
            )
        size, holds = feeds[model_io.PLACEMENT_ID].shape
        where = f"batch {n} (size {size}, {holds} holds)"
        problems = found.pop(model_io.PROBLEMS), expected.pop(model_io.PROBLEMS)
        if problems[0].any() or not np.array_equal(*problems):
            out.append(
                (
                    f"{where}: problems {problems[0].tolist()} from onnxruntime, {problems[1].tolist()} from PyTorch",
                    np.inf,
                )
            )
            continue
        diffs = {name: float(np.max(np.abs(found[name] - expected[name]))) for name in found}
        worst = max(diffs, key=diffs.__getitem__)
        label = "" if len(diffs) == 1 else f" ({worst})"
        out.append((f"{where}: max |diff| {diffs[worst]:.2e}{label}", diffs[worst]))
    return out


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    name: str | None = None,
    databases: Sequence[str] = (),
    catalog: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    quantize_int8: bool = False,
    int8_max_drop: float = DEFAULT_INT8_MAX_DROP,
) -> Path:
    """Write `<out>/<name>.onnx` and its sidecar from a finished run (and, if asked, the int8
    `<name>.int8.onnx` pair); returns the fp32 .onnx path."""
    run_dir = Path(run_dir)
    for required in ("best.pt", "run.json", "tokenizer.json", "split.json", "grades.json"):
        if not (run_dir / required).is_file():
            raise TrainError(f"{run_dir} is not a finished cg-train run ({required} missing)")
    run_info = read_run_info(run_dir)
    config = read_config(run_dir, moved_data(databases, catalog))
    model = load_checkpoint(run_dir / "best.pt")
    tokenizer = read_tokenizer(run_dir)
    if len(tokenizer.vocab) != model.config.vocab_size or tokenizer.max_len != model.config.max_len:
        raise TrainError(f"{run_dir}: tokenizer.json does not belong to best.pt (vocab size or max_len differ)")
    sets = prepare_run(config, run_dir, resume=True).sets
    val = sets["val"]

    grader = Grader(model, tokenizer)
    example = model_io.route_feeds([row for row in val.rows if len(row.placements) > 1][:3])
    logger.info("exporting %s at opset %d (example batch %s)", run_dir, opset, example[model_io.PLACEMENT_ID].shape)
    data = export_onnx(grader, example, opset)

    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / "candidate.onnx"
        candidate.write_bytes(data)
        report = compare_with_torch(create_session(candidate), grader, validation_batches(val, tokenizer))
    worst = max(diff for _, diff in report)
    if worst > tolerance:
        raise ExportValidationError([text for text, diff in report if diff > tolerance], tolerance)
    logger.info("onnxruntime vs PyTorch on %d validation batches: max |diff| %.2e", len(report), worst)

    metrics_path = run_dir / "metrics.json"
    sidecar = Sidecar(
        model_sha256=hashlib.sha256(data).hexdigest(),
        opset=opset,
        inputs=model_io.INPUTS,
        outputs=grader.output_names,
        tokenizer=tokenizer,
        grades=read_grades(run_dir),
        metrics=json.loads(metrics_path.read_text()) if metrics_path.is_file() else {},
        data=run_info["data"]
        | {
            "split": config.split.to_dict()
            | {
                "test_climbs": len({e.uuid for e in sets["test"].examples}),
                "test_rows": len(sets["test"]),
                "test_climbs_sha256": uuid_digest(e.uuid for e in sets["test"].examples),
            }
        },
        training={
            "command": config.command(run_dir),
            "config": config.to_dict(),
            "model_config": model.config.to_dict(),
            "export_parity_max_abs_diff": worst,
            "export_parity_batches": len(report),
        },
        versions=_versions(),
    )
    model_path = Path(out_dir) / f"{name or run_dir.name}.onnx"
    atomic_write_bytes(model_path, data)
    sidecar.save(sidecar_path(model_path))
    logger.info("wrote %s (%.1f MB) and %s", model_path, len(data) / 1e6, sidecar_path(model_path))
    if quantize_int8:
        export_int8(data, sidecar, sets["test"], model_path.with_suffix(".int8.onnx"), int8_max_drop)
    return model_path


def quantize_dynamic_int8(fp32: bytes) -> bytes:
    """Dynamic int8 quantisation (int8 weights, activations quantised at run time), metadata kept."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(fp32)
        # It logs a hint to run its pre-processing first; measured on our model: same size and speed.
        with _quiet_loggers(""):
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        proto = onnx.load(str(target))
    kept = {entry.key for entry in proto.metadata_props}
    for entry in onnx.load_from_string(fp32).metadata_props:
        if entry.key not in kept:
            proto.metadata_props.append(entry)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_int8(fp32: bytes, fp32_sidecar: Sidecar, test: EncodedSet, path: Path, max_drop_points: float) -> None:
    """Quantise, compare with fp32 on the test split through onnxruntime, and write the int8 pair
    unless it loses more than `max_drop_points` of within-1-V-grade."""
    int8 = quantize_dynamic_int8(fp32)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "fp32.onnx").write_bytes(fp32)
        (Path(tmp) / "int8.onnx").write_bytes(int8)
        fp32_session, int8_session = (create_session(Path(tmp) / name) for name in ("fp32.onnx", "int8.onnx"))
        fp32_pred = test.graph_outputs_with(lambda feeds: fp32_session.run([model_io.DIFFICULTY], feeds))[0]
        int8_pred = test.graph_outputs_with(lambda feeds: int8_session.run([model_io.DIFFICULTY], feeds))[0]
    grades = fp32_sidecar.grades
    fp32_metrics = regression_metrics(test.targets, fp32_pred, grades)
    test_metrics = metrics_by_board(test.boards, test.targets, int8_pred, grades)
    diff = np.abs(int8_pred - fp32_pred)
    change = 100 * (test_metrics["all"]["within_1_vgrade"] - fp32_metrics["within_1_vgrade"])
    report = {
        "method": "onnxruntime.quantization.quantize_dynamic, int8 weights",
        "fp32_sha256": fp32_sidecar.model_sha256,
        "size_bytes": len(int8),
        "fp32_size_bytes": len(fp32),
        "test_rows": len(test),
        "test_max_abs_diff_vs_fp32": float(diff.max()),
        "test_mean_abs_diff_vs_fp32": float(diff.mean()),
        "test_within_1_vgrade_fp32": fp32_metrics["within_1_vgrade"],
        "test_within_1_vgrade_int8": test_metrics["all"]["within_1_vgrade"],
        "test_within_1_vgrade_change_points": change,
    }
    logger.info(
        "int8 vs fp32 on %d test routes: max |diff| %.3f, mean %.4f, within-1-V %+.2f points, %.1f MB",
        len(test),
        diff.max(),
        diff.mean(),
        change,
        len(int8) / 1e6,
    )
    if change < -max_drop_points:
        raise ExportError(
            f"the int8 model loses {-change:.2f} points of within-1-V-grade on the test split "
            f"(limit {max_drop_points}); the fp32 model was written, the int8 one was not"
        )
    sidecar = dataclasses.replace(
        fp32_sidecar,
        model_sha256=hashlib.sha256(int8).hexdigest(),
        metrics={"test": test_metrics, "note": "int8 model through onnxruntime on the fp32 model's test split"},
        training=fp32_sidecar.training | {"quantization": report},
    )
    atomic_write_bytes(path, int8)
    sidecar.save(sidecar_path(path))
    logger.info("wrote %s and %s", path, sidecar_path(path))


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("climbgrade", "torch", "onnx", "onnxscript", "onnxruntime", "numpy"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out
