"""A model and its sidecar are a pair: any mismatch or damage is refused with a clear message."""

from __future__ import annotations

import json
import re
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


def truncate_keeping_hash(model: Path) -> None:
    model.write_bytes(model.read_bytes()[:5000])
    edit_sidecar(model, lambda d: d["model"].update(sha256=file_sha256(model)))


# Each refusal in full (a regular expression; {model} is the model's path): which file, what is wrong, the fix.
MISMATCH = r"model {model} and its sidecar do not match \({what}\): re-export both with cg-export"
CASES = {
    "hash": (
        lambda m: edit_sidecar(m, lambda d: d["model"].update(sha256="0" * 64)),
        r"model {model} does not match its sidecar {model}\.json \(sha256 differs\): "
        r"use the pair cg-export wrote together, or re-export",
    ),
    "vocab size": (
        lambda m: edit_sidecar(m, add_token),
        MISMATCH.replace("{what}", r"vocab_size: model \d+, sidecar \d+"),
    ),
    "max_len": (
        lambda m: edit_sidecar(m, lambda d: d["tokenizer"].update(max_len=d["tokenizer"]["max_len"] + 1)),
        MISMATCH.replace("{what}", r"max_len: model \d+, sidecar \d+"),
    ),
    "opset": (
        lambda m: edit_sidecar(m, lambda d: d["model"].update(opset=18)),
        MISMATCH.replace("{what}", "opset: model 17, sidecar 18"),
    ),
    "format version": (
        lambda m: edit_sidecar(m, lambda d: d.update(format_version=99)),
        r"sidecar {model}\.json has sidecar format version 99; this climbgrade reads version 1: "
        r"re-export the model with this version's cg-export, or install the climbgrade that wrote it",
    ),
    "not a sidecar": (
        lambda m: Path(f"{m}.json").write_text("[]"),
        r'sidecar {model}\.json is not a climbgrade sidecar \(no "format": "climbgrade-sidecar"\)',
    ),
    "sidecar missing": (
        lambda m: Path(f"{m}.json").unlink(),
        r"sidecar {model}\.json is missing: "
        r"a model and its sidecar are a pair; copy both, or re-export",
    ),
    "model missing": (
        lambda m: m.unlink(),
        r"model {model} does not exist: pass --model PATH to a \.onnx file written by cg-export",
    ),
    "truncated": (
        truncate_keeping_hash,
        r"cannot load model {model}: \[ONNXRuntimeError\] .*; re-export it with cg-export",
    ),
}


def expected(case: str, model: Path) -> str:
    return CASES[case][1].replace("{model}", re.escape(str(model)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_mismatched_or_damaged_pair_is_refused(pair, case):
    CASES[case][0](pair)
    with pytest.raises(ModelError) as caught:
        GradePredictor.load(pair).warm_up()
    assert re.fullmatch(expected(case, pair), str(caught.value)), str(caught.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_reports_a_bad_pair_in_one_line(pair, tmp_path, case):
    CASES[case][0](pair)
    (tmp_path / "r.json").write_text("{}")
    result = run_script("cg-infer", str(tmp_path / "r.json"), "--model", str(pair), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch("error: " + expected(case, pair), lines[0]), lines
    assert result.stdout == ""


def test_unknown_provider_is_refused(fake_pipeline):
    predictor = GradePredictor.load(fake_pipeline.model, providers=["NoSuchExecutionProvider"])
    with pytest.raises(ModelError, match=r"not installed; available: .*CPUExecutionProvider"):
        predictor.warm_up()
