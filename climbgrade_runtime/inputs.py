"""Reading route input: one JSON object, a JSON list, or JSON Lines, from a file or stdin alike.

JSON Lines are read line by line, so an input of any size streams through in bounded memory.
A line that is not JSON becomes a RouteError in its slot, so the other routes are still answered.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from .errors import ClimbgradeError, RouteError

Shape = Literal["object", "list", "lines"]


@dataclass(frozen=True)
class RouteInput:
    """Decoded route records (or a RouteError per undecodable line) and the shape they came in.

    For JSON Lines `records` is a lazy iterator: consume it once.
    """

    records: Iterable[Any]
    shape: Shape


def decode_json(data: bytes, source: str, first_line: int = 1) -> Any:
    """`data` as JSON, or RouteError: "<source> is not valid JSON: <why>", one line.

    The one decoder of route input (cg-infer's files, stdin and JSON Lines, and the kiosk API's
    bodies), so each refuses the same bytes with the same words. NaN, Infinity and numbers beyond
    float range are refused: Python's json takes them, but what it writes back is then not JSON.
    `first_line` is the line of `source` that `data` starts on, so positions name lines of the source.
    """
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        byte = exc.start - (data.rfind(b"\n", 0, exc.start) + 1)
        why = f"not UTF-8 text (byte {byte} of line {line})"
    except json.JSONDecodeError as exc:
        why = f"{exc.msg} at line {exc.lineno + first_line - 1} column {exc.colno}"
    except RecursionError:
        why = "nested too deeply to hold routes"
    except ValueError as exc:  # a non-finite number, an integer longer than Python converts
        why = str(exc).splitlines()[0][:80]
    raise RouteError(f"{source} is not valid JSON: {why}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def read_json_lines(lines: Iterable[bytes], first_number: int = 1) -> Iterator[Any]:
    """Yield one decoded value (or RouteError) per non-blank line, reading line by line.

    Lines arrive as bytes and are decoded one by one, so a line that is not JSON costs only itself.
    """
    for number, raw in enumerate(lines, start=first_number):
        if not raw.strip():
            continue
        try:
            yield decode_json(raw, f"line {number}", first_line=number)
        except RouteError as exc:
            yield exc


def read_routes(source: str, stdin: IO[bytes]) -> RouteInput:
    """Routes from a file, or from stdin when `source` is `-`; both take the same shapes.

    One JSON document (an object, or a list) is read whole; JSON Lines (a `.jsonl` file, or any
    input whose first line is a complete JSON value other than a list) stream line by line.
    An input with no routes at all (empty, blank, or `[]`) is an error: there is nothing to answer.
    """
    name = "stdin" if source == "-" else source
    if source == "-":
        handle = stdin
    else:
        try:
            handle = Path(source).open("rb")  # noqa: SIM115 (a JSON Lines file is closed by the stream reading it)
        except OSError as exc:
            raise ClimbgradeError(f"cannot read {source}: {exc.strerror}") from exc
    try:
        number, first = _peek(handle)
    except OSError as exc:
        handle.close()
        raise ClimbgradeError(f"cannot read {name}: {exc.strerror}") from exc
    if not first:
        handle.close()
        raise ClimbgradeError(f"{name} is empty: no routes to grade")
    if source.endswith(".jsonl") or (not first.lstrip().startswith(b"[") and _is_json(first)):
        return RouteInput(_stream(handle, number, first), "lines")
    with handle:
        value = decode_json(first + handle.read(), name, first_line=number)
    if value == []:
        raise ClimbgradeError(f"{name} holds an empty list: no routes to grade")
    return RouteInput(value if isinstance(value, list) else [value], "list" if isinstance(value, list) else "object")


def _peek(handle: IO[bytes]) -> tuple[int, bytes]:
    """Line number and bytes of the first non-blank line; (0, b"") for a blank file."""
    for number, line in enumerate(handle, start=1):
        if line.strip():
            return number, line
    return 0, b""


def _is_json(line: bytes) -> bool:
    """Whether `line` is a complete JSON value: the sniff for JSON Lines, not a decoder.

    Python's own reading, so a line whose only fault is NaN still marks the input as JSON Lines and
    decode_json then refuses that line alone.
    """
    try:
        json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return False
    return True


def _stream(handle: IO[bytes], number: int, first: bytes) -> Iterator[Any]:
    """The peeked line, then the rest of the file, one route per line."""
    with handle:
        yield from read_json_lines([first], first_number=number)
        yield from read_json_lines(handle, first_number=number + 1)
