"""Fuzz the route parser and cg-infer's input handling with hypothesis.

Whatever a user sends (random JSON, wrong types, huge numbers, NaN and infinities, empty values,
unicode, `frames` strings up to 200,000 characters, lists nested up to 100,000 deep), the runtime
either answers or raises RouteError whose message is one short line; `cg-infer` exits 0 or 2 and
writes only `error:` / `warning:` lines to stderr, never a traceback.

Generated inputs per run under the ci profile (each test's max_examples; the dev profile runs a twentieth,
conftest.examples; the explicit @example cases come on top):

    test_parse_route_on_any_json_value          3,000
    test_parse_route_on_route_shaped_objects    3,500
    test_parse_frames_on_frames_like_text       2,500
    test_json_lines_through_predict_many        1,000
    test_cg_infer_on_stdin                        250
    test_cg_infer_on_undecodable_stdin            100
    test_cg_infer_on_files                        150
    total                                      10,500
"""

from __future__ import annotations

import io
import json
import math
import re
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from climbgrade_runtime import GradePredictor, Prediction, RouteFailure
from climbgrade_runtime.cli import main
from climbgrade_runtime.errors import RouteError
from climbgrade_runtime.inputs import read_json_lines
from climbgrade_runtime.routes import parse_frames, parse_route

from conftest import Pipeline, examples
from fakeboard import KILTER, TENSION, FakeBoard, placements_of

MAX_MESSAGE_CHARS = 300
LINE_BREAK = re.compile(r"\r\n?|\n")
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- strategies --------------------------------------------------------------------------------

HUGE_INTS = [10**30, -(10**30), 2**63, -(2**63) - 1, 2**64, 10**4299]  # 10**4299: the longest int JSON decodes
NASTY: st.SearchStrategy[object] = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        -1,
        0.5,
        40.0,
        math.nan,
        math.inf,
        -math.inf,
        *HUGE_INTS,
        "",
        " ",
        "\n",
        "kilter ",
        "ｋｉｌｔｅｒ",
        "\u0000",
        "\u2028",
        "🧗",
        "🧗" * 1_000,
        [],
        {},
        [[]],
        [{}],
    ]
)
KEYS = st.sampled_from(["", " ", "\n", "a\nb", "x\r", "\u2028", "led", "🧗" * 100]) | st.text(max_size=8)
SCALARS = st.none() | st.booleans() | st.integers() | st.sampled_from(HUGE_INTS) | st.floats() | st.text(max_size=40)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=20,
)
JUNK = NASTY | JSON_VALUES
FRAMES_CHARS = st.sampled_from("pr0123456789")
LONG_FRAMES = st.integers(1, 25_000).map(lambda n: "p1073r12" * n)  # up to 200,000 characters
HUGE_NUMBER_FRAMES = st.integers(1, 20_000).map(lambda n: f"p{'9' * n}r12")
BROKEN_LONG_FRAMES = st.tuples(LONG_FRAMES, st.integers(0, 200_000), st.characters()).map(
    lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
)
FRAMES_TEXT = (
    st.text(FRAMES_CHARS, max_size=200) | st.text(max_size=60) | LONG_FRAMES | HUGE_NUMBER_FRAMES | BROKEN_LONG_FRAMES
)


class NestedList(list):
    """[[[...]]] `depth` deep, built without recursion; repr'd by its depth so failures print."""

    def __init__(self, depth: int) -> None:
        inner: list[Any] = []
        for _ in range(depth - 2):
            inner = [inner]
        super().__init__([inner])
        self.depth = depth

    def __repr__(self) -> str:
        return f"NestedList({self.depth})"


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any], odds: int = 9) -> st.SearchStrategy[Any]:
    """`valid` `odds` times for each `other`; shrinks towards `valid`, so a failure names the odd field."""
    return st.sampled_from([valid] * odds + [other]).flatmap(lambda strategy: strategy)


def with_extra_keys(base: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """`base` objects plus a few fields of any name (unicode, empty, newlines) and value."""
    extra = st.dictionaries(KEYS, SCALARS, min_size=1, max_size=3)
    return st.tuples(base, extra).map(lambda t: {**t[1], **t[0]})


def route_objects(name: str, board: FakeBoard) -> st.SearchStrategy[dict[str, Any]]:
    """Route objects for one fake layout: each field mostly valid, else junk, so every check is reached."""
    pids = sorted(placements_of(board))
    role_ids = list(board.role_ids)
    role_names = ["start", "middle", "finish", "foot"]
    placement = mostly(st.sampled_from(pids) | st.sampled_from(pids).map(float), st.integers() | JUNK)
    role = mostly(st.sampled_from(role_ids) | st.sampled_from(role_names), st.integers() | st.text(max_size=10) | JUNK)
    pair = st.tuples(
        mostly(st.sampled_from(pids), st.integers(0, 10**6)), mostly(st.sampled_from(role_ids), st.integers(0, 99))
    )
    frames = mostly(
        st.lists(pair, min_size=1, max_size=16).map(lambda ps: "".join(f"p{p}r{r}" for p, r in ps)), FRAMES_TEXT | JUNK
    )
    hold = st.fixed_dictionaries({"placement_id": placement, "role": role})
    holds = mostly(st.lists(mostly(hold, with_extra_keys(hold) | JUNK), min_size=1, max_size=16), JUNK)
    fields = {
        "board": mostly(st.just(name), st.sampled_from(["kilter", "tension", "Kilter", "moon"]) | JUNK),
        "layout_id": mostly(
            st.sampled_from([board.layout_id, float(board.layout_id)]), st.sampled_from([1, 11, 5]) | JUNK
        ),
        "angle": mostly(st.sampled_from(board.angles), st.integers() | JUNK),
    }
    labels = {"id": JUNK, "uuid": JUNK, "name": JUNK}
    routes = st.fixed_dictionaries({**fields, "frames": frames}, optional=labels) | st.fixed_dictionaries(
        {**fields, "holds": holds}, optional=labels
    )
    anything = st.fixed_dictionaries({}, optional={**fields, "frames": frames, "holds": holds, **labels})
    return mostly(routes, with_extra_keys(routes) | anything)


FAKE_LAYOUTS = (("kilter", KILTER), ("tension", TENSION))
ROUTES = route_objects(*FAKE_LAYOUTS[0]) | route_objects(*FAKE_LAYOUTS[1])
KILTER_ROUTE = {"board": "kilter", "layout_id": 1, "angle": 40}
PRINTABLE = st.characters(exclude_categories=["Cs"])  # what a UTF-8 stdin can carry
INPUT_LINES = mostly(
    ROUTES.map(json.dumps),
    JSON_VALUES.map(json.dumps)
    | st.text(PRINTABLE, max_size=80)
    | st.integers(1, 100_000).map(lambda n: "[" * n + "]" * n)
    | st.integers(1, 100_000).map(lambda n: json.dumps(KILTER_ROUTE)[:-1] + ', "holds": ' + "[" * n + "]" * n + "}")
    | st.integers(4_000, 5_000).map(lambda n: "1" * n)
    | st.sampled_from(
        ["", "   ", "\t", "NaN", "Infinity", "-Infinity", "1e400", "-0", "null", "[]", "{}", '"kilter"', "\ufeff{}"]
    ),
    odds=2,
)
INPUT_TEXT = st.tuples(st.lists(INPUT_LINES, max_size=6), st.sampled_from(["\n", "\r\n"])).map(
    lambda t: t[1].join(t[0])
)
UNDECODABLE = st.tuples(INPUT_TEXT, st.binary(min_size=1, max_size=16), INPUT_TEXT).map(
    lambda t: t[0].encode() + t[1] + t[2].encode()
)
FILE_CONTENT = (
    INPUT_TEXT.map(str.encode)
    | ROUTES.map(lambda route: json.dumps(route, indent=2).encode())
    | st.lists(ROUTES, max_size=5).map(lambda routes: json.dumps(routes, indent=2).encode())
    | st.binary(max_size=100)
)

# --- checks --------------------------------------------------------------------------------------


def assert_one_clear_line(message: str) -> None:
    """A user-facing message: non-empty, one line, short enough to read."""
    assert message.strip(), "empty message"
    assert not LINE_BREAK.search(message), f"message spans several lines: {message[:300]!r}"
    assert len(message) <= MAX_MESSAGE_CHARS, f"message is {len(message)} characters long: {message[:300]!r}..."


def parse_and_encode(predictor: GradePredictor, obj: Any) -> None:
    """Parse `obj` and turn it into the graph's ids; only a RouteError with a clear message may come out.

    A route the host accepts is one the graph grades: ids its tables hold (problems 0, else the
    predictor raises ModelError) and a finite difficulty.
    """
    tokenizer = predictor.tokenizer
    try:
        route = parse_route(obj)
        ids = tokenizer.ids(tokenizer.resolve(route))
    except RouteError as exc:
        assert_one_clear_line(str(exc))
    else:
        layout = list(tokenizer.layouts.values())[ids.layout]
        assert layout.key == (route.board, route.layout_id) and ids.angle in layout.angles
        assert 0 < len(ids.placements) == len(ids.roles) <= tokenizer.max_holds
        assert len(set(ids.placements)) == len(ids.placements) and set(ids.placements) <= set(layout.placements)
        assert set(ids.roles) <= set(layout.roles)
        assert np.isfinite(predictor.predict(route).difficulty)


def non_blank_lines(text: str) -> int:
    """Lines holding more than whitespace: the runtime reads bytes and splits on \\n only."""
    return sum(1 for line in text.split("\n") if line.strip())


def run_cg_infer(model: Path, args: list[str], stdin: str | bytes | None = None) -> tuple[Result, list[str]]:
    """Run cg-infer in-process and check it ended cleanly: exit 0 or 2 (2 exactly when it reports an
    error), no traceback, every stderr line an `error:` or `warning:`. Returns the result and those lines."""
    result = CliRunner().invoke(main, [*args, "--model", str(model)], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), "".join(
        traceback.format_exception(result.exception)
    )
    assert result.exit_code in (0, 2)
    assert "Traceback" not in result.output
    stderr = LINE_BREAK.split(result.stderr)[:-1]  # every line ends with a newline
    assert all(line.startswith(("error:", "warning:")) for line in stderr), result.stderr[:1000]
    assert (result.exit_code == 2) == any(line.startswith("error:") for line in stderr)
    return result, stderr


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(fake_pipeline: Pipeline) -> GradePredictor:
    """The fake model, loaded once; the strategies above assume its layouts are fakeboard's."""
    loaded = GradePredictor.load(fake_pipeline.model)
    for name, board in FAKE_LAYOUTS:
        layout = loaded.tokenizer.layouts[(name, board.layout_id)]
        assert set(layout.placements) == set(placements_of(board))
        assert sorted(layout.roles) == sorted(board.role_ids) and layout.angles == board.angles
    return loaded


@pytest.fixture(scope="module")
def routes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the route files cg-infer reads."""
    return tmp_path_factory.mktemp("fuzz_routes")


# --- tests ---------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=examples(3_000))
@given(obj=JSON_VALUES)
@example(obj={**KILTER_ROUTE, "angle": math.nan, "frames": "p1073r12"})
@example(obj={**KILTER_ROUTE, "angle": json.loads("1e400"), "frames": "p1073r12"})
@example(obj={**KILTER_ROUTE, "layout_id": True, "frames": "p1073r12"})
@example(obj={**KILTER_ROUTE, "frames": "p1073r12" * 25_000})
@example(obj={**KILTER_ROUTE, "frames": "p1073r12" * 12_500})
@example(obj={**KILTER_ROUTE, "holds": NestedList(10_000)})
@example(obj=NestedList(10_000))
def test_parse_route_on_any_json_value(predictor: GradePredictor, obj: Any) -> None:
    """Any decoded JSON value is a route or a one-line RouteError."""
    parse_and_encode(predictor, obj)


@settings(FUZZ, max_examples=examples(3_500))
@given(obj=ROUTES)
def test_parse_route_on_route_shaped_objects(predictor: GradePredictor, obj: dict[str, Any]) -> None:
    """Route objects mixing valid fields with junk are routes or one-line RouteErrors."""
    parse_and_encode(predictor, obj)


@settings(FUZZ, max_examples=examples(2_500))
@given(frames=FRAMES_TEXT)
@example(frames="p" + "9" * 5_000 + "r12")
@example(frames="p1073r" + "1" * 4_301)
def test_parse_frames_on_frames_like_text(frames: str) -> None:
    """A frames string parses into (placement, role) pairs or is a one-line RouteError."""
    try:
        pairs = parse_frames(frames)
    except RouteError as exc:
        assert_one_clear_line(str(exc))
    else:
        assert len(pairs) == frames.count("p") and all(p >= 0 and r >= 0 for p, r in pairs)


@settings(FUZZ, max_examples=examples(1_000))
@given(text=INPUT_TEXT)
@example(text="[" * 100_000 + "]" * 100_000)
@example(text="1" * 4_301)
def test_json_lines_through_predict_many(predictor: GradePredictor, text: str) -> None:
    """Every non-blank line becomes one Prediction or one RouteFailure with a one-line error."""
    results = predictor.predict_many(read_json_lines(io.BytesIO(text.encode("utf-8", "surrogatepass"))))
    assert [r.index for r in results] == list(range(non_blank_lines(text)))
    for result in results:
        assert isinstance(result, (Prediction, RouteFailure))
        if isinstance(result, RouteFailure):
            assert_one_clear_line(result.error)
        else:
            assert math.isfinite(result.difficulty) and result.font and result.v_grade
            for warning in result.warnings:
                assert not LINE_BREAK.search(warning), f"warning spans several lines: {warning[:300]!r}"


@settings(FUZZ, max_examples=examples(250))
@given(text=INPUT_TEXT)
@example(text=json.dumps({**KILTER_ROUTE, "angle": math.nan, "frames": "p1073r12"}))
@example(text='{"board": "kilter", "layout_id": 1, "angle": 1e400, "frames": "p1073r12"}')
@example(text=json.dumps({**KILTER_ROUTE, "layout_id": True, "frames": "p1073r12"}))
@example(text=json.dumps({**KILTER_ROUTE, "frames": "p1073r12" * 25_000}))
@example(text=json.dumps(KILTER_ROUTE)[:-1] + ', "holds": ' + "[" * 10_000 + "]" * 10_000 + "}")
@example(text=json.dumps({**KILTER_ROUTE, "frames": "p1073r12p1080r14"}) + "\n" + "1" * 4_301)
@example(text=json.dumps({**KILTER_ROUTE, "frames": "p1073r12", "set\nter": "me"}))
def test_cg_infer_on_stdin(fake_pipeline: Pipeline, routes_dir: Path, text: str) -> None:
    """cg-infer on stdin answers exactly as on the same bytes in a file: JSON Lines one answer per
    non-blank line in order, one JSON document as a document, nothing at all as a one-line error."""
    result, stderr = run_cg_infer(fake_pipeline.model, ["-", "--format", "json"], text)
    path = routes_dir / "stdin.json"
    path.write_bytes(text.encode("utf-8"))
    from_file, file_stderr = run_cg_infer(fake_pipeline.model, [str(path), "--format", "json"])
    assert (result.exit_code, result.stdout) == (from_file.exit_code, from_file.stdout)
    assert [line.replace(str(path), "stdin") for line in file_stderr] == stderr
    first = next((line for line in text.split("\n") if line.strip()), None)
    if first is None:
        assert stderr == ["error: stdin is empty: no routes to grade"] and result.stdout == ""
    elif not first.lstrip().startswith("[") and is_json(first):  # JSON Lines
        answers = [json.loads(line) for line in result.stdout.split("\n") if line]
        assert [a["index"] for a in answers] == list(range(non_blank_lines(text)))
        assert sum(line.startswith("error:") for line in stderr) == sum("error" in a for a in answers)
    elif result.stdout:  # one JSON document, answered in its own shape
        assert isinstance(json.loads(result.stdout), (dict, list))
    else:  # a document that is not JSON, or an empty list: one line says so
        assert len(stderr) == 1 and stderr[0].startswith("error: stdin ")


def is_json(line: str) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


@settings(FUZZ, max_examples=examples(100))
@given(data=UNDECODABLE)
@example(data=b"\xff{}\n")
def test_cg_infer_on_undecodable_stdin(fake_pipeline: Pipeline, data: bytes) -> None:
    """Bytes that are not UTF-8 on a strict stdin (CliRunner's, or a UTF-8 locale's) are a clean error
    that says so (for the whole input, or for the line that holds them)."""
    result, stderr = run_cg_infer(fake_pipeline.model, ["-", "--format", "json"], data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        assert result.exit_code == 2 and any("not UTF-8 text" in line for line in stderr), stderr


@settings(FUZZ, max_examples=examples(150))
@given(
    content=FILE_CONTENT, suffix=st.sampled_from([".json", ".jsonl", ".txt"]), output=st.sampled_from(["json", "table"])
)
@example(content=b"[" * 100_000 + b"]" * 100_000, suffix=".json", output="json")
@example(content=b"1" * 4_301, suffix=".json", output="json")
@example(content=b"[" + b"1" * 4_301 + b"]", suffix=".json", output="json")
@example(  # not UTF-8 past the first 8 KiB, which the reader decodes while the routes stream
    content=(json.dumps({**KILTER_ROUTE, "frames": "p1073r12"}) + "\n").encode() * 400 + b"\xff\n",
    suffix=".json",
    output="json",
)
def test_cg_infer_on_files(fake_pipeline: Pipeline, routes_dir: Path, content: bytes, suffix: str, output: str) -> None:
    """cg-infer on a file of any content (one JSON document, JSON Lines, not UTF-8): a clean exit."""
    path = routes_dir / f"routes{suffix}"
    path.write_bytes(content)
    run_cg_infer(fake_pipeline.model, [str(path), "--format", output])


# --- inputs known to be bad: refused, and said so in one line --------------------------------------
# The explicit @example cases above may end either way (answered or refused); these must be refused.

KNOWN_BAD_ROUTES = {
    "NaN angle": ({**KILTER_ROUTE, "angle": math.nan, "frames": "p1073r12"}, "'angle' must be a whole number"),
    "infinite angle": (
        {**KILTER_ROUTE, "angle": json.loads("1e400"), "frames": "p1073r12"},
        "'angle' must be a whole number",
    ),
    "boolean layout": ({**KILTER_ROUTE, "layout_id": True, "frames": "p1073r12"}, "'layout_id' must be a whole number"),
    "200,000-character frames": ({**KILTER_ROUTE, "frames": "p1073r12" * 25_000}, "'frames' is 200000 characters long"),
    "12,500 holds": ({**KILTER_ROUTE, "frames": "p1073r12" * 12_500}, "route has 12500 holds"),
    "holds nested 10,000 deep": ({**KILTER_ROUTE, "holds": NestedList(10_000)}, "holds[0] must be an object"),
    "a list nested 10,000 deep": (NestedList(10_000), "a route must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(KNOWN_BAD_ROUTES))
def test_known_bad_routes_are_refused_in_one_line(predictor: GradePredictor, case: str) -> None:
    obj, problem = KNOWN_BAD_ROUTES[case]
    with pytest.raises(RouteError) as caught:
        predictor.tokenizer.resolve(parse_route(obj))
    assert_one_clear_line(str(caught.value))
    assert str(caught.value).startswith(problem)


KNOWN_BAD_FILES = {
    "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "is not valid JSON: nested too deeply to hold routes"),
    "a 4,301-digit integer": (b"1" * 4_301, "is not valid JSON: Exceeds the limit (4300 digits)"),
    "a list of a 4,301-digit integer": (
        b"[" + b"1" * 4_301 + b"]",
        "is not valid JSON: Exceeds the limit (4300 digits)",
    ),
    "not UTF-8": (b"\xff\xfe{}", "is not valid JSON: not UTF-8 text (byte 0 of line 1)"),
}


@pytest.mark.parametrize("case", sorted(KNOWN_BAD_FILES))
def test_cg_infer_refuses_an_unreadable_file_in_one_line(fake_pipeline: Pipeline, routes_dir: Path, case: str) -> None:
    """Exit 2, nothing on stdout, and one stderr line naming the file and what is wrong with it."""
    content, problem = KNOWN_BAD_FILES[case]
    path = routes_dir / "bad.json"
    path.write_bytes(content)
    result, stderr = run_cg_infer(fake_pipeline.model, [str(path), "--format", "json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert len(stderr) == 1 and stderr[0].startswith(f"error: {path} {problem}"), stderr
    assert_one_clear_line(stderr[0])


def test_cg_infer_refuses_only_the_line_that_is_not_utf8(fake_pipeline: Pipeline, routes_dir: Path) -> None:
    """A stream that turns undecodable past the first 8 KiB: every good route answered, the bad line
    refused in one stderr line naming it, exit 2."""
    good = (json.dumps({**KILTER_ROUTE, "frames": "p1073r12p1080r14"}) + "\n").encode()
    path = routes_dir / "late.json"
    path.write_bytes(good * 400 + b"\xff\n")
    result, stderr = run_cg_infer(fake_pipeline.model, [str(path), "--format", "json"])
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 2 and [a["index"] for a in answers] == list(range(401))
    assert all("difficulty" in a for a in answers[:400]) and "error" in answers[400]
    assert [line for line in stderr if line.startswith("error:")] == [
        "error: route 400: line 401 is not valid JSON: not UTF-8 text (byte 0 of line 401)"
    ]
