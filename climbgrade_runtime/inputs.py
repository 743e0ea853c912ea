"""Reading route input: one JSON object, a JSON list, or JSON Lines (a file or stdin).

A line that is not JSON becomes a RouteError in its slot, so the other routes are still answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from .errors import ClimbgradeError, RouteError

Shape = Literal["object", "list", "lines"]


@dataclass(frozen=True)
class RouteInput:
    """Decoded route records (or a RouteError per undecodable line) and the shape they came in."""

    records: list[Any]
    shape: Shape


def read_json_lines(stream: IO[str]) -> Iterator[Any]:
    """Yield one decoded value (or RouteError) per non-blank line, reading line by line."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            yield RouteError(f"line {number}: invalid JSON ({exc.msg} at column {exc.colno})")
        except RecursionError:
            yield RouteError(f"line {number}: JSON nested too deeply to be a route")


def read_routes(source: str, stdin: IO[str]) -> RouteInput:
    """`-` reads JSON Lines from stdin; a `.jsonl` file is JSON Lines; other files are JSON or JSON Lines."""
    if source == "-":
        return RouteInput(list(read_json_lines(stdin)), "lines")
    path = Path(source)
    try:
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as handle:
                return RouteInput(list(read_json_lines(handle)), "lines")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClimbgradeError(f"cannot read {source}: {exc.strerror if isinstance(exc, OSError) else exc}") from exc
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise ClimbgradeError(f"{source} is JSON nested too deeply to hold routes") from exc
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # a first document parsed and more follow: JSON Lines
            return RouteInput(list(read_json_lines(text.splitlines())), "lines")
        raise ClimbgradeError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if isinstance(value, list):
        return RouteInput(value, "list")
    return RouteInput([value], "object")
