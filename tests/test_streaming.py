"""Input of any size streams through cg-infer line by line, in bounded memory."""

from __future__ import annotations

import io
import json
import queue
import subprocess
import threading

import pytest

from climbgrade_runtime.inputs import read_routes
from climbgrade_runtime.predictor import STREAM_CHUNK_ROUTES
from climbgrade_runtime.sidecar import Sidecar

from conftest import BIN


def routes_jsonl(model, count: int) -> bytes:
    layout = Sidecar.load(f"{model}.json").tokenizer.layouts[("kilter", 1)]
    pids = sorted(layout.placements)
    lines = []
    for i in range(count):
        a, b, c = pids[i % 50], pids[50 + i % 40], pids[95 + i % 10]
        lines.append(
            json.dumps(
                {
                    "board": "kilter",
                    "layout_id": 1,
                    "angle": layout.angles[i % len(layout.angles)],
                    "frames": f"p{a}r12p{b}r13p{c}r14",
                    "id": i,
                }
            )
        )
    return ("\n".join(lines) + "\n").encode()


def run_streaming(model, payload: bytes, tmp_path) -> tuple[int, int, int]:
    """(exit code, output lines, peak RSS in KB) of `cg-infer -` fed `payload` on stdin.

    GNU time measures the peak: this process's own high-water mark (torch is loaded here) would
    otherwise be inherited by a child forked from it.
    """
    report = tmp_path / f"time-{len(payload)}.txt"
    proc = subprocess.Popen(
        [
            "/usr/bin/time",
            "-f",
            "%M",
            "-o",
            str(report),
            str(BIN / "cg-infer"),
            "-",
            "--model",
            str(model),
            "--format",
            "json",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None
    counted: list[int] = []
    reader = threading.Thread(target=lambda: counted.append(sum(1 for _ in stdout)))
    reader.start()
    stdin.write(payload)
    stdin.close()
    reader.join()
    code = proc.wait()
    return code, counted[0], int(report.read_text().split()[-1])


def test_memory_stays_flat_for_a_large_stream(fake_pipeline, tmp_path):
    small = run_streaming(fake_pipeline.model, routes_jsonl(fake_pipeline.model, 2_000), tmp_path)
    large = run_streaming(fake_pipeline.model, routes_jsonl(fake_pipeline.model, 100_000), tmp_path)
    assert small[:2] == (0, 2_000) and large[:2] == (0, 100_000)
    # 100,000 routes held at once would take well over 100 MB of Python objects.
    assert 20_000 < small[2] < 150_000, f"implausible peak RSS {small[2]} KB: is the measurement broken?"
    assert large[2] - small[2] < 20_000, f"peak RSS grew by {(large[2] - small[2]) / 1024:.0f} MB"


@pytest.mark.parametrize(
    "text, shape, count",
    [
        ('{"a": 1}\n', "lines", 1),
        ('\n\n{"a": 1}\n{"b": 2}\n\n', "lines", 2),
        ('{\n  "a": 1\n}\n', "object", 1),
        ('[{"a": 1},\n {"b": 2}]\n', "list", 2),
    ],
)
def test_input_shapes(tmp_path, text, shape, count):
    path = tmp_path / "in.json"
    path.write_text(text)
    routes = read_routes(str(path), stdin=io.BytesIO())
    assert routes.shape == shape and len(list(routes.records)) == count


def test_json_lines_file_is_read_lazily(tmp_path):
    """Lines are read as records are asked for: a line added to the file after the first record was
    taken still comes out, where a reader that read (or decoded) everything up front would miss it."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n' * 10 + "{broken\n")
    records = iter(read_routes(str(path), stdin=io.BytesIO()).records)
    assert next(records) == {"a": 1}
    with path.open("a") as handle:
        handle.write('{"late": 1}\n')
    rest = list(records)
    assert len(rest) == 11 and str(rest[-2]).startswith("line 11 is not valid JSON: ") and rest[-1] == {"late": 1}


def test_cg_infer_answers_the_first_chunk_before_stdin_ends(fake_pipeline):
    """The first STREAM_CHUNK_ROUTES routes are graded and written while stdin is still open: output
    does not wait for the end of the input."""
    lines = routes_jsonl(fake_pipeline.model, STREAM_CHUNK_ROUTES + 5).splitlines(keepends=True)
    proc = subprocess.Popen(
        [str(BIN / "cg-infer"), "-", "--model", str(fake_pipeline.model), "--format", "json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None
    answers: queue.Queue[bytes] = queue.Queue()

    def read_answers() -> None:
        for line in stdout:
            answers.put(line)

    threading.Thread(target=read_answers, daemon=True).start()
    try:
        stdin.write(b"".join(lines[:STREAM_CHUNK_ROUTES]))
        stdin.flush()
        first = [json.loads(answers.get(timeout=120)) for _ in range(STREAM_CHUNK_ROUTES)]
        assert proc.poll() is None  # still waiting for the rest of its input
        stdin.write(b"".join(lines[STREAM_CHUNK_ROUTES:]))
        stdin.close()
        assert proc.wait(timeout=120) == 0
        rest = [json.loads(answers.get(timeout=10)) for _ in range(5)]
    finally:
        proc.kill()
    assert [a["index"] for a in first + rest] == list(range(STREAM_CHUNK_ROUTES + 5)) and answers.empty()
