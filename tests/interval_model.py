"""A tiny model WITH an interval for the runtime's tests, made without torch or training.

The session fixtures export a model that outputs `difficulty` and `problems` (model_io.OUTPUTS);
`add_interval` copies it with two more outputs, low = difficulty - HALF_WIDTH and high = difficulty +
HALF_WIDTH (a Sub and an Add node), put between them in model_io.INTERVAL_OUTPUTS order (difficulty,
low, high, problems), and gives the copy a sidecar listing model_io.INTERVAL_OUTPUTS with the copy's
sha256: the pair cg-export writes for a model with an interval. Only tests use the `onnx` package; the runtime never does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from climbgrade_runtime import model_io
from climbgrade_runtime.sidecar import file_sha256, sidecar_path

HALF_WIDTH = 1.0


def add_interval(model: Path, out: Path) -> Path:
    """Write `out` (and its sidecar): `model` with low/high outputs HALF_WIDTH either side of its difficulty."""
    proto = onnx.load(str(model))
    graph = proto.graph
    plain = [name for name, _ in model_io.OUTPUTS]
    assert [o.name for o in graph.output] == plain, "the model already has more than a difficulty and problems"
    difficulty, problems = (onnx.ValueInfoProto(), onnx.ValueInfoProto())
    difficulty.CopyFrom(graph.output[0])
    problems.CopyFrom(graph.output[1])
    graph.initializer.append(numpy_helper.from_array(np.array(HALF_WIDTH, dtype=np.float32), "interval_half_width"))
    graph.node.extend(
        [
            helper.make_node("Sub", [model_io.DIFFICULTY, "interval_half_width"], [model_io.LOW]),
            helper.make_node("Add", [model_io.DIFFICULTY, "interval_half_width"], [model_io.HIGH]),
        ]
    )
    del graph.output[:]
    for name, _ in model_io.INTERVAL_OUTPUTS:  # low and high go between difficulty and problems
        output = graph.output.add()
        output.CopyFrom(problems if name == model_io.PROBLEMS else difficulty)
        output.name = name
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    write_sidecar(model, out, model_io.INTERVAL_OUTPUTS)
    return out


def write_sidecar(source: Path, model: Path, outputs: tuple[tuple[str, str], ...]) -> None:
    """`model`'s sidecar: `source`'s, listing `outputs` and `model`'s sha256."""
    data = json.loads(sidecar_path(source).read_text())
    data["model"]["outputs"] = [{"name": n, "dtype": d} for n, d in outputs]
    data["model"]["sha256"] = file_sha256(model)
    sidecar_path(model).write_text(json.dumps(data))
