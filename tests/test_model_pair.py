"""A model and its sidecar are a pair: any mismatch or damage is refused with a clear message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from climbgrade_runtime import GradePredictor, ModelError
from climbgrade_runtime.sidecar import file_sha256
from conftest import run_script


@pytest.fixture
def pair(fake_pipeline, tmp_path) -> Path:
    model = tmp_path / "m.onnx"
    shutil.copy(fake_pipeline.model, model)
    shutil.copy(f"{fake_pipeline.model}.json", f"{model}.json")
    return model


def edit_sidecar(model: Path, change) -> None:
    path = Path(f"{model}.json")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def add_token(data):
    data["tokenizer"]["vocab"].append("<EXTRA>")
    data["tokenizer"]["token_features"].append([0.0, 0.0, 0.0])


CASES = {
    "hash": (lambda m: edit_sidecar(m, lambda d: d["model"].update(sha256="0" * 64)), "sha256 differs"),
    "vocab size": (lambda m: edit_sidecar(m, add_token), "vocab_size: model"),
    "max_len": (lambda m: edit_sidecar(m, lambda d: d["tokenizer"].update(max_len=d["tokenizer"]["max_len"] + 1)), "max_len: model"),
    "opset": (lambda m: edit_sidecar(m, lambda d: d["model"].update(opset=18)), "opset: model 17, sidecar 18"),
    "format version": (lambda m: edit_sidecar(m, lambda d: d.update(format_version=99)), "format version 99"),
    "not a sidecar": (lambda m: Path(f"{m}.json").write_text("[]"), "is not a climbgrade sidecar"),
    "sidecar missing": (lambda m: Path(f"{m}.json").unlink(), "sidecar"),
    "model missing": (lambda m: m.unlink(), "does not exist"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mismatched_or_damaged_pair_is_refused(pair, case):
    damage, message = CASES[case]
    damage(pair)
    with pytest.raises(ModelError, match=message):
        GradePredictor.load(pair).warm_up()


def test_truncated_model_with_matching_hash_is_refused(pair):
    truncate_keeping_hash(pair)
    with pytest.raises(ModelError, match="cannot load model"):
        GradePredictor.load(pair).warm_up()


def truncate_keeping_hash(model: Path) -> None:
    model.write_bytes(model.read_bytes()[:5000])
    edit_sidecar(model, lambda d: d["model"].update(sha256=file_sha256(model)))


@pytest.mark.parametrize("case", sorted(CASES) + ["truncated"])
def test_cli_reports_a_bad_pair_in_one_line(pair, tmp_path, case):
    damage = truncate_keeping_hash if case == "truncated" else CASES[case][0]
    damage(pair)
    (tmp_path / "r.json").write_text("{}")
    result = run_script("cg-infer", str(tmp_path / "r.json"), "--model", str(pair), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and ("model" in lines[0] or "sidecar" in lines[0])
    assert result.stdout == ""


def test_unknown_provider_is_refused(fake_pipeline):
    predictor = GradePredictor.load(fake_pipeline.model, providers=["NoSuchExecutionProvider"])
    with pytest.raises(ModelError, match="not installed; available: .*CPUExecutionProvider"):
        predictor.warm_up()
