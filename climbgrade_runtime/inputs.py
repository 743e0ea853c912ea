"""Reading route input: one JSON object, a JSON list, or JSON Lines, from a file or stdin alike.

JSON Lines are read line by line, so an input of any size streams through in bounded memory.
A line that is not JSON becomes a RouteError in its slot, so the other routes are still answered.
"""

from __future__ import annotations

import json
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


def read_json_lines(lines: Iterable[bytes], first_number: int = 1) -> Iterator[Any]:
    """Yield one decoded value (or RouteError) per non-blank line, reading line by line.

    Lines arrive as bytes and are decoded one by one, so a line that is not UTF-8 costs only itself.
    """
    for number, raw in enumerate(lines, start=first_number):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield RouteError(f"line {number}: not UTF-8 text (byte {exc.start})")
            continue
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            yield RouteError(f"line {number}: invalid JSON ({exc.msg} at column {exc.colno})")
        except ValueError as exc:  # e.g. an integer longer than Python converts
            yield RouteError(f"line {number}: invalid JSON ({str(exc).splitlines()[0][:80]})")
        except RecursionError:
            yield RouteError(f"line {number}: JSON nested too deeply to be a route")


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
        value = _read_document(name, number, first + handle.read())
    if value == []:
        raise ClimbgradeError(f"{name} holds an empty list: no routes to grade")
    return RouteInput(value if isinstance(value, list) else [value], "list" if isinstance(value, list) else "object")


def _read_document(name: str, number: int, data: bytes) -> Any:
    """Decode one JSON document whose first non-blank line is line `number` of `name`."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ClimbgradeError(f"{name} is not UTF-8 text (byte {exc.start} after line {number - 1})") from exc
    except RecursionError as exc:
        raise ClimbgradeError(f"{name} is JSON nested too deeply to hold routes") from exc
    except json.JSONDecodeError as exc:
        line = exc.lineno + number - 1
        raise ClimbgradeError(f"{name} is not valid JSON: {exc.msg} at line {line} column {exc.colno}") from exc
    except ValueError as exc:
        raise ClimbgradeError(f"{name} is not valid JSON: {str(exc).splitlines()[0][:80]}") from exc


def _peek(handle: IO[bytes]) -> tuple[int, bytes]:
    """Line number and bytes of the first non-blank line; (0, b"") for a blank file."""
    for number, line in enumerate(handle, start=1):
        if line.strip():
            return number, line
    return 0, b""


def _is_json(line: bytes) -> bool:
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
