"""`cg-infer -` takes what a file takes (an object, a list, JSON Lines), and no routes is an error."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, run_script

EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize("name", ["route.json", "routes.json", "routes.jsonl"])
@pytest.mark.parametrize("output", ["json", "table"])
def test_stdin_answers_as_the_file_does(name: str, output: str) -> None:
    text = (EXAMPLES / name).read_text()
    from_file = run_script("cg-infer", str(EXAMPLES / name), "--format", output)
    from_stdin = run_script("cg-infer", "-", "--format", output, stdin=text)
    assert from_stdin.stdout == from_file.stdout and from_stdin.stdout.strip()


def test_a_piped_list_keeps_its_shape() -> None:
    routes = json.loads((EXAMPLES / "routes.json").read_text())
    answers = json.loads(run_script("cg-infer", "-", "--format", "json", stdin=json.dumps(routes)).stdout)
    assert [a["index"] for a in answers] == list(range(len(routes)))
    assert [a["name"] for a in answers] == [r["name"] for r in routes]


@pytest.mark.parametrize("payload", ["", "\n  \n", "[]", " [ ]\n"])
def test_no_routes_on_stdin_is_an_error(payload: str) -> None:
    result = run_script("cg-infer", "-", stdin=payload, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: stdin") and result.stderr.count("\n") == 1
    assert "no routes to grade" in result.stderr


def test_an_empty_list_in_a_file_is_an_error(tmp_path) -> None:
    path = tmp_path / "none.json"
    path.write_text("[]\n")
    result = run_script("cg-infer", str(path), check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: {path} holds an empty list: no routes to grade\n"
