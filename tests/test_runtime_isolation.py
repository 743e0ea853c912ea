"""The runtime must work with torch, pandas and onnx impossible to import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "pandas", "onnx", "onnxscript"}:
                raise ImportError(f"blocked import of {name}")
            return None
    sys.meta_path.insert(0, Block())
    """
)


def test_runtime_runs_without_training_libraries(fake_pipeline, tmp_path):
    layout = json.loads(fake_pipeline.model.with_suffix(".onnx.json").read_text())["layouts"][0]
    pids = sorted(int(p) for p in layout["placements"])[:3]
    route = {
        "board": layout["board"],
        "layout_id": layout["layout_id"],
        "angle": layout["angles"][0],
        "holds": [
            {"placement_id": pids[0], "role": "start"},
            {"placement_id": pids[1], "role": "middle"},
            {"placement_id": pids[2], "role": "finish"},
        ],
    }
    route_file = tmp_path / "route.json"
    route_file.write_text(json.dumps(route))
    script = BLOCKER + textwrap.dedent(
        f"""
        import climbgrade_runtime
        from climbgrade_runtime import GradePredictor
        from climbgrade_runtime.cli import main
        p = GradePredictor.load({str(fake_pipeline.model)!r})
        print(p.predict({route!r}).difficulty)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {{"torch", "pandas", "onnx", "onnxscript"}})
        assert not heavy, heavy
        sys.argv = ["cg-infer", {str(route_file)!r}, "--model", {str(fake_pipeline.model)!r}, "--format", "json",
                    "--angles", "all", "--explain", "--mirror", "--svg", {str(tmp_path / "pictures")!r}]
        main()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first, rest = result.stdout.split("\n", 1)
    answer = json.loads(rest)
    assert float(first) == answer["difficulty"]
    # Every route-insight answer is made without the training libraries too.
    assert [a["angle"] for a in answer["angles"]] == layout["angles"]
    assert len(answer["holds"]) == 3 and "mirror" in answer
    assert len(list((tmp_path / "pictures").glob("*.svg"))) == 1


def test_import_and_load_are_lazy(fake_pipeline):
    """Importing the package and loading a model load no onnxruntime (a CLI's --help or a bad route
    answers at once); the first use does."""
    code = textwrap.dedent(
        f"""
        import sys, climbgrade_runtime
        print('onnxruntime' in sys.modules)
        p = climbgrade_runtime.GradePredictor.load({str(fake_pipeline.model)!r})
        print('onnxruntime' in sys.modules)
        p.warm_up()
        print('onnxruntime' in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True"]
