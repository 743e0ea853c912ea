"""Clients outside the Python package grade as cg-infer does: only onnxruntime + numpy + json (Python), and
JavaScript on onnxruntime-node and on onnxruntime-web's wasm backend, from the model format 2 contract.

The JavaScript tests install examples/node's pinned packages (npm ci --ignore-scripts) when they are
missing; outside CI they skip, saying why, when node or npm is missing; with CI set they fail instead.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from climbgrade_runtime import model_io

from conftest import REAL_DATA, ROOT, run_script

pytestmark = pytest.mark.slow  # Node and npm

PYTHON_CLIENT = ROOT / "examples" / "onnxruntime_only.py"
NODE_DIR = ROOT / "examples" / "node"
MODEL = ROOT / "exports" / "climbgrade.onnx"
TOLERANCE = 1e-4
BITS = model_io.PROBLEM_BITS


def _needs(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the JavaScript clients must be tested (.ci/run installs node and npm)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """examples/node's pinned onnxruntime-node and onnxruntime-web, installed from its package-lock."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            _needs(f"{tool} is not installed")
    folder = NODE_DIR / "node_modules"
    if not (folder / "onnxruntime-node").is_dir() or not (folder / "onnxruntime-web").is_dir():
        result = subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            _needs(f"npm ci failed: {result.stderr[-500:]}")
    return folder


def python_client(routes: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, str(PYTHON_CLIENT), str(routes), str(MODEL)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=ROOT,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def node_client(routes: Path, *flags: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["node", "grade.mjs", str(routes), str(MODEL), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=NODE_DIR,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


def cg_infer(routes: Path) -> Any:
    return json.loads(run_script("cg-infer", "--model", str(MODEL), "--format", "json", str(routes)).stdout)


def assert_agree(client: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    assert len(client) == len(reference)
    for mine, theirs in zip(client, reference):
        assert mine["problems"] == 0, mine
        for key in ("difficulty", "low", "high"):
            assert abs(mine[key] - theirs[key]) <= TOLERANCE, (key, mine, theirs)


def real_routes(tmp_path: Path, count: int = 500) -> Path:
    """`count` real climbs written as users write them: frames with the board's own role ids, or holds."""
    from climbgrade_runtime.board_db import ClimbFilter
    from climbgrade_runtime.graded import load_examples

    assert REAL_DATA is not None
    examples = load_examples([str(REAL_DATA / "kilter.db"), str(REAL_DATA / "tension.db")], ClimbFilter()).examples
    chosen = random.Random(0).sample(examples, count)
    routes = []
    for i, e in enumerate(chosen):
        own = e.route.layout.role_ids
        route: dict[str, Any] = {"name": e.uuid, "board": e.board, "layout_id": e.layout_id, "angle": e.angle}
        if i % 2:
            route["frames"] = "".join(f"p{pid}r{own[role]}" for pid, role in reversed(e.route.holds))
        else:
            route["holds"] = [{"placement_id": pid, "role": role} for pid, role in e.route.holds]
        routes.append(route)
    path = tmp_path / "real.json"
    path.write_text(json.dumps(routes))
    return path


def test_python_client_is_small_and_imports_no_climbgrade() -> None:
    source = PYTHON_CLIENT.read_text()
    assert len(source.splitlines()) < 40
    assert "climbgrade_runtime" not in source and "climbgrade_train" not in source
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"json", "re", "sys", "pathlib", "numpy", "onnxruntime"}, imports


def test_python_client_grades_the_examples_as_cg_infer_does() -> None:
    routes = ROOT / "examples" / "routes.json"
    assert_agree(python_client(routes), cg_infer(routes))


@pytest.mark.parametrize("flags", [(), ("--web",)], ids=["onnxruntime-node", "onnxruntime-web wasm"])
def test_node_client_grades_the_examples_as_cg_infer_does(node_modules: Path, flags: tuple[str, ...]) -> None:
    routes = ROOT / "examples" / "routes.json"
    assert_agree(node_client(routes, *flags), cg_infer(routes))


@pytest.mark.real_data
def test_every_client_grades_500_real_routes_as_cg_infer_does(node_modules: Path, tmp_path: Path) -> None:
    routes = real_routes(tmp_path)
    reference = cg_infer(routes)
    assert_agree(python_client(routes), reference)
    assert_agree(node_client(routes), reference)
    assert_agree(node_client(routes, "--web"), reference)


BAD_ROUTES = [  # (route, the problems bits a client with no tables reads off the graph)
    ({"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p9999r12p1167r13"}, BITS["placement"]),
    ({"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p1495r99p1167r13"}, BITS["role"]),
    ({"board": "kilter", "layout_id": 1, "angle": 42, "frames": "p1495r12p1167r13"}, BITS["angle"]),
    ({"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p1495r12p1495r13"}, BITS["repeated"]),
    ({"board": "tension", "layout_id": 11, "angle": 40, "frames": "p899r12p1171r6"}, BITS["role"]),
    (
        {"board": "kilter", "layout_id": 1, "angle": 95, "frames": "p1495r12p99999r13"},
        BITS["angle"] | BITS["placement"],
    ),
]


@pytest.mark.parametrize("client", ["python", "node", "web"])
def test_clients_read_why_a_route_cannot_be_graded(client: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A client without the sidecar's tables still refuses bad routes, from the graph's `problems` bits,
    and the good route in the same batch is graded as cg-infer grades it."""
    good = json.loads((ROOT / "examples" / "route.json").read_text())
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([good] + [route for route, _ in BAD_ROUTES]))
    if client == "python":
        answers = python_client(path)
    else:
        request.getfixturevalue("node_modules")
        answers = node_client(path, *(["--web"] if client == "web" else []))
    assert [a["problems"] for a in answers] == [0] + [bits for _, bits in BAD_ROUTES]
    reference = cg_infer(ROOT / "examples" / "route.json")  # one object in, one object out
    assert abs(answers[0]["difficulty"] - reference["difficulty"]) <= TOLERANCE
    refused = run_script("cg-infer", "--model", str(MODEL), str(path), check=False)
    assert refused.returncode != 0 and refused.stderr.count("\n") >= len(BAD_ROUTES)


def test_the_contract_docs_twenty_line_client_grades_as_cg_infer_does(tmp_path: Path) -> None:
    """docs/model-format.md's client, run as a reader would copy it, on routes given as frames."""
    text = (ROOT / "docs" / "model-format.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 20
    script = tmp_path / "client.py"
    script.write_text(code)
    routes = [r for r in json.loads((ROOT / "examples" / "routes.json").read_text()) if "frames" in r]
    path = tmp_path / "frames.json"
    path.write_text(json.dumps(routes))
    printed = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.splitlines()
    expected = [f"{p['name']} {p['difficulty']:.1f} (likely {p['low']:.1f}-{p['high']:.1f})" for p in cg_infer(path)]
    assert printed == expected
