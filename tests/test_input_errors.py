"""Every kind of bad input: one clear line naming the route and the problem, exit code 2, no traceback."""

from __future__ import annotations

import json

import pytest

from climbgrade_runtime.sidecar import Sidecar

from conftest import run_script


@pytest.fixture(scope="module")
def board(fake_pipeline):
    """A valid route on the fake Kilter board and the model's limits."""
    tokenizer = Sidecar.load(f"{fake_pipeline.model}.json").tokenizer
    layout = tokenizer.layouts[("kilter", 1)]
    pids = sorted(layout.placements)
    good = {"board": "kilter", "layout_id": 1, "angle": 40, "frames": f"p{pids[0]}r12p{pids[20]}r13p{pids[40]}r14"}
    return {"good": good, "pids": pids, "max_holds": tokenizer.max_holds}


def infer(fake_pipeline, tmp_path, payload, *args):
    path = tmp_path / "routes.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return run_script("cg-infer", str(path), "--model", str(fake_pipeline.model), *args, check=False)


def assert_one_clean_error(result, *fragments):
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


CASES = {
    "unknown board": (lambda b: dict(b["good"], board="kiltr"), ["route 0", "unknown board 'kiltr'", "kilter"]),
    "unknown layout": (lambda b: dict(b["good"], layout_id=5), ["route 0", "has no layout 5"]),
    "unknown placement": (
        lambda b: dict(b["good"], frames="p999999r12"),
        ["placement 999999 is not on kilter layout 1"],
    ),
    "unknown role id": (lambda b: dict(b["good"], frames=f"p{b['pids'][0]}r99"), ["role id 99", "not a role"]),
    "unknown role name": (
        lambda b: (
            {k: v for k, v in b["good"].items() if k != "frames"}
            | {"holds": [{"placement_id": b["pids"][0], "role": "hand"}]}
        ),
        ["role 'hand'", "not a role"],
    ),
    "placement twice": (lambda b: dict(b["good"], frames=f"p{b['pids'][0]}r12p{b['pids'][0]}r14"), ["listed twice"]),
    "angle outside": (lambda b: dict(b["good"], angle=75), ["angle 75 is not an angle of kilter layout 1"]),
    "too many holds": (
        lambda b: dict(b["good"], frames="".join(f"p{p}r13" for p in b["pids"][: b["max_holds"] + 1])),
        ["this model takes at most {0}"],
    ),
    "frames do not parse": (lambda b: dict(b["good"], frames="p12x"), ["'frames'", "does not parse"]),
    "missing field": (lambda b: {k: v for k, v in b["good"].items() if k != "angle"}, ["missing 'angle'"]),
    "wrong type": (lambda b: dict(b["good"], layout_id="one"), ["'layout_id' must be a whole number"]),
    "not an object": (lambda b: 42, ["must be a JSON object"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_route_is_one_clear_line(fake_pipeline, tmp_path, board, case):
    make, fragments = CASES[case]
    fragments = [f.replace("{0}", str(board["max_holds"])) for f in fragments]
    result = infer(fake_pipeline, tmp_path, make(board))
    assert_one_clean_error(result, *fragments)


def test_invalid_json_file(fake_pipeline, tmp_path):
    result = infer(fake_pipeline, tmp_path, '{"board": "kilter", ')
    assert_one_clean_error(result, "routes.json is not valid JSON", "line 1")


def test_missing_input_file(fake_pipeline, tmp_path):
    result = run_script("cg-infer", str(tmp_path / "nope.json"), "--model", str(fake_pipeline.model), check=False)
    assert_one_clean_error(result, "cannot read", "nope.json")


def test_batch_answers_good_routes_and_flags_bad_ones(fake_pipeline, tmp_path, board):
    routes = [board["good"], dict(board["good"], board="moon", name="bad one"), dict(board["good"], angle=20)]
    result = infer(fake_pipeline, tmp_path, routes, "--format", "json")
    assert result.returncode == 2
    answers = json.loads(result.stdout)
    assert [("error" in a) for a in answers] == [False, True, False]
    assert answers[1] == {
        "index": 1,
        "name": "bad one",
        "error": "unknown board 'moon': this model knows kilter, tension",
    }
    assert result.stderr.count("error:") == 1 and "route 1" in result.stderr


def test_json_lines_on_stdin_with_a_broken_line(fake_pipeline, board):
    lines = "\n".join([json.dumps(board["good"]), "{not json", json.dumps(dict(board["good"], angle=45))]) + "\n"
    result = run_script(
        "cg-infer", "-", "--model", str(fake_pipeline.model), "--format", "json", stdin=lines, check=False
    )
    assert result.returncode == 2
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert "difficulty" in answers[0] and "difficulty" in answers[2]
    assert answers[1]["error"].startswith("line 2 is not valid JSON: ")


NON_FINITE: dict[str, tuple[dict[str, object], str]] = {
    "NaN name": ({"name": float("nan")}, "NaN is not a JSON number"),
    "Infinity angle": ({"angle": float("inf")}, "Infinity is not a JSON number"),
    "-Infinity angle": ({"angle": float("-inf")}, "-Infinity is not a JSON number"),
    "angle beyond float range": ({"angle": "1e999"}, "number 1e999 is out of range"),
}


def with_number(good: dict[str, object], change: dict[str, object]) -> str:
    """The route with `change` as JSON; a string value is written as a bare number (1e999)."""
    text = json.dumps(dict(good, **change))
    return text.replace('"1e999"', "1e999")


@pytest.mark.parametrize("case", sorted(NON_FINITE))
def test_non_finite_numbers_are_refused_in_a_file(fake_pipeline, tmp_path, board, case):
    """Python's json reads NaN and Infinity, but writes them back as invalid JSON: refused, nothing written."""
    change, why = NON_FINITE[case]
    result = infer(fake_pipeline, tmp_path, f"[{json.dumps(board['good'])}, {with_number(board['good'], change)}]")
    assert_one_clean_error(result, f"routes.json is not valid JSON: {why}")
    assert result.stdout == ""


@pytest.mark.parametrize("case", sorted(NON_FINITE))
def test_non_finite_numbers_are_refused_on_their_json_line_only(fake_pipeline, tmp_path, board, case):
    change, why = NON_FINITE[case]
    lines = "\n".join([json.dumps(board["good"]), with_number(board["good"], change), json.dumps(board["good"])])
    (tmp_path / "routes.jsonl").write_text(lines + "\n")
    result = run_script(
        "cg-infer", str(tmp_path / "routes.jsonl"), "--model", str(fake_pipeline.model), "--format", "json", check=False
    )
    assert_one_clean_error(result, f"route 1: line 2 is not valid JSON: {why}")

    def strict(name: str) -> None:
        raise AssertionError(f"cg-infer wrote {name}, which is not JSON")

    answers = [json.loads(line, parse_constant=strict) for line in result.stdout.splitlines()]
    assert answers[1] == {"index": 1, "error": f"line 2 is not valid JSON: {why}"}
    assert "difficulty" in answers[0] and "difficulty" in answers[2]


def test_missing_start_and_finish_are_answered_with_a_warning(fake_pipeline, tmp_path, board):
    route = dict(board["good"], frames=f"p{board['pids'][0]}r13p{board['pids'][20]}r13")
    result = infer(fake_pipeline, tmp_path, route, "--format", "json")
    assert result.returncode == 0
    answer = json.loads(result.stdout)
    assert "route has no start hold" in answer["warnings"] and "route has no finish hold" in answer["warnings"]
    assert "warning: route 0: route has no start hold" in result.stderr


def test_unknown_fields_are_reported_not_dropped_silently(fake_pipeline, tmp_path, board):
    result = infer(fake_pipeline, tmp_path, dict(board["good"], setter="me", id=7), "--format", "json")
    answer = json.loads(result.stdout)
    assert answer["id"] == 7 and "ignored unknown field(s) 'setter'" in answer["warnings"]


def test_deeply_nested_json_is_a_clean_error(fake_pipeline, tmp_path, board):
    result = infer(fake_pipeline, tmp_path, "[" * 100_000 + "]" * 100_000)
    assert_one_clean_error(result, "nested too deeply")
    lines = json.dumps(board["good"]) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n"
    result = run_script(
        "cg-infer", "-", "--model", str(fake_pipeline.model), "--format", "json", stdin=lines, check=False
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "difficulty" in result.stdout.splitlines()[0] and "nested too deeply" in result.stdout.splitlines()[1]
